/**
 * GatewayClient: one role's connection to one gateway, with its whole lifecycle.
 *
 * States (docs/client.md): idle → connecting → awaiting-approval(requestId) → connected(role,
 * scopes); any of them → paused(reason, nextStep) when only a person can unblock it, or back to
 * connecting (with jittered exponential backoff) when time can; closed is final.
 *
 * Every socket belongs to a generation. Starting a new attempt, reconnecting or closing bumps the
 * generation, and every callback of a socket (and every continuation after an await) checks that
 * its generation is still current before touching state — a replaced connection can never move
 * the state of its successor.
 */

import { requestGatewayProof } from '@clawgate/protocol/gateway-proof';
import { signaturePayloadV3 } from '@clawgate/protocol/signature';
import { type CredentialKind, cloneRecord, hasFallback, type ResolvedCredential, resolveCredential, resolveGivenSecret } from './credentials.js';
import { ClientError, CredentialStoreError, GatewayCallError, type WireError } from './errors.js';
import { flavorOfChallenge, type GatewayFlavor, gatewayHostCommands } from './gateway-flavor.js';
import { checkChallengeProof } from './gateway-key.js';
import type { CheckpointHook, CredentialStore, DeviceKey, GatewayRecord, Platform, Role, SocketLike } from './types.js';
import { isRecoverySafe, type NormalizedUrl, normalizeGatewayUrl } from './url.js';

export type PauseReason =
  | 'no-credential'
  | 'identity-unreadable'
  | 'pairing-required'
  | 'pairing-rejected'
  | 'device-token-rejected'
  | 'setup-code-unusable'
  | 'auth-rejected'
  | 'incompatible'
  | 'tls-untrusted'
  | 'gateway-key-mismatch'
  /** An HTTP 4xx answered the WebSocket upgrade (only with `upgradeRefusal: 'pause'`). */
  | 'upgrade-refused';

export type ClientState =
  | { status: 'idle' }
  | {
      status: 'connecting';
      /** Consecutive failed attempts so far (resets at hello-ok). */
      attempt: number;
      credential: CredentialKind | null;
      /** Set while waiting out a backoff delay. */
      retryAtMs?: number;
      /** The gateway's own `retryAfterMs` hint for this wait, when it gave one. */
      retryAfterMs?: number;
      lastError?: { code: string; message: string };
    }
  | {
      status: 'awaiting-approval';
      requestId: string | null;
      /** The six digits the approver sees next to the request (`device.pair.waiting`), to compare. */
      confirmationCode?: string;
      credential: CredentialKind;
      live: boolean;
    }
  | {
      status: 'connected';
      role: Role;
      scopes: string[];
      deviceId: string;
      authMethod: string;
      credential: CredentialKind;
      pendingRequestId?: string;
      /** Set when the tokens of hello-ok could not be stored (the session still works). */
      warning?: string;
    }
  | {
      status: 'paused';
      reason: PauseReason;
      code?: string;
      message: string;
      nextStep: string;
      requestId?: string;
      /** With `requestId` of a pending pairing: the digits the approver sees next to it. */
      confirmationCode?: string;
      /** With `gateway-key-mismatch`: the key the server did prove (64 hex), when it proved one. */
      gatewayKeySeen?: string;
    }
  | { status: 'closed' };

export interface BackoffOptions {
  /** First delay (default 1000 ms). */
  baseMs?: number;
  /** Ceiling (default 60 000 ms). */
  maxMs?: number;
  /** Relative spread around each delay, 0–1 (default 0.2 = ±20 %). */
  jitter?: number;
}

export interface ClientInfo {
  id: string;
  mode: string;
  version?: string;
  displayName?: string;
  deviceFamily?: string;
  /** Stable per-installation id (`client.instanceId`); not part of the signed metadata. */
  instanceId?: string;
}

export interface GatewayClientOptions {
  url: string;
  /**
   * More URLs of the same gateway (a setup code may carry several). An attempt that never
   * reached a server (refused, unreachable, timed out before the socket opened) moves the next
   * attempt on to the next URL, round robin. Credentials stay filed under `url`; every URL is
   * held to the same gateway-key and certificate pins.
   */
  alternateUrls?: string[];
  /**
   * A shared gateway secret (token or password) for this client's lifetime, never stored. It is
   * presented before the stored device token: a secret the person just passed wins. If the
   * gateway refuses it (`AUTH_TOKEN_MISMATCH` / `AUTH_PASSWORD_MISMATCH`) while this role holds a
   * device token, the client moves to the device token at once (state `connecting` with
   * `lastError.code` `SHARED_SECRET_REFUSED`) and keeps it; without one it pauses as usual.
   * A forced bootstrap (a setup code just applied) still goes first.
   */
  sharedSecret?: { token: string } | { password: string };
  /**
   * An HTTP 4xx answer to the WebSocket upgrade (other than 408 and 429), e.g. a proxy's 403
   * `proxy_attribution_required`: 'retry' (default) treats it like an unreachable gateway;
   * 'pause' stops with reason `upgrade-refused`, since an unchanged retry cannot succeed.
   * Seen by transports that can read the response (Node); browsers only see a failed socket.
   */
  upgradeRefusal?: 'retry' | 'pause';
  role?: Role;
  store: CredentialStore;
  platform: Platform;
  /** Operator scopes to request (default: the stored token's, else by credential kind). */
  scopes?: string[];
  client?: ClientInfo;
  caps?: string[];
  commands?: string[];
  /** Declare cap `device-pairing-wait`: a pending approval keeps the socket open (default true). */
  waitForApproval?: boolean;
  /** Present the bootstrap token on the first attempt even if other credentials exist. */
  forceBootstrap?: boolean;
  /**
   * Roles whose device tokens must all be durable before the bootstrap token is dropped, besides
   * the roles the hello-ok itself issued. An app running several roles on one identity names
   * them all, so a role whose token arrives later (on its own connection) still finds the code.
   */
  bootstrapRoles?: Role[];
  /** Default request timeout (30 s). */
  requestTimeoutMs?: number;
  /** Time from socket open to hello-ok (or to the approval wait) before retrying (15 s). */
  handshakeTimeoutMs?: number;
  /**
   * While awaiting approval on an open socket, this long without a frame or a ping from the
   * gateway (it pings every 25 s) counts as a dead path: the client reconnects (`lastError.code`
   * `APPROVAL_WAIT_SILENT`; the gateway keeps the pending request and its id). Default: no limit.
   */
  approvalSilenceMs?: number;
  backoff?: BackoffOptions;
  /** May a refused device token fall back to shared/bootstrap here? Default: wss or loopback. */
  recoverySafe?: (url: NormalizedUrl) => boolean;
  now?: () => number;
  random?: () => number;
  /** Crash-test hook (never set in production): called at named points of the hand-off. */
  checkpoint?: CheckpointHook;
  /**
   * Owner credentials are proven, never sent (PROTOCOL.md §Gateway identity and owner proof):
   * given the stored shared secret and this connection's challenge, return the `auth` that
   * proves it (`ownerProof` + `ownerAudience`), or null when the secret is a gateway token to
   * send as it is. The Control UI computes the proof with WebCrypto.
   */
  ownerProof?: (
    secret: string,
    challenge: { nonce: string; ts: number; gateway?: unknown },
    url: string,
  ) => Promise<{ ownerProof: string; ownerAudience: string } | null>;
  /**
   * The connect field that carries the stored shared secret: `token` (default, `auth.token`) or
   * `password` (`auth.password`, for gateways that use a password; the device signature then
   * covers no token, as for any password).
   */
  sharedSecretField?: 'token' | 'password';
  /**
   * The gateway key (64 hex) this client requires, overriding the record's pin: a challenge that
   * does not prove it pauses with `gateway-key-mismatch` and nothing is sent. `null`: a proven
   * key is required but none is known, so every connect pauses (naming, in `gatewayKeySeen`, the
   * key the server proved) — for callers that must not send a secret to an unknown server.
   * Undefined: the record's pin, else trust on first use.
   */
  gatewayKey?: string | null;
  /**
   * Connect without a device block: the credential alone authenticates (an owner proof, or the
   * shared secret of a local helper on the gateway host), so the session has no device identity,
   * is never paired and gets no device token; the record's key is not used. Operators only.
   */
  deviceless?: boolean;
}

