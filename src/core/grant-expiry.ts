/**
 * Time-bound grants: one scheduler per gateway (never a timer per grant) ends every grant whose
 * `expiresAtMs` passed, by the injected clock. The store decides atomically (so of several
 * instances exactly one ends a grant); live sessions lose the withdrawn scopes at once, told by
 * `auth.updated` (reason `grant-expired`), or are closed `GRANT_EXPIRED` when nothing is left.
 * Other instances hear of a narrowing on the cluster topic and of a removal by the usual
 * close-device event; each also rescans the store periodically, which covers grants approved
 * or extended elsewhere and a restart (expiries are stored, not held in memory).
 */

import { CLOSE, closeReason, GatewayError } from '@clawgate/protocol/errors';
import type { Role } from '@clawgate/protocol/frames';
import { scopeSatisfied } from '@clawgate/protocol/scopes';
import type { Clock } from './env.js';
import type { Logger } from './logger.js';
import { frameCapBytes, type SessionPrincipal, scopeSetOf } from './principal.js';
import type { GrantRecord, Store } from './store.js';

/** What the scheduler needs of the gateway: the store, the clock, the live sessions and the cluster bus. */
export interface GrantExpiryDeps {
  store: Pick<Store, 'listTimeBoundGrants' | 'expireGrant'>;
  clock: Clock;
  log: Logger;
  broadcast(event: string, payload: unknown): void;
  deviceSessions(deviceId: string): SessionPrincipal[];
  disconnect(s: SessionPrincipal): void;
  closeDeviceSessions(deviceId: string, role: Role | null, why: 'GRANT_EXPIRED', caller?: undefined, changedAtMs?: number): number;
  publishClusterTopic(topic: string, payload: unknown): void;
  onClusterTopic(topic: string, handler: (payload: unknown) => void): void;
}

/** Longest the scheduler sleeps without looking at the store (grants made or extended on another instance). */
export const EXPIRY_RESCAN_MS = 60_000;
const TOPIC = 'grants.expiry';

type TopicPayload =
  | { kind: 'narrowed'; deviceId: string; role: Role; scopes: string[] }
  | { kind: 'changed'; deviceId: string; role: Role; expiresAtMs: number | null };

/** What a grant will look like after its expiry (for connects that arrive before the scheduler ran). */
export function effectiveGrant(g: GrantRecord, nowMs: number): GrantRecord | null {
  if (g.expiresAtMs == null || g.expiresAtMs > nowMs) return g;
  const keep = g.scopesAfterExpiry ?? [];
  if (keep.length === 0) return null;
  const { expiresAtMs: _ends, scopesAfterExpiry: _kept, ...rest } = g;
  return { ...rest, scopes: [...keep] };
}

/**
 * The expiry and kept scopes of a grant after an approval adds `added` (normalized) for `ttlMs`
 * (null: until revoked). A time-bound approval on a permanent grant keeps the permanent part; a
 * permanent approval on a time-bound grant makes the added scopes permanent.
 */
export function approvalTerms(
  current: GrantRecord | null,
  added: readonly string[],
  allScopes: readonly string[],
  ttlMs: number | null,
  nowMs: number,
): { expiresAtMs: number | null; scopesAfterExpiry?: string[] } {
  const currentlyExpiring = current?.expiresAtMs != null;
  const permanent = current ? (currentlyExpiring ? (current.scopesAfterExpiry ?? []) : current.scopes) : null;
  if (ttlMs !== null) return { expiresAtMs: nowMs + ttlMs, scopesAfterExpiry: [...(permanent ?? [])].sort() };
  if (!currentlyExpiring || !current) return { expiresAtMs: null };
  const keep = [...new Set([...(permanent ?? []), ...added])].sort();
  if (allScopes.every((s) => scopeSatisfied(keep, s))) return { expiresAtMs: null };
  return { expiresAtMs: current.expiresAtMs ?? null, scopesAfterExpiry: keep };
}

