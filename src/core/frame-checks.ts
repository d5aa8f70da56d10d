/**
 * The validators of the frames every connection meets (a request frame, the connect params),
 * compiled on first use and shared by the handshake and the gateway. TypeBox compiles a check
 * into a `new Function`, code that no module cache holds (V8's code cache of the single-file
 * build neither): compiled at module load, they cost every start, including a gateway no client
 * ever reaches, about two milliseconds before it could listen. The first connect compiles them.
 */
import { ConnectParamsSchema, RequestFrameSchema } from '@clawgate/protocol/frames';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';

let requestCheck: TypeCheck<typeof RequestFrameSchema> | null = null;
let connectCheck: TypeCheck<typeof ConnectParamsSchema> | null = null;

/** The compiled check of a request frame (`{type:'req', id, method, params?}`). */
export function requestFrameCheck(): TypeCheck<typeof RequestFrameSchema> {
  requestCheck ??= TypeCompiler.Compile(RequestFrameSchema);
  return requestCheck;
}

/** The compiled check of `connect` params. */
export function connectParamsCheck(): TypeCheck<typeof ConnectParamsSchema> {
  connectCheck ??= TypeCompiler.Compile(ConnectParamsSchema);
  return connectCheck;
}
