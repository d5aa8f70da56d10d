/**
 * The gateway core: handshake, sessions, dispatch, events and live authority. It never sees a
 * socket: the server hands it text frames and a SessionTransport, so everything here runs the
 * same under a unit test, the real server, or (later) another instance's event bus.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { CLOSE, closeReason, type DetailCode, GatewayError } from '../protocol/errors.js';
import {
  type ChallengePayload,
  CLIENT_IDS,
  type ConnectParams,
  ConnectParamsSchema,
  type HelloAuth,
  type HelloOk,
  MAX_BUFFERED_BYTES,
  MIN_NODE_PROTOCOL,
  MIN_PROBE_PROTOCOL,
  PROTOCOL_VERSION,
  RequestFrameSchema,
  type ResponseFrame,
  ROLES,
  type Role,
} from '../protocol/frames.js';
import { audienceOf, ownerProofPayload } from '../protocol/gateway-proof.js';
import { ALL_OPERATOR_SCOPES, normalizeScopes, PAIRING, READ, scopeSatisfied } from '../protocol/scopes.js';
import { cleanOptional, cleanText } from '../protocol/text.js';
import { storeFault } from '../store/faults.js';
import type { GrantRecord, PairingRequest, PruneCounts, SetupCodeRecord, Store, TokenRecord } from '../store/types.js';
import { type Credential, type Decision, decideConnect } from './admission.js';
import type { ApprovalDecision, ApprovalProofs, ApprovalRequest } from './approval-policy.js';
import { ApprovalEngine, approvalRequestOf, RulePrincipal, type SshProbe } from './approvals.js';
import type { CloseWhy, ClusterBus, ClusterEvent } from './cluster.js';
import { ClusterNodeRouter } from './cluster-nodes.js';
import type { GatewayConfig, RetentionPolicy } from './config.js';
import { confirmationCode } from './confirmation.js';
import { consumeDashboardLink, isDashboardLinkToken } from './dashboard-link.js';
import { approveHint, type CallIds, type DispatchLog, MethodTable } from './dispatch.js';
import type { Clock, Random } from './env.js';
import type { GatewayIdentity } from './gateway-identity.js';
import { approvalTerms, effectiveGrant } from './grant-expiry.js';
import { type VerifiedDevice, verifyDeviceProof } from './identity.js';
import { type GatewayMetrics, noMetrics } from './metrics.js';
import { NodeRegistry } from './nodes.js';
import { DEFAULT_PRESENCE_WINDOW_MS, type PresenceChange, PresenceCoalescer, type PresenceEvent } from './presence.js';
import { type ClientDescription, frameCapBytes, type Principal, SessionPrincipal, type SessionTransport } from './principal.js';
import { type AuthLimiter, type CredentialKind, FailureLimiter } from './ratelimit.js';
import { pruneRetained, retentionPolicy } from './retention.js';
import { claimRotationGrace, claimUnpickedSuccessor, recordRotationGrace } from './rotation-grace.js';
import { deviceTokenKey, type MintedToken, mintToken, parseToken, SharedSecret, secretMatchesHash } from './secrets.js';
import { roleRefusalDetails, SETUP_REPEAT_GRACE_MS, setupRefusal, verifyBootstrapToken } from './setup-codes.js';

export const GATEWAY_VERSION = '0.1.0';

export interface Logger extends DispatchLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

export interface GatewayDeps {
  store: Store;
  config: GatewayConfig;
  clock: Clock;
  random: Random;
  log: Logger;
  /** Several instances on one store: live effects travel to the others. */
  bus?: ClusterBus | undefined;
  /** Failure budget for wrong credentials; in memory unless a shared one is given. */
  limiter?: AuthLimiter | undefined;
  /** The gateway's signing identity (PROTOCOL.md §Gateway identity). */
  identity?: GatewayIdentity | undefined;
  /** Operator-facing counters and latencies (docs/operations.md); none by default. */
  metrics?: GatewayMetrics | undefined;
  /** Runs the SSH identity check of approval policies (src/server/ssh-probe.ts); none: `ssh` rules never hold. */
  sshProbe?: SshProbe | undefined;
}

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

/** Pairing events go only to holders of operator.pairing (admin passes). */
export const EVENT_SCOPES: Record<string, string | null> = {
  tick: null,
  health: null,
  shutdown: null,
  'device.presence': READ,
  'device.pair.requested': PAIRING,
  'device.pair.resolved': PAIRING,
  'device.pair.changed': PAIRING,
  'device.pair.setup.completed': PAIRING,
  'auth.updated': null,
  // nodes
  'node.pair.requested': PAIRING,
  'node.pair.resolved': PAIRING,
  'node.event': READ,
  // token rotation (issues 5/9): sent only to the rotated device's own sessions of that role, never broadcast
  'device.token.rotated': null,
  // automations: sent only to subscribers of the session (sessions.subscribe)
  chat: READ,
};

/** Events every instance's operators must see, whichever instance caused them. */
const CLUSTER_EVENTS = new Set([
  'device.pair.requested',
  'device.pair.resolved',
  'device.pair.changed',
  'device.pair.setup.completed',
  'node.pair.requested',
  'node.pair.resolved',
  // presence: each instance announces its own sessions' changes (one event per window, src/core/presence.ts)
  'device.presence',
  'node.event',
]);

/** How often an instance in a cluster re-checks its waiting connects against the store. */
export const WAITER_RECONCILE_MS = 1_000;

const checkRequest = TypeCompiler.Compile(RequestFrameSchema);
const checkConnect = TypeCompiler.Compile(ConnectParamsSchema);
const CLIENT_ID_SET = new Set<string>(CLIENT_IDS);

const PAIRING_MESSAGES: Record<string, string> = {
  'new-device': 'device is not approved yet',
  'role-upgrade': 'device is asking for a higher role than currently approved',
  'scope-upgrade': 'device is asking for more scopes than currently approved',
};

interface Waiter {
  requestId: string;
  deviceId: string;
  role: Role;
  scopes: readonly string[];
  finish(outcome: ConnectOutcome): void;
  admit(): Promise<ConnectOutcome>;
  /** The id of the connect request, for the answer when admission fails. */
  connectId: string;
}

