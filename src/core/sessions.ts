/**
 * The live sessions of this instance: registry (by connection and by device), event broadcast
 * with per-scope filtering and slow-consumer handling, presence (coalesced `device.presence`),
 * and the last-seen metadata flushed to the store. Knows nothing of credentials or approvals.
 */
import { CLOSE } from '@clawgate/protocol/errors';
import { MAX_BUFFERED_BYTES } from '@clawgate/protocol/frames';
import { READ } from '@clawgate/protocol/scopes';
import type { Store } from '../store/types.js';
import type { ClusterBus, ClusterEvent } from './cluster.js';
import type { Clock } from './env.js';
import { type Broadcast, CLUSTER_EVENTS, EVENT_SCOPES } from './events.js';
import type { Logger } from './logger.js';
import { type PresenceChange, PresenceCoalescer, type PresenceEvent } from './presence.js';
import type { SessionPrincipal } from './principal.js';

export interface SessionRegistryDeps {
  store: Pick<Store, 'recordSeen'>;
  clock: Clock;
  log: Logger;
  /** Other instances' sessions count as connected in presence (null with a single instance). */
  bus: Pick<ClusterBus, 'connectedDevices'> | null;
  /** Send an event to the other instances (a no-op with a single instance or once stopping). */
  publish(e: ClusterEvent): void;
  presenceWindowMs: number;
}

/** What other parts of the gateway do when a session opens or closes (nodes, cluster presence). */
export interface SessionHooks {
  /** A session was registered (after hello-ok was built). */
  opened(session: SessionPrincipal): void;
  /** A registered session left (closed by the client, or its authority went away). */
  closed(session: SessionPrincipal): void;
}

interface Seen {
  deviceId: string;
  atMs: number;
  address: string;
  tokenId?: string | undefined;
}

export class SessionRegistry {
  readonly sessions = new Map<string, SessionPrincipal>();
  private readonly byDevice = new Map<string, Set<SessionPrincipal>>();
  private seen = new Map<string, Seen>();
  /** Device connects/disconnects, sent to operators as one `device.presence` event per window. */
  private readonly presence: PresenceCoalescer;
  private stopping = false;
  private hooks: SessionHooks = { opened() {}, closed() {} };

  constructor(private readonly deps: SessionRegistryDeps) {
    this.presence = new PresenceCoalescer(deps.presenceWindowMs, (changes, count) => this.emitPresence(changes, count));
  }

  /** Set once by the composition root. */
  setHooks(hooks: SessionHooks): void {
    this.hooks = hooks;
  }

  register(session: SessionPrincipal): void {
    this.sessions.set(session.connId, session);
    if (session.deviceId) {
      let set = this.byDevice.get(session.deviceId);
      if (!set) this.byDevice.set(session.deviceId, (set = new Set()));
      set.add(session);
      this.hooks.opened(session);
      this.seen.set(session.deviceId, { deviceId: session.deviceId, atMs: session.connectedAtMs, address: session.address, tokenId: session.tokenId });
      this.notePresence(session, 'connected', session.connectedAtMs);
    }
  }

  /** Whether `session` is still registered (not yet disconnected). */
  has(session: SessionPrincipal): boolean {
    return this.sessions.has(session.connId);
  }

  disconnect(session: SessionPrincipal): void {
    if (!this.sessions.delete(session.connId)) return;
    this.hooks.closed(session);
    if (session.deviceId) {
      const set = this.byDevice.get(session.deviceId);
      set?.delete(session);
      if (set && set.size === 0) this.byDevice.delete(session.deviceId);
      const now = this.deps.clock.now();
      this.seen.set(session.deviceId, { deviceId: session.deviceId, atMs: now, address: session.address, tokenId: session.tokenId });
      this.notePresence(session, 'disconnected', now);
    }
  }

  deviceSessions(deviceId: string): SessionPrincipal[] {
    return [...(this.byDevice.get(deviceId) ?? [])];
  }

  /** Devices with a live socket here or, with several instances, on any instance. */
  async connectedDeviceIds(): Promise<Set<string>> {
    const ids = new Set(this.byDevice.keys());
    if (this.deps.bus) {
      try {
        for (const id of await this.deps.bus.connectedDevices()) ids.add(id);
      } catch (err) {
        this.deps.log.warn('could not read session presence', { err: String(err) });
      }
    }
    return ids;
  }

  /** Whether a session of this instance was admitted with `tokenId` (live, or not yet flushed to the store). */
  tokenSeen(deviceId: string, tokenId: string): boolean {
    return this.seen.get(deviceId)?.tokenId === tokenId || this.deviceSessions(deviceId).some((s) => s.tokenId === tokenId);
  }

  broadcast(event: string, payload: unknown): void {
    this.broadcastLocal(event, payload);
    if (CLUSTER_EVENTS.has(event)) this.deps.publish({ type: 'broadcast', event, payload });
    for (const l of this.broadcastListeners) l(event, payload);
  }

  private readonly broadcastListeners: Broadcast[] = [];
  /** Hear every event this instance originates (not those relayed from other instances): approval notifications. */
  onBroadcast(listener: Broadcast): void {
    this.broadcastListeners.push(listener);
  }

  /** Send an event to the sessions of this instance only. */
  broadcastLocal(event: string, payload: unknown): void {
    // Carries a device's secret: only ever sent to that device's own sessions (live-authority.ts).
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

  broadcastResolved(requestId: string, deviceId: string, decision: 'approved' | 'rejected' | 'expired', extra?: Record<string, unknown>): void {
    this.broadcast('device.pair.resolved', { requestId, deviceId, decision, ...extra, ts: this.deps.clock.now() });
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
      ts: this.deps.clock.now(),
      changes: changes.map((c) => ({ ...c, deviceConnected: online.has(c.deviceId) })),
      truncated: count > changes.length,
      count,
    };
    this.broadcast('device.presence', event);
  }

  /** Write the last-seen metadata gathered since the previous flush (periodic, and at stop). */
  async flushSeen(): Promise<void> {
    if (this.seen.size === 0) return;
    const batch = [...this.seen.values()];
    this.seen = new Map();
    try {
      await this.deps.store.recordSeen(batch);
    } catch (err) {
      this.deps.log.warn('could not record last-seen metadata', { err: String(err) });
    }
  }

  /** No more presence events (the gateway is stopping; the sessions are closed next). */
  stop(): void {
    this.stopping = true;
    this.presence.stop();
  }
}