export interface HelloOk {
  type: 'hello-ok';
  protocol: number;
  server: { version: string; connId: string; bootId?: string };
  features: { methods: string[]; events: string[] };
  auth: {
    role: string;
    scopes: string[];
    method: string;
    deviceToken?: string;
    issuedAtMs?: number;
    deviceTokens?: Array<{ deviceToken: string; role: string; scopes: string[]; issuedAtMs?: number }>;
    pendingRequestId?: string;
  };
  policy: { tickIntervalMs: number; maxPayload: number; maxBufferedBytes?: number };
}

interface Frame {
  type?: string;
  id?: string;
  ok?: boolean;
  payload?: unknown;
  error?: WireError;
  event?: string;
}

interface Pending {
  method: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

interface Attempt {
  gen: number;
  sock: SocketLike;
  record: GatewayRecord;
  cred: ResolvedCredential;
  connectId: string;
  /** hello-ok arrived (the socket is a session). */
  admitted: boolean;
  /** Outcome already decided; the close that follows carries no news. */
  finished: boolean;
  /** A connect was already sent on this socket (a repeated challenge is ignored). */
  challenged: boolean;
  /** What the socket reported before closing (`connect ECONNREFUSED …`): the close alone says only 1006. */
  socketError?: string;
  /** The URL this attempt dialled (`url` or one of `alternateUrls`). */
  url: string;
  /** The socket opened (a server answered the upgrade). */
  opened: boolean;
  /** The credential is the `sharedSecret` option, not the record's. */
  givenSecret: boolean;
  /** The role token this session stands on, once admitted (null if the client holds none). */
  sessionToken: string | null;
  /** Fingerprint of the gateway key this socket's challenge proved (null: it proved none). */
  provenGatewayKey: string | null;
}

/** A role token handed to this client after its session began (pushed or rotated in-band). */
interface AdoptedToken {
  deviceId: string;
  token: string;
  scopes: string[];
  issuedAtMs?: number;
}

const CLIENT_VERSION = '0.1.0';
/** Upgrade answers that pass with time even though they are 4xx. */
const TRANSIENT_HTTP = new Set([408, 429]);
const RESET_CLOSE = 4000;

/** Codes after which retrying changes nothing until a person acts. */
const NEEDS_PERSON: Record<string, PauseReason> = {
  AUTH_TOKEN_MISMATCH: 'auth-rejected',
  AUTH_TOKEN_NOT_CONFIGURED: 'auth-rejected',
  AUTH_TOKEN_MISSING: 'auth-rejected',
  AUTH_PASSWORD_MISSING: 'auth-rejected',
  AUTH_PASSWORD_MISMATCH: 'auth-rejected',
  AUTH_PASSWORD_NOT_CONFIGURED: 'auth-rejected',
  AUTH_REQUIRED: 'auth-rejected',
  AUTH_SCOPE_MISMATCH: 'auth-rejected',
  AUTH_OWNER_CREDENTIAL_SENT: 'auth-rejected',
  AUTH_OWNER_PROOF_INVALID: 'auth-rejected',
  AUTH_OWNER_AUDIENCE_MISMATCH: 'auth-rejected',
  DEVICE_IDENTITY_REQUIRED: 'auth-rejected',
  AUTH_BOOTSTRAP_TOKEN_INVALID: 'setup-code-unusable',
  AUTH_BOOTSTRAP_TOKEN_EXPIRED: 'setup-code-unusable',
  AUTH_BOOTSTRAP_TOKEN_USED: 'setup-code-unusable',
  AUTH_BOOTSTRAP_TOKEN_REVOKED: 'setup-code-unusable',
  PAIRING_REJECTED: 'pairing-rejected',
  AUTH_DEVICE_TOKEN_MISMATCH: 'device-token-rejected',
  PROTOCOL_MISMATCH: 'incompatible',
  INVALID_CONNECT_PARAMS: 'incompatible',
  INVALID_ROLE: 'incompatible',
  DEVICE_AUTH_DEVICE_ID_MISMATCH: 'incompatible',
  DEVICE_AUTH_SIGNATURE_EXPIRED: 'incompatible',
  DEVICE_AUTH_NONCE_REQUIRED: 'incompatible',
  DEVICE_AUTH_NONCE_MISMATCH: 'incompatible',
  DEVICE_AUTH_SIGNATURE_INVALID: 'incompatible',
  DEVICE_AUTH_PUBLIC_KEY_INVALID: 'incompatible',
};

function tlsNextStep(flavor: GatewayFlavor): string {
  const where = flavor === 'openclaw' ? 'on the gateway host' : '(`clawgate doctor` on the gateway host prints its fingerprint)';
  return `Check the gateway certificate ${where}. If it really changed, pair again with a fresh setup code (\`${gatewayHostCommands(flavor).mintCode()}\`), which carries the new fingerprint.`;
}

const GATEWAY_KEY_NEXT_STEP =
  'Nothing was sent. Check that the URL reaches your gateway (`clawgate qr` on the gateway host shows its key); a server squatting ' +
  "on that address, or a gateway whose state dir (and key) was replaced, looks like this. If the gateway's key really changed, pair again " +
  'with a fresh setup code from `clawgate qr`, which carries the new key.';

/** Refusals that pass with time. */
const TRANSIENT = new Set(['AUTH_RATE_LIMITED', 'INTERNAL_ERROR', 'SHUTTING_DOWN', 'HANDSHAKE_TIMEOUT']);

/** How to pair again, naming the setup-code command of the gateway that answered. */
function pairAgain(flavor: GatewayFlavor): string {
  const mint = flavor === 'openclaw' ? '`openclaw qr`' : '`clawgate qr` (add `--profile operator+node` for a node)';
  return (
    `Pair this device again: on the gateway host run ${mint}, then \`clawgate pair --code-file <file>\` here ` +
    '(or `client.setSharedToken`/`pairWithSetupCode` in the SDK).'
  );
}

export type EventListener = (event: string, payload: unknown) => void;
export type StateListener = (state: ClientState, previous: ClientState) => void;

export class GatewayClient {
  readonly role: Role;
  readonly target: NormalizedUrl;
  private readonly store: CredentialStore;
  private readonly platform: Platform;
  private readonly now: () => number;
  private readonly random: () => number;
  private currentState: ClientState = { status: 'idle' };
  /** Bumped by every attempt, reconnect and close; see the file comment. */
  private generation = 0;
  private attempt: Attempt | null = null;
  private failures = 0;
  /** One device-token-mismatch fallback per streak of failures (reset at hello-ok). */
  private recoveryUsed = false;
  private forceBootstrap: boolean;
  /** The software of the last gateway that challenged this client (clawgate until one did). */
  private flavor: GatewayFlavor = 'clawgate';
  private key: DeviceKey | null = null;
  private hello: HelloOk | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private handshakeTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setTimeout> | null = null;
  private nextRequestId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly stateListeners = new Set<StateListener>();
  private readonly eventListeners = new Map<string, Set<EventListener>>();
  /** The store write of an adopted (rotated) token; the next attempt waits for it before it loads. */
  private rotationWrite: Promise<void> | null = null;
  /**
   * An adopted token the store has not confirmed yet. The old token is already dead at the
   * gateway, so the next connect presents this one; its hello-ok stores it again.
   */
  private unsavedToken: AdoptedToken | null = null;
  /** The dialled URLs: `url` first, then `alternateUrls` (deduplicated). */
  private readonly urls: NormalizedUrl[];
  private urlIndex = 0;
  /** The gateway refused `sharedSecret` while a device token was stored: the device token is used from now on. */
  private givenSecretRefused = false;