export class Gateway {
  readonly store: Store;
  readonly config: GatewayConfig;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly methods: MethodTable;
  readonly limiter: AuthLimiter;
  readonly bus: ClusterBus | null;
  /** node.invoke to nodes held by other instances (null with a single instance). */
  readonly cluster: ClusterNodeRouter | null;
  readonly bootId: string;
  readonly startedAtMs: number;
  /** The gateway's own signing identity (absent only for gateways built without a state dir). */
  readonly identity: GatewayIdentity | null;
  readonly metrics: GatewayMetrics;
  readonly retention: RetentionPolicy;
  readonly sessions = new Map<string, SessionPrincipal>();
  /** Live node connections, surfaces and node.invoke routing. */
  readonly nodes: NodeRegistry;
  /** Approval policies, their proofs, and the expiry of time-bound grants. */
  readonly approvals: ApprovalEngine;
  private readonly byDevice = new Map<string, Set<SessionPrincipal>>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly sharedToken: SharedSecret | null;
  private readonly sharedPassword: SharedSecret | null;
  private readonly owner: SharedSecret | null;
  /** The owner credential as the HMAC key of owner proofs (it is never compared as a bearer secret). */
  private readonly ownerKey: Buffer | null;
  /** audienceOf() every URL a client may dial to reach this gateway directly (set once listening). */
  private ownAudiences = new Set<string>();
  private seen = new Map<string, { deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>();
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  /** Device connects/disconnects, sent to operators as one `device.presence` event per window. */
  private readonly presence: PresenceCoalescer;
  /** Work that must finish before the store closes (automations: scheduler, delivery worker). */
  private readonly stopHooks: Array<() => Promise<void>> = [];

  constructor(deps: GatewayDeps) {
    this.store = deps.store;
    this.config = deps.config;
    this.clock = deps.clock;
    this.random = deps.random;
    this.log = deps.log;
    this.methods = new MethodTable(deps.log);
    this.limiter = deps.limiter ?? new FailureLimiter(deps.clock, deps.config.rateLimit);
    this.bus = deps.bus ?? null;
    this.cluster = this.bus ? new ClusterNodeRouter(this, this.bus) : null;
    this.bus?.subscribe(
      (e) => this.applyClusterEvent(e),
      () => void this.resync(),
    );
    this.bootId = deps.random.uuid();
    this.identity = deps.identity ?? null;
    this.metrics = deps.metrics ?? noMetrics;
    this.retention = retentionPolicy(deps.config.retention);
    this.startedAtMs = deps.clock.now();
    this.sharedToken = deps.config.token ? new SharedSecret(deps.config.token) : null;
    this.sharedPassword = deps.config.password ? new SharedSecret(deps.config.password) : null;
    this.owner = deps.config.ownerCredential ? new SharedSecret(deps.config.ownerCredential) : null;
    this.ownerKey = deps.config.ownerCredential ? Buffer.from(deps.config.ownerCredential, 'utf8') : null;
    this.nodes = new NodeRegistry(this, deps.config.nodeLimits);
    this.approvals = new ApprovalEngine(this, deps.sshProbe ?? null);
    this.presence = new PresenceCoalescer(deps.config.presenceWindowMs ?? DEFAULT_PRESENCE_WINDOW_MS, (changes, count) => this.emitPresence(changes, count));
  }

  /** Start periodic work (tick events, access-metadata flush). */
  start(): void {
    const tick = setInterval(() => this.broadcast('tick', { ts: this.clock.now() }), this.config.tickIntervalMs);
    const flush = setInterval(() => void this.flushSeen(), this.config.seenFlushMs);
    const expire = setInterval(() => {
      this.expirePending().catch((err) => this.log.warn('pending expiry failed', { err: String(err) }));
    }, 60_000);
    const prune = setInterval(() => void this.pruneRetained(), this.retention.intervalMs);
    tick.unref();
    flush.unref();
    expire.unref();
    prune.unref();
    this.timers.push(tick, flush, expire, prune);
    this.approvals.expiry.start();
    if (this.bus) {
      // Events are best effort: a notification lost with a connection (or an instance killed
      // between its commit and its notify) must not strand a connect waiting on approval.
      const reconcile = setInterval(() => void this.reconcileWaiters(), WAITER_RECONCILE_MS);
      reconcile.unref();
      this.timers.push(reconcile);
    }
  }

  /**
   * The URLs that reach this gateway directly (its listening URL, its public URL, and for a
   * wildcard bind its port on each of its own addresses). An owner proof names the URL its
   * client dialed; one made for any other address (a relay on another port or host) is refused.
   */
  setOwnUrls(urls: Iterable<string>): void {
    const next = new Set<string>();
    for (const url of urls) {
      const a = audienceOf(url);
      if (a) next.add(a);
    }
    this.ownAudiences = next;
  }

  /** Does `proof` prove the owner credential for this connection's nonce, this gateway's key and `audience`? Constant time. */
  private ownerProofHolds(proof: string, audience: string, nonce: string): boolean {
    if (!this.ownerKey || !this.identity) return false;
    const expected = createHmac('sha256', this.ownerKey)
      .update(ownerProofPayload(nonce, this.identity.publicKey, audience), 'utf8')
      .digest();
    const given = Buffer.from(proof, 'base64url');
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  challenge(): ChallengePayload {
    const nonce = this.random.uuid();
    const ts = this.clock.now();
    // Signed by the gateway's own key, so a client can check who answered before it sends a secret.
    return this.identity ? { nonce, ts, gateway: this.identity.proveChallenge(nonce, ts) } : { nonce, ts };
  }

  // ------------------------------------------------------------------------------------------
  // Handshake
  // ------------------------------------------------------------------------------------------

  /** Handle the first frame of a connection. Never throws on client input. */
  async connect(text: string, nonce: string, transport: TransportFacts, sock: SessionTransport): Promise<ConnectOutcome> {
    const attempt = { authMethod: 'none' };
    const out = await this.connectFrame(text, nonce, transport, sock, attempt);
    this.countConnect(out, attempt.authMethod);
    return out;
  }

  /** A connect's outcome for the metrics: how it ended and which credential it presented. */
  private countConnect(out: ConnectOutcome, authMethod: string): void {
    if (out.type === 'wait') {
      this.metrics.connect('waiting', authMethod);
      out.result.then((later) => this.countConnect(later, authMethod)).catch(() => {});
    } else if (out.type === 'hello') this.metrics.connect('ok', out.authMethod ?? authMethod);
    else this.metrics.connect(out.detail ?? 'rejected', authMethod);
  }

  private async connectFrame(
    text: string,
    nonce: string,
    transport: TransportFacts,
    sock: SessionTransport,
    attempt: { authMethod: string },
  ): Promise<ConnectOutcome> {
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      return this.reject(null, new GatewayError('INVALID_FRAME'));
    }
    if (!checkRequest.Check(frame)) return this.reject(null, new GatewayError('INVALID_FRAME'));
    if (frame.method !== 'connect') return this.reject(frame.id, new GatewayError('HANDSHAKE_NOT_CONNECT'));
    const params = frame.params as ConnectParams;
    if (params && typeof params === 'object' && (params as { client?: { id?: unknown } }).client) {
      const client = (params as { client: { id?: unknown } }).client;
      if (typeof client.id === 'string' && !CLIENT_ID_SET.has(client.id)) client.id = client.id.toLowerCase();
    }
    if (!checkConnect.Check(params)) {
      const first = checkConnect.Errors(params).First();
      const problem = first ? `at ${first.path || '/'}: ${first.message}` : 'invalid';
      return this.reject(frame.id, new GatewayError('INVALID_CONNECT_PARAMS', { vars: { problem } }));
    }
    const roleName = params.role ?? 'operator';
    const protocol = negotiateProtocol(params, roleName);
    if (protocol === null) {
      return this.reject(
        frame.id,
        new GatewayError('PROTOCOL_MISMATCH', {
          details: {
            clientMinProtocol: params.minProtocol,
            clientMaxProtocol: params.maxProtocol,
            expectedProtocol: PROTOCOL_VERSION,
            minimumProbeProtocol: MIN_PROBE_PROTOCOL,
          },
        }),
      );
    }
    if (!(ROLES as readonly string[]).includes(roleName)) return this.reject(frame.id, new GatewayError('INVALID_ROLE'));
    const role = roleName as Role;
    attempt.authMethod = presentedMethod(params);
    try {
      return await this.authenticate(frame.id, params, role, protocol, nonce, transport, sock);
    } catch (err) {
      return this.connectFailure(frame.id, err, transport.connId);
    }
  }

  /**
   * A connect that ended in an exception, closed 1013 (try again later): STORE_UNAVAILABLE when
   * the database refused or did not answer, else INTERNAL_ERROR with a reference for the log.
   */
  private connectFailure(id: string | null, err: unknown, connId?: string): ConnectOutcome {
    const cause = storeFault(err);
    if (cause) {
      this.log.warn('connect failed: database unavailable', { connId, cause, err: String(err) });
      return this.reject(id, new GatewayError('STORE_UNAVAILABLE', { vars: { cause } }), CLOSE.tryAgainLater);
    }
    const ref = this.random.uuid().slice(0, 8);
    this.log.error('connect failed with an exception', { connId, ref, err: String((err as Error)?.stack ?? err) });
    return this.reject(id, new GatewayError('INTERNAL_ERROR', { vars: { ref } }), CLOSE.tryAgainLater);
  }

  private reject(id: string | null, err: GatewayError, closeOverride?: number): ConnectOutcome {
    const frame: ResponseFrame | null = id === null ? null : { type: 'res', id, ok: false, error: err.shape };
    return {
      type: 'reject',
      frame: frame ? JSON.stringify(frame) : null,
      closeCode: closeOverride ?? err.close ?? CLOSE.policy,
      closeReason: closeReason(err.shape.message),
      detail: err.detail,
    };
  }

  private async authenticate(
    id: string,
    params: ConnectParams,
    role: Role,
    protocol: number,
    nonce: string,
    transport: TransportFacts,
    sock: SessionTransport,
  ): Promise<ConnectOutcome> {
    const auth = params.auth ?? {};
    const address = transport.address;
    const scopes = normalizeScopes(params.scopes ?? []);
    // Behind an identity-aware proxy every proxied connect names an allowed user, whatever else it presents.
    const proxyCheck = this.approvals.proxyUser(transport);
    if (proxyCheck && !proxyCheck.ok) {
      void this.audit('gateway', 'auth.proxy-user-refused', address, {
        reason: proxyCheck.detail,
        ...(transport.proxyUser ? { user: transport.proxyUser } : {}),
      });
      return this.reject(id, new GatewayError(proxyCheck.detail, { details: { authReason: 'unauthorized', canRetryWithDeviceToken: false } }));
    }
    const proxyUser = proxyCheck?.ok ? proxyCheck.user : undefined;

    // 0. Owner authority is proven, never sent: an HMAC by the owner credential over this
    // connection's nonce, this gateway's key and the address the client dialed.
    let credential: Credential = { kind: 'none' };
    let limitedKind: CredentialKind | null = null;
    let tokenFailure: DetailCode | null = null;
    let dashboardLink: string | null = null;
    /** Which shared secret admitted this connect (what hello-ok.auth.method reports). */
    let sharedVia: 'token' | 'password' | null = null;
    if (auth.ownerProof !== undefined || auth.ownerAudience !== undefined) {
      if (auth.ownerProof === undefined || auth.ownerAudience === undefined) {
        return this.reject(id, new GatewayError('INVALID_CONNECT_PARAMS', { vars: { problem: 'auth.ownerProof and auth.ownerAudience go together' } }));
      }
      if (auth.token !== undefined || auth.password !== undefined || auth.deviceToken !== undefined || auth.bootstrapToken !== undefined) {
        return this.reject(id, new GatewayError('INVALID_CONNECT_PARAMS', { vars: { problem: 'auth.ownerProof cannot be combined with another credential' } }));
      }
      if (await this.isLocked(address, 'owner')) return await this.rateLimited(id, address, 'owner');
      // An address that is not ours says nothing about the credential, so it costs no attempt.
      if (!this.ownAudiences.has(auth.ownerAudience)) tokenFailure = 'AUTH_OWNER_AUDIENCE_MISMATCH';
      else if (this.ownerProofHolds(auth.ownerProof, auth.ownerAudience, nonce)) credential = { kind: 'owner' };
      else {
        tokenFailure = 'AUTH_OWNER_PROOF_INVALID';
        limitedKind = 'owner';
      }
    }

    // 1. Shared secrets (constant-time, rate limited per address+kind).
    const deviceTokenInSlot =
      auth.token !== undefined && parseToken('device', auth.token) !== null && params.device !== undefined && auth.deviceToken === undefined;
    if (auth.token !== undefined) {
      // A device token in the token slot is limited as a device token, not as a shared-secret guess.
      if (!deviceTokenInSlot && (await this.isLocked(address, 'shared'))) return await this.rateLimited(id, address, 'shared');
      if (this.owner?.matches(auth.token)) {
        // Whoever holds the owner credential proves it; a bearer copy may have reached a stranger
        // on the way, so it opens nothing, and the log and the audit trail say it travelled.
        tokenFailure = 'AUTH_OWNER_CREDENTIAL_SENT';
        this.log.warn('the owner credential was sent as a bearer token and refused; treat it as exposed', { address });
        void this.audit('gateway', 'auth.owner-credential-sent', address, {});
      } else if (this.sharedToken?.matches(auth.token)) {
        credential = { kind: 'shared' };
        sharedVia = 'token';
      } else if (deviceTokenInSlot) {
        // A device token sent in the token slot: verified below like auth.deviceToken.
      } else if (params.device !== undefined && isDashboardLinkToken(auth.token)) {
        // A one-time owner sign-in link: consumed below, once the device proof holds.
        dashboardLink = auth.token;
      } else {
        tokenFailure = this.sharedToken ? 'AUTH_TOKEN_MISMATCH' : 'AUTH_TOKEN_NOT_CONFIGURED';
        limitedKind = 'shared';
      }
    }
    // Every presented shared secret is checked, whatever else came with it: a wrong password next
    // to a valid token is a counted failure, never ignored (else a device token holder could guess
    // passwords for free and read the answer from hello-ok).
    let passwordFailed = false;
    if (auth.password !== undefined) {
      if (await this.isLocked(address, 'password')) return await this.rateLimited(id, address, 'password');
      if (this.sharedPassword?.matches(auth.password)) {
        if (credential.kind === 'none' && tokenFailure === null && dashboardLink === null) {
          credential = { kind: 'shared' };
          sharedVia = 'password';
        }
      } else if (tokenFailure === null) {
        tokenFailure = this.sharedPassword ? 'AUTH_PASSWORD_MISMATCH' : 'AUTH_PASSWORD_NOT_CONFIGURED';
        limitedKind = 'password';
      } else passwordFailed = true;
    }

    // 2. Device proof.
    let device: VerifiedDevice | null = null;
    if (params.device) {
      const proof = verifyDeviceProof(params, role, nonce, this.clock.now());
      if (proof instanceof GatewayError) return this.reject(id, proof);
      device = proof;
    }
    if (dashboardLink !== null && device) {
      if (await consumeDashboardLink(this, dashboardLink, address, device.deviceId)) credential = { kind: 'owner' };
      else {
        tokenFailure = 'AUTH_DASHBOARD_LINK_INVALID';
        limitedKind = 'shared';
      }
    }

    // 3. Device token (auth.deviceToken, or a device token in the token slot).
    let tokenRecord: TokenRecord | null = null;
    let presentedDeviceToken: string | undefined;
    let reissueToken = false;
    const deviceTokenCandidate = auth.deviceToken ?? (tokenFailure === null && credential.kind === 'none' ? auth.token : undefined);
    // A shared secret that failed above refuses the connect: a valid device token must not turn
    // it into an uncounted guess.
    if (credential.kind === 'none' && tokenFailure === null && deviceTokenCandidate !== undefined && device) {
      if (await this.isLocked(address, 'device-token')) return await this.rateLimited(id, address, 'device-token');
      const check = await this.verifyDeviceToken(deviceTokenCandidate, device.deviceId);
      if (check.ok) {
        credential = { kind: 'device-token' };
        tokenRecord = check.token;
        presentedDeviceToken = deviceTokenCandidate;
      } else if (
        await claimRotationGrace(this.store, deviceTokenCandidate, device.deviceId, role, this.clock.now(), (t) => this.tokenSeen(device.deviceId, t))
      ) {
        // The token a pushed rotation just retired, presented once within the grace by the key that
        // proved itself then: admitted, and the successor goes out in hello-ok (rotation-grace.ts).
        credential = { kind: 'device-token' };
        reissueToken = true;
      } else {
        tokenFailure = 'AUTH_DEVICE_TOKEN_MISMATCH';
        limitedKind = 'device-token';
      }
    }
    // A setup code (bootstrap token) proves something only together with the key it binds to,
    // so without a verified device block it is not even looked at.
    let setup: SetupCodeRecord | undefined;
    let bootstrapDetails: Record<string, unknown> | undefined;
    if (credential.kind === 'none' && auth.bootstrapToken !== undefined && tokenFailure === null && device) {
      if (await this.isLocked(address, 'bootstrap')) return await this.rateLimited(id, address, 'bootstrap');
      const check = await verifyBootstrapToken(this, auth.bootstrapToken, device, address);
      if (check.ok) {
        credential = { kind: 'bootstrap', roles: check.code.profile.roles };
        setup = check.code;
      } else {
        tokenFailure = check.detail;
        // Only a wrong or unknown secret is a guess; a holder of the real code is told why it is refused.
        limitedKind = check.guess ? 'bootstrap' : null;
        bootstrapDetails = check.details;
      }
    }
    // The user an identity-aware proxy signed in authenticates the connect in place of a shared
    // secret: like the gateway token it admits a device under its grant or files a request.
    let viaProxyUser = false;
    if (proxyUser !== undefined && credential.kind === 'none' && tokenFailure === null && auth.bootstrapToken === undefined) {
      if (!device) return this.reject(id, new GatewayError('DEVICE_IDENTITY_REQUIRED'));
      credential = { kind: 'shared' };
      viaProxyUser = true;
    }
    if (tokenFailure) {
      credential = { kind: 'invalid', failure: tokenFailure };
      for (const kind of [limitedKind, passwordFailed ? 'password' : null] as const) {
        if (!kind) continue;
        const lockMs = await this.limiter.fail(address, kind);
        if (lockMs > 0) {
          this.metrics.lockout(kind);
          void this.audit('gateway', 'auth.rate-limited', address, { kind, lockoutMs: lockMs });
        }
      }
    } else if (credential.kind !== 'none' && credential.kind !== 'bootstrap' && !viaProxyUser) {
      // A setup code never clears the bootstrap counter: one valid code must not buy more guesses.
      const kind =
        credential.kind === 'device-token' ? 'device-token' : auth.ownerProof !== undefined ? 'owner' : sharedVia === 'password' ? 'password' : 'shared';
      await this.limiter.succeed(address, kind);
    }

    // 4. Facts about the device's grants.
    // A time-bound grant past its expiry counts as what it becomes, even before the scheduler ran.
    const now = this.clock.now();
    const grants = (device ? await this.store.listGrants(device.deviceId) : []).flatMap((g) => effectiveGrant(g, now) ?? []);
    const grant = grants.find((g) => g.role === role) ?? null;
    const otherGrants = grants.filter((g) => g.role !== role);
    if (credential.kind === 'device-token' && tokenRecord && tokenRecord.role !== role && grant) {
      // A token of another role must not open a role the device holds with its own token:
      // revoking that role's token has to keep it shut.
      credential = { kind: 'invalid', failure: 'AUTH_DEVICE_TOKEN_MISMATCH' };
    }

    const decision = decideConnect({
      credential,
      device: device !== null,
      role,
      scopes,
      grant: grant ? { scopes: grant.scopes } : null,
      pairedOtherRole: otherGrants.length > 0,
      directLocal: transport.directLocal,
      localHelperClient:
        (params.client.id === 'cli' && params.client.mode === 'cli') || (params.client.id === 'gateway-client' && params.client.mode === 'backend'),
      autoApproveLocal: this.config.autoApproveLocal,
      sharedSecretIsAdminOnHost: this.config.sharedSecretIsAdminOnHost === true,
      waitForApproval: (params.caps ?? []).includes('device-pairing-wait'),
    });

    const ctx: AdmitContext = {
      id,
      params,
      role,
      protocol,
      scopes,
      transport,
      sock,
      device,
      credential,
      tokenRecord,
      presentedDeviceToken,
      sharedVia,
      grant,
      setup,
      bootstrapDetails,
      reissueToken,
      proxyUser,
    };
    const policed = await this.applyPolicy(decision, ctx);
    return this.admitted('decision' in policed ? await this.carryOut(policed.decision, ctx) : policed.outcome, ctx);
  }

  /**
   * Approval policies (src/core/approvals.ts) decide what would otherwise wait for a person: a
   * request is approved by a rule (with its proof), refused, or left pending as before.
   */
  private async applyPolicy(decision: Decision, ctx: AdmitContext): Promise<{ decision: Decision } | { outcome: ConnectOutcome }> {
    if (decision.outcome !== 'hold' && decision.outcome !== 'admit-with-upgrade') return { decision };
    if (!ctx.device || this.approvals.config.policies.length === 0) return { decision };
    const kind = decision.outcome === 'hold' ? decision.kind : 'scope-upgrade';
    const adds = decision.outcome === 'hold' ? ctx.scopes : decision.missing;
    const request = approvalRequestOf(ctx.role, adds, kind, ctx.params.client, ctx.transport);
    const proofs = ctx.proxyUser !== undefined ? { proxyUser: ctx.proxyUser } : {};
    const d = this.approvals.decide(request, proofs);
    ctx.policy = { request, proofs, decision: d };
    if (d.action === 'approve') {
      const base = decision.outcome === 'hold' ? [] : (ctx.grant?.scopes ?? []);
      return { decision: { outcome: 'pair-silently', kind, grantScopes: normalizeScopes([...base, ...d.scopes]), missing: d.missing } };
    }
    if (d.action !== 'deny') return { decision };
    const device = ctx.device;
    await this.audit(`rule:${d.rule}`, 'pairing.denied', device.deviceId, {
      role: ctx.role,
      scopes: adds,
      kind,
      address: ctx.transport.address,
      ...this.approvals.auditData(d),
    });
    // A denied upgrade keeps what the device already holds; a denied pairing is refused outright.
    if (decision.outcome === 'admit-with-upgrade') return { decision: { outcome: 'admit', scopes: decision.scopes } };
    return {
      outcome: this.reject(
        ctx.id,
        new GatewayError('PAIRING_DENIED_BY_POLICY', { vars: { rule: d.rule as string }, details: { rule: d.rule, requestedRole: ctx.role } }),
      ),
    };
  }

  /** After admission: a node's declared surface is checked (and a request filed) before hello-ok. */
  private async admitted(out: ConnectOutcome, ctx: AdmitContext): Promise<ConnectOutcome> {
    if (out.type !== 'hello' || out.session.role !== 'node') return out;
    try {
      await this.nodes.attach(out.session, ctx.params);
      // A node must be findable by the other instances before it is told it is in.
      await this.cluster?.announce(out.session);
    } catch (err) {
      this.disconnect(out.session);
      throw err;
    }
    return out;
  }

  private async isLocked(address: string, kind: CredentialKind): Promise<boolean> {
    return (await this.limiter.retryAfterMs(address, kind)) > 0;
  }

  private async rateLimited(id: string, address: string, kind: CredentialKind): Promise<ConnectOutcome> {
    const retryAfterMs = await this.limiter.retryAfterMs(address, kind);
    return this.reject(id, new GatewayError('AUTH_RATE_LIMITED', { retryAfterMs, details: { authReason: 'rate_limited', retryAfterMs } }));
  }

  /** Whether a session of this instance was admitted with `tokenId` (live, or not yet flushed to the store). */
  private tokenSeen(deviceId: string, tokenId: string): boolean {
    return this.seen.get(deviceId)?.tokenId === tokenId || this.deviceSessions(deviceId).some((s) => s.tokenId === tokenId);
  }

  private async verifyDeviceToken(token: string, deviceId: string): Promise<{ ok: true; token: TokenRecord } | { ok: false }> {
    // A clawgate token by its id, or one imported from OpenClaw by the id derived from it.
    const parsed = deviceTokenKey(token);
    if (!parsed) return { ok: false };
    const rec = await this.store.getToken(parsed.id);
    // Compare the secret even when the row is unusable, so timing says nothing about which check failed.
    const matches = rec ? secretMatchesHash(parsed.secret, rec.secretHash) : false;
    if (!rec || !matches || rec.deviceId !== deviceId || rec.revokedAtMs !== undefined) return { ok: false };
    return { ok: true, token: rec };
  }

  private async carryOut(decision: Decision, ctx: AdmitContext): Promise<ConnectOutcome> {
    const now = this.clock.now();
    switch (decision.outcome) {
      case 'refuse': {
        const details: Record<string, unknown> = {};
        const d = decision.detail;
        if (d.startsWith('AUTH_')) {
          details.authReason = authReasonOf(d);
          // Never true (OpenClaw sets it for a wrong token from a device): its retry sends the
          // device token next to the same wrong shared token, which this gateway refuses too.
          details.canRetryWithDeviceToken = false;
        }
        if (d.startsWith('AUTH_BOOTSTRAP_')) {
          // A verified code refused by the decision asked for a role outside its profile.
          Object.assign(details, ctx.bootstrapDetails ?? (ctx.setup ? roleRefusalDetails(ctx.setup, ctx.role) : {}));
        }
        return this.reject(ctx.id, new GatewayError(d, { details }));
      }
      case 'admit-deviceless': {
        const scopes = decision.scopes === 'all' ? ALL_OPERATOR_SCOPES : decision.scopes;
        const session = this.openSession(ctx, decision.principal, scopes, undefined, 0);
        return this.hello(ctx, session, { method: helloMethod(ctx) });
      }
      case 'admit':
        return this.admitDevice(ctx, decision.scopes, undefined, ctx.grant);
      case 'pair-silently': {
        const device = ctx.device as VerifiedDevice;
        const pending = (await this.store.listPairingRequests(device.deviceId)).find((r) => r.role === ctx.role);
        const rule = ctx.policy?.decision.action === 'approve' ? ctx.policy.decision : null;
        const via = rule ? 'policy' : ctx.credential.kind === 'owner' ? 'owner' : 'silent';
        const actor = rule ? `rule:${rule.rule}` : via === 'owner' ? 'owner' : 'gateway';
        const terms = approvalTerms(ctx.grant, decision.grantScopes, decision.grantScopes, rule?.ttlMs ?? null, now);
        await this.store.approve({
          device: { deviceId: device.deviceId, publicKey: device.publicKey, meta: metaOf(ctx.params), address: ctx.transport.address },
          role: ctx.role,
          scopes: [...decision.grantScopes],
          via,
          approvedBy: actor,
          ...terms,
          token: null,
          atMs: now,
          requestId: pending?.requestId,
          audit: {
            atMs: now,
            actor,
            action: 'pairing.approved',
            subject: device.deviceId,
            data: {
              role: ctx.role,
              scopes: decision.grantScopes,
              via,
              kind: decision.kind,
              address: ctx.transport.address,
              ...(rule ? this.approvals.auditData(rule) : {}),
              ...(terms.expiresAtMs !== null ? { expiresAtMs: terms.expiresAtMs } : {}),
            },
          },
        });
        if (terms.expiresAtMs !== null) void this.approvals.expiry.poke();
        if (pending) {
          this.broadcastResolved(pending.requestId, device.deviceId, 'approved');
          // Another socket of this device may be waiting on the same request.
          await this.resolveWaiters(pending.requestId, 'approved');
        }
        if (decision.missing.length === 0) return this.admitDevice(ctx, ctx.scopes);
        // The credential could grant only part of the ask: the owner approves the rest.
        const req = await this.fileRequest(ctx, 'scope-upgrade');
        return this.admitDevice(
          ctx,
          ctx.scopes.filter((s) => !decision.missing.includes(s)),
          req.requestId,
        );
      }
      case 'admit-with-upgrade': {
        const req = await this.fileRequest(ctx, 'scope-upgrade');
        return this.admitDevice(ctx, decision.scopes, req.requestId, ctx.grant);
      }
      case 'hold': {
        const req = await this.fileRequest(ctx, decision.kind);
        // An `ssh` rule asks the node host in the background; the answer never holds up this reply.
        if (ctx.policy) this.approvals.maybeProbe(ctx.policy.request, ctx.policy.proofs, req);
        if (decision.wait) return this.waitForApproval(ctx, req.requestId);
        return this.pairingRequired(ctx, decision.kind, req.requestId);
      }
      case 'redeem-bootstrap':
        return this.redeemBootstrap(ctx);
    }
  }

  /**
   * Redeem the setup code this connect proved: one store transaction approves every role of its
   * profile for this key and replaces each role's token; hello-ok carries the token of the role
   * connected with, and the other roles' tokens in `deviceTokens`. A repeat by the same key
   * within the grace window gets fresh tokens for the same grants (the earlier ones stop working).
   */
  private async redeemBootstrap(ctx: AdmitContext): Promise<ConnectOutcome> {
    const device = ctx.device as VerifiedDevice;
    const setup = ctx.setup as SetupCodeRecord;
    const now = this.clock.now();
    const minted = new Map<Role, MintedToken>(setup.profile.roles.map((r) => [r, mintToken('device', this.random)]));
    const tokens: Partial<Record<Role, { tokenId: string; secretHash: Buffer }>> = {};
    const tokenIds: Partial<Record<Role, string>> = {};
    for (const [r, t] of minted) {
      tokens[r] = { tokenId: t.id, secretHash: t.secretHash };
      tokenIds[r] = t.id;
    }
    const data = { setupId: setup.setupId, role: ctx.role, roles: setup.profile.roles, scopes: setup.profile.scopes, tokenIds, address: ctx.transport.address };
    const actor = `device:${device.deviceId}`;
    const res = await this.store.redeemSetupCode({
      setupId: setup.setupId,
      device: { deviceId: device.deviceId, publicKey: device.publicKey, meta: metaOf(ctx.params), address: ctx.transport.address },
      role: ctx.role,
      tokens,
      atMs: now,
      graceMs: SETUP_REPEAT_GRACE_MS,
      audit: { atMs: now, actor, action: 'setup.redeemed', subject: device.deviceId, data },
      repeatAudit: { atMs: now, actor, action: 'setup.redeemed-again', subject: device.deviceId, data },
    });
    if (!res.ok) {
      // Lost a race (another key redeemed it first), or the code changed since it was checked.
      const refusal = setupRefusal(res.reason);
      return this.reject(
        ctx.id,
        new GatewayError(refusal.detail, { details: { authReason: authReasonOf(refusal.detail), canRetryWithDeviceToken: false, ...refusal.details } }),
      );
    }
    if (!res.repeat) {
      for (const requestId of res.resolvedRequestIds) this.broadcastResolved(requestId, device.deviceId, 'approved');
      if (res.resolvedRequestIds.length === 0) this.broadcastResolved(this.random.uuid(), device.deviceId, 'approved');
      this.broadcast('device.pair.setup.completed', {
        setupId: setup.setupId,
        deviceId: device.deviceId,
        ...(ctx.params.client.displayName ? { deviceName: cleanText(ctx.params.client.displayName) } : {}),
        access: setup.profile.name,
        roles: setup.profile.roles,
        ts: now,
      });
      for (const requestId of res.resolvedRequestIds) await this.resolveWaiters(requestId, 'approved');
    }
    const grant = res.grants.find((g) => g.role === ctx.role);
    const primary = minted.get(ctx.role);
    if (!grant || !primary) throw new Error(`setup code ${setup.setupId} redeemed without role ${ctx.role}`);
    // The session gets what it asked for within the grant; scopes beyond the profile are dropped.
    const granted = new Set(grant.scopes);
    const scopes = ctx.scopes.filter((s) => scopeSatisfied(granted, s));
    const session = this.openSession(ctx, 'device', scopes, device.deviceId, grant.epoch, primary.id);
    this.sessionTokenHashes.set(session, primary.secretHash);
    const others = res.grants
      .filter((g) => g.role !== ctx.role)
      .map((g) => ({ deviceToken: (minted.get(g.role) as MintedToken).token, role: g.role, scopes: [...g.scopes], issuedAtMs: now }));
    return this.hello(ctx, session, {
      method: 'bootstrap-token',
      deviceToken: primary.token,
      issuedAtMs: now,
      ...(others.length > 0 ? { deviceTokens: others } : {}),
    });
  }

  private pairingRequired(ctx: AdmitContext, kind: string, requestId: string): ConnectOutcome {
    const device = ctx.device as VerifiedDevice;
    const message = PAIRING_MESSAGES[kind] ?? kind;
    // Clients such as the openclaw CLI print only the message: it names what approves the request.
    const err = new GatewayError('PAIRING_REQUIRED', {
      vars: { detail: `${message}${approveHint(requestId)}` },
      details: {
        reason: kind === 'new-device' ? 'not-paired' : kind,
        requestId,
        deviceId: device.deviceId,
        confirmationCode: confirmationCode({ requestId, publicKey: device.publicKey }),
        requestedRole: ctx.role,
        requestedScopes: ctx.scopes,
        remediationHint: 'Approve this device from the pending pairing requests.',
        retryable: false,
        pauseReconnect: true,
      },
    });
    const out = this.reject(ctx.id, err);
    if (out.type === 'reject') out.closeReason = closeReason(`pairing required: ${message} (requestId: ${requestId})`);
    return out;
  }

  private async fileRequest(ctx: AdmitContext, kind: 'new-device' | 'role-upgrade' | 'scope-upgrade') {
    const device = ctx.device as VerifiedDevice;
    const now = this.clock.now();
    const known = await this.store.getDevice(device.deviceId);
    const res = await this.store.upsertPairingRequest({
      requestId: this.random.uuid(),
      deviceId: device.deviceId,
      publicKey: device.publicKey,
      role: ctx.role,
      scopes: [...ctx.scopes],
      kind,
      meta: metaOf(ctx.params),
      address: ctx.transport.address,
      isRepair: known !== null,
      atMs: now,
      audit: {
        atMs: now,
        actor: `device:${device.deviceId}`,
        action: 'pairing.requested',
        subject: device.deviceId,
        data: { role: ctx.role, scopes: ctx.scopes, kind, address: ctx.transport.address },
      },
    });
    if (res.created || res.widened) {
      const r = res.request;
      this.broadcast('device.pair.requested', {
        requestId: r.requestId,
        deviceId: r.deviceId,
        publicKey: r.publicKey,
        ...r.meta,
        role: r.role,
        roles: [r.role],
        scopes: r.scopes,
        remoteIp: r.address,
        silent: false,
        isRepair: r.isRepair,
        kind: r.kind,
        confirmationCode: confirmationCode(r),
        widened: res.widened,
        ts: now,
      });
    }
    return res.request;
  }

  private waitForApproval(ctx: AdmitContext, requestId: string): ConnectOutcome {
    let finish!: (o: ConnectOutcome) => void;
    const result = new Promise<ConnectOutcome>((resolve) => (finish = resolve));
    const set = this.waiters.get(requestId) ?? new Set<Waiter>();
    const waiter: Waiter = {
      requestId,
      deviceId: (ctx.device as VerifiedDevice).deviceId,
      role: ctx.role,
      scopes: ctx.scopes,
      finish: (o) => {
        set.delete(waiter);
        finish(o);
      },
      admit: async () => this.admitted(await this.admitDevice(ctx, ctx.scopes), ctx),
      connectId: ctx.id,
    };
    set.add(waiter);
    this.waiters.set(requestId, set);
    const code = confirmationCode({ requestId, publicKey: (ctx.device as VerifiedDevice).publicKey });
    return { type: 'wait', requestId, confirmationCode: code, result, cancel: () => set.delete(waiter) };
  }

  /** Called after a request is approved or rejected: finish connects that chose to wait. */
  async resolveWaiters(requestId: string, decision: 'approved' | 'rejected'): Promise<void> {
    this.publish({ type: 'resolve-waiters', requestId, decision });
    await this.resolveLocalWaiters(requestId, decision);
  }

  private async resolveLocalWaiters(requestId: string, decision: 'approved' | 'rejected'): Promise<void> {
    const set = this.waiters.get(requestId);
    if (!set) return;
    this.waiters.delete(requestId);
    for (const w of [...set]) {
      if (decision === 'approved') {
        // Already taken out of `waiters`: a failed admission (the database going away between
        // the approval and the token) must still answer the socket, or it would wait forever.
        // The device reconnects and is admitted under the grant that was committed.
        let outcome: ConnectOutcome;
        try {
          outcome = await w.admit();
        } catch (err) {
          outcome = this.connectFailure(w.connectId, err);
        }
        w.finish(outcome);
      } else {
        const err = new GatewayError('PAIRING_REJECTED', { details: { requestId } });
        w.finish({ type: 'reject', frame: null, closeCode: CLOSE.policy, closeReason: err.shape.message, detail: err.detail });
      }
    }
  }

  /**
   * Admit a device under its current grant; mint a token when it has none to use. `known` is the
   * grant read before the decision when nothing has changed it since (the connect hot path reads
   * it once); after an approval it is left out and read again.
   */
  private async admitDevice(ctx: AdmitContext, scopes: readonly string[], pendingUpgrade?: string, known?: GrantRecord | null): Promise<ConnectOutcome> {
    const device = ctx.device as VerifiedDevice;
    const now = this.clock.now();
    let grant = known ?? (await this.store.getGrant(device.deviceId, ctx.role));
    if (!grant) throw new Error(`admitDevice without a grant for ${device.deviceId}/${ctx.role}`);
    let deviceToken: string | undefined;
    let tokenId: string | undefined = ctx.tokenRecord?.tokenId;
    // The grace covers only a token this socket presented (or was just given by a setup code).
    const tokenHash = ctx.tokenRecord?.role === ctx.role ? ctx.tokenRecord.secretHash : undefined;
    let issuedAtMs: number | undefined;
    if (ctx.tokenRecord && ctx.tokenRecord.role === ctx.role && ctx.presentedDeviceToken) {
      deviceToken = ctx.presentedDeviceToken;
      issuedAtMs = ctx.tokenRecord.rotatedAtMs ?? ctx.tokenRecord.createdAtMs;
    } else {
      let live = ctx.reissueToken ? undefined : (await this.store.listTokens(device.deviceId)).find((t) => t.role === ctx.role && t.revokedAtMs === undefined);
      // A gateway-token reconnect after a pushed rotation the device never picked up gets a token again.
      if (live && ctx.credential.kind === 'shared' && (await claimUnpickedSuccessor(this.store, device.deviceId, ctx.role, live.tokenId, now)))
        live = undefined;
      if (live) {
        // Only a hash is stored, so an existing token cannot be shown again; the client keeps the one it has.
        tokenId = live.tokenId;
      } else {
        const minted = mintToken('device', this.random);
        grant =
          (await this.store.rotateToken(device.deviceId, ctx.role, { tokenId: minted.id, secretHash: minted.secretHash }, null, now, {
            atMs: now,
            actor: 'gateway',
            action: 'token.issued',
            subject: device.deviceId,
            data: { role: ctx.role, tokenId: minted.id, ...(ctx.reissueToken ? { via: 'rotation-grace' } : {}) },
          })) ?? grant;
        deviceToken = minted.token;
        tokenId = minted.id;
        issuedAtMs = now;
      }
    }
    const session = this.openSession(ctx, 'device', scopes, device.deviceId, grant.epoch, tokenId);
    if (tokenHash) this.sessionTokenHashes.set(session, tokenHash);
    session.pendingUpgradeRequestId = pendingUpgrade;
    const authExtra: Partial<HelloAuth> = {};
    // The device sees a time-bound grant's end coming (and `auth.updated` when it moves or passes).
    if (grant.expiresAtMs != null) authExtra.expiresAtMs = grant.expiresAtMs;
    session.grantExpiresAtMs = grant.expiresAtMs ?? null;
    if (deviceToken) {
      authExtra.deviceToken = deviceToken;
      authExtra.issuedAtMs = issuedAtMs;
    }
    return this.hello(ctx, session, { method: helloMethod(ctx), ...authExtra }, pendingUpgrade);
  }

  private openSession(
    ctx: AdmitContext,
    kind: 'owner' | 'shared' | 'device',
    scopes: readonly string[],
    deviceId: string | undefined,
    epoch: number,
    tokenId?: string,
  ): SessionPrincipal {
    const client: ClientDescription = {
      id: ctx.params.client.id,
      mode: ctx.params.client.mode,
      // Shown in presence and listings: cleaned here; the raw values were only needed for the signature.
      version: cleanText(ctx.params.client.version),
      platform: cleanText(ctx.params.client.platform),
      displayName: cleanOptional(ctx.params.client.displayName),
      deviceFamily: cleanOptional(ctx.params.client.deviceFamily),
      instanceId: cleanOptional(ctx.params.client.instanceId),
    };
    const session = new SessionPrincipal(
      ctx.transport.connId ?? this.random.uuid(),
      kind,
      ctx.role,
      scopes,
      ctx.sock,
      client,
      ctx.transport.address,
      this.clock.now(),
      deviceId,
      epoch,
      tokenId,
    );
    session.deviceBound = kind === 'device' && (ctx.credential.kind === 'device-token' || ctx.credential.kind === 'bootstrap');
    return session;
  }

  private hello(
    ctx: AdmitContext,
    session: SessionPrincipal,
    auth: Partial<HelloAuth> & { method: HelloAuth['method'] },
    pendingUpgrade?: string,
  ): ConnectOutcome {
    this.register(session);
    const payload: HelloOk & { auth: HelloAuth & { pendingRequestId?: string } } = {
      type: 'hello-ok',
      protocol: ctx.protocol,
      server: { version: GATEWAY_VERSION, connId: session.connId, bootId: this.bootId },
      features: { methods: this.methods.advertised(), events: Object.keys(EVENT_SCOPES), capabilities: [], scopes: [...ALL_OPERATOR_SCOPES] },
      snapshot: this.snapshot(),
      auth: { ...auth, role: session.role, scopes: [...session.scopes].sort() },
      policy: { maxPayload: frameCapBytes(session), maxBufferedBytes: MAX_BUFFERED_BYTES, tickIntervalMs: this.config.tickIntervalMs },
    };
    if (pendingUpgrade) payload.auth.pendingRequestId = pendingUpgrade;
    const frame: ResponseFrame = { type: 'res', id: ctx.id, ok: true, payload };
    return { type: 'hello', session, frame: JSON.stringify(frame), authMethod: auth.method };
  }

  snapshot(): Record<string, unknown> {
    return {
      presence: [],
      health: { ok: true, ts: this.clock.now() },
      stateVersion: { presence: 0, health: 0 },
      uptimeMs: this.clock.now() - this.startedAtMs,
    };
  }

  // ------------------------------------------------------------------------------------------
  // Sessions, frames, events
  // ------------------------------------------------------------------------------------------

  private register(session: SessionPrincipal): void {
    this.sessions.set(session.connId, session);
    if (session.deviceId) {
      let set = this.byDevice.get(session.deviceId);
      if (!set) this.byDevice.set(session.deviceId, (set = new Set()));
      set.add(session);
      if (session.role !== 'node') void this.cluster?.announce(session);
      this.seen.set(session.deviceId, { deviceId: session.deviceId, atMs: session.connectedAtMs, address: session.address, tokenId: session.tokenId });
      this.notePresence(session, 'connected', session.connectedAtMs);
    }
  }

  private notePresence(session: SessionPrincipal, state: PresenceChange['state'], atMs: number): void {
    if (!session.deviceId) return;
    this.presence.note({
      connId: session.connId,
      deviceId: session.deviceId,
      role: session.role,
      clientId: session.client.id,
      clientMode: session.client.mode,
      state,
      atMs,
    });
  }

  /** One `device.presence` event for a window's changes; whether each device is still connected is read once, cluster-wide. */
  private async emitPresence(changes: PresenceChange[], count: number): Promise<void> {
    if (this.stopping) return;
    const online = changes.length > 0 ? await this.connectedDeviceIds() : new Set<string>();
    const event: PresenceEvent = {
      ts: this.clock.now(),
      changes: changes.map((c) => ({ ...c, deviceConnected: online.has(c.deviceId) })),
      truncated: count > changes.length,
      count,
    };
    this.broadcast('device.presence', event);
  }

  disconnect(session: SessionPrincipal): void {
    if (!this.sessions.delete(session.connId)) return;
    this.nodes.detach(session);
    this.cluster?.withdraw(session);
    if (session.deviceId) {
      const set = this.byDevice.get(session.deviceId);
      set?.delete(session);
      if (set && set.size === 0) this.byDevice.delete(session.deviceId);
      this.seen.set(session.deviceId, { deviceId: session.deviceId, atMs: this.clock.now(), address: session.address, tokenId: session.tokenId });
      this.notePresence(session, 'disconnected', this.clock.now());
    }
  }

  /** Devices with a live socket here or, with several instances, on any instance. */
  async connectedDeviceIds(): Promise<Set<string>> {
    const ids = new Set(this.byDevice.keys());
    if (this.bus) {
      try {
        for (const id of await this.bus.connectedDevices()) ids.add(id);
      } catch (err) {
        this.log.warn('could not read session presence', { err: String(err) });
      }
    }
    return ids;
  }

  deviceSessions(deviceId: string): SessionPrincipal[] {
    return [...(this.byDevice.get(deviceId) ?? [])];
  }

  /** Handle one post-handshake frame; returns the text to send back (or null for none). */
  async frame(session: SessionPrincipal, text: string, inflight: Map<string, AbortController>): Promise<string | null> {
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      return JSON.stringify({ type: 'res', id: '', ok: false, error: new GatewayError('INVALID_FRAME').shape });
    }
    if (isCancel(frame)) {
      inflight.get(frame.id)?.abort();
      return null;
    }
    if (!checkRequest.Check(frame)) {
      const id = typeof (frame as { id?: unknown })?.id === 'string' ? (frame as { id: string }).id : '';
      return JSON.stringify({ type: 'res', id, ok: false, error: new GatewayError('INVALID_FRAME').shape });
    }
    if (inflight.has(frame.id)) {
      return JSON.stringify({ type: 'res', id: frame.id, ok: false, error: new GatewayError('DUPLICATE_REQUEST_ID', { vars: { id: frame.id } }).shape });
    }
    const ac = new AbortController();
    inflight.set(frame.id, ac);
    try {
      const result = await this.call(session, frame.method, frame.params, ac.signal, { connId: session.connId, requestId: frame.id });
      const res: ResponseFrame = result.ok
        ? { type: 'res', id: frame.id, ok: true, payload: result.payload }
        : { type: 'res', id: frame.id, ok: false, error: result.error };
      return JSON.stringify(res);
    } finally {
      inflight.delete(frame.id);
    }
  }

