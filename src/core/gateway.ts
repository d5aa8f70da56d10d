/**
 * The gateway core's composition root and facade. It never sees a socket: the server hands it
 * text frames and a SessionTransport, so everything here runs the same under a unit test, the
 * real server, or another instance's event bus. The work is done by single-purpose modules:
 *
 *   handshake.ts       first frame → credentials.ts (what was proven) → admission.ts (decision)
 *                      → session or refusal or a wait on approvals.ts
 *   sessions.ts        live sessions, broadcast, presence, last-seen metadata
 *   approvals.ts       pending requests, waiting connects, approve / reject / expire
 *   live-authority.ts  close / widen / rotation push on live sessions
 *   nodes.ts, cluster-nodes.ts  node surfaces and node.invoke (locally and across instances)
 *
 * This file builds them, owns the state they share (the token hashes of sessions, the
 * sign-in link claims, the join codes), runs the periodic work, routes other instances' events
 * to the module they concern, and keeps the methods server/, methods/ and tests call.
 */

import { CLOSE, type DetailCode, GatewayError } from '@clawgate/protocol/errors';
import type { ChallengePayload, ResponseFrame, Role } from '@clawgate/protocol/frames';
import { ApprovalEngine, type SshProbe } from './approval-engine.js';
import type { QuorumDeps } from './approval-flow.js';
import { carryOutDecidedQuorums } from './approval-recovery.js';
import { type ApprovalOptions, Approvals, type ApprovedRequest } from './approvals.js';
import type { CloseWhy, ClusterBus, ClusterEvent } from './cluster.js';
import { ClusterNodeRouter } from './cluster-nodes.js';
import type { GatewayConfig, RetentionPolicy } from './config.js';
import type { ConnectOutcome, TransportFacts } from './connect-outcome.js';
import { GatewaySecrets } from './credentials.js';
import { type CallIds, MethodTable } from './dispatch.js';
import type { Clock, Random } from './env.js';
import { requestFrameCheck } from './frame-checks.js';
import type { GatewayIdentity } from './gateway-identity.js';
import { Handshake } from './handshake.js';
import { JoinCodes } from './join-codes.js';
import { LiveAuthority } from './live-authority.js';
import type { Logger } from './logger.js';
import { type GatewayMetrics, noMetrics } from './metrics.js';
import { NodeRegistry } from './nodes.js';
import { DEFAULT_PRESENCE_WINDOW_MS } from './presence.js';
import type { Principal, SessionPrincipal, SessionTransport } from './principal.js';
import { type AuthLimiter, FailureLimiter } from './ratelimit.js';
import { pruneRetained, retentionPolicy } from './retention.js';
import { SessionRegistry } from './sessions.js';
import type { PairingRequest, PruneCounts, Store } from './store.js';

export type { ConnectOutcome, TransportFacts } from './connect-outcome.js';
export { EVENT_SCOPES } from './events.js';
export { GATEWAY_VERSION, negotiateProtocol } from './handshake.js';
export { type Logger, silentLogger } from './logger.js';

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

