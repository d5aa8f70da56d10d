/**
 * A single raw authenticated connection to a gateway (Node), for the tests and the benchmark: every
 * option of the handshake is exposed, including ones no real client should use. No product command
 * connects through it: the CLI, the node host and the companion run on the SDK's GatewayClient; the
 * node host's state dir still reads its device identity with the helpers here.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';
import type { ErrorShape } from '@clawgate/protocol/frames';
import { audienceOf, normalizeGatewayKeyFingerprint, requestGatewayProof } from '@clawgate/protocol/gateway-proof';
import { signaturePayloadV3, signedTokenField } from '@clawgate/protocol/signature';
import { WebSocket } from 'ws';
import { checkGatewayChallenge } from '../core/gateway-identity.js';
import { deviceIdOf } from '../core/identity.js';
import { CERT_ERROR_CODES, peerFingerprint } from '../platform/tls-peer.js';
import { ownerProofFor } from './owner-proof.js';

export interface DeviceIdentity {
  deviceId: string;
  publicKey: string;
  privateKey: KeyObject;
}

export function generateIdentity(): DeviceIdentity {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(12);
  return { deviceId: deviceIdOf(raw), publicKey: raw.toString('base64url'), privateKey };
}

export function identityToJson(id: DeviceIdentity): { deviceId: string; publicKey: string; privateKeyPem: string } {
  return { deviceId: id.deviceId, publicKey: id.publicKey, privateKeyPem: id.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
}

export function identityFromJson(json: { privateKeyPem: string }): DeviceIdentity {
  const privateKey = createPrivateKey(json.privateKeyPem);
  // The public half derives from the private key; the stored deviceId is never trusted.
  const raw = createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(12);
  return { deviceId: deviceIdOf(raw), publicKey: raw.toString('base64url'), privateKey };
}

export interface ConnectOptions {
  url: string;
  role?: 'operator' | 'node';
  scopes?: string[];
  client?: { id: string; mode: string; version?: string; platform?: string; displayName?: string; deviceFamily?: string };
  auth?: { token?: string; password?: string; deviceToken?: string; bootstrapToken?: string; ownerProof?: string; ownerAudience?: string };
  /**
   * The owner credential. It is never sent: the connection first checks that the challenge is
   * signed by the expected gateway key (`gatewayKey`), then answers with `auth.ownerProof`, an
   * HMAC bound to this challenge, that key and the URL dialed. Exclusive with `auth`.
   */
  owner?: string | undefined;
  /**
   * The gateway key fingerprint (64 hex, `clawgate gateway key` prints it) the server must prove
   * before anything is sent. Undefined: not checked (except with `owner`, which always needs a
   * key); null: a check is required but no key is known, so the connect fails without sending.
   */
  gatewayKey?: string | null | undefined;
  identity?: DeviceIdentity | null;
  caps?: string[];
  commands?: string[];
  minProtocol?: number;
  maxProtocol?: number;
  /** Milliseconds to wait for hello-ok (default 15 s). */
  timeoutMs?: number;
  headers?: Record<string, string>;
  /**
   * SHA-256 fingerprint of the gateway's TLS certificate (64 hex digits, colons allowed), e.g.
   * from a setup code. When set, the connection is accepted only if the certificate the server
   * presents has exactly this fingerprint (a self-signed certificate is fine), and it is refused
   * with a TlsPinError otherwise, before anything is sent.
   */
  tlsFingerprint?: string | undefined;
  /** Local address to connect from (multi-homed hosts; tests use other loopback addresses). */
  localAddress?: string | undefined;
  /** Called for every event frame after hello-ok. */
  onEvent?: (event: string, payload: unknown) => void;
}

export class GatewayRequestError extends Error {
  constructor(readonly error: ErrorShape) {
    super(error.message);
  }
  get detailCode(): string | undefined {
    return (this.error.details as { code?: string } | undefined)?.code;
  }
}