  /** The single entry point for every method call, from a socket or from inside the process. */
  call(principal: Principal, method: string, params: unknown, signal: AbortSignal = new AbortController().signal, ids?: CallIds) {
    return this.methods.dispatch(principal, method, params, signal, ids);
  }

  broadcast(event: string, payload: unknown): void {
    this.broadcastLocal(event, payload);
    if (CLUSTER_EVENTS.has(event)) this.publish({ type: 'broadcast', event, payload });
  }

  /** Send an event to the sessions of this instance only. */
  broadcastLocal(event: string, payload: unknown): void {
    // Carries a device's secret: only ever sent to that device's own sessions (pushRotatedToken).
    if (event === 'device.token.rotated') throw new Error('device.token.rotated is never broadcast');
    const scope = event in EVENT_SCOPES ? EVENT_SCOPES[event] : 'operator.admin';
    const payloadJson = JSON.stringify(payload);
    for (const s of this.sessions.values()) {
      if (s.role !== 'operator' && scope !== null) continue;
      if (scope && !s.scopes.has(scope) && !s.scopes.has('operator.admin')) {
        if (!(scope === READ && s.scopes.has('operator.write'))) continue;
      }
      if (this.roomFor(s, scope !== null)) s.sendEventJson(event, payloadJson);
    }
  }