export class GrantExpiryScheduler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  constructor(private readonly gw: GrantExpiryDeps) {
    gw.onClusterTopic(TOPIC, (p) => this.onRemote(p as TopicPayload));
  }

  start(): void {
    this.poke();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Look at the store now (after a time-bound approval or an extension), then sleep until the next expiry. */
  poke(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.pass()
      .catch((err) => this.gw.log.warn('grant expiry pass failed', { err: String(err) }))
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          void this.poke();
        }
      });
    return this.running;
  }

  private async pass(): Promise<void> {
    const now = this.gw.clock.now();
    let next = now + EXPIRY_RESCAN_MS;
    // Only the time-bound grants, soonest first: a store of a million permanent grants costs
    // nothing here, at start or on each rescan.
    for (const g of await this.gw.store.listTimeBoundGrants()) {
      if (g.expiresAtMs == null) continue;
      if (g.expiresAtMs > now) {
        next = Math.min(next, g.expiresAtMs);
        break;
      }
      await this.expire(g, now);
    }
    this.arm(Math.max(0, next - this.gw.clock.now()));
  }

  private arm(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.poke(), delayMs);
    this.timer.unref();
  }

  private async expire(g: GrantRecord, now: number): Promise<void> {
    const res = await this.gw.store.expireGrant(g.deviceId, g.role, now, {
      atMs: now,
      actor: 'gateway',
      action: 'grant.expired',
      subject: g.deviceId,
      data: {
        role: g.role,
        withdrawn: g.scopes.filter((s) => !(g.scopesAfterExpiry ?? []).includes(s)),
        kept: g.scopesAfterExpiry ?? [],
        expiresAtMs: g.expiresAtMs,
        approvedBy: g.approvedBy ?? null,
      },
    });
    if (!res) return; // another instance ended it, or it was extended meanwhile
    this.gw.log.info('time-bound grant expired', { deviceId: g.deviceId, role: g.role, outcome: res.outcome });
    this.gw.broadcast('device.pair.changed', { deviceId: g.deviceId, change: 'grant-expired', role: g.role });
    if (res.outcome === 'removed') {
      this.gw.closeDeviceSessions(g.deviceId, g.role, 'GRANT_EXPIRED', undefined, g.expiresAtMs ?? now);
      return;
    }
    this.gw.publishClusterTopic(TOPIC, { kind: 'narrowed', deviceId: g.deviceId, role: g.role, scopes: res.grant.scopes } satisfies TopicPayload);
    this.narrowLocal(g.deviceId, g.role, res.grant.scopes);
  }

  /** Withdraw what the grant no longer holds from this instance's live sessions of (device, role). */
  narrowLocal(deviceId: string, role: Role, kept: readonly string[]): void {
    for (const s of this.gw.deviceSessions(deviceId)) {
      if (s.role !== role) continue;
      const had = s.scopes.size;
      const left = [...s.scopes].filter((x) => scopeSatisfied(kept, x));
      if (had > 0 && left.length === 0) {
        const err = new GatewayError('GRANT_EXPIRED');
        this.gw.disconnect(s);
        s.transport.close(err.close ?? CLOSE.deviceRemoved, closeReason(err.shape.message));
        continue;
      }
      s.scopes = scopeSetOf(left);
      s.grantExpiresAtMs = null;
      s.transport.setFrameCap?.(frameCapBytes(s));
      s.sendEvent('auth.updated', { role, scopes: [...left].sort(), reason: 'grant-expired', expiresAtMs: null });
    }
  }

  /** Tell live sessions their grant's expiry moved (extension), here and on the other instances. */
  announceChange(deviceId: string, role: Role, expiresAtMs: number | null): void {
    this.gw.publishClusterTopic(TOPIC, { kind: 'changed', deviceId, role, expiresAtMs } satisfies TopicPayload);
    this.changedLocal(deviceId, role, expiresAtMs);
    void this.poke();
  }

  private changedLocal(deviceId: string, role: Role, expiresAtMs: number | null): void {
    for (const s of this.gw.deviceSessions(deviceId)) {
      if (s.role !== role) continue;
      s.grantExpiresAtMs = expiresAtMs;
      s.sendEvent('auth.updated', { role, scopes: [...s.scopes].sort(), reason: 'grant-extended', expiresAtMs });
    }
  }

  private onRemote(p: TopicPayload): void {
    if (p.kind === 'narrowed') this.narrowLocal(p.deviceId, p.role, p.scopes);
    else {
      this.changedLocal(p.deviceId, p.role, p.expiresAtMs);
      void this.poke();
    }
  }
}