  constructor(private readonly opts: GatewayClientOptions) {
    this.role = opts.role ?? 'operator';
    this.target = normalizeGatewayUrl(opts.url);
    this.store = opts.store;
    this.platform = opts.platform;
    this.now = opts.now ?? (() => Date.now());
    this.random = opts.random ?? Math.random;
    this.forceBootstrap = opts.forceBootstrap === true;
    this.urls = [this.target];
    for (const u of opts.alternateUrls ?? []) {
      const n = normalizeGatewayUrl(u);
      if (!this.urls.some((x) => x.url === n.url)) this.urls.push(n);
    }
  }

  /** The URL the current (or next) attempt dials. */
  get currentUrl(): string {
    return (this.urls[this.urlIndex % this.urls.length] as NormalizedUrl).url;
  }

  /** Whose commands the hints name: `openclaw` once a challenge came without clawgate's gateway proof. */
  get gatewayFlavor(): GatewayFlavor {
    return this.flavor;
  }

  get state(): ClientState {
    return this.currentState;
  }

  /** The current generation (tests and diagnostics). */
  get currentGeneration(): number {
    return this.generation;
  }

  /** hello-ok of the live session, or null. */
  get session(): HelloOk | null {
    return this.currentState.status === 'connected' ? this.hello : null;
  }

  onState(listener: StateListener): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Subscribe to a gateway event by name, or `*` for all. */
  on(event: string, listener: EventListener): () => void {
    let set = this.eventListeners.get(event);
    if (!set) this.eventListeners.set(event, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Start the lifecycle (idempotent). */
  start(): void {
    if (this.currentState.status === 'closed') throw new ClientError('CLIENT_CLOSED', 'this client was closed; create a new one');
    if (this.currentState.status !== 'idle') return;
    this.beginAttempt();
  }

  /** Start, then resolve once connected; reject with the pause (or close) that came first. */
  async connect(opts: { timeoutMs?: number } = {}): Promise<Extract<ClientState, { status: 'connected' }>> {
    this.start();
    const s = await this.waitFor((st) => st.status === 'connected' || st.status === 'paused' || st.status === 'closed', opts.timeoutMs).catch(() => {
      const now = this.currentState;
      const last = now.status === 'connecting' && now.lastError ? ` (last: ${now.lastError.message})` : '';
      const waiting = now.status === 'awaiting-approval' ? `: still awaiting approval of request ${now.requestId ?? '(unknown)'}` : '';
      throw new ClientError(
        'REQUEST_TIMEOUT',
        `not connected to ${this.target.url} within ${opts.timeoutMs} ms${waiting}${last}`,
        now.status === 'awaiting-approval' ? this.describeNextStep() : `Check that the gateway is running and reachable at ${this.target.url}.`,
      );
    });
    if (s.status === 'connected') return s;
    if (s.status === 'paused') throw new ClientError('CLIENT_PAUSED', s.message, s.nextStep, s.code ?? s.reason);
    throw new ClientError('CLIENT_CLOSED', 'client closed before it connected');
  }

  /** Resolve with the first state (current included) matching the predicate. */
  waitFor(predicate: (s: ClientState) => boolean, timeoutMs?: number): Promise<ClientState> {
    if (predicate(this.currentState)) return Promise.resolve(this.currentState);
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? null
          : setTimeout(() => {
              off();
              reject(new ClientError('REQUEST_TIMEOUT', `state did not change as expected within ${timeoutMs} ms (now ${this.currentState.status})`));
            }, timeoutMs);
      const off = this.onState((s) => {
        if (!predicate(s)) return;
        if (timer) clearTimeout(timer);
        off();
        resolve(s);
      });
    });
  }

  /** Drop the current socket and connect again now (user intent; clears a pause). */
  reconnect(): void {
    if (this.currentState.status === 'closed') throw new ClientError('CLIENT_CLOSED', 'this client was closed; create a new one');
    this.failures = 0;
    this.recoveryUsed = false;
    this.beginAttempt();
  }

  /** Leave a paused state after the person acted (alias of reconnect). */
  resume(): void {
    this.reconnect();
  }

  /** Close for good: the socket, timers and pending requests. */
  close(): void {
    if (this.currentState.status === 'closed') return;
    this.generation++;
    this.teardown(1000, 'client closed');
    this.failPending(new ClientError('CLIENT_CLOSED', 'client closed'));
    this.setState({ status: 'closed' });
  }