export class ConnectError extends Error {
  constructor(
    message: string,
    readonly error: ErrorShape | null,
    readonly closeCode: number | null,
    readonly closeReason: string,
    /** Set when the socket itself failed (no gateway answered): the errno-style code and the URL dialled. */
    readonly transport?: { code: string; url: string },
  ) {
    super(message);
  }
  get detailCode(): string | undefined {
    return (this.error?.details as { code?: string } | undefined)?.code;
  }
}

/** The server presented a certificate other than the pinned one (or spoke plaintext). */
export class TlsPinError extends ConnectError {
  constructor(
    message: string,
    readonly expected: string,
    readonly actual: string | null,
  ) {
    super(message, null, null, '');
  }
}

/** The server did not prove the expected gateway key; nothing was sent to it. */
export class GatewayIdentityError extends ConnectError {
  constructor(
    message: string,
    /** Fingerprint of the key the server proved, or null when it proved none. */
    readonly seen: string | null,
  ) {
    super(message, null, null, '');
  }
}

export { ownerProofFor } from './owner-proof.js';

/**
 * What the client must send after this challenge, or why it must send nothing: with an expected
 * gateway key (or an owner credential to prove) the challenge must carry that key's signature.
 */
export function answerFor(opts: ConnectOptions, payload: unknown): { auth: ConnectOptions['auth'] } | GatewayIdentityError {
  const mustVerify = opts.gatewayKey !== undefined || opts.owner !== undefined;
  if (!mustVerify) return { auth: opts.auth };
  const seen = checkGatewayChallenge(payload, null);
  if (!seen.ok) return new GatewayIdentityError(`the server at ${opts.url} did not prove it is your gateway: ${seen.problem}; nothing was sent`, null);
  const expected = opts.gatewayKey ? normalizeGatewayKeyFingerprint(opts.gatewayKey) : null;
  const hint = `if that is your gateway, pass --gateway-key ${seen.fingerprint} (on the gateway host, \`clawgate gateway key\` prints it)`;
  if (expected === null) {
    return new GatewayIdentityError(
      `the server at ${opts.url} did not prove it is your gateway (key ${seen.fingerprint}, and no gateway key is known for it); nothing was sent. ${hint}`,
      seen.fingerprint,
    );
  }
  if (seen.fingerprint !== expected) {
    return new GatewayIdentityError(
      `the server at ${opts.url} did not prove it is your gateway (key ${seen.fingerprint}, expected ${expected}); nothing was sent. ${hint}`,
      seen.fingerprint,
    );
  }
  if (opts.owner === undefined) return { auth: opts.auth };
  const audience = audienceOf(opts.url);
  if (!audience) return new GatewayIdentityError(`${opts.url} is not a ws:// or wss:// URL`, seen.fingerprint);
  const nonce = (payload as { nonce: string }).nonce;
  return { auth: { ownerProof: ownerProofFor(opts.owner, nonce, seen.publicKey, audience), ownerAudience: audience } };
}

/**
 * Compare the certificate behind an upgrade response with a pinned fingerprint; a TlsPinError
 * (with a message a person can act on) when they differ, null when they match.
 */
export function checkTlsPin(res: IncomingMessage, expected: string, url: string): TlsPinError | null {
  const actual = peerFingerprint(res);
  if (actual === expected) return null;
  return new TlsPinError(
    `TLS certificate mismatch at ${url}: expected SHA-256 ${expected}, the server presented ${actual ?? 'no certificate'}. ` +
      'Refusing to connect: the gateway certificate was replaced, or something is intercepting the connection. ' +
      'If the gateway really has a new certificate, pair again with a fresh setup code.',
    expected,
    actual,
  );
}

export interface HelloPayload {
  type: 'hello-ok';
  protocol: number;
  server: { version: string; connId: string };
  features: { methods: string[]; events: string[] };
  auth: {
    role: string;
    scopes: string[];
    deviceToken?: string;
    issuedAtMs?: number;
    /** Tokens for the other roles a setup code granted (bootstrap redemption only). */
    deviceTokens?: Array<{ deviceToken: string; role: string; scopes: string[]; issuedAtMs: number }>;
    method: string;
    pendingRequestId?: string;
  };
  policy: { tickIntervalMs: number; maxPayload: number };
  [k: string]: unknown;
}

