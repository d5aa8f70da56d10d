/**
 * A raw WebSocket client for wire-level tests: no SDK, no retries, no validation. It records
 * every frame the gateway sends (the challenge arrives before anyone could attach a listener
 * later) and the close code and reason, so a test can assert exactly what went over the wire.
 */
import { createHash, type KeyObject, sign } from 'node:crypto';
import { requestGatewayProof } from '@clawgate/protocol/gateway-proof';
import { type SignatureFields, signaturePayloadV2, signaturePayloadV3 } from '@clawgate/protocol/signature';
import { type ClientOptions, WebSocket } from 'ws';
import type { DeviceIdentity } from '../../src/client/connection.js';

export interface Challenge {
  nonce: string;
  ts: number;
  /** The gateway's signature over this challenge (PROTOCOL.md §6.1). */
  gateway?: { v: number; publicKey: string; signature: string };
}

export interface Frame {
  type?: string;
  id?: string;
  ok?: boolean;
  event?: string;
  payload?: unknown;
  seq?: number;
  error?: { code: string; message: string; details?: Record<string, unknown>; retryable?: boolean; retryAfterMs?: number };
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export class RawClient {
  /** Every frame received, in order (next() hands each one out at most once; this keeps them all). */
  readonly frames: Frame[] = [];
  /** taken[i]: frames[i] was already returned by next(), so a later next() moves past it. */
  private readonly taken: boolean[] = [];
  /** Text frames that were not JSON (the gateway never sends any; kept to prove it). */
  readonly junk: string[] = [];
  readonly closed: Promise<CloseInfo>;
  private waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame | null) => void }> = [];
  private isClosed = false;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => {
      ws.once('close', (code, reason) => {
        this.isClosed = true;
        for (const w of this.waiters) w.resolve(null);
        this.waiters = [];
        resolve({ code, reason: reason.toString('utf8') });
      });
    });
    ws.on('error', () => {
      // Errors (e.g. the server closing mid-send) surface through `closed`.
    });
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '' : data.toString();
      let frame: Frame;
      try {
        frame = JSON.parse(text) as Frame;
      } catch {
        this.junk.push(text);
        return;
      }
      this.frames.push(frame);
      this.taken.push(false);
      // The oldest waiter that wants this frame gets it; it is never handed out again.
      const i = this.waiters.findIndex((w) => w.match(frame));
      if (i >= 0) {
        const [w] = this.waiters.splice(i, 1);
        this.taken[this.frames.length - 1] = true;
        w?.resolve(frame);
      }
    });
  }

  /**
   * Open a socket; resolves after the upgrade (the challenge may already be recorded). `options`
   * go to `ws` as they are (e.g. `autoPong: false` for a peer that never answers a ping). Like
   * clawgate's own clients it asks for a signed challenge (test/security/gateway-identity.test.ts
   * dials without asking, as an OpenClaw client does).
   */
  static open(url: string, headers?: Record<string, string>, options: ClientOptions = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(requestGatewayProof(url), { perMessageDeflate: false, ...(headers ? { headers } : {}), ...options });
      const client = new RawClient(ws);
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode, body })));
      });
      ws.once('error', (err) => reject(err));
    });
  }

  /**
   * The next frame matching `match`: the oldest matching frame no earlier next() returned, else
   * the next one to arrive; null when the socket closes first. Two calls with the same matcher
   * return two different frames, so "another event came" is really tested.
   */
  next(match: (f: Frame) => boolean, timeoutMs = 5000): Promise<Frame | null> {
    const i = this.frames.findIndex((f, j) => !this.taken[j] && match(f));
    if (i >= 0) {
      this.taken[i] = true;
      return Promise.resolve(this.frames[i] as Frame);
    }
    if (this.isClosed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (f: Frame | null) => {
          clearTimeout(timer);
          resolve(f);
        },
      };
      // A waiter that gave up must not swallow the frame a later next() is waiting for.
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error('timed out waiting for a frame'));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** The socket's one challenge (asking again returns the same one). */
  async challenge(): Promise<Challenge> {
    const isChallenge = (x: Frame) => x.type === 'event' && x.event === 'connect.challenge';
    const f = this.frames.find(isChallenge) ?? (await this.next(isChallenge));
    if (!f) throw new Error('socket closed before connect.challenge');
    return f.payload as Challenge;
  }

  /** The response to request `id`, or null when the socket closed without one. */
  response(id: string, timeoutMs = 5000): Promise<Frame | null> {
    return this.next((f) => f.type === 'res' && f.id === id, timeoutMs);
  }

  event(name: string, timeoutMs = 5000): Promise<Frame | null> {
    return this.next((f) => f.type === 'event' && f.event === name, timeoutMs);
  }

  send(data: unknown): void {
    if (typeof data === 'string' || Buffer.isBuffer(data)) this.ws.send(data);
    else this.ws.send(JSON.stringify(data));
  }

  /** Send a request and wait for its response. */
  async request(id: string, method: string, params?: unknown, timeoutMs = 5000): Promise<Frame | null> {
    this.send({ type: 'req', id, method, ...(params === undefined ? {} : { params }) });
    return this.response(id, timeoutMs);
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  close(): Promise<CloseInfo> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    return this.closed;
  }
}