  /** Call a gateway method on the live session. Gateway refusals reject with GatewayCallError. */
  request<T = unknown>(method: string, params?: unknown, opts: { timeoutMs?: number } = {}): Promise<T> {
    const a = this.attempt;
    if (this.currentState.status !== 'connected' || !a?.admitted) {
      const closed = this.currentState.status === 'closed';
      return Promise.reject(
        new ClientError(
          closed ? 'CLIENT_CLOSED' : 'NOT_CONNECTED',
          `cannot call ${method}: the client is ${this.currentState.status}`,
          this.describeNextStep(),
        ),
      );
    }
    const id = `r${this.nextRequestId++}`;
    const timeoutMs = opts.timeoutMs ?? this.opts.requestTimeoutMs ?? 30_000;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.pending.delete(id)) return;
        // Tell the gateway to stop working on it; the answer, if any, is dropped.
        this.send(a, { type: 'cancel', id });
        reject(new ClientError('REQUEST_TIMEOUT', `${method} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, timer });
      this.send(a, { type: 'req', id, method, ...(params === undefined ? {} : { params }) });
    });
  }

  // --- lifecycle ------------------------------------------------------------------------------

  private setState(next: ClientState): void {
    const prev = this.currentState;
    this.currentState = next;
    for (const l of [...this.stateListeners]) {
      try {
        l(next, prev);
      } catch {
        // A listener's bug must not break the lifecycle.
      }
    }
  }

  private isCurrent(gen: number): boolean {
    return gen === this.generation && this.currentState.status !== 'closed';
  }

  private describeNextStep(): string {
    const s = this.currentState;
    if (s.status === 'paused') return s.nextStep;
    if (s.status === 'awaiting-approval')
      return `Approve request ${s.requestId ?? '(unknown)'} on the gateway (\`${gatewayHostCommands(this.flavor).approveDevice(s.requestId ?? '<id>')}\`).`;
    return 'Wait until the client is connected (see client.state).';
  }

  private clearTimers(): void {
    for (const t of [this.retryTimer, this.handshakeTimer, this.watchdog]) if (t) clearTimeout(t);
    this.retryTimer = this.handshakeTimer = this.watchdog = null;
  }

  private teardown(code: number, reason: string): void {
    this.clearTimers();
    const a = this.attempt;
    this.attempt = null;
    this.hello = null;
    if (a) {
      a.finished = true;
      try {
        a.sock.close(code, reason);
      } catch {
        // Already closed.
      }
    }
  }

  private failPending(err: Error): void {
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }

  private beginAttempt(): void {
    const gen = ++this.generation;
    this.teardown(RESET_CLOSE, 'reconnecting');
    this.failPending(new ClientError('CONNECTION_LOST', 'the connection was replaced'));
    this.setState({ status: 'connecting', attempt: this.failures, credential: null });
    this.run(gen).catch((err: unknown) => {
      if (!this.isCurrent(gen)) return;
      if (err instanceof CredentialStoreError) return this.pause(gen, 'identity-unreadable', err.message, err.nextStep ?? pairAgain(this.flavor));
      // Unexpected (a bug or a broken platform): retry later rather than die silently.
      this.scheduleRetry(gen, { code: 'CLIENT_INTERNAL', message: String((err as Error)?.message ?? err) });
    });
  }

  private pause(
    gen: number,
    reason: PauseReason,
    message: string,
    nextStep: string,
    extra: { code?: string; requestId?: string; confirmationCode?: string; gatewayKeySeen?: string } = {},
  ): void {
    if (!this.isCurrent(gen)) return;
    this.generation++;
    this.teardown(1000, 'paused');
    this.failPending(new ClientError('CONNECTION_LOST', message));
    this.setState({ status: 'paused', reason, message, nextStep, ...extra });
  }

  private backoffDelayMs(failures: number): number {
    const b = this.opts.backoff ?? {};
    const base = b.baseMs ?? 1000;
    const max = b.maxMs ?? 60_000;
    const jitter = Math.min(Math.max(b.jitter ?? 0.2, 0), 1);
    const raw = Math.min(max, base * 2 ** Math.min(failures, 30));
    return Math.max(0, Math.round(raw * (1 - jitter + 2 * jitter * this.random())));
  }

  private scheduleRetry(gen: number, lastError: { code: string; message: string }, retryAfterMs?: number, exactDelayMs?: number): void {
    if (!this.isCurrent(gen)) return;
    // The failed attempt is over now, not when the timer fires: anything it still has in flight
    // (a hello-ok being persisted, a signature being computed) must not revive it.
    const waitGen = ++this.generation;
    const credential = this.attempt?.cred.kind ?? null;
    this.teardown(RESET_CLOSE, 'retrying');
    this.failPending(new ClientError('CONNECTION_LOST', lastError.message));
    const delay = exactDelayMs ?? Math.max(retryAfterMs ?? 0, this.backoffDelayMs(this.failures));
    this.failures++;
    this.setState({
      status: 'connecting',
      attempt: this.failures,
      credential,
      retryAtMs: this.now() + delay,
      ...(retryAfterMs !== undefined && exactDelayMs === undefined ? { retryAfterMs } : {}),
      lastError,
    });
    this.retryTimer = setTimeout(() => {
      if (this.isCurrent(waitGen)) this.beginAttempt();
    }, delay);
  }

  private async run(gen: number): Promise<void> {
    // A rotated token being written must be durable (or have failed) before we read the record.
    if (this.rotationWrite) await this.rotationWrite;
    if (!this.isCurrent(gen)) return;
    const record = await this.store.load(this.target.key);
    if (!this.isCurrent(gen)) return;
    if (!record) {
      return this.pause(gen, 'no-credential', `no stored credentials for ${this.target.url}`, pairAgain(this.flavor));
    }
    const given =
      this.opts.sharedSecret && !this.givenSecretRefused && !(this.forceBootstrap && record.bootstrap)
        ? resolveGivenSecret(this.opts.sharedSecret, this.role, this.opts.scopes)
        : null;
    const cred = given ?? resolveCredential(this.withUnsavedToken(record), this.role, { forceBootstrap: this.forceBootstrap, scopes: this.opts.scopes });
    // The forced bootstrap is for the connect right after a setup code, not for every retry.
    this.forceBootstrap = false;
    if (!cred) {
      return this.pause(
        gen,
        'no-credential',
        `no ${this.role} credential for ${this.target.url}: no ${this.role} device token, shared token or setup code is stored`,
        pairAgain(this.flavor),
      );
    }
    if (!this.opts.deviceless && (!this.key || this.key.deviceId !== record.deviceId)) {
      let key: DeviceKey;
      try {
        key = await this.platform.crypto.restore(record.identity);
      } catch (err) {
        throw new CredentialStoreError(`the stored device key for ${this.target.url} is unusable: ${(err as Error).message}`);
      }
      if (key.deviceId !== record.deviceId)
        throw new CredentialStoreError(`the stored device key for ${this.target.url} does not match device ${record.deviceId}`);
      if (!this.isCurrent(gen)) return;
      this.key = key;
    }
    const pin = record.tlsFingerprint;
    const dial = this.urls[this.urlIndex % this.urls.length] as NormalizedUrl;
    if (pin && !dial.secure) {
      // A pin promises an authenticated channel; quietly talking plaintext would break it.
      return this.pause(gen, 'tls-untrusted', `a TLS certificate is pinned for this gateway but ${dial.url} is not a wss:// URL`, tlsNextStep(this.flavor));
    }
    this.setState({ status: 'connecting', attempt: this.failures, credential: cred.kind });
    const connectId = `connect-${gen}`;
    const attempt: Attempt = {
      gen,
      record,
      cred,
      connectId,
      admitted: false,
      finished: false,
      challenged: false,
      sessionToken: null,
      provenGatewayKey: null,
      url: dial.url,
      opened: false,
      givenSecret: given !== null,
      sock: null as unknown as SocketLike,
    };
    this.attempt = attempt;
    // Asks for a signed challenge: the gateway key is checked (and learned) from it.
    attempt.sock = this.platform.transport(
      requestGatewayProof(dial.url),
      {
        onOpen: () => {
          if (!this.isCurrent(gen) || attempt.finished) return;
          attempt.opened = true;
          this.handshakeTimer = setTimeout(() => {
            if (this.isCurrent(gen) && !attempt.admitted) this.scheduleRetry(gen, { code: 'HANDSHAKE_TIMEOUT', message: 'no hello-ok in time' });
          }, this.opts.handshakeTimeoutMs ?? 15_000);
        },
        onMessage: (text) => {
          if (!this.isCurrent(gen) || attempt.finished) return;
          this.onFrame(attempt, text);
        },
        onPing: () => {
          if (!this.isCurrent(gen) || attempt.finished) return;
          this.signOfLifeWhileWaiting(attempt);
        },
        onError: (message) => {
          // A close always follows and decides; its reason is empty when no gateway was reached, so the error says why.
          attempt.socketError = message;
        },
        onClose: (code, reason) => {
          if (!this.isCurrent(gen) || attempt.finished) return;
          this.onClose(attempt, code, reason);
        },
      },
      pin ? { tlsFingerprint: pin } : {},
    );
  }

  private send(a: Attempt, frame: unknown): void {
    try {
      a.sock.send(JSON.stringify(frame));
    } catch {
      // The close handler deals with a dead socket.
    }
  }

  private onFrame(a: Attempt, text: string): void {
    let frame: Frame;
    try {
      frame = JSON.parse(text) as Frame;
    } catch {
      return;
    }
    if (a.admitted) this.armWatchdog(a);
    else this.signOfLifeWhileWaiting(a);
    if (frame.type === 'event' && typeof frame.event === 'string') {
      if (!a.admitted) {
        if (frame.event === 'connect.challenge') this.guard(a, this.answerChallenge(a, frame.payload));
        else if (frame.event === 'device.pair.waiting') this.onWaiting(a, frame.payload);
        return;
      }
      if (frame.event === 'auth.updated') this.onAuthUpdated(a, frame.payload);
      if (frame.event === 'device.token.rotated') {
        this.onTokenPushed(a, frame.payload);
        // Listeners learn that it happened, never the secret (apps log `*` events).
        const { deviceToken: _secret, ...rest } = (frame.payload ?? {}) as Record<string, unknown>;
        this.emit(frame.event, rest);
        return;
      }
      this.emit(frame.event, frame.payload);
      return;
    }
    if (frame.type !== 'res' || typeof frame.id !== 'string') return;
    if (!a.admitted) {
      // Only the answer to this socket's own connect counts (an uncorrelated hello-ok is ignored).
      if (frame.id !== a.connectId) return;
      if (frame.ok) this.guard(a, this.onHello(a, frame.payload as HelloOk));
      else this.guard(a, this.onRefused(a, frame.error ?? { code: 'UNAVAILABLE', message: 'connect refused without an error' }));
      return;
    }
    const p = this.pending.get(frame.id);
    if (!p) return;
    this.pending.delete(frame.id);
    clearTimeout(p.timer);
    if (frame.ok) {
      if (p.method === 'device.token.rotate') this.onSelfRotated(a, frame.payload);
      p.resolve(frame.payload);
    } else p.reject(new GatewayCallError(p.method, frame.error ?? { code: 'UNAVAILABLE', message: 'request failed without an error' }));
  }

  /** Async steps of an attempt never reject into the void: a failure ends the attempt like any other. */
  private guard(a: Attempt, step: Promise<void>): void {
    step.catch((err: unknown) => {
      if (!this.isCurrent(a.gen)) return;
      if (err instanceof CredentialStoreError) {
        this.pause(a.gen, 'identity-unreadable', err.message, err.nextStep ?? pairAgain(this.flavor));
        return;
      }
      this.scheduleRetry(a.gen, { code: 'CLIENT_INTERNAL', message: String((err as Error)?.message ?? err) });
    });
  }

  private emit(event: string, payload: unknown): void {
    for (const name of [event, '*']) {
      for (const l of [...(this.eventListeners.get(name) ?? [])]) {
        try {
          l(event, payload);
        } catch {
          // A listener's bug must not break the lifecycle.
        }
      }
    }
  }

  private async answerChallenge(a: Attempt, payload: unknown): Promise<void> {
    const p = payload as { nonce?: unknown; ts?: unknown } | undefined;
    if (typeof p?.nonce !== 'string' || typeof p.ts !== 'number' || a.challenged) return;
    a.challenged = true;
    // Only the hints depend on this; the pin below decides trust.
    this.flavor = flavorOfChallenge(payload);
    // Before anything secret is even computed: is this the gateway the record is pinned to?
    const required = this.opts.gatewayKey;
    const pinned = required !== undefined ? required : (a.record.gatewayKey ?? null);
    const proof = await checkChallengeProof(this.platform.crypto, payload, pinned);
    if (!this.isCurrent(a.gen) || a.finished) return;
    if ((pinned !== null && !proof.ok) || required === null) {
      // Which key did answer (if any)? Only for the message: nothing is trusted from it.
      const seen = proof.ok ? proof : await checkChallengeProof(this.platform.crypto, payload, null);
      if (!this.isCurrent(a.gen) || a.finished) return;
      const seenKey = seen.ok ? { gatewayKeySeen: seen.fingerprint } : {};
      const why =
        pinned !== null
          ? `${(proof as { problem: string }).problem}; this device is pinned to gateway key ${pinned}`
          : seen.ok
            ? `it proved gateway key ${seen.fingerprint}, and no gateway key is known for it`
            : seen.problem;
      return this.pause(a.gen, 'gateway-key-mismatch', `refused to send credentials to ${this.target.url}: ${why}`, GATEWAY_KEY_NEXT_STEP, {
        code: 'GATEWAY_KEY_MISMATCH',
        ...seenKey,
      });
    }
    // Without a pin (shared-token records from before gateway keys), a proven key is learned at hello-ok.
    a.provenGatewayKey = proof.ok ? proof.fingerprint : null;
    const key = this.opts.deviceless ? null : (this.key as DeviceKey);
    const info = this.opts.client ?? (this.role === 'node' ? { id: 'node-host', mode: 'node' } : { id: 'cli', mode: 'cli' });
    const client: Record<string, string> = { id: info.id, mode: info.mode, version: info.version ?? CLIENT_VERSION, platform: this.platform.platformName };
    const displayName = info.displayName ?? a.record.displayName;
    if (displayName) client.displayName = displayName;
    if (info.deviceFamily) client.deviceFamily = info.deviceFamily;
    if (info.instanceId) client.instanceId = info.instanceId;
    // signedAt is the challenge's ts, not our clock: a skewed host must still verify.
    const signedAt = p.ts;
    const ownerProof =
      a.cred.kind === 'shared-token' && this.opts.ownerProof
        ? await this.opts.ownerProof(a.cred.secret, { ...p, nonce: p.nonce, ts: p.ts }, this.target.url)
        : null;
    const asPassword = a.cred.kind === 'shared-token' && !ownerProof && this.opts.sharedSecretField === 'password';
    const signature = await key?.sign(
      signaturePayloadV3({
        deviceId: key.deviceId,
        clientId: client.id!,
        clientMode: client.mode!,
        role: this.role,
        scopes: a.cred.scopes,
        signedAtMs: signedAt,
        // Neither an owner proof nor a password is a token: the signature covers none.
        token: ownerProof || asPassword || a.cred.kind === 'password' ? '' : a.cred.secret,
        nonce: p.nonce,
        platform: client.platform,
        deviceFamily: client.deviceFamily,
      }),
    );
    if (!this.isCurrent(a.gen) || a.finished) return;
    const caps = [...(this.opts.caps ?? [])];
    // Without a device there is nothing to approve, so nothing to wait for.
    if (key && this.opts.waitForApproval !== false && !caps.includes('device-pairing-wait')) caps.push('device-pairing-wait');
    const params: Record<string, unknown> = {
      minProtocol: this.role === 'node' ? 3 : 4,
      maxProtocol: 4,
      client,
      role: this.role,
      scopes: a.cred.scopes,
      caps,
      auth: ownerProof ?? (asPassword ? { password: a.cred.secret } : a.cred.auth),
    };
    if (key && signature) params.device = { id: key.deviceId, publicKey: key.publicKey, signature, signedAt, nonce: p.nonce };
    if (this.opts.commands) params.commands = this.opts.commands;
    this.send(a, { type: 'req', id: a.connectId, method: 'connect', params });
  }

  /** The approval wait has no deadline, only a check that the path is alive (approvalSilenceMs). */
  private signOfLifeWhileWaiting(a: Attempt): void {
    const silenceMs = this.opts.approvalSilenceMs;
    if (silenceMs === undefined || a.admitted || this.currentState.status !== 'awaiting-approval') return;
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      if (this.isCurrent(a.gen) && a === this.attempt && !a.admitted)
        this.scheduleRetry(a.gen, { code: 'APPROVAL_WAIT_SILENT', message: `no frame or ping from the gateway for ${silenceMs} ms while awaiting approval` });
    }, silenceMs);
  }

