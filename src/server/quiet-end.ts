/**
 * Closing a WebSocket the ordinary way calls `end()` three times on streams that have already
 * ended: `ws` ends its frame receiver when the close frame arrives and again when the TCP
 * connection ends and closes, and ends the TCP socket again when the peer's FIN arrives after its
 * own. Node answers each such call by building an error (`ERR_STREAM_ALREADY_FINISHED`, with a
 * captured stack trace) and, as no callback was given, dropping it: three thrown-away errors per
 * connection, about 3 % of the gateway's CPU when it admits connects back to back.
 *
 * `quietEnd` is `end()` for those calls: with no argument, on a stream that is already ending or
 * has failed, Node's `end()` does nothing but build that error, so returning at once is the same
 * behaviour without it. Every other call goes to the stream's own `end()`.
 */
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import * as ws from 'ws';

type End = (this: Writable, ...args: unknown[]) => Writable;

/** `end` that skips the no-op calls described above and passes every other call to `end`. */
function quietEnd(end: End): End {
  return function (this: Writable, ...args: unknown[]): Writable {
    // Already ending (or failed), nothing to write, no callback, not corked: Node's end() would
    // only build an error and drop it.
    if (args.length === 0 && (this.writableEnded || this.errored !== null) && this.writableCorked === 0) return this;
    return end.apply(this, args);
  };
}

/** One quiet `end` per socket class (net or TLS), shared by every socket of the class. */
const quietByProto = new WeakMap<object, End>();

let receiverPatched = false;

/**
 * Give `ws`'s frame receiver (every one in the process: the gateway's sockets and any client
 * socket) the quiet `end`. Idempotent.
 */
export function quietReceiverEnd(): void {
  if (receiverPatched) return;
  receiverPatched = true;
  // `ws` exports its Receiver class (its typings do not declare it).
  const receiver = (ws as unknown as { Receiver?: { prototype: Writable } }).Receiver;
  if (!receiver) throw new Error('ws exports no Receiver: quiet-end.ts needs updating for this ws version');
  const proto = receiver.prototype;
  proto.end = quietEnd(proto.end as End) as Writable['end'];
}

/**
 * Give one TCP socket the quiet `end`: called when its WebSocket closes (the only time the
 * repeated call comes), so an open socket carries no extra property.
 */
export function quietSocketEnd(socket: Socket): void {
  if (Object.hasOwn(socket, 'end')) return;
  const proto = Object.getPrototypeOf(socket) as object;
  let end = quietByProto.get(proto);
  if (!end) {
    end = quietEnd(socket.end as unknown as End);
    quietByProto.set(proto, end);
  }
  socket.end = end as unknown as Socket['end'];
}