/** How often an instance in a cluster re-checks its waiting connects against the store (`postgres.waiterReconcileMs`). */
export const WAITER_RECONCILE_MS = 1_000;

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
  /** Live sessions of this instance: registry, broadcast, presence. */
  readonly registry: SessionRegistry;
  /** Live node connections, surfaces and node.invoke routing. */
  readonly nodes: NodeRegistry;
  /** Pending pairing requests and the connects waiting on them. */
  readonly approvals: Approvals;
  /** Revocation, widening and token rotation reaching live sessions. */
  readonly authority: LiveAuthority;
  /** Approval policies with their proofs, and the expiry of time-bound grants (approval-engine.ts). */
  readonly policies: ApprovalEngine;
  readonly handshake: Handshake;
  /** Join codes minted by this process (they carry a setup secret, so they live only here). */
  readonly joinCodes: JoinCodes;
  /** What approvals under quorum use (approval-flow.ts); `claimant` names this instance. */
  readonly quorum: QuorumDeps;
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  /** Work that must finish before the store closes (automations: scheduler, delivery worker). */
  private readonly stopHooks: Array<() => Promise<void>> = [];
  private readonly topicHandlers = new Map<string, (payload: unknown) => void>();

  constructor(deps: GatewayDeps) {
    this.store = deps.store;
    this.config = deps.config;
    this.clock = deps.clock;
    this.random = deps.random;
    this.log = deps.log;
    this.methods = new MethodTable(deps.log);
    this.limiter = deps.limiter ?? new FailureLimiter(deps.clock, deps.config.rateLimit);
    this.bus = deps.bus ?? null;
    this.bootId = deps.random.uuid();
    this.identity = deps.identity ?? null;
    this.metrics = deps.metrics ?? noMetrics;
    this.retention = retentionPolicy(deps.config.retention);
    this.startedAtMs = deps.clock.now();
    this.joinCodes = new JoinCodes(deps.clock, deps.random);
    const publish = (e: ClusterEvent) => this.publish(e);
    const base = { store: this.store, clock: this.clock, random: this.random, log: this.log, metrics: this.metrics };

    // State two modules share, owned here: the hash of the token each device session holds
    // (written on admission, read by a pushed rotation) and the sign-in links being claimed.
    const sessionTokenHashes = new WeakMap<SessionPrincipal, Buffer>();
    const dashboardLinkClaims = new Set<string>();

    this.registry = new SessionRegistry({
      ...base,
      bus: this.bus,
      publish,
      presenceWindowMs: deps.config.presenceWindowMs ?? DEFAULT_PRESENCE_WINDOW_MS,
    });
    const broadcast = (event: string, payload: unknown) => this.registry.broadcast(event, payload);
    this.quorum = { store: this.store, clock: this.clock, config: deps.config, broadcast, claimant: this.bus?.instanceId ?? this.bootId };
    this.nodes = new NodeRegistry({ ...base, broadcast, quorum: this.quorum }, deps.config.nodeLimits);
    this.cluster = this.bus ? new ClusterNodeRouter({ ...base, nodes: this.nodes }, this.bus) : null;
    if (this.cluster) this.nodes.routeThrough(this.cluster);
    const cluster = this.cluster;
    this.registry.setHooks({
      opened: (s) => {
        // A node is announced by the handshake, once its surface is attached.
        if (s.role !== 'node') void cluster?.announce(s);
      },
      closed: (s) => {
        this.nodes.detach(s);
        cluster?.withdraw(s);
      },
    });
    this.authority = new LiveAuthority({ ...base, sessions: this.registry, bus: this.bus, publish, sessionTokenHashes });
    this.approvals = new Approvals({
      ...base,
      config: deps.config,
      sessions: this.registry,
      authority: this.authority,
      publish,
      timeBoundChanged: () => void this.policies.expiry.poke(),
    });
    this.policies = new ApprovalEngine(
      {
        ...base,
        config: deps.config,
        broadcast,
        deviceSessions: (id) => this.registry.deviceSessions(id),
        disconnect: (s) => this.registry.disconnect(s),
        closeDeviceSessions: (id, role, why, caller, atMs) => this.authority.closeDeviceSessions(id, role, why, caller, atMs),
        publishClusterTopic: (topic, payload) => this.publishClusterTopic(topic, payload),
        onClusterTopic: (topic, handler) => this.onClusterTopic(topic, handler),
        approveRequest: (r, by, opts) => this.approvals.approveRequest(r, by, undefined, opts),
        audit: (actor, action, subject, data) => this.audit(actor, action, subject, data),
      },
      deps.sshProbe ?? null,
    );
    this.handshake = new Handshake({
      ...base,
      config: deps.config,
      identity: this.identity,
      credentials: { limiter: this.limiter, secrets: new GatewaySecrets(deps.config), dashboardLinkClaims },
      sessions: this.registry,
      approvals: this.approvals,
      engine: this.policies,
      nodes: this.nodes,
      cluster,
      sessionTokenHashes,
      hello: { bootId: this.bootId, startedAtMs: this.startedAtMs, advertisedMethods: () => this.methods.advertised() },
    });
    this.bus?.subscribe(
      (e) => this.applyClusterEvent(e),
      () => void this.resync(),
    );
  }

  /** Live sessions of this instance by connection id. */
  get sessions(): Map<string, SessionPrincipal> {
    return this.registry.sessions;
  }

  /** Start periodic work (tick events, access-metadata flush). */
  start(): void {
    const tick = setInterval(() => this.broadcast('tick', { ts: this.clock.now() }), this.config.tickIntervalMs);
    const flush = setInterval(() => void this.registry.flushSeen(), this.config.seenFlushMs);
    const expire = setInterval(() => {
      this.expirePending().catch((err) => this.log.warn('pending expiry failed', { err: String(err) }));
      void this.carryOutDecidedQuorums();
    }, 60_000);
    // A quorum reached just before the previous process died is carried out now.
    void this.carryOutDecidedQuorums();
    const prune = setInterval(() => void this.pruneRetained(), this.retention.intervalMs);
    tick.unref();
    flush.unref();
    expire.unref();
    prune.unref();
    this.timers.push(tick, flush, expire, prune);
    this.policies.expiry.start();
    if (this.bus) {
      // Events are best effort: a notification lost with the listening connection must not
      // strand a connect waiting on approval (a decided request is announced by the database in
      // the deciding transaction, so an instance killed after its commit is no longer a gap).
      const reconcile = setInterval(() => void this.reconcileWaiters(), this.config.waiterReconcileMs ?? WAITER_RECONCILE_MS);
      reconcile.unref();
      this.timers.push(reconcile);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Handshake (handshake.ts)
  // ------------------------------------------------------------------------------------------

  /** The URLs that reach this gateway directly: an owner proof must name one of them. */
  setOwnUrls(urls: Iterable<string>): void {
    this.handshake.setOwnUrls(urls);
  }

  /** A socket's challenge; signed by the gateway key only for a client that asked (`gatewayProof=1`). */
  challenge(signed: boolean): ChallengePayload {
    return this.handshake.challenge(signed);
  }

  /** Handle the first frame of a connection. Never throws on client input. */
  connect(text: string, nonce: string, transport: TransportFacts, sock: SessionTransport): Promise<ConnectOutcome> {
    return this.handshake.connect(text, nonce, transport, sock);
  }

  snapshot(): Record<string, unknown> {
    return this.handshake.snapshot();
  }

  // ------------------------------------------------------------------------------------------
  // Sessions, frames, events (sessions.ts)
  // ------------------------------------------------------------------------------------------

  disconnect(session: SessionPrincipal): void {
    this.registry.disconnect(session);
  }

  /** Devices with a live socket here or, with several instances, on any instance. */
  connectedDeviceIds(): Promise<Set<string>> {
    return this.registry.connectedDeviceIds();
  }

  deviceSessions(deviceId: string): SessionPrincipal[] {
    return this.registry.deviceSessions(deviceId);
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
    if (!requestFrameCheck().Check(frame)) {
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
    this.registry.broadcast(event, payload);
  }

  /** Send an event to the sessions of this instance only. */
  broadcastLocal(event: string, payload: unknown): void {
    this.registry.broadcastLocal(event, payload);
  }

  broadcastResolved(requestId: string, deviceId: string, decision: 'approved' | 'rejected' | 'expired', extra?: Record<string, unknown>): void {
    this.registry.broadcastResolved(requestId, deviceId, decision, extra);
  }

  /** Hear every event this instance originates (approval notifications, automations/approval-notifier.ts). */
  onBroadcast(listener: (event: string, payload: unknown) => void): void {
    this.registry.onBroadcast(listener);
  }

  // ------------------------------------------------------------------------------------------
  // Live authority (live-authority.ts)
  // ------------------------------------------------------------------------------------------

  /** Close every live session of a device (optionally one role), on every instance. */
  closeDeviceSessions(deviceId: string, role: Role | null, why: CloseWhy & DetailCode, caller?: Principal, changedAtMs?: number): number {
    return this.authority.closeDeviceSessions(deviceId, role, why, caller, changedAtMs);
  }

  /** Push a fresh token to the live sessions of (deviceId, role) whose token an operator retired. */
  pushRotatedToken(deviceId: string, role: Role): Promise<number> {
    return this.authority.pushRotatedToken(deviceId, role);
  }

  /** Tell the other instances that (deviceId, role) lost its token to a cross-device rotation. */
  publishTokenRetired(deviceId: string, role: Role): void {
    this.authority.publishTokenRetired(deviceId, role);
  }

  /** Whether another live instance holds a session of this device and role. */
  sessionElsewhere(deviceId: string, role: Role): Promise<boolean> {
    return this.authority.sessionElsewhere(deviceId, role);
  }

  /** After an approval widened a grant: widen live sessions that asked for it, and tell them. */
  widenDeviceSessions(deviceId: string, role: Role, granted: readonly string[], requestId: string): void {
    this.authority.widenDeviceSessions(deviceId, role, granted, requestId);
  }

  /** Close live sessions whose authority is gone from the store (after a gap in the events). */
  reconcileSessions(deviceId?: string): Promise<void> {
    return this.authority.reconcileSessions(deviceId);
  }

  // ------------------------------------------------------------------------------------------
  // Approvals (approvals.ts)
  // ------------------------------------------------------------------------------------------

  /** Approve a pending request: widen the grant, finish waiting connects, widen live sessions. */
  approveRequest(r: PairingRequest, by: Principal, extra?: Record<string, unknown>, opts?: ApprovalOptions): Promise<ApprovedRequest> {
    return this.approvals.approveRequest(r, by, extra, opts);
  }

  rejectRequest(r: PairingRequest, by: Principal, extra?: Record<string, unknown>): Promise<void> {
    return this.approvals.rejectRequest(r, by, extra);
  }

  /** Drop pending requests nobody retried within the TTL (checked lazily and periodically). */
  expirePending(): Promise<number> {
    return this.approvals.expirePending();
  }

  /** Called after a request is approved or rejected: finish connects that chose to wait. */
  resolveWaiters(requestId: string, decision: 'approved' | 'rejected'): Promise<void> {
    return this.approvals.resolveWaiters(requestId, decision);
  }

  /** Finish waiting connects whose request is gone from the store (after a gap in the events). */
  reconcileWaiters(): Promise<void> {
    return this.approvals.reconcileWaiters();
  }

  /** Carry out pending requests whose quorum was reached but whose claimant is gone (approval-recovery.ts). */
  carryOutDecidedQuorums(): Promise<number> {
    return carryOutDecidedQuorums({
      quorum: this.quorum as Parameters<typeof carryOutDecidedQuorums>[0]['quorum'],
      claimant: this.quorum.claimant as string,
      bus: this.bus,
      log: this.log,
      approveRequest: (r, by, extra, opts) => this.approvals.approveRequest(r, by, extra, opts),
      approveNodeSurface: (r, by, approvals, auditExtra) => this.nodes.carryOut(r, by, approvals, auditExtra),
    }).catch((err) => {
      this.log.warn('quorum recovery failed', { err: String(err) });
      return 0;
    });
  }

  // ------------------------------------------------------------------------------------------
  // Housekeeping
  // ------------------------------------------------------------------------------------------

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

  async audit(actor: string, action: string, subject?: string, data?: Record<string, unknown>): Promise<void> {
    await this.store.appendAudit({ atMs: this.clock.now(), actor, action, subject, data });
  }

  // ------------------------------------------------------------------------------------------
  // Several instances
  // ------------------------------------------------------------------------------------------

  /** Tell the other instances; a failed publish is logged, the reconcile loop covers waiters. */
  private publish(event: ClusterEvent): void {
    if (!this.bus || this.stopping) return;
    this.bus.publish(event).catch((err) => this.log.warn('could not publish a cluster event', { type: event.type, err: String(err) }));
  }

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
        this.registry.broadcastLocal(e.event, e.payload);
        return;
      case 'close-device':
        this.authority.closeLocalDeviceSessions(e.deviceId, e.role, e.why, undefined, e.atMs);
        return;
      case 'widen-sessions':
        this.authority.widenLocalDeviceSessions(e.deviceId, e.role, e.scopes, e.requestId, e.expiresAtMs ?? null);
        return;
      case 'upgrade-rejected':
        this.authority.upgradeRejectedLocal(e.deviceId, e.requestId);
        return;
      // The decision is read from the store, not taken from the event (Approvals.settleFromStore).
      case 'resolve-waiters':
      case 'pairing-request-gone':
        this.approvals.settleFromStore(e.requestId).catch((err) => this.log.warn('could not finish waiting connects', { err: String(err) }));
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

  // ------------------------------------------------------------------------------------------
  // Shutdown
  // ------------------------------------------------------------------------------------------

  /** Run `fn` during stop, after the sessions are closed and before the store is. */
  onStop(fn: () => Promise<void>): void {
    this.stopHooks.push(fn);
  }

  /** Stop: `shutdown` event, close 1012 for everyone, flush, and close the store. */
  async stop(reason = 'gateway stopping'): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    this.registry.stop();
    this.policies.expiry.stop();
    for (const s of [...this.sessions.values()]) {
      s.sendEvent('shutdown', { reason, restartExpectedMs: null });
      this.disconnect(s);
      s.transport.close(CLOSE.restart, 'service restart');
    }
    this.approvals.stop();
    for (const fn of this.stopHooks) {
      await fn().catch((err) => this.log.error('stop hook failed', { err: String(err) }));
    }
    await this.policies.settled();
    await this.registry.flushSeen();
    await this.bus?.close();
    await this.store.close();
  }
}

function isCancel(frame: unknown): frame is { type: 'cancel'; id: string } {
  return typeof frame === 'object' && frame !== null && (frame as { type?: unknown }).type === 'cancel' && typeof (frame as { id?: unknown }).id === 'string';
}