  private onWaiting(a: Attempt, payload: unknown): void {
    const p = payload as { requestId?: unknown; confirmationCode?: unknown } | undefined;
    // The approval can take as long as a person needs; the socket stays open meanwhile.
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.setState({
      status: 'awaiting-approval',
      requestId: typeof p?.requestId === 'string' ? p.requestId : null,
      ...(typeof p?.confirmationCode === 'string' ? { confirmationCode: p.confirmationCode } : {}),
      credential: a.cred.kind,
      live: true,
    });
    this.signOfLifeWhileWaiting(a);
  }

  private onAuthUpdated(a: Attempt, payload: unknown): void {
    const p = payload as { role?: string; scopes?: unknown } | undefined;
    const s = this.currentState;
    if (s.status !== 'connected' || !Array.isArray(p?.scopes)) return;
    const scopes = p.scopes.filter((x): x is string => typeof x === 'string');
    const { pendingRequestId: _dropped, ...rest } = s;
    this.setState({ ...rest, scopes });
    // Remember the widened scopes so the next connect asks for them.
    const role = this.role;
    const token = a.cred.kind === 'device-token' ? a.cred.secret : (this.hello?.auth.deviceToken ?? null);
    if (token) {
      void this.store
        .update(this.target.key, (r) => {
          const t = r?.tokens[role];
          if (!r || !t || t.token !== token) return r;
          const next = cloneRecord(r);
          next.tokens[role] = { ...t, scopes };
          return next;
        })
        .catch(() => undefined);
    }
  }

