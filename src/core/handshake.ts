/**
 * The handshake: the first frame of a connection, from parsing to hello-ok or refusal.
 *
 *   parse + validate frame → negotiate protocol → check credentials (credentials.ts, a value)
 *   → read the device's grants → decide (admission.ts, pure) → carry the decision out:
 *   refuse | admit | pair silently | file a request and refuse or wait (approvals.ts)
 *   | redeem a setup code → open the session (sessions.ts) → hello-ok.
 *
 * Never throws on client input: every refusal is a catalogue error in the answer.
 */

import { confirmationCode } from '@clawgate/protocol/confirmation';
import { CLOSE, closeReason, type DetailCode, GatewayError } from '@clawgate/protocol/errors';
import {
  type ChallengePayload,
  CLIENT_IDS,
  type ConnectParams,
  type HelloAuth,
  type HelloOk,
  MAX_BUFFERED_BYTES,
  MIN_NODE_PROTOCOL,
  MIN_PROBE_PROTOCOL,
  PROTOCOL_VERSION,
  ROLES,
  type Role,
} from '@clawgate/protocol/frames';
import { audienceOf } from '@clawgate/protocol/gateway-proof';
import { ALL_OPERATOR_SCOPES, normalizeScopes, scopeSatisfied } from '@clawgate/protocol/scopes';
import { cleanOptional, cleanText } from '@clawgate/protocol/text';
import { type Decision, decideConnect } from './admission.js';
import { type ApprovalEngine, approvalRequestOf } from './approval-engine.js';
import { holdBackQuorumScopes } from './approval-flow.js';
import type { ApprovalDecision, ApprovalProofs, ApprovalRequest } from './approval-policy.js';
import type { Approvals, PairingKind } from './approvals.js';
import type { ClusterNodeRouter } from './cluster-nodes.js';
import type { GatewayConfig } from './config.js';
import { type ConnectOutcome, rejectOutcome, type TransportFacts } from './connect-outcome.js';
import { type CredentialDeps, checkCredentials, type ProvenCredentials, presentedMethod } from './credentials.js';
import { approveHint } from './dispatch.js';
import type { Clock, Random } from './env.js';
import { EVENT_SCOPES } from './events.js';
import { recordRequestFacts } from './explain-decision.js';
import { connectParamsCheck, requestFrameCheck } from './frame-checks.js';
import type { GatewayIdentity } from './gateway-identity.js';
import { approvalTerms, effectiveGrant } from './grant-expiry.js';
import type { VerifiedDevice } from './identity.js';
import type { Logger } from './logger.js';
import type { GatewayMetrics } from './metrics.js';
import type { NodeRegistry } from './nodes.js';
import { type ClientDescription, frameCapBytes, SessionPrincipal, type SessionTransport } from './principal.js';
import { claimUnpickedSuccessor } from './rotation-grace.js';
import { type MintedToken, mintToken } from './secrets.js';
import type { SessionRegistry } from './sessions.js';
import { roleRefusalDetails, SETUP_REPEAT_GRACE_MS, setupRefusal } from './setup-codes.js';
import { setupQuorumRefusal } from './setup-quorum.js';
import type { GrantRecord, SetupCodeRecord, Store } from './store.js';
import { storeFault } from './store-faults.js';

export const GATEWAY_VERSION = '0.1.0';

const CLIENT_ID_SET = new Set<string>(CLIENT_IDS);

const PAIRING_MESSAGES: Record<string, string> = {
  'new-device': 'device is not approved yet',
  'role-upgrade': 'device is asking for a higher role than currently approved',
  'scope-upgrade': 'device is asking for more scopes than currently approved',
};

export interface HandshakeDeps {
  store: Store;
  config: GatewayConfig;
  clock: Clock;
  random: Random;
  log: Logger;
  metrics: GatewayMetrics;
  identity: GatewayIdentity | null;
  /** The credential checks' own needs, except what the handshake supplies (audiences, the clock …). */
  credentials: Pick<CredentialDeps, 'limiter' | 'secrets' | 'dashboardLinkClaims'>;
  sessions: Pick<SessionRegistry, 'register' | 'disconnect' | 'tokenSeen' | 'broadcast' | 'broadcastResolved'>;
  approvals: Pick<Approvals, 'fileRequest' | 'wait' | 'resolveWaiters'>;
  /** Approval policies, their proofs, and time-bound grants (approval-engine.ts). */
  engine: Pick<ApprovalEngine, 'active' | 'proxyUser' | 'decide' | 'auditData' | 'maybeProbe'> & { expiry: { poke(): Promise<void> } };
  nodes: Pick<NodeRegistry, 'attach'>;
  /** Other instances learn of node sessions before hello-ok (null with a single instance). */
  cluster: Pick<ClusterNodeRouter, 'announce'> | null;
  /** The hash of the token each admitted device session holds (read by live-authority.ts). */
  sessionTokenHashes: WeakMap<SessionPrincipal, Buffer>;
  /** What hello-ok advertises and reports. */
  hello: { bootId: string; startedAtMs: number; advertisedMethods(): readonly string[] };
}