  /**
   * Whether an event may be written to `s` now. Best-effort (scoped) events such as pairing and
   * presence are skipped for a slow consumer instead of queueing; an unscoped one closes it.
   */
  private roomFor(s: SessionPrincipal, dropIfSlow: boolean): boolean {
    if (s.transport.bufferedBytes() > MAX_BUFFERED_BYTES) {
      if (dropIfSlow) s.skipEvent();
      else s.transport.close(CLOSE.policy, 'slow consumer');
      return false;
    }
    return true;
  }

  broadcastResolved(requestId: string, deviceId: string, decision: 'approved' | 'rejected' | 'expired'): void {
    this.broadcast('device.pair.resolved', { requestId, deviceId, decision, ts: this.clock.now() });
  }

  // ------------------------------------------------------------------------------------------
  // Live authority
  // ------------------------------------------------------------------------------------------

  /**
   * Close every live session of a device (optionally one role) with a catalogue reason. The
   * caller's own socket is closed just after its response is written, so it still learns the result.
   */
  closeDeviceSessions(deviceId: string, role: Role | null, why: CloseWhy & DetailCode, caller?: Principal, changedAtMs?: number): number {
    this.publish({ type: 'close-device', deviceId, role, why, ...(changedAtMs !== undefined ? { atMs: changedAtMs } : {}) });
    return this.closeLocalDeviceSessions(deviceId, role, why, caller, changedAtMs);
  }

