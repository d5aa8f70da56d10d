/** What a connect ends in (hello, refusal, or a wait for approval), shared by the handshake and the approvals. */
import { CLOSE, closeReason, type DetailCode, type GatewayError } from '@clawgate/protocol/errors';
import type { HelloAuth, ResponseFrame } from '@clawgate/protocol/frames';
import type { SessionPrincipal } from './principal.js';

/** Transport facts the server establishes before the first frame. */
export interface TransportFacts {
  /** Client address as the gateway attributes it. */
  address: string;
  /** Direct loopback peer, no forwarded headers. */
  directLocal: boolean;
  /** The id the server logs this connection under; becomes the session's connId once admitted. */
  connId?: string | undefined;
  /** Forwarded by a trusted proxy (the address is what the proxy said). */
  proxied?: boolean | undefined;
  /** The trusted proxy's signed-in user header (gateway.auth.trustedProxyUser), null when it sent none. */
  proxyUser?: string | null | undefined;
}

export type ConnectOutcome =
  | { type: 'hello'; session: SessionPrincipal; frame: string; authMethod?: HelloAuth['method'] | undefined }
  | { type: 'reject'; frame: string | null; closeCode: number; closeReason: string; detail?: DetailCode | undefined }
  | { type: 'wait'; requestId: string; confirmationCode: string; result: Promise<ConnectOutcome>; cancel(): void };

/** A refusal of the connect request `id` (null: no request to answer, only a close). */
export function rejectOutcome(id: string | null, err: GatewayError, closeOverride?: number): ConnectOutcome {
  const frame: ResponseFrame | null = id === null ? null : { type: 'res', id, ok: false, error: err.shape };
  return {
    type: 'reject',
    frame: frame ? JSON.stringify(frame) : null,
    closeCode: closeOverride ?? err.close ?? CLOSE.policy,
    closeReason: closeReason(err.shape.message),
    detail: err.detail,
  };
}