  /** `device.token.rotated`: another party rotated this device's token for this role (PROTOCOL §11.1). */
  private onTokenPushed(a: Attempt, payload: unknown): void {
    const p = (payload ?? {}) as Record<string, unknown>;
    if (p.deviceId !== a.record.deviceId || p.role !== this.role || typeof p.deviceToken !== 'string' || p.deviceToken.length === 0) return;
    this.adoptToken(a, p.deviceToken, p.scopes, p.issuedAtMs);
  }

  /** The answer to this device rotating its own token carries the successor (`tokenDelivery: "in-band"`). */
  private onSelfRotated(a: Attempt, payload: unknown): void {
    const p = (payload ?? {}) as Record<string, unknown>;
    if (p.tokenDelivery !== 'in-band' || p.deviceId !== a.record.deviceId || p.role !== this.role) return;
    if (typeof p.token !== 'string' || p.token.length === 0) return;
    this.adoptToken(a, p.token, p.scopes, p.rotatedAtMs);
  }

  /**
   * Make a token handed to the live session the role's stored token. The gateway has already
   * retired the old one and closes this socket (4001) right after, so the write starts now and
   * the reconnect waits for it (run()). Only the current generation's session may adopt: a
   * replaced socket's frames never get here (onMessage), and the write itself replaces only the
   * token this session stood on — a newer token stored meanwhile (another hello-ok, a re-pair)
   * is never overwritten by an older rotation.
   */
  private adoptToken(a: Attempt, token: string, scopesIn: unknown, issuedAtMsIn: unknown): void {
    if (!this.isCurrent(a.gen) || !a.admitted) return;
    const role = this.role;
    const deviceId = a.record.deviceId;
    const scopes = Array.isArray(scopesIn)
      ? scopesIn.filter((x): x is string => typeof x === 'string')
      : ((this.currentState as { scopes?: string[] }).scopes ?? []);
    const issuedAtMs = typeof issuedAtMsIn === 'number' && issuedAtMsIn > 0 ? issuedAtMsIn : undefined;
    const adopted: AdoptedToken = { deviceId, token, scopes, ...(issuedAtMs ? { issuedAtMs } : {}) };
    const expected = a.sessionToken;
    this.unsavedToken = adopted;
    const key = this.target.key;
    const prev = this.rotationWrite ?? Promise.resolve();
    const write = prev.then(async () => {
      let superseded = false;
      try {
        await this.store.update(
          key,
          (r) => {
            const have = r?.tokens[role]?.token ?? null;
            if (r && have === token) return r;
            if (!r || r.deviceId !== deviceId || have !== expected) {
              superseded = true;
              return r;
            }
            const next = cloneRecord(r);
            next.tokens[role] = { token, scopes, storedAtMs: this.now(), ...(issuedAtMs ? { issuedAtMs } : {}) };
            return next;
          },
          { label: 'token-rotated' },
        );
        const back = await this.store.load(key);
        if (superseded || back?.tokens[role]?.token === token) {
          if (this.unsavedToken === adopted) this.unsavedToken = null;
        }
      } catch {
        // Kept in memory: the reconnect presents it and its hello-ok stores it (persistHello).
      }
    });
    this.rotationWrite = write;
    void write.then(() => {
      if (this.rotationWrite === write) this.rotationWrite = null;
    });
  }