  private readonly rotationPushes = new Map<string, Promise<number>>();
  /** The hash of the token each device session holds: what a pushed rotation retires (rotation grace). */
  private readonly sessionTokenHashes = new WeakMap<SessionPrincipal, Buffer>();

  /**
   * An operator retired the token of (deviceId, role) without seeing its successor. This
   * instance's live sessions of that role proved the device key on their handshake, so they get
   * the successor: minted here (only if the role has no live token yet, so one instance mints
   * once), sent as `device.token.rotated` to those sessions only, and then the sessions close
   * 4001 so the device reconnects with it. The secret never leaves this process except on those
   * sockets. Returns how many sessions received it; runs one at a time per device and role.
   */
  pushRotatedToken(deviceId: string, role: Role): Promise<number> {
    const key = `${deviceId}\u0000${role}`;
    const prev = this.rotationPushes.get(key) ?? Promise.resolve(0);
    const next = prev.catch(() => 0).then(() => this.pushRotatedTokenNow(deviceId, role));
    this.rotationPushes.set(key, next);
    const clear = () => {
      if (this.rotationPushes.get(key) === next) this.rotationPushes.delete(key);
    };
    next.then(clear, clear);
    return next;
  }

  private async pushRotatedTokenNow(deviceId: string, role: Role): Promise<number> {
    if (!this.deviceSessions(deviceId).some((s) => s.role === role)) return 0;
    const now = this.clock.now();
    const minted = mintToken('device', this.random);
    let grant: GrantRecord | null = null;
    try {
      grant = await this.store.issueTokenIfAbsent(deviceId, role, { tokenId: minted.id, secretHash: minted.secretHash }, now, {
        atMs: now,
        actor: 'gateway',
        action: 'token.issued',
        subject: deviceId,
        data: { role, tokenId: minted.id, delivery: 'pushed-live' },
      });
    } catch (err) {
      this.log.warn('could not mint a rotated token for live sessions', { deviceId, role, err: String(err) });
    }
    // Not minted: another token is live (e.g. a setup code re-paired the device meanwhile).
    // Sessions admitted with that token keep running; only those holding a dead one close.
    let current: string | undefined;
    if (!grant) {
      try {
        current = (await this.store.listTokens(deviceId)).find((t) => t.role === role && t.revokedAtMs === undefined)?.tokenId;
      } catch (err) {
        this.log.warn('could not read the live token of a device', { deviceId, role, err: String(err) });
      }
    }
    if (grant) {
      const retired: Array<{ tokenId: string; secretHash: Buffer }> = [];
      for (const s of this.deviceSessions(deviceId)) {
        const hash = this.sessionTokenHashes.get(s);
        if (s.role === role && s.tokenId && hash) retired.push({ tokenId: s.tokenId, secretHash: hash });
      }
      try {
        await recordRotationGrace(this.store, deviceId, role, minted.id, retired, now);
      } catch (err) {
        this.log.warn('could not record the rotation grace', { deviceId, role, err: String(err) });
      }
    }
    let delivered = 0;
    for (const s of this.deviceSessions(deviceId)) {
      if (s.role !== role || (current !== undefined && s.tokenId === current)) continue;
      if (grant) {
        s.sendEvent('device.token.rotated', {
          deviceId,
          role,
          scopes: [...grant.scopes].sort(),
          deviceToken: minted.token,
          tokenId: minted.id,
          issuedAtMs: now,
        });
        delivered++;
      }
      // The event is queued before the close frame on the same socket, so it arrives first.
      this.closeSession(s, 'TOKEN_ROTATED');
    }
    return delivered;
  }

