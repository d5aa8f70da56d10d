/**
 * A small browser client for the gateway protocol (one socket: challenge → signed connect →
 * hello-ok, then req/res and events). The SDK (`@clawgate/client`) had not landed when the
 * Control UI was written; this module is deliberately minimal so it can be swapped for it.
 * It signs with the same payload builder the gateway verifies with (protocol/signature.js).
 */
import { signaturePayloadV3, signedTokenField } from '../../protocol/signature.js';
import type { BrowserIdentity } from './identity.js';

export interface ErrorShape {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  retryable?: boolean;
  retryAfterMs?: number;
}

export interface Hello {
  auth: { role: string; scopes: string[]; method: string; deviceToken?: string; pendingRequestId?: string };
  server: { version: string; connId: string };
  policy: { tickIntervalMs: number };
}

export interface ConnectAuth {
  token?: string;
  deviceToken?: string;
}

/** Why a connect failed: the gateway's error (if it sent one) and the close. */
export class ConnectFailure extends Error {
  constructor(
    readonly error: ErrorShape | null,
    readonly closeCode: number,
    readonly closeReason: string,
  ) {
    super(error?.message ?? (closeReason || `connection closed (${closeCode})`));
  }
}

export class RequestFailure extends Error {
  constructor(readonly error: ErrorShape) {
    super(error.message);
  }
}

export const UI_CLIENT = { id: 'openclaw-control-ui', mode: 'ui', version: '0.1.0', platform: 'web', displayName: 'Control UI (browser)' } as const;
export const UI_SCOPES = ['operator.admin', 'operator.approvals', 'operator.pairing', 'operator.read', 'operator.write'];

export interface ClientCallbacks {
  onEvent(event: string, payload: unknown): void;
  /** The socket closed after hello-ok (not called for a failed connect). */
  onClose(code: number, reason: string): void;
  /** The gateway is holding this connect until an operator approves it. */
  onWaiting?(payload: { requestId: string; confirmationCode?: string }): void;
}

export class GatewayClient {
  private ws: WebSocket | null = null;
  private nextId = 1;
  private readonly pending = new Map<string, { resolve(v: unknown): void; reject(e: Error): void }>();

  constructor(
    private readonly url: string,
    private readonly identity: BrowserIdentity,
    private readonly cb: ClientCallbacks,
  ) {}

  connect(auth: ConnectAuth, opts: { wait?: boolean } = {}): Promise<Hello> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let admitted = false;
      let lastError: ErrorShape | null = null;
      ws.onmessage = async (msg) => {
        let frame: { type?: string; event?: string; id?: string; ok?: boolean; payload?: unknown; error?: ErrorShape };
        try {
          frame = JSON.parse(String(msg.data));
        } catch {
          return;
        }
        if (!admitted) {
          if (frame.type === 'event' && frame.event === 'connect.challenge') {
            const { nonce, ts } = frame.payload as { nonce: string; ts: number };
            ws.send(JSON.stringify({ type: 'req', id: 'connect', method: 'connect', params: await this.connectParams(auth, nonce, ts, opts.wait === true) }));
          } else if (frame.type === 'event' && frame.event === 'device.pair.waiting') {
            this.cb.onWaiting?.(frame.payload as { requestId: string; confirmationCode?: string });
          } else if (frame.type === 'res' && frame.id === 'connect') {
            if (frame.ok) {
              admitted = true;
              resolve(frame.payload as Hello);
            } else lastError = frame.error ?? null;
          }
          return;
        }
        if (frame.type === 'res' && frame.id) {
          const p = this.pending.get(frame.id);
          if (!p) return;
          this.pending.delete(frame.id);
          if (frame.ok) p.resolve(frame.payload);
          else p.reject(new RequestFailure(frame.error as ErrorShape));
        } else if (frame.type === 'event' && frame.event) {
          this.cb.onEvent(frame.event, frame.payload);
        }
      };
      ws.onclose = (ev) => {
        for (const p of this.pending.values()) p.reject(new Error('connection closed'));
        this.pending.clear();
        if (this.ws === ws) this.ws = null;
        if (admitted) this.cb.onClose(ev.code, ev.reason);
        else reject(new ConnectFailure(lastError, ev.code, ev.reason));
      };
    });
  }

  private async connectParams(auth: ConnectAuth, nonce: string, ts: number, wait: boolean): Promise<Record<string, unknown>> {
    const role = 'operator';
    const payload = signaturePayloadV3({
      deviceId: this.identity.deviceId,
      clientId: UI_CLIENT.id,
      clientMode: UI_CLIENT.mode,
      role,
      scopes: UI_SCOPES,
      signedAtMs: ts,
      token: signedTokenField(auth),
      nonce,
      platform: UI_CLIENT.platform,
    });
    return {
      minProtocol: 4,
      maxProtocol: 4,
      client: { ...UI_CLIENT },
      role,
      scopes: UI_SCOPES,
      ...(wait ? { caps: ['device-pairing-wait'] } : {}),
      auth,
      device: { id: this.identity.deviceId, publicKey: this.identity.publicKey, signature: await this.identity.sign(payload), signedAt: ts, nonce },
    };
  }

  request<T = unknown>(method: string, params: unknown = {}): Promise<T> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected to the gateway'));
    const id = `ui-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      ws.send(JSON.stringify({ type: 'req', id, method, params }));
    });
  }

  close(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) ws.close(1000);
  }
}