  /** The record as the next connect should see it: with an adopted token the store has not confirmed. */
  private withUnsavedToken(record: GatewayRecord): GatewayRecord {
    const u = this.unsavedToken;
    if (!u || u.deviceId !== record.deviceId || record.tokens[this.role]?.token === u.token) return record;
    const next = cloneRecord(record);
    next.tokens[this.role] = { token: u.token, scopes: u.scopes, storedAtMs: this.now(), ...(u.issuedAtMs ? { issuedAtMs: u.issuedAtMs } : {}) };
    return next;
  }

  private armWatchdog(a: Attempt): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    const tickMs = this.hello?.policy.tickIntervalMs;
    if (!tickMs || tickMs <= 0) return;
    // More than two ticks of silence: the peer is gone even if TCP has not noticed.
    this.watchdog = setTimeout(() => {
      if (this.isCurrent(a.gen) && a === this.attempt)
        this.scheduleRetry(a.gen, { code: 'TICK_TIMEOUT', message: 'no traffic for more than two tick intervals' });
    }, tickMs * 2.5);
  }

  private async checkpoint(name: Parameters<CheckpointHook>[0]): Promise<void> {
    if (this.opts.checkpoint) await this.opts.checkpoint(name);
  }

  private async onHello(a: Attempt, hello: HelloOk): Promise<void> {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    a.admitted = true;
    await this.checkpoint('hello-received');
    if (!this.isCurrent(a.gen)) return;
    let warning: string | undefined;
    try {
      await this.persistHello(a, hello);
    } catch (err) {
      // The session is valid either way; the bootstrap token stays as the recovery path.
      warning = `could not store the device tokens: ${(err as Error).message}`;
    }
    if (!this.isCurrent(a.gen)) return;
    a.sessionToken =
      a.cred.kind === 'device-token'
        ? a.cred.secret
        : hello.auth.role === this.role && typeof hello.auth.deviceToken === 'string'
          ? hello.auth.deviceToken
          : (hello.auth.deviceTokens?.find((t) => t.role === this.role)?.deviceToken ?? a.record.tokens[this.role]?.token ?? null);
    this.hello = hello;
    this.failures = 0;
    this.recoveryUsed = false;
    this.armWatchdog(a);
    const state: ClientState = {
      status: 'connected',
      role: hello.auth.role as Role,
      scopes: [...hello.auth.scopes],
      deviceId: a.record.deviceId,
      authMethod: hello.auth.method,
      credential: a.cred.kind,
    };
    if (hello.auth.pendingRequestId) state.pendingRequestId = hello.auth.pendingRequestId;
    if (warning) state.warning = warning;
    this.setState(state);
  }

  /**
   * Store every role token of hello-ok in one durable write, read them back, and only then drop
   * the bootstrap token. A crash anywhere in between leaves either the bootstrap token (which
   * the same key may redeem again for fresh tokens) or durable device tokens — never neither.
   */
  private async persistHello(a: Attempt, hello: HelloOk): Promise<void> {
    const issued: Array<{ role: Role; token: string; scopes: string[]; issuedAtMs?: number }> = [];
    const connectedRole = hello.auth.role === 'node' ? 'node' : 'operator';
    if (typeof hello.auth.deviceToken === 'string') {
      issued.push({ role: connectedRole, token: hello.auth.deviceToken, scopes: [...hello.auth.scopes], issuedAtMs: hello.auth.issuedAtMs });
    }
    for (const e of hello.auth.deviceTokens ?? []) {
      if ((e.role !== 'operator' && e.role !== 'node') || typeof e.deviceToken !== 'string') continue;
      if (issued.some((t) => t.role === e.role)) continue;
      issued.push({ role: e.role, token: e.deviceToken, scopes: Array.isArray(e.scopes) ? [...e.scopes] : [], issuedAtMs: e.issuedAtMs });
    }
    const key = this.target.key;
    const nowMs = this.now();
    const same = (r: GatewayRecord | null) =>
      r !== null &&
      issued.every((t) => {
        const have = r.tokens[t.role];
        return have?.token === t.token && have.scopes.join(',') === t.scopes.join(',');
      });
    // Trust on first use for a record that knew no gateway key: the key that proved itself on the
    // connect that was just admitted is pinned, so every later connect is checked against it.
    const learnKey = a.provenGatewayKey !== null && !a.record.gatewayKey ? a.provenGatewayKey : null;
    const newTokens = issued.length > 0 && !same(a.record);
    if (newTokens || learnKey) {
      await this.store.update(
        key,
        (r) => {
          if (!r || r.deviceId !== a.record.deviceId) return r; // removed or re-keyed meanwhile: never write into another identity
          const next = cloneRecord(r);
          for (const t of issued)
            next.tokens[t.role] = { token: t.token, scopes: t.scopes, storedAtMs: nowMs, ...(t.issuedAtMs ? { issuedAtMs: t.issuedAtMs } : {}) };
          if (learnKey && !next.gatewayKey) next.gatewayKey = learnKey;
          next.lastConnectedAtMs = nowMs;
          return next;
        },
        { label: newTokens ? 'tokens' : 'gateway-key' },
      );
      if (newTokens) await this.checkpoint('tokens-stored');
    }
    const back = await this.store.load(key);
    // This hello-ok's token for the role is durable now: it supersedes an adopted token that failed
    // to store (that one was presented and echoed back, or a re-pair replaced it).
    const mine = issued.find((t) => t.role === this.role);
    if (mine && back?.tokens[this.role]?.token === mine.token) this.unsavedToken = null;
    if (!back?.bootstrap) return;
    const durable = issued.every((t) => back.tokens[t.role]?.token === t.token) && (this.opts.bootstrapRoles ?? []).every((r) => !!back.tokens[r]);
    if (!durable) return;
    if (a.cred.kind === 'bootstrap-token') {
      if (issued.length === 0) return; // admitted without tokens: keep the code as the way in
    } else if (a.cred.kind === 'device-token') {
      // A device token that came out of this code's hand-off now works: the hand-off is complete
      // (this finishes one a crash interrupted). A token older than the code proves nothing about it.
      const own = back.tokens[this.role];
      if (!own || own.token !== a.cred.secret || own.storedAtMs < back.bootstrap.setAtMs) return;
    } else return;
    const spent = back.bootstrap.token;
    await this.store.update(
      key,
      (r) => {
        if (!r || r.bootstrap?.token !== spent || !issued.every((t) => r.tokens[t.role]?.token === t.token)) return r;
        if (!(this.opts.bootstrapRoles ?? []).every((role) => !!r.tokens[role])) return r;
        const next = cloneRecord(r);
        delete next.bootstrap;
        return next;
      },
      { label: 'bootstrap-clear' },
    );
    await this.checkpoint('bootstrap-cleared');
  }