  /** Tell the other instances that (deviceId, role) lost its token to a cross-device rotation. */
  publishTokenRetired(deviceId: string, role: Role): void {
    this.publish({ type: 'token-retired', deviceId, role });
  }

  /** Whether another live instance holds a session of this device and role. */
  async sessionElsewhere(deviceId: string, role: Role): Promise<boolean> {
    if (!this.bus) return false;
    return this.bus.hasSession(deviceId, role, { exceptSelf: true });
  }

  /** Close one session with a catalogue reason (its authority is gone). */
  private closeSession(s: SessionPrincipal, why: CloseWhy & DetailCode): void {
    if (!this.sessions.has(s.connId)) return;
    const err = new GatewayError(why);
    this.disconnect(s);
    s.transport.close(err.close ?? CLOSE.deviceRemoved, closeReason(err.shape.message));
  }

  private closeLocalDeviceSessions(deviceId: string, role: Role | null, why: CloseWhy, caller?: Principal, changedAtMs?: number): number {
    const err = new GatewayError(why);
    const code = err.close ?? CLOSE.deviceRemoved;
    const reason = closeReason(err.shape.message);
    let n = 0;
    for (const s of this.deviceSessions(deviceId)) {
      if (role && s.role !== role) continue;
      this.disconnect(s);
      if (s === caller) setImmediate(() => s.transport.close(code, reason));
      else s.transport.close(code, reason);
      // Measured from the change (when the caller says when it was made) to the close being sent.
      if (changedAtMs !== undefined) this.metrics.revocationClose(why, Math.max(0, this.clock.now() - changedAtMs));
      this.log.info('session closed: authority gone', { connId: s.connId, deviceId, role: s.role, reason: why });
      n++;
    }
    return n;
  }

