/**
 * Live authority: a change to what a device may do reaches its open sockets at once. Revocation
 * and removal close them, an approved upgrade widens them in place (`auth.updated`), a rejected
 * one tells them, and a token retired by an operator is replaced on the sessions that proved the
 * device key (`device.token.rotated`, then close). With several instances each change is
 * published and applied by the instance holding the sockets; `reconcileSessions` catches up
 * from the store after a gap in the events.
 */
import { CLOSE, closeReason, type DetailCode, GatewayError } from '@clawgate/protocol/errors';
import type { Role } from '@clawgate/protocol/frames';
import type { CloseWhy, ClusterBus, ClusterEvent } from './cluster.js';
import type { Clock, Random } from './env.js';
import type { Logger } from './logger.js';
import type { GatewayMetrics } from './metrics.js';
import { frameCapBytes, type Principal, type SessionPrincipal, scopeSetOf } from './principal.js';
import { recordRotationGrace } from './rotation-grace.js';
import { mintToken } from './secrets.js';
import type { SessionRegistry } from './sessions.js';
import type { GrantRecord, Store } from './store.js';

export interface LiveAuthorityDeps {
  store: Store;
  clock: Clock;
  random: Random;
  log: Logger;
  metrics: Pick<GatewayMetrics, 'revocationClose'>;
  sessions: Pick<SessionRegistry, 'deviceSessions' | 'disconnect' | 'has' | 'sessions'>;
  /** Whether another instance holds a session (null with a single instance). */
  bus: Pick<ClusterBus, 'hasSession'> | null;
  publish(e: ClusterEvent): void;
  /**
   * The hash of the token each device session holds: what a pushed rotation retires (rotation
   * grace). Written by the handshake when it admits a session, owned by the composition root.
   */
  sessionTokenHashes: WeakMap<SessionPrincipal, Buffer>;
}

export class LiveAuthority {
  private readonly rotationPushes = new Map<string, Promise<number>>();

  constructor(private readonly deps: LiveAuthorityDeps) {}

  /**
   * Close every live session of a device (optionally one role) with a catalogue reason. The
   * caller's own socket is closed just after its response is written, so it still learns the result.
   */
  closeDeviceSessions(deviceId: string, role: Role | null, why: CloseWhy & DetailCode, caller?: Principal, changedAtMs?: number): number {
    this.deps.publish({ type: 'close-device', deviceId, role, why, ...(changedAtMs !== undefined ? { atMs: changedAtMs } : {}) });
    return this.closeLocalDeviceSessions(deviceId, role, why, caller, changedAtMs);
  }

  closeLocalDeviceSessions(deviceId: string, role: Role | null, why: CloseWhy, caller?: Principal, changedAtMs?: number): number {
    const err = new GatewayError(why);
    const code = err.close ?? CLOSE.deviceRemoved;
    const reason = closeReason(err.shape.message);
    let n = 0;
    for (const s of this.deps.sessions.deviceSessions(deviceId)) {
      if (role && s.role !== role) continue;
      this.deps.sessions.disconnect(s);
      if (s === caller) setImmediate(() => s.transport.close(code, reason));
      else s.transport.close(code, reason);
      // Measured from the change (when the caller says when it was made) to the close being sent.
      if (changedAtMs !== undefined) this.deps.metrics.revocationClose(why, Math.max(0, this.deps.clock.now() - changedAtMs));
      this.deps.log.info('session closed: authority gone', { connId: s.connId, deviceId, role: s.role, reason: why });
      n++;
    }
    return n;
  }

  /** Close one session with a catalogue reason (its authority is gone). */
  closeSession(s: SessionPrincipal, why: CloseWhy & DetailCode): void {
    if (!this.deps.sessions.has(s)) return;
    const err = new GatewayError(why);
    this.deps.sessions.disconnect(s);
    s.transport.close(err.close ?? CLOSE.deviceRemoved, closeReason(err.shape.message));
  }

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
    const { store, log, sessions } = this.deps;
    if (!sessions.deviceSessions(deviceId).some((s) => s.role === role)) return 0;
    const now = this.deps.clock.now();
    const minted = mintToken('device', this.deps.random);
    let grant: GrantRecord | null = null;
    try {
      grant = await store.issueTokenIfAbsent(deviceId, role, { tokenId: minted.id, secretHash: minted.secretHash }, now, {
        atMs: now,
        actor: 'gateway',
        action: 'token.issued',
        subject: deviceId,
        data: { role, tokenId: minted.id, delivery: 'pushed-live' },
      });
    } catch (err) {
      log.warn('could not mint a rotated token for live sessions', { deviceId, role, err: String(err) });
    }
    // Not minted: another token is live (e.g. a setup code re-paired the device meanwhile).
    // Sessions admitted with that token keep running; only those holding a dead one close.
    let current: string | undefined;
    if (!grant) {
      try {
        current = (await store.listTokens(deviceId)).find((t) => t.role === role && t.revokedAtMs === undefined)?.tokenId;
      } catch (err) {
        log.warn('could not read the live token of a device', { deviceId, role, err: String(err) });
      }
    }
    if (grant) {
      const retired: Array<{ tokenId: string; secretHash: Buffer }> = [];
      for (const s of sessions.deviceSessions(deviceId)) {
        const hash = this.deps.sessionTokenHashes.get(s);
        if (s.role === role && s.tokenId && hash) retired.push({ tokenId: s.tokenId, secretHash: hash });
      }
      try {
        await recordRotationGrace(store, deviceId, role, minted.id, retired, now);
      } catch (err) {
        log.warn('could not record the rotation grace', { deviceId, role, err: String(err) });
      }
    }
    let delivered = 0;
    for (const s of sessions.deviceSessions(deviceId)) {
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
    this.deps.publish({ type: 'token-retired', deviceId, role });
  }