  private async onRefused(a: Attempt, error: WireError): Promise<void> {
    const gen = a.gen;
    a.finished = true;
    const err = new GatewayCallError('connect', error);
    const code = err.code;
    const details = err.details;
    const requestId = typeof details.requestId === 'string' ? details.requestId : undefined;
    const confirmationCode = typeof details.confirmationCode === 'string' ? details.confirmationCode : undefined;
    if (code === 'AUTH_DEVICE_TOKEN_MISMATCH' && a.cred.kind === 'device-token') {
      const safe = (this.opts.recoverySafe ?? isRecoverySafe)(this.target);
      if (!this.recoveryUsed && hasFallback(a.record) && safe) {
        // One bounded retry: forget only this role's refused token and fall back to shared/bootstrap.
        this.recoveryUsed = true;
        const refused = a.cred.secret;
        const role = this.role;
        await this.store.update(
          this.target.key,
          (r) => {
            if (!r || r.tokens[role]?.token !== refused) return r;
            const next = cloneRecord(r);
            delete next.tokens[role];
            return next;
          },
          { label: 'token-clear' },
        );
        if (this.isCurrent(gen)) this.beginAttempt();
        return;
      }
      const why = !hasFallback(a.record)
        ? 'and no shared token or setup code is stored to fall back to'
        : !safe
          ? 'and falling back over an unencrypted remote connection is not safe'
          : 'again after one fallback attempt';
      return this.pause(
        gen,
        'device-token-rejected',
        `the gateway refused this device's ${this.role} token (revoked, rotated or removed) ${why}`,
        pairAgain(this.flavor),
        {
          code,
        },
      );
    }
    if (code === 'PAIRING_REQUIRED' || code === 'NOT_PAIRED') {
      // Without the live wait the gateway closes; approval takes effect on a fresh socket.
      const nextStep =
        err.nextStep ??
        `Approve request ${requestId ?? ''} on the gateway (\`${gatewayHostCommands(this.flavor).approveDevice(requestId ?? '<id>')}\`), then call resume().`;
      return this.pause(gen, 'pairing-required', err.message, nextStep, {
        code,
        ...(requestId ? { requestId } : {}),
        ...(confirmationCode ? { confirmationCode } : {}),
      });
    }
    if ((code === 'AUTH_TOKEN_MISMATCH' || code === 'AUTH_PASSWORD_MISMATCH') && a.givenSecret && a.record.tokens[this.role]) {
      // The gateway secret changed, but this device is paired: its own token still opens the door.
      this.givenSecretRefused = true;
      const what = a.cred.kind === 'password' ? 'password' : 'token';
      return this.scheduleRetry(
        gen,
        {
          code: 'SHARED_SECRET_REFUSED',
          message: `the gateway refused the given ${what} (${err.message}); connecting with the stored ${this.role} device token`,
        },
        undefined,
        0,
      );
    }
    const personReason = NEEDS_PERSON[code];
    if (
      personReason === 'setup-code-unusable' &&
      a.cred.kind === 'bootstrap-token' &&
      (code !== 'AUTH_BOOTSTRAP_TOKEN_INVALID' || details.reason === 'invalid')
    ) {
      // The gateway says this code can never work again (used, expired, revoked or unknown):
      // forget it, so it neither blocks the hand-off bookkeeping nor is retried. A code that is
      // only wrong for this role (role-not-in-profile) is kept for the right role.
      const dead = a.cred.secret;
      await this.store.update(
        this.target.key,
        (r) => {
          if (!r || r.bootstrap?.token !== dead) return r;
          const next = cloneRecord(r);
          delete next.bootstrap;
          return next;
        },
        { label: 'bootstrap-drop' },
      );
    }
    if (personReason) {
      let nextStep = err.nextStep ?? pairAgain(this.flavor);
      if (personReason === 'setup-code-unusable' && !a.record.tokens[this.role]) nextStep = `${nextStep} ${pairAgain(this.flavor)}`;
      return this.pause(gen, personReason, err.message, nextStep, { code });
    }
    if (details.pauseReconnect === true && !err.retryable) {
      // The gateway's own hint: reconnecting will not help until someone acts.
      return this.pause(gen, 'auth-rejected', err.message, err.nextStep ?? pairAgain(this.flavor), { code, ...(requestId ? { requestId } : {}) });
    }
    if (code === 'AUTH_RATE_LIMITED' || err.retryable || TRANSIENT.has(code) || err.wireCode === 'UNAVAILABLE') {
      // Rate limits, restarts, internal errors: time fixes these (never sooner than the gateway asks).
      return this.scheduleRetry(gen, { code, message: err.message }, err.retryAfterMs);
    }
    // Anything else is not known to pass by itself: stop rather than loop.
    return this.pause(gen, 'auth-rejected', err.message, err.nextStep ?? pairAgain(this.flavor), { code });
  }

  private onClose(a: Attempt, code: number, reason: string): void {
    const gen = a.gen;
    a.finished = true;
    if (this.currentState.status === 'awaiting-approval' && /pairing rejected/i.test(reason)) {
      this.pause(gen, 'pairing-rejected', 'the pairing request was rejected on the gateway', 'Ask the gateway operator, then pair again.', {
        code: 'PAIRING_REJECTED',
      });
      return;
    }
    if (code === 1015 && reason.startsWith('TLS_')) {
      this.pause(gen, 'tls-untrusted', reason.slice(reason.indexOf(':') + 1).trim(), tlsNextStep(this.flavor), { code: reason.slice(0, reason.indexOf(':')) });
      return;
    }
    const http = /^HTTP_(\d{3}):/.exec(reason);
    const status = http ? Number(http[1]) : 0;
    if (http && status >= 400 && status < 500 && !TRANSIENT_HTTP.has(status) && this.opts.upgradeRefusal === 'pause') {
      this.pause(
        gen,
        'upgrade-refused',
        `the gateway refused the WebSocket upgrade at ${a.url}: ${reason.slice(reason.indexOf(':') + 1).trim()}`,
        `Something in front of the gateway (or the gateway itself) answered HTTP ${status} before the WebSocket opened; retrying unchanged cannot help. ` +
          'Check the URL, and the proxy or the gateway’s trusted-proxy settings.',
        { code: `HTTP_${status}` },
      );
      return;
    }
    // Nothing answered the upgrade at this URL: the next attempt tries the next one.
    if (!a.opened && !http && this.urls.length > 1) this.urlIndex++;
    const lastError = { code: http ? `HTTP_${status}` : `CLOSE_${code}`, message: reason || a.socketError || `socket closed (${code})` };
    if (a.admitted && code === 4001) {
      // The device's authority changed (rotated/revoked/removed): find out at once what is left.
      this.failures = 0;
      this.scheduleRetry(gen, lastError, undefined, 0);
      return;
    }
    this.scheduleRetry(gen, lastError);
  }
}