  /** Approve a pending request: widen the grant, finish waiting connects, widen live sessions. */
  async approveRequest(
    r: PairingRequest,
    by: Principal,
    opts: { ttlMs?: number | null | undefined; auditExtra?: Record<string, unknown> | undefined } = {},
  ): Promise<{ requestId: string; deviceId: string; role: Role; scopes: string[]; device: unknown; expiresAtMs: number | null }> {
    const now = this.clock.now();
    const stored = await this.store.getGrant(r.deviceId, r.role);
    const current = stored ? effectiveGrant(stored, now) : null;
    const scopes = normalizeScopes([...(current?.scopes ?? []), ...r.scopes]);
    // A time-bound approval ends at now + ttl; what the role held for good before stays after it.
    const terms = approvalTerms(current, r.scopes, scopes, opts.ttlMs ?? null, now);
    await this.store.approve({
      device: { deviceId: r.deviceId, publicKey: r.publicKey, meta: r.meta, address: r.address },
      role: r.role,
      scopes,
      via: by.kind === 'owner' ? 'owner' : by instanceof RulePrincipal ? 'policy' : 'manual',
      approvedBy: by.actor,
      ...terms,
      // The device keeps its current token: approval widens the grant server-side, so a client
      // that misses the news is never stranded with a dead credential.
      token: null,
      atMs: now,
      requestId: r.requestId,
      audit: {
        atMs: now,
        actor: by.actor,
        action: 'pairing.approved',
        subject: r.deviceId,
        data: {
          requestId: r.requestId,
          role: r.role,
          scopes,
          kind: r.kind,
          ...(terms.expiresAtMs !== null ? { expiresAtMs: terms.expiresAtMs } : {}),
          ...opts.auditExtra,
        },
      },
    });
    this.metrics.approval(now - r.createdAtMs);
    this.broadcastResolved(r.requestId, r.deviceId, 'approved');
    this.widenDeviceSessions(r.deviceId, r.role, r.scopes, r.requestId, terms.expiresAtMs);
    if (terms.expiresAtMs !== null || stored?.expiresAtMs != null) void this.approvals.expiry.poke();
    await this.resolveWaiters(r.requestId, 'approved');
    const device = await this.store.getDevice(r.deviceId);
    return { requestId: r.requestId, deviceId: r.deviceId, role: r.role, scopes, device, expiresAtMs: terms.expiresAtMs };
  }

  async rejectRequest(r: PairingRequest, by: Principal): Promise<void> {
    const now = this.clock.now();
    await this.store.deletePairingRequest(r.requestId, {
      atMs: now,
      actor: by.actor,
      action: 'pairing.rejected',
      subject: r.deviceId,
      data: { requestId: r.requestId, role: r.role, scopes: r.scopes },
    });
    this.broadcastResolved(r.requestId, r.deviceId, 'rejected');
    this.publish({ type: 'upgrade-rejected', deviceId: r.deviceId, requestId: r.requestId });
    this.upgradeRejectedLocal(r.deviceId, r.requestId);
    await this.resolveWaiters(r.requestId, 'rejected');
  }

  /** One retention pass (periodic): finished records past their retention go; the audit log stays. */
  async pruneRetained(): Promise<PruneCounts | null> {
    try {
      const counts = await pruneRetained(this.store, this.clock, this.retention);
      for (const [kind, n] of Object.entries(counts)) if (n > 0) this.metrics.pruned(kind, n);
      if (Object.values(counts).some((n) => n > 0)) this.log.info('retention prune', { ...counts });
      return counts;
    } catch (err) {
      this.log.warn('retention prune failed', { err: String(err) });
      return null;
    }
  }

  /** Drop pending requests nobody retried within the TTL (checked lazily and periodically). */
  async expirePending(): Promise<number> {
    const cutoff = this.clock.now() - this.config.pendingTtlMs;
    let n = 0;
    for (const r of await this.store.listPairingRequests()) {
      if (r.refreshedAtMs >= cutoff) continue;
      const gone = await this.store.deletePairingRequest(r.requestId, {
        atMs: this.clock.now(),
        actor: 'gateway',
        action: 'pairing.expired',
        subject: r.deviceId,
        data: { requestId: r.requestId, role: r.role },
      });
      if (gone) {
        n++;
        this.broadcastResolved(r.requestId, r.deviceId, 'expired');
      }
    }
    return n;
  }

  private upgradeRejectedLocal(deviceId: string, requestId: string): void {
    for (const s of this.deviceSessions(deviceId)) {
      if (s.pendingUpgradeRequestId !== requestId) continue;
      s.pendingUpgradeRequestId = undefined;
      s.sendEvent('auth.updated', { role: s.role, scopes: [...s.scopes].sort(), requestId, reason: 'scope-upgrade-rejected' });
    }
  }

  /** After an approval widened a grant: widen live sessions that asked for it, and tell them. */
  widenDeviceSessions(deviceId: string, role: Role, granted: readonly string[], requestId: string, expiresAtMs: number | null = null): void {
    this.publish({ type: 'widen-sessions', deviceId, role, scopes: [...granted], requestId, ...(expiresAtMs !== null ? { expiresAtMs } : {}) });
    this.widenLocalDeviceSessions(deviceId, role, granted, requestId, expiresAtMs);
  }

  private widenLocalDeviceSessions(deviceId: string, role: Role, granted: readonly string[], requestId: string, expiresAtMs: number | null = null): void {
    for (const s of this.deviceSessions(deviceId)) {
      if (s.role !== role || s.pendingUpgradeRequestId !== requestId) continue;
      for (const scope of granted) s.scopes.add(scope);
      // A session that had no scopes kept the small frame cap; it may use large frames now.
      s.transport.setFrameCap?.(frameCapBytes(s));
      s.pendingUpgradeRequestId = undefined;
      s.grantExpiresAtMs = expiresAtMs;
      s.sendEvent('auth.updated', {
        role,
        scopes: [...s.scopes].sort(),
        requestId,
        reason: 'scope-upgrade-approved',
        ...(expiresAtMs !== null ? { expiresAtMs } : {}),
      });
    }
  }

  async audit(actor: string, action: string, subject?: string, data?: Record<string, unknown>): Promise<void> {
    await this.store.appendAudit({ atMs: this.clock.now(), actor, action, subject, data });
  }

  private async flushSeen(): Promise<void> {
    if (this.seen.size === 0) return;
    const batch = [...this.seen.values()];
    this.seen = new Map();
    try {
      await this.store.recordSeen(batch);
    } catch (err) {
      this.log.warn('could not record last-seen metadata', { err: String(err) });
    }
  }

  // ------------------------------------------------------------------------------------------
  // Several instances
  // ------------------------------------------------------------------------------------------

  /** Tell the other instances; a failed publish is logged, the reconcile loop covers waiters. */
  private publish(event: ClusterEvent): void {
    if (!this.bus || this.stopping) return;
    this.bus.publish(event).catch((err) => this.log.warn('could not publish a cluster event', { type: event.type, err: String(err) }));
  }

  private readonly topicHandlers = new Map<string, (payload: unknown) => void>();

  /** Handle a domain's events from other instances (one handler per topic). */
  onClusterTopic(topic: string, handler: (payload: unknown) => void): void {
    this.topicHandlers.set(topic, handler);
  }

  /** Send a domain's event to the other instances (nothing with a single instance). */
  publishClusterTopic(topic: string, payload: unknown): void {
    this.publish({ type: 'topic', topic, payload });
  }

  /** Apply another instance's event to this instance's sessions and waiters (never re-published). */
  applyClusterEvent(e: ClusterEvent): void {
    if (this.stopping) return;
    switch (e.type) {
      case 'broadcast':
        this.broadcastLocal(e.event, e.payload);
        return;
      case 'close-device':
        this.closeLocalDeviceSessions(e.deviceId, e.role, e.why, undefined, e.atMs);
        return;
      case 'widen-sessions':
        this.widenLocalDeviceSessions(e.deviceId, e.role, e.scopes, e.requestId, e.expiresAtMs ?? null);
        return;
      case 'upgrade-rejected':
        this.upgradeRejectedLocal(e.deviceId, e.requestId);
        return;
      case 'resolve-waiters':
        this.resolveLocalWaiters(e.requestId, e.decision).catch((err) => this.log.warn('could not finish waiting connects', { err: String(err) }));
        return;
      case 'topic':
        this.topicHandlers.get(e.topic)?.(e.payload);
        return;
      case 'authority-changed':
        void this.reconcileSessions(e.deviceId);
        return;
      case 'token-retired':
        this.pushRotatedToken(e.deviceId, e.role).catch((err) => this.log.warn('could not push a rotated token', { err: String(err) }));
        return;
      default:
        this.cluster?.handle(e);
        return;
    }
  }