/** Everything one connect established on its way to admission. */
interface AdmitContext extends Omit<ProvenCredentials, 'ok'> {
  id: string;
  params: ConnectParams;
  role: Role;
  protocol: number;
  scopes: string[];
  transport: TransportFacts;
  sock: SessionTransport;
  /** The grant for the role as read before the decision (stale once an approval ran). */
  grant: GrantRecord | null;
  /** The user a trusted identity-aware proxy signed in (gateway.auth.trustedProxyUser). */
  proxyUser?: string | undefined;
  /** What the approval policies made of this connect's request, when one would be filed. */
  policy?: { request: ApprovalRequest; proofs: ApprovalProofs; decision: ApprovalDecision } | undefined;
}

export class Handshake {
  /** audienceOf() every URL a client may dial to reach this gateway directly (set once listening). */
  private ownAudiences: ReadonlySet<string> = new Set<string>();
  /** hello-ok's `features`, serialized once per list of advertised methods (the same for every connect). */
  private features: { methods: readonly string[]; json: string } | null = null;
  private readonly credentialDeps: CredentialDeps;

  constructor(private readonly deps: HandshakeDeps) {
    this.credentialDeps = {
      ...deps.credentials,
      store: deps.store,
      clock: deps.clock,
      random: deps.random,
      log: deps.log,
      metrics: deps.metrics,
      identity: deps.identity,
      ownAudiences: () => this.ownAudiences,
      tokenSeen: (deviceId, tokenId) => deps.sessions.tokenSeen(deviceId, tokenId),
    };
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

  challenge(signed: boolean): ChallengePayload {
    const nonce = this.deps.random.uuid();
    const ts = this.deps.clock.now();
    // Signed by the gateway's own key, so a client can check who answered before it sends a
    // secret; only when the client asked: a signature costs a third of the whole connect, and
    // clients that never check one (OpenClaw's) do not ask.
    return signed && this.deps.identity ? { nonce, ts, gateway: this.deps.identity.proveChallenge(nonce, ts) } : { nonce, ts };
  }

  snapshot(): Record<string, unknown> {
    const now = this.deps.clock.now();
    return {
      presence: [],
      health: { ok: true, ts: now },
      stateVersion: { presence: 0, health: 0 },
      uptimeMs: this.deps.clock.now() - this.deps.hello.startedAtMs,
    };
  }

  /** Handle the first frame of a connection. Never throws on client input. */
  async connect(text: string, nonce: string, transport: TransportFacts, sock: SessionTransport): Promise<ConnectOutcome> {
    const attempt = { authMethod: 'none' };
    const out = await this.connectFrame(text, nonce, transport, sock, attempt);
    this.countConnect(out, attempt.authMethod);
    return out;
  }

  /** A connect's outcome for the metrics: how it ended and which credential it presented. */
  private countConnect(out: ConnectOutcome, authMethod: string): void {
    const metrics = this.deps.metrics;
    if (out.type === 'wait') {
      metrics.connect('waiting', authMethod);
      out.result.then((later) => this.countConnect(later, authMethod)).catch(() => {});
    } else if (out.type === 'hello') metrics.connect('ok', out.authMethod ?? authMethod);
    else metrics.connect(out.detail ?? 'rejected', authMethod);
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
      return rejectOutcome(null, new GatewayError('INVALID_FRAME'));
    }
    if (!requestFrameCheck().Check(frame)) return rejectOutcome(null, new GatewayError('INVALID_FRAME'));
    if (frame.method !== 'connect') return rejectOutcome(frame.id, new GatewayError('HANDSHAKE_NOT_CONNECT'));
    const params = frame.params as ConnectParams;
    if (params && typeof params === 'object' && (params as { client?: { id?: unknown } }).client) {
      const client = (params as { client: { id?: unknown } }).client;
      if (typeof client.id === 'string' && !CLIENT_ID_SET.has(client.id)) client.id = client.id.toLowerCase();
    }
    const checkConnect = connectParamsCheck();
    if (!checkConnect.Check(params)) {
      const first = checkConnect.Errors(params).First();
      const problem = first ? `at ${first.path || '/'}: ${first.message}` : 'invalid';
      return rejectOutcome(frame.id, new GatewayError('INVALID_CONNECT_PARAMS', { vars: { problem } }));
    }
    const roleName = params.role ?? 'operator';
    const protocol = negotiateProtocol(params, roleName);
    if (protocol === null) {
      return rejectOutcome(
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
    if (!(ROLES as readonly string[]).includes(roleName)) return rejectOutcome(frame.id, new GatewayError('INVALID_ROLE'));
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
  connectFailure(id: string | null, err: unknown, connId?: string): ConnectOutcome {
    const cause = storeFault(err);
    if (cause) {
      this.deps.log.warn('connect failed: database unavailable', { connId, cause, err: String(err) });
      return rejectOutcome(id, new GatewayError('STORE_UNAVAILABLE', { vars: { cause } }), CLOSE.tryAgainLater);
    }
    const ref = this.deps.random.uuid().slice(0, 8);
    this.deps.log.error('connect failed with an exception', { connId, ref, err: String((err as Error)?.stack ?? err) });
    return rejectOutcome(id, new GatewayError('INTERNAL_ERROR', { vars: { ref } }), CLOSE.tryAgainLater);
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
    const scopes = normalizeScopes(params.scopes ?? []);
    // Behind an identity-aware proxy every proxied connect names an allowed user, whatever else it presents.
    const proxyCheck = this.deps.engine.proxyUser(transport);
    if (proxyCheck && !proxyCheck.ok) {
      void this.deps.store
        .appendAudit({
          atMs: this.deps.clock.now(),
          actor: 'gateway',
          action: 'auth.proxy-user-refused',
          subject: transport.address,
          data: { reason: proxyCheck.detail, ...(transport.proxyUser ? { user: transport.proxyUser } : {}) },
        })
        .catch((err) => this.deps.log.warn('could not audit a refused proxy user', { err: String(err) }));
      return rejectOutcome(id, new GatewayError(proxyCheck.detail, { details: { authReason: 'unauthorized', canRetryWithDeviceToken: false } }));
    }
    const proxyUser = proxyCheck?.ok ? proxyCheck.user : undefined;
    const proven = await checkCredentials(this.credentialDeps, { params, role, nonce, address: transport.address });
    if (!proven.ok) return rejectOutcome(id, proven.error);
    const { device, tokenRecord } = proven;
    let credential = proven.credential;
    // The user an identity-aware proxy signed in authenticates the connect in place of a shared
    // secret: like the gateway token it admits a device under its grant or files a request.
    if (proxyUser !== undefined && credential.kind === 'none' && params.auth?.bootstrapToken === undefined) {
      if (!device) return rejectOutcome(id, new GatewayError('DEVICE_IDENTITY_REQUIRED'));
      credential = { kind: 'shared' };
    }

    // Facts about the device's grants. A time-bound grant past its expiry counts as what it
    // becomes, even before the scheduler ran.
    const now = this.deps.clock.now();
    const grants = (device ? await this.deps.store.listGrants(device.deviceId) : []).flatMap((g) => effectiveGrant(g, now) ?? []);
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
      autoApproveLocal: this.deps.config.autoApproveLocal,
      sharedSecretIsAdminOnHost: this.deps.config.sharedSecretIsAdminOnHost === true,
      waitForApproval: (params.caps ?? []).includes('device-pairing-wait'),
    });

    // Listed, not spread: V8 (Node 20) gives an object built as `{ ...other, more }` a fresh hidden
    // class per connect, which filled the old generation with dead maps (bench/README.md).
    const ctx: AdmitContext = {
      credential,
      device,
      tokenRecord,
      presentedDeviceToken: proven.presentedDeviceToken,
      sharedVia: proven.sharedVia,
      setup: proven.setup,
      bootstrapDetails: proven.bootstrapDetails,
      reissueToken: proven.reissueToken,
      id,
      params,
      role,
      protocol,
      scopes,
      transport,
      sock,
      grant,
      proxyUser,
    };
    const policed = await this.applyPolicy(decision, ctx);
    return this.admitted('decision' in policed ? await this.carryOut(policed.decision, ctx) : policed.outcome, ctx);
  }

  /**
   * Approval policies (approval-engine.ts) decide what would otherwise wait for a person: a
   * request is approved by a rule (with its proof), refused, or left pending as before.
   */
  private async applyPolicy(decision: Decision, ctx: AdmitContext): Promise<{ decision: Decision } | { outcome: ConnectOutcome }> {
    const engine = this.deps.engine;
    if (decision.outcome !== 'hold' && decision.outcome !== 'admit-with-upgrade') return { decision };
    if (!ctx.device || !engine.active) return { decision };
    const kind = decision.outcome === 'hold' ? decision.kind : 'scope-upgrade';
    const adds = decision.outcome === 'hold' ? ctx.scopes : decision.missing;
    const request = approvalRequestOf(ctx.role, adds, kind, ctx.params.client, ctx.transport);
    const proofs = ctx.proxyUser !== undefined ? { proxyUser: ctx.proxyUser } : {};
    const d = engine.decide(request, proofs);
    ctx.policy = { request, proofs, decision: d };
    if (d.action === 'approve') {
      const base = decision.outcome === 'hold' ? [] : (ctx.grant?.scopes ?? []);
      return { decision: { outcome: 'pair-silently', kind, grantScopes: normalizeScopes([...base, ...d.scopes]), missing: d.missing } };
    }
    if (d.action !== 'deny') return { decision };
    await this.deps.store.appendAudit({
      atMs: this.deps.clock.now(),
      actor: `rule:${d.rule}`,
      action: 'pairing.denied',
      subject: ctx.device.deviceId,
      data: { role: ctx.role, scopes: adds, kind, address: ctx.transport.address, ...engine.auditData(d) },
    });
    // A denied upgrade keeps what the device already holds; a denied pairing is refused outright.
    if (decision.outcome === 'admit-with-upgrade') return { decision: { outcome: 'admit', scopes: decision.scopes } };
    return {
      outcome: rejectOutcome(
        ctx.id,
        new GatewayError('PAIRING_DENIED_BY_POLICY', { vars: { rule: d.rule as string }, details: { rule: d.rule, requestedRole: ctx.role } }),
      ),
    };
  }

  /** After admission: a node's declared surface is checked (and a request filed) before hello-ok. */
  private async admitted(out: ConnectOutcome, ctx: AdmitContext): Promise<ConnectOutcome> {
    if (out.type !== 'hello' || out.session.role !== 'node') return out;
    try {
      await this.deps.nodes.attach(out.session, ctx.params);
      // A node must be findable by the other instances before it is told it is in.
      await this.deps.cluster?.announce(out.session);
    } catch (err) {
      this.deps.sessions.disconnect(out.session);
      throw err;
    }
    return out;
  }

  private async carryOut(decided: Decision, ctx: AdmitContext): Promise<ConnectOutcome> {
    const { store, sessions, approvals } = this.deps;
    const decision = this.holdQuorumScopes(decided, ctx);
    const now = this.deps.clock.now();
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
        return rejectOutcome(ctx.id, new GatewayError(d, { details }));
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
        const pending = (await store.listPairingRequests(device.deviceId)).find((r) => r.role === ctx.role);
        const rule = ctx.policy?.decision.action === 'approve' ? ctx.policy.decision : null;
        const via = rule ? 'policy' : ctx.credential.kind === 'owner' ? 'owner' : 'silent';
        const actor = rule ? `rule:${rule.rule}` : via === 'owner' ? 'owner' : 'gateway';
        const terms = approvalTerms(ctx.grant, decision.grantScopes, decision.grantScopes, rule?.ttlMs ?? null, now);
        await store.approve({
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
              ...(rule ? this.deps.engine.auditData(rule) : {}),
              ...(terms.expiresAtMs !== null ? { expiresAtMs: terms.expiresAtMs } : {}),
            },
          },
        });
        if (terms.expiresAtMs !== null) void this.deps.engine.expiry.poke();
        if (pending) {
          sessions.broadcastResolved(pending.requestId, device.deviceId, 'approved');
          // Another socket of this device may be waiting on the same request.
          await approvals.resolveWaiters(pending.requestId, 'approved');
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
        if (ctx.policy) this.deps.engine.maybeProbe(ctx.policy.request, ctx.policy.proofs, req);
        if (decision.wait) {
          return approvals.wait({
            requestId: req.requestId,
            device: ctx.device as VerifiedDevice,
            role: ctx.role,
            scopes: ctx.scopes,
            connectId: ctx.id,
            admit: async () => this.admitted(await this.admitDevice(ctx, ctx.scopes), ctx),
            failure: (connectId, err) => this.connectFailure(connectId, err),
          });
        }
        return this.pairingRequired(ctx, decision.kind, req.requestId);
      }
      case 'redeem-bootstrap':
        return this.redeemBootstrap(ctx);
    }
  }

  /**
   * Local auto-approval never satisfies a quorum: scopes under one go to the pending request
   * instead. The owner credential pairing the device it connects with is not held back: whoever
   * holds it has every scope without a device anyway (quorum guards approving someone else).
   */
  private holdQuorumScopes(decision: Decision, ctx: AdmitContext): Decision {
    if (decision.outcome !== 'pair-silently' || ctx.credential.kind === 'owner') return decision;
    const held = holdBackQuorumScopes(this.deps.config.approvalQuorum, decision.grantScopes, ctx.grant?.scopes ?? null);
    if (held.length === 0) return decision;
    return { ...decision, grantScopes: decision.grantScopes.filter((s) => !held.includes(s)), missing: [...new Set([...decision.missing, ...held])] };
  }

  private async fileRequest(ctx: AdmitContext, kind: PairingKind) {
    const req = await this.deps.approvals.fileRequest({
      device: ctx.device as VerifiedDevice,
      role: ctx.role,
      scopes: ctx.scopes,
      kind,
      meta: metaOf(ctx.params),
      address: ctx.transport.address,
    });
    // What the policies saw, so explain runs the same decision on the pending request (explain-decision.ts).
    if (ctx.policy) await recordRequestFacts(this.deps.store, req.requestId, ctx.policy.request, ctx.policy.proofs);
    return req;
  }

  /**
   * Redeem the setup code this connect proved: one store transaction approves every role of its
   * profile for this key and replaces each role's token; hello-ok carries the token of the role
   * connected with, and the other roles' tokens in `deviceTokens`. A repeat by the same key
   * within the grace window gets fresh tokens for the same grants (the earlier ones stop working).
   */
  private async redeemBootstrap(ctx: AdmitContext): Promise<ConnectOutcome> {
    const { store, sessions, approvals } = this.deps;
    const device = ctx.device as VerifiedDevice;
    const setup = ctx.setup as SetupCodeRecord;
    const now = this.deps.clock.now();
    const minted = new Map<Role, MintedToken>(setup.profile.roles.map((r) => [r, mintToken('device', this.deps.random)]));
    const tokens: Partial<Record<Role, { tokenId: string; secretHash: Buffer }>> = {};
    const tokenIds: Partial<Record<Role, string>> = {};
    for (const [r, t] of minted) {
      tokens[r] = { tokenId: t.id, secretHash: t.secretHash };
      tokenIds[r] = t.id;
    }
    // A code minted before the quorum was configured still cannot go around it.
    const underQuorum = setupQuorumRefusal(this.deps.config.approvalQuorum, setup.profile.scopes);
    if (underQuorum) return rejectOutcome(ctx.id, underQuorum);
    const data = { setupId: setup.setupId, role: ctx.role, roles: setup.profile.roles, scopes: setup.profile.scopes, tokenIds, address: ctx.transport.address };
    const actor = `device:${device.deviceId}`;
    const res = await store.redeemSetupCode({
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
      return rejectOutcome(
        ctx.id,
        new GatewayError(refusal.detail, { details: { authReason: authReasonOf(refusal.detail), canRetryWithDeviceToken: false, ...refusal.details } }),
      );
    }
    if (!res.repeat) {
      for (const requestId of res.resolvedRequestIds) sessions.broadcastResolved(requestId, device.deviceId, 'approved');
      if (res.resolvedRequestIds.length === 0) sessions.broadcastResolved(this.deps.random.uuid(), device.deviceId, 'approved');
      sessions.broadcast('device.pair.setup.completed', {
        setupId: setup.setupId,
        deviceId: device.deviceId,
        ...(ctx.params.client.displayName ? { deviceName: cleanText(ctx.params.client.displayName) } : {}),
        access: setup.profile.name,
        roles: setup.profile.roles,
        ts: now,
      });
      for (const requestId of res.resolvedRequestIds) await approvals.resolveWaiters(requestId, 'approved');
    }
    const grant = res.grants.find((g) => g.role === ctx.role);
    const primary = minted.get(ctx.role);
    if (!grant || !primary) throw new Error(`setup code ${setup.setupId} redeemed without role ${ctx.role}`);
    // The session gets what it asked for within the grant; scopes beyond the profile are dropped.
    const granted = new Set(grant.scopes);
    const scopes = ctx.scopes.filter((s) => scopeSatisfied(granted, s));
    const session = this.openSession(ctx, 'device', scopes, device.deviceId, grant.epoch, primary.id);
    this.deps.sessionTokenHashes.set(session, primary.secretHash);
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
    const out = rejectOutcome(ctx.id, err);
    if (out.type === 'reject') out.closeReason = closeReason(`pairing required: ${message} (requestId: ${requestId})`);
    return out;
  }

  /**
   * Admit a device under its current grant; mint a token when it has none to use. `known` is the
   * grant read before the decision when nothing has changed it since (the connect hot path reads
   * it once); after an approval it is left out and read again.
   */
  private async admitDevice(ctx: AdmitContext, scopes: readonly string[], pendingUpgrade?: string, known?: GrantRecord | null): Promise<ConnectOutcome> {
    const { store } = this.deps;
    const device = ctx.device as VerifiedDevice;
    const now = this.deps.clock.now();
    let grant = known ?? (await store.getGrant(device.deviceId, ctx.role));
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
      let live = ctx.reissueToken ? undefined : (await store.listTokens(device.deviceId)).find((t) => t.role === ctx.role && t.revokedAtMs === undefined);
      // A gateway-token reconnect after a pushed rotation the device never picked up gets a token again.
      if (live && ctx.credential.kind === 'shared' && (await claimUnpickedSuccessor(store, device.deviceId, ctx.role, live.tokenId, now))) live = undefined;
      if (live) {
        // Only a hash is stored, so an existing token cannot be shown again; the client keeps the one it has.
        tokenId = live.tokenId;
      } else {
        const minted = mintToken('device', this.deps.random);
        grant =
          (await store.rotateToken(device.deviceId, ctx.role, { tokenId: minted.id, secretHash: minted.secretHash }, null, now, {
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
    if (tokenHash) this.deps.sessionTokenHashes.set(session, tokenHash);
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
      ctx.transport.connId ?? this.deps.random.uuid(),
      kind,
      ctx.role,
      scopes,
      ctx.sock,
      client,
      ctx.transport.address,
      this.deps.clock.now(),
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
    this.deps.sessions.register(session);
    // Assigned onto `auth`, not spread into a new object: see the AdmitContext in authenticate().
    const helloAuth: HelloAuth & { pendingRequestId?: string } = Object.assign(auth, { role: session.role, scopes: [...session.scopes].sort() });
    if (pendingUpgrade) helloAuth.pendingRequestId = pendingUpgrade;
    const server = { version: GATEWAY_VERSION, connId: session.connId, bootId: this.deps.hello.bootId };
    const policy = { maxPayload: frameCapBytes(session), maxBufferedBytes: MAX_BUFFERED_BYTES, tickIntervalMs: this.deps.config.tickIntervalMs };
    // The frame is written piece by piece so the long constant `features` is serialized once
    // (JSON.stringify of the whole frame, the same text: HelloOk in the order the type lists it).
    const frame =
      `{"type":"res","id":${JSON.stringify(ctx.id)},"ok":true,"payload":{"type":"hello-ok","protocol":${ctx.protocol}` +
      `,"server":${JSON.stringify(server)},"features":${this.featuresJson()},"snapshot":${JSON.stringify(this.snapshot())}` +
      `,"auth":${JSON.stringify(helloAuth)},"policy":${JSON.stringify(policy)}}}`;
    return { type: 'hello', session, frame, authMethod: auth.method };
  }

  private featuresJson(): string {
    const methods = this.deps.hello.advertisedMethods();
    if (this.features?.methods !== methods) {
      const features: HelloOk['features'] = { methods: [...methods], events: Object.keys(EVENT_SCOPES), capabilities: [], scopes: [...ALL_OPERATOR_SCOPES] };
      this.features = { methods, json: JSON.stringify(features) };
    }
    return this.features.json;
  }
}

/** How the connection authenticated, as `hello-ok.auth.method` reports it. */
function helloMethod(ctx: AdmitContext): HelloAuth['method'] {
  const kind = ctx.credential.kind;
  if (kind === 'shared' && ctx.sharedVia === null && ctx.proxyUser !== undefined) return 'trusted-proxy';
  if (kind === 'device-token' || kind === 'owner') return kind;
  if (kind === 'bootstrap') return 'bootstrap-token';
  return ctx.sharedVia === 'password' ? 'password' : 'token';
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