/** Outcome of a one-shot connect: the response (null when none came) and, if closed, how. */
export interface ConnectResult {
  client: RawClient;
  challenge: Challenge;
  res: Frame | null;
  close: CloseInfo | null;
}

/**
 * Open a socket, wait for the challenge, send `connect` with the params `build` returns, and
 * wait for the response. On a rejection also waits for the close; on success leaves it open.
 */
export async function rawConnect(url: string, build: (c: Challenge) => unknown, id = 'c1'): Promise<ConnectResult> {
  const client = await RawClient.open(url);
  const challenge = await client.challenge();
  const res = await client.request(id, 'connect', build(challenge));
  const close = res?.ok ? null : await client.closed;
  return { client, challenge, res, close };
}

// ---------------------------------------------------------------------------------------------
// Signing helpers (independent of buildConnectParams, so a test can sign anything)
// ---------------------------------------------------------------------------------------------

export function signText(privateKey: KeyObject, text: string, encoding: 'base64url' | 'base64' = 'base64url'): string {
  return sign(null, Buffer.from(text, 'utf8'), privateKey).toString(encoding);
}

export function signV3(id: DeviceIdentity, f: Omit<SignatureFields, 'deviceId'>): string {
  return signText(id.privateKey, signaturePayloadV3({ deviceId: id.deviceId, ...f }));
}

export function signV2(id: DeviceIdentity, f: Omit<SignatureFields, 'deviceId'>): string {
  return signText(id.privateKey, signaturePayloadV2({ deviceId: id.deviceId, ...f }));
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface DeviceParamsOptions {
  identity: DeviceIdentity;
  challenge: Challenge;
  role?: string;
  scopes?: string[];
  client?: Record<string, unknown>;
  auth?: Record<string, string>;
  minProtocol?: number;
  maxProtocol?: number;
  caps?: string[];
  /** Override any field of the device block after signing. */
  device?: Record<string, unknown>;
  /** Sign this text instead of the canonical v3 payload. */
  payload?: (canonical: SignatureFields) => string;
  signedAt?: number;
  signatureEncoding?: 'base64url' | 'base64';
}

/** Canonical device-signed connect params (v3, signedAt = challenge ts), with overrides. */
export function deviceParams(o: DeviceParamsOptions): Record<string, unknown> {
  const role = o.role ?? 'operator';
  const scopes = o.scopes ?? ['operator.read'];
  const client = { id: 'test', mode: 'test', version: '1.0.0', platform: 'linux', deviceFamily: 'Linux', ...o.client } as Record<string, string>;
  const signedAt = o.signedAt ?? o.challenge.ts;
  const auth = o.auth;
  const fields: SignatureFields = {
    deviceId: o.identity.deviceId,
    clientId: String(client.id),
    clientMode: String(client.mode),
    role,
    scopes,
    signedAtMs: signedAt,
    token: auth?.token ?? auth?.deviceToken ?? auth?.bootstrapToken ?? '',
    nonce: o.challenge.nonce,
    platform: client.platform,
    deviceFamily: client.deviceFamily,
  };
  const text = o.payload ? o.payload(fields) : signaturePayloadV3(fields);
  const params: Record<string, unknown> = {
    minProtocol: o.minProtocol ?? 4,
    maxProtocol: o.maxProtocol ?? 4,
    client,
    role,
    scopes,
    device: {
      id: o.identity.deviceId,
      publicKey: o.identity.publicKey,
      signature: signText(o.identity.privateKey, text, o.signatureEncoding),
      signedAt,
      nonce: o.challenge.nonce,
      ...o.device,
    },
  };
  if (auth) params.auth = auth;
  if (o.caps) params.caps = o.caps;
  return params;
}

/** Device-less connect params (`cli`/`cli` by default). */
export function plainParams(
  o: { auth?: Record<string, string>; scopes?: string[]; client?: Record<string, unknown>; role?: string } = {},
): Record<string, unknown> {
  const params: Record<string, unknown> = {
    minProtocol: 4,
    maxProtocol: 4,
    client: { id: 'cli', mode: 'cli', version: '1.0.0', platform: 'linux', ...o.client },
    scopes: o.scopes ?? ['operator.read'],
  };
  if (o.role !== undefined) params.role = o.role;
  if (o.auth) params.auth = o.auth;
  return params;
}

export interface NodeConnectOptions {
  /** The connect's `auth`, or a function of the challenge (an owner proof is bound to it). */
  auth: Record<string, string> | ((challenge: Challenge) => Record<string, string>);
  name?: string;
  caps?: string[];
  commands?: string[];
  protocol?: number;
  permissions?: Record<string, boolean>;
}

/** Send `connect` on an open client the way the OpenClaw node host does (device-signed, role node, no scopes). */
export async function connectAsNode(client: RawClient, identity: DeviceIdentity, o: NodeConnectOptions): Promise<Frame | null> {
  const challenge = await client.challenge();
  const params = deviceParams({
    identity,
    challenge,
    role: 'node',
    scopes: [],
    client: { id: 'node-host', mode: 'node', displayName: o.name ?? 'test-node' },
    auth: typeof o.auth === 'function' ? o.auth(challenge) : o.auth,
    minProtocol: o.protocol,
    maxProtocol: o.protocol,
  });
  params.caps = o.caps ?? [];
  params.commands = o.commands ?? [];
  if (o.permissions) params.permissions = o.permissions;
  return client.request('c1', 'connect', params);
}