  /** After a gap in the events (the listening connection was lost): catch up from the store. */
  async resync(): Promise<void> {
    await this.reconcileWaiters();
    await this.reconcileSessions();
  }

  /**
   * Close live device sessions whose authority is gone from the store without this instance
   * hearing of it: the role's grant removed (revoked, device removed) or the token the session
   * used replaced or revoked (rotated). Widened grants leave sessions alone.
   */
  async reconcileSessions(deviceId?: string): Promise<void> {
    const sessions = deviceId ? this.deviceSessions(deviceId) : [...this.sessions.values()];
    for (const s of sessions) {
      if (!s.deviceId || !this.sessions.has(s.connId)) continue;
      try {
        const grant = await this.store.getGrant(s.deviceId, s.role);
        if (!grant) {
          const device = await this.store.getDevice(s.deviceId);
          this.closeLocalDeviceSessions(s.deviceId, s.role, device ? (grantLapsed(s, this.clock.now()) ? 'GRANT_EXPIRED' : 'TOKEN_REVOKED') : 'DEVICE_REMOVED');
          continue;
        }
        if (s.tokenId) {
          const token = await this.store.getToken(s.tokenId);
          // Retired by an operator (or replaced): a fresh token goes to the live sessions when
          // the role now has none, else they are only closed.
          if (!token) await this.pushRotatedToken(s.deviceId, s.role);
          else if (token.revokedAtMs !== undefined) this.closeSession(s, 'TOKEN_REVOKED');
        }
      } catch (err) {
        this.log.warn('could not reconcile a live session', { connId: s.connId, deviceId: s.deviceId, err: String(err) });
      }
    }
  }

  /**
   * Finish waiting connects whose request is gone from the store without this instance hearing
   * of it: admitted when the grant now covers what they asked for, refused otherwise.
   */
  async reconcileWaiters(): Promise<void> {
    for (const [requestId, set] of [...this.waiters]) {
      const first = [...set][0];
      if (!first) continue;
      try {
        if (await this.store.getPairingRequest(requestId)) continue;
        const grant = await this.store.getGrant(first.deviceId, first.role);
        const granted = new Set(grant?.scopes ?? []);
        const covered = grant !== null && first.scopes.every((s) => scopeSatisfied(granted, s));
        await this.resolveLocalWaiters(requestId, covered ? 'approved' : 'rejected');
      } catch (err) {
        this.log.warn('could not reconcile a waiting connect', { requestId, err: String(err) });
      }
    }
  }

  /** Run `fn` during stop, after the sessions are closed and before the store is. */
  onStop(fn: () => Promise<void>): void {
    this.stopHooks.push(fn);
  }

  /** Stop: `shutdown` event, close 1012 for everyone, flush, and close the store. */
  async stop(reason = 'gateway stopping'): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    this.presence.stop();
    this.approvals.expiry.stop();
    for (const s of [...this.sessions.values()]) {
      s.sendEvent('shutdown', { reason, restartExpectedMs: null });
      this.disconnect(s);
      s.transport.close(CLOSE.restart, 'service restart');
    }
    // Connects waiting for approval are not rejected: their requests stay pending, so they are
    // told the gateway is restarting (1012), not that an operator said no.
    for (const set of this.waiters.values()) {
      for (const w of [...set]) w.finish({ type: 'reject', frame: null, closeCode: CLOSE.restart, closeReason: 'service restart' });
    }
    this.waiters.clear();
    for (const fn of this.stopHooks) {
      await fn().catch((err) => this.log.error('stop hook failed', { err: String(err) }));
    }
    await this.approvals.settled();
    await this.flushSeen();
    await this.bus?.close();
    await this.store.close();
  }
}

interface AdmitContext {
  id: string;
  params: ConnectParams;
  role: Role;
  protocol: number;
  scopes: string[];
  transport: TransportFacts;
  sock: SessionTransport;
  device: VerifiedDevice | null;
  credential: Credential;
  tokenRecord: TokenRecord | null;
  presentedDeviceToken: string | undefined;
  /** The shared secret that admitted the connect (credential `shared`), else null. */
  sharedVia: 'token' | 'password' | null;
  /** The grant for the role as read before the decision (stale once an approval ran). */
  grant: GrantRecord | null;
  /** The setup code whose secret this connect proved (credential `bootstrap`). */
  setup?: SetupCodeRecord | undefined;
  /** Extra details of a setup-code refusal (its `reason`). */
  bootstrapDetails?: Record<string, unknown> | undefined;
  /** Admitted within the rotation grace: mint the successor and hand it out in hello-ok. */
  reissueToken?: boolean | undefined;
  /** The user a trusted identity-aware proxy signed in (gateway.auth.trustedProxyUser). */
  proxyUser?: string | undefined;
  /** What the approval policies made of this connect's request, when one would be filed. */
  policy?: { request: ApprovalRequest; proofs: ApprovalProofs; decision: ApprovalDecision } | undefined;
}

/** The credential a connect presented (the `auth_method` label of the connect metric). */
function presentedMethod(params: ConnectParams): string {
  const auth = params.auth ?? {};
  if (auth.bootstrapToken !== undefined) return 'bootstrap-token';
  if (auth.deviceToken !== undefined) return 'device-token';
  if (auth.token !== undefined) {
    if (parseToken('device', auth.token) !== null) return 'device-token';
    if (isDashboardLinkToken(auth.token)) return 'dashboard-link';
    return 'token';
  }
  if (auth.password !== undefined) return 'password';
  return params.device ? 'device' : 'none';
}

/** How the connection authenticated, as `hello-ok.auth.method` reports it. */
function helloMethod(ctx: AdmitContext): HelloAuth['method'] {
  const kind = ctx.credential.kind;
  if (kind === 'shared' && ctx.sharedVia === null && ctx.proxyUser !== undefined) return 'trusted-proxy';
  if (kind === 'device-token' || kind === 'owner') return kind;
  if (kind === 'bootstrap') return 'bootstrap-token';
  return ctx.sharedVia === 'password' ? 'password' : 'token';
}

/**
 * A grant that vanished from the store around its expiry was ended by another instance's
 * scheduler (its close event may arrive after the store's change notice): say so, not "revoked".
 * The margin covers clock differences between instances.
 */
function grantLapsed(s: SessionPrincipal, nowMs: number): boolean {
  return s.grantExpiresAtMs !== null && s.grantExpiresAtMs <= nowMs + 5_000;
}

function isCancel(frame: unknown): frame is { type: 'cancel'; id: string } {
  return typeof frame === 'object' && frame !== null && (frame as { type?: unknown }).type === 'cancel' && typeof (frame as { id?: unknown }).id === 'string';
}

export function negotiateProtocol(params: ConnectParams, role: string): number | null {
  const { minProtocol: lo, maxProtocol: hi } = params;
  if (lo > hi) return null;
  if (lo <= PROTOCOL_VERSION && hi >= PROTOCOL_VERSION) return PROTOCOL_VERSION;
  const floor = role === 'node' && params.client.mode === 'node' ? MIN_NODE_PROTOCOL : params.client.mode === 'probe' ? MIN_PROBE_PROTOCOL : PROTOCOL_VERSION;
  if (hi >= floor && hi < PROTOCOL_VERSION && lo <= hi) return hi;
  return null;
}

/**
 * The connect metadata stored with a device or request. A real client's name is never a reason
 * to refuse it, so unsafe characters are replaced (U+FFFD), after the signature (which covers the
 * raw platform and deviceFamily) was checked.
 */
function metaOf(params: ConnectParams) {
  return {
    displayName: cleanOptional(params.client.displayName),
    platform: cleanText(params.client.platform),
    deviceFamily: cleanOptional(params.client.deviceFamily),
    clientId: params.client.id,
    clientMode: params.client.mode,
  };
}

function authReasonOf(detail: DetailCode): string {
  const map: Partial<Record<DetailCode, string>> = {
    AUTH_TOKEN_MISSING: 'token_missing',
    AUTH_TOKEN_MISMATCH: 'token_mismatch',
    AUTH_TOKEN_NOT_CONFIGURED: 'token_missing_config',
    AUTH_PASSWORD_MISSING: 'password_missing',
    AUTH_PASSWORD_MISMATCH: 'password_mismatch',
    AUTH_PASSWORD_NOT_CONFIGURED: 'password_missing_config',
    AUTH_BOOTSTRAP_TOKEN_INVALID: 'bootstrap_token_invalid',
    AUTH_BOOTSTRAP_TOKEN_EXPIRED: 'bootstrap_token_invalid',
    AUTH_BOOTSTRAP_TOKEN_USED: 'bootstrap_token_invalid',
    AUTH_BOOTSTRAP_TOKEN_REVOKED: 'bootstrap_token_invalid',
    AUTH_DEVICE_TOKEN_MISMATCH: 'device_token_mismatch',
    AUTH_SCOPE_MISMATCH: 'scope_mismatch',
    AUTH_RATE_LIMITED: 'rate_limited',
    AUTH_DASHBOARD_LINK_INVALID: 'token_mismatch',
    AUTH_OWNER_CREDENTIAL_SENT: 'owner_credential_sent',
    AUTH_OWNER_PROOF_INVALID: 'owner_proof_invalid',
    AUTH_OWNER_AUDIENCE_MISMATCH: 'owner_audience_mismatch',
  };
  return map[detail] ?? 'unauthorized';
}