export class GatewayConnection {
  private nextId = 1;
  private readonly pending = new Map<string, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  readonly events: Array<{ event: string; payload: unknown }> = [];
  private listeners = new Set<(event: string, payload: unknown) => void>();
  closed: Promise<{ code: number; reason: string }>;

  constructor(
    readonly ws: WebSocket,
    readonly hello: HelloPayload,
  ) {
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('message', (data) => {
      let frame: { type?: string; id?: string; ok?: boolean; payload?: unknown; error?: ErrorShape; event?: string };
      try {
        frame = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (frame.type === 'res' && frame.id) {
        const p = this.pending.get(frame.id);
        if (!p) return;
        this.pending.delete(frame.id);
        clearTimeout(p.timer);
        if (frame.ok) p.resolve(frame.payload);
        else p.reject(new GatewayRequestError(frame.error as ErrorShape));
      } else if (frame.type === 'event' && frame.event) {
        this.events.push({ event: frame.event, payload: frame.payload });
        for (const l of this.listeners) l(frame.event, frame.payload);
      }
    });
    ws.on('close', () => {
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new Error('connection closed'));
      }
      this.pending.clear();
    });
  }

  onEvent(listener: (event: string, payload: unknown) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Wait for the next event with this name (optionally matching a predicate). */
  waitForEvent<T = unknown>(event: string, timeoutMs = 5000, match: (p: T) => boolean = () => true): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`timed out waiting for event ${event}`));
      }, timeoutMs);
      const off = this.onEvent((e, p) => {
        if (e === event && match(p as T)) {
          clearTimeout(timer);
          off();
          resolve(p as T);
        }
      });
    });
  }

  request<T = unknown>(method: string, params?: unknown, timeoutMs = 30_000): Promise<T> {
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`request ${method} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.ws.send(JSON.stringify({ type: 'req', id, method, ...(params === undefined ? {} : { params }) }));
    });
  }

  close(): Promise<{ code: number; reason: string }> {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    return this.closed;
  }
}

/** Build the connect params for a challenge, signing them when an identity is given. */
export function buildConnectParams(opts: ConnectOptions, nonce: string, challengeTs: number): Record<string, unknown> {
  const role = opts.role ?? 'operator';
  const scopes = opts.scopes ?? [];
  const client = { version: '0.1.0', platform: process.platform, ...(opts.client ?? { id: 'cli', mode: 'cli' }) };
  const params: Record<string, unknown> = {
    minProtocol: opts.minProtocol ?? 4,
    maxProtocol: opts.maxProtocol ?? 4,
    client,
    role,
    scopes,
  };
  if (opts.caps) params.caps = opts.caps;
  if (opts.commands) params.commands = opts.commands;
  if (opts.auth) params.auth = opts.auth;
  if (opts.identity) {
    const id = opts.identity;
    const payload = signaturePayloadV3({
      deviceId: id.deviceId,
      clientId: client.id,
      clientMode: client.mode,
      role,
      scopes,
      signedAtMs: challengeTs,
      token: signedTokenField(opts.auth),
      nonce,
      platform: client.platform,
      deviceFamily: client.deviceFamily,
    });
    params.device = {
      id: id.deviceId,
      publicKey: id.publicKey,
      signature: sign(null, Buffer.from(payload, 'utf8'), id.privateKey).toString('base64url'),
      signedAt: challengeTs,
      nonce,
    };
  }
  return params;
}

/** Open a socket, answer the challenge, and resolve with the connection after hello-ok. */
export function connectGateway(opts: ConnectOptions): Promise<GatewayConnection> {
  return new Promise((resolve, reject) => {
    if (opts.owner !== undefined && opts.auth !== undefined) {
      return reject(new ConnectError('pass either owner or auth, not both: the owner credential is proven on its own', null, null, ''));
    }
    if (typeof opts.gatewayKey === 'string' && !normalizeGatewayKeyFingerprint(opts.gatewayKey)) {
      return reject(new ConnectError(`the gateway key "${opts.gatewayKey}" is not a SHA-256 fingerprint (64 hex digits)`, null, null, ''));
    }
    let pin: string | null = null;
    if (opts.tlsFingerprint !== undefined) {
      pin = normalizeFingerprint(opts.tlsFingerprint);
      if (!pin) return reject(new ConnectError(`the TLS fingerprint "${opts.tlsFingerprint}" is not a SHA-256 fingerprint (64 hex digits)`, null, null, ''));
      if (!opts.url.startsWith('wss://')) {
        // A pin promises an authenticated channel; quietly talking plaintext would break it.
        return reject(new TlsPinError(`a TLS fingerprint is pinned but ${opts.url} is not a wss:// URL; refusing to connect without TLS`, pin, null));
      }
    }
    // Asks for a signed challenge, like every clawgate client (the key is checked when one is expected).
    const ws = new WebSocket(requestGatewayProof(opts.url), {
      headers: opts.headers,
      perMessageDeflate: false,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      // With a pin, the fingerprint check below replaces CA verification (self-signed is the point).
      ...(pin ? { rejectUnauthorized: false } : {}),
    });
    let settled = false;
    let connectError: ErrorShape | null = null;
    const timer = setTimeout(
      () => done(new ConnectError('timed out waiting for hello-ok', null, null, '', { code: 'HANDSHAKE_TIMEOUT', url: opts.url })),
      opts.timeoutMs ?? 15_000,
    );
    const done = (v: GatewayConnection | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.off('message', onMessage);
      if (v instanceof Error) {
        if (ws.readyState === WebSocket.OPEN) ws.close();
        reject(v);
      } else resolve(v);
    };
    const onMessage = (data: Buffer) => {
      let frame: { type?: string; event?: string; payload?: { nonce: string; ts: number }; ok?: boolean; error?: ErrorShape };
      try {
        frame = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (frame.type === 'event' && frame.event === 'connect.challenge' && frame.payload) {
        // Who answered is checked before any frame goes out: a secret never reaches a stranger.
        const answer = answerFor(opts, frame.payload);
        if (answer instanceof GatewayIdentityError) {
          done(answer);
          ws.terminate();
          return;
        }
        const params = buildConnectParams({ ...opts, auth: answer.auth }, frame.payload.nonce, frame.payload.ts);
        ws.send(JSON.stringify({ type: 'req', id: 'connect', method: 'connect', params }));
      } else if (frame.type === 'res') {
        if (frame.ok) {
          const conn = new GatewayConnection(ws, frame.payload as unknown as HelloPayload);
          if (opts.onEvent) conn.onEvent(opts.onEvent);
          done(conn);
        } else connectError = frame.error ?? null;
      } else if (frame.type === 'event' && frame.event && opts.onEvent) {
        opts.onEvent(frame.event, frame.payload);
      }
    };
    ws.on('message', onMessage);
    if (pin) {
      const expected = pin;
      // 'upgrade' fires after the TLS handshake and before 'open': nothing has been sent but the
      // bare HTTP upgrade request, which carries no credential.
      ws.on('upgrade', (res) => {
        const mismatch = checkTlsPin(res, expected, opts.url);
        if (!mismatch) return;
        done(mismatch);
        ws.terminate();
      });
    }
    ws.on('error', (err) => {
      const code = (err as NodeJS.ErrnoException).code;
      const hint =
        code && CERT_ERROR_CODES.has(code)
          ? ' (the gateway certificate is not trusted by this machine: for a gateway serving its own self-signed certificate, pin its fingerprint: the setup code carries it, and `clawgate doctor` on the gateway host prints it for --tls-fingerprint)'
          : '';
      done(new ConnectError(`${String(err.message)}${hint}`, null, null, '', { code: code ?? 'SOCKET_ERROR', url: opts.url }));
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => done(new ConnectError(`HTTP ${res.statusCode}: ${body}`, null, res.statusCode ?? null, body)));
    });
    ws.on('close', (code, reason) => {
      const r = reason.toString();
      done(new ConnectError(connectError?.message ?? (r || `closed with ${code}`), connectError, code, r));
    });
  });
}