  /** Whether another live instance holds a session of this device and role. */
  async sessionElsewhere(deviceId: string, role: Role): Promise<boolean> {
    if (!this.deps.bus) return false;
    return this.deps.bus.hasSession(deviceId, role, { exceptSelf: true });
  }

  /** After an approval widened a grant: widen live sessions that asked for it, and tell them. */
  widenDeviceSessions(deviceId: string, role: Role, granted: readonly string[], requestId: string, expiresAtMs: number | null = null): void {
    this.deps.publish({ type: 'widen-sessions', deviceId, role, scopes: [...granted], requestId, ...(expiresAtMs !== null ? { expiresAtMs } : {}) });
    this.widenLocalDeviceSessions(deviceId, role, granted, requestId, expiresAtMs);
  }

  widenLocalDeviceSessions(deviceId: string, role: Role, granted: readonly string[], requestId: string, expiresAtMs: number | null = null): void {
    for (const s of this.deps.sessions.deviceSessions(deviceId)) {
      if (s.role !== role || s.pendingUpgradeRequestId !== requestId) continue;
      // Replaced, not changed in place: a session without scopes shares NO_SCOPES (principal.ts).
      s.scopes = scopeSetOf([...s.scopes, ...granted]);
      // A session that had no scopes kept the small frame cap; it may use large frames now.
      s.transport.setFrameCap?.(frameCapBytes(s));
      s.pendingUpgradeRequestId = undefined;
      // A time-bound approval: the device sees when the added scopes end.
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

  /** An upgrade request was rejected: the live sessions that asked for it hear so (on every instance). */
  upgradeRejected(deviceId: string, requestId: string): void {
    this.deps.publish({ type: 'upgrade-rejected', deviceId, requestId });
    this.upgradeRejectedLocal(deviceId, requestId);
  }

  upgradeRejectedLocal(deviceId: string, requestId: string): void {
    for (const s of this.deps.sessions.deviceSessions(deviceId)) {
      if (s.pendingUpgradeRequestId !== requestId) continue;
      s.pendingUpgradeRequestId = undefined;
      s.sendEvent('auth.updated', { role: s.role, scopes: [...s.scopes].sort(), requestId, reason: 'scope-upgrade-rejected' });
    }
  }

  /**
   * Close live device sessions whose authority is gone from the store without this instance
   * hearing of it: the role's grant removed (revoked, device removed) or the token the session
   * used replaced or revoked (rotated). Widened grants leave sessions alone.
   */
  async reconcileSessions(deviceId?: string): Promise<void> {
    const { store, sessions } = this.deps;
    const list = deviceId ? sessions.deviceSessions(deviceId) : [...sessions.sessions.values()];
    for (const s of list) {
      if (!s.deviceId || !sessions.has(s)) continue;
      try {
        const grant = await store.getGrant(s.deviceId, s.role);
        if (!grant) {
          const device = await store.getDevice(s.deviceId);
          this.closeLocalDeviceSessions(
            s.deviceId,
            s.role,
            device ? (grantLapsed(s, this.deps.clock.now()) ? 'GRANT_EXPIRED' : 'TOKEN_REVOKED') : 'DEVICE_REMOVED',
          );
          continue;
        }
        if (s.tokenId) {
          const token = await store.getToken(s.tokenId);
          // Retired by an operator (or replaced): a fresh token goes to the live sessions when
          // the role now has none, else they are only closed.
          if (!token) await this.pushRotatedToken(s.deviceId, s.role);
          else if (token.revokedAtMs !== undefined) this.closeSession(s, 'TOKEN_REVOKED');
        }
      } catch (err) {
        this.deps.log.warn('could not reconcile a live session', { connId: s.connId, deviceId: s.deviceId, err: String(err) });
      }
    }
  }
}

/**
 * A grant that vanished from the store around its expiry was ended by another instance's
 * scheduler (its close event may arrive after the store's change notice): say so, not "revoked".
 * The margin covers clock differences between instances.
 */
function grantLapsed(s: SessionPrincipal, nowMs: number): boolean {
  return s.grantExpiresAtMs !== null && s.grantExpiresAtMs <= nowMs + 5_000;
}
