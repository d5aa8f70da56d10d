/**
 * Approvals: pending pairing requests and the connects waiting on them. A connect the decision
 * holds files (or refreshes) a request here and either is told PAIRING_REQUIRED or, with the
 * `device-pairing-wait` cap, waits; an operator's approval or rejection (methods/devices.ts, after
 * core/management-policy.ts allowed it) widens the grant, answers every waiting connect and
 * updates the device's live sessions. With several instances the outcome is published, and
 * `reconcileWaiters` catches up from the store after a gap in the events.
 */

import { confirmationCode } from '@clawgate/protocol/confirmation';
import { CLOSE, GatewayError } from '@clawgate/protocol/errors';
import type { Role } from '@clawgate/protocol/frames';
import { normalizeScopes, scopeSatisfied } from '@clawgate/protocol/scopes';
import { deviceRequestedPayload, deviceRequestState } from './approval-flow.js';
import type { QuorumConfig } from './approval-quorum.js';
import type { ClusterEvent } from './cluster.js';
import type { ConnectOutcome } from './connect-outcome.js';
import type { Clock, Random } from './env.js';
import { approvalTerms, effectiveGrant } from './grant-expiry.js';
import type { VerifiedDevice } from './identity.js';
import type { LiveAuthority } from './live-authority.js';
import type { Logger } from './logger.js';
import type { GatewayMetrics } from './metrics.js';
import type { Principal } from './principal.js';
import type { SessionRegistry } from './sessions.js';
import type { DeviceMeta, GrantRecord, PairingRequest, Store } from './store.js';

export type PairingKind = 'new-device' | 'role-upgrade' | 'scope-upgrade';

export interface ApprovalsDeps {
  store: Store;
  clock: Clock;
  random: Random;
  log: Logger;
  metrics: Pick<GatewayMetrics, 'approval'>;
  config: { pendingTtlMs: number; approvalQuorum?: QuorumConfig | undefined };
  sessions: Pick<SessionRegistry, 'broadcast' | 'broadcastResolved'>;
  authority: Pick<LiveAuthority, 'widenDeviceSessions' | 'upgradeRejected'>;
  publish(e: ClusterEvent): void;
  /** A time-bound grant was written or changed: the expiry scheduler looks again (grant-expiry.ts). */
  timeBoundChanged?: (() => void) | undefined;
}

/** What a held connect asks for: filed as (or merged into) the device's pending request for the role. */
export interface RequestInput {
  device: VerifiedDevice;
  role: Role;
  scopes: readonly string[];
  kind: PairingKind;
  meta: DeviceMeta;
  address: string;
}

/** A connect that chose to wait for its request's outcome. */
export interface WaitInput {
  requestId: string;
  device: VerifiedDevice;
  role: Role;
  scopes: readonly string[];
  /** The id of the connect request, for the answer when admission fails. */
  connectId: string;
  /** Admit the connect under the grant the approval committed. */
  admit(): Promise<ConnectOutcome>;
  /** The answer for an admission that threw (the database went away between approval and token). */
  failure(connectId: string, err: unknown): ConnectOutcome;
}

interface Waiter {
  requestId: string;
  deviceId: string;
  role: Role;
  scopes: readonly string[];
  finish(outcome: ConnectOutcome): void;
  admit(): Promise<ConnectOutcome>;
  failure(err: unknown): ConnectOutcome;
}

export interface ApprovedRequest {
  requestId: string;
  deviceId: string;
  role: Role;
  scopes: string[];
  device: unknown;
  /** When the time-bound part of the grant ends (null: until revoked). */
  expiresAtMs: number | null;
}

/** How an approval is made beyond who made it: for how long, and what the audit entry adds (the rule and its proof). */
export interface ApprovalOptions {
  ttlMs?: number | null | undefined;
  /** The device's grant for the role as the caller just read it (absent: read it here). */
  grant?: GrantRecord | null | undefined;
  auditExtra?: Record<string, unknown> | undefined;
}

export class Approvals {
  private readonly waiters = new Map<string, Set<Waiter>>();

  constructor(private readonly deps: ApprovalsDeps) {}

  /** File (or refresh or widen) the device's pending request for a role; operators hear of a new or wider one. */
  async fileRequest(input: RequestInput): Promise<PairingRequest> {
    const { store, clock, random, sessions } = this.deps;
    const { device, role, scopes, kind, meta, address } = input;
    const now = clock.now();
    const known = await store.getDevice(device.deviceId);
    const res = await store.upsertPairingRequest({
      requestId: random.uuid(),
      deviceId: device.deviceId,
      publicKey: device.publicKey,
      role,
      scopes: [...scopes],
      kind,
      meta,
      address,
      isRepair: known !== null,
      atMs: now,
      audit: {
        atMs: now,
        actor: `device:${device.deviceId}`,
        action: 'pairing.requested',
        subject: device.deviceId,
        data: { role, scopes, kind, address },
      },
    });
    if (res.created || res.widened) {
      const r = res.request;
      // The grant is read again: a silent pairing on this connect may just have widened it.
      const state = await deviceRequestState({ store, clock, config: this.deps.config, broadcast: (e, p) => sessions.broadcast(e, p) }, r);
      sessions.broadcast('device.pair.requested', deviceRequestedPayload(r, state, { widened: res.widened }, now));
    }
    return res.request;
  }

  /** Hold a connect until its request is approved (admitted), rejected, or the gateway stops. */
  wait(input: WaitInput): ConnectOutcome {
    let finish!: (o: ConnectOutcome) => void;
    const result = new Promise<ConnectOutcome>((resolve) => (finish = resolve));
    const set = this.waiters.get(input.requestId) ?? new Set<Waiter>();
    const waiter: Waiter = {
      requestId: input.requestId,
      deviceId: input.device.deviceId,
      role: input.role,
      scopes: input.scopes,
      finish: (o) => {
        set.delete(waiter);
        finish(o);
      },
      admit: input.admit,
      failure: (err) => input.failure(input.connectId, err),
    };
    set.add(waiter);
    this.waiters.set(input.requestId, set);
    // The request may have been decided between its filing and this registration, its
    // announcement finding no one waiting yet (another instance approves as soon as the request
    // is visible): one look at the store now, after the registration, closes that gap.
    this.settleFromStore(input.requestId, true).catch((err) =>
      this.deps.log.warn('could not check a waiting connect against the store', { requestId: input.requestId, err: String(err) }),
    );
    const code = confirmationCode({ requestId: input.requestId, publicKey: input.device.publicKey });
    return { type: 'wait', requestId: input.requestId, confirmationCode: code, result, cancel: () => set.delete(waiter) };
  }

  /** Called after a request is approved or rejected: finish connects that chose to wait (on every instance). */
  async resolveWaiters(requestId: string, decision: 'approved' | 'rejected'): Promise<void> {
    this.deps.publish({ type: 'resolve-waiters', requestId, decision });
    await this.resolveLocalWaiters(requestId, decision);
  }

  async resolveLocalWaiters(requestId: string, decision: 'approved' | 'rejected'): Promise<void> {
    const set = this.waiters.get(requestId);
    if (!set) return;
    this.waiters.delete(requestId);
    // Taken out of the set now, so a look at the store running meanwhile cannot finish them too.
    const all = [...set];
    set.clear();
    await this.inTurn(requestId, async () => {
      for (const w of all) await this.finishWaiter(w, decision);
    });
  }

  /** Admissions of one request's waiters, one after the other across overlapping settlements. */
  private readonly admitting = new Map<string, Promise<void>>();

  /** Run `fn` after the admissions already queued for this request: the first admission of a device may mint its token, and the next must see it. */
  private async inTurn(requestId: string, fn: () => Promise<void>): Promise<void> {
    const next = (this.admitting.get(requestId) ?? Promise.resolve()).then(fn, fn);
    this.admitting.set(requestId, next);
    try {
      await next;
    } finally {
      if (this.admitting.get(requestId) === next) this.admitting.delete(requestId);
    }
  }

  private async finishWaiter(w: Waiter, decision: 'approved' | 'rejected'): Promise<void> {
    if (decision === 'approved') {
      // Already taken out of `waiters`: a failed admission (the database going away between
      // the approval and the token) must still answer the socket, or it would wait forever.
      // The device reconnects and is admitted under the grant that was committed.
      let outcome: ConnectOutcome;
      try {
        outcome = await w.admit();
      } catch (err) {
        outcome = w.failure(err);
      }
      w.finish(outcome);
    } else {
      const err = new GatewayError('PAIRING_REJECTED', { details: { requestId: w.requestId } });
      w.finish({ type: 'reject', frame: null, closeCode: CLOSE.policy, closeReason: err.shape.message, detail: err.detail });
    }
  }

  /**
   * Finish the connects waiting on a request from what the store holds now, never from what an
   * event claimed: run when another instance or the database announces that the request left
   * the store (approved, rejected, expired). A waiter whose grant covers what it asked for is
   * admitted (the admission reads the grant as it then stands); the others are
   * refused once the request is gone, and keep waiting while it is still pending. When the store
   * cannot be read, the announced decision cannot be carried out: its waiters are told to try
   * again later (as an admission that meets an outage is), unless `keepOnFault` (the periodic
   * re-check, which announces nothing and simply tries again).
   */
  async settleFromStore(requestId: string, keepOnFault = false): Promise<void> {
    // Looks may overlap (an announcement arriving while the look after registration reads): each
    // reads the store afresh and acts only on the waiters still there when it has read, so an
    // older look never delays a newer one and no waiter is finished twice.
    const set = this.waiters.get(requestId);
    const first = set ? [...set][0] : undefined;
    if (!set || !first) return;
    let decided: { admit: Waiter[]; refuse: Waiter[] };
    try {
      decided = await this.readOutcome(requestId, set, first);
    } catch (err) {
      if (keepOnFault) throw err;
      const all = [...set];
      set.clear();
      if (this.waiters.get(requestId) === set) this.waiters.delete(requestId);
      for (const w of all) w.finish(w.failure(err));
      return;
    }
    const admit = decided.admit.filter((w) => set.has(w));
    const refuse = decided.refuse.filter((w) => set.has(w));
    for (const w of [...admit, ...refuse]) set.delete(w);
    if (set.size === 0 && this.waiters.get(requestId) === set) this.waiters.delete(requestId);
    for (const w of refuse) await this.finishWaiter(w, 'rejected');
    if (admit.length === 0) return;
    await this.inTurn(requestId, async () => {
      for (const w of admit) await this.finishWaiter(w, 'approved');
    });
  }

  /** Which of a request's waiters the store's grant admits, and which it refuses (only once the request is gone). */
  private async readOutcome(requestId: string, set: ReadonlySet<Waiter>, first: Waiter): Promise<{ admit: Waiter[]; refuse: Waiter[] }> {
    const { store, clock } = this.deps;
    const coverage = (g: GrantRecord | null) => {
      const current = g ? effectiveGrant(g, clock.now()) : null;
      const granted = new Set(current?.scopes ?? []);
      return (w: Waiter) => current !== null && w.scopes.every((s) => scopeSatisfied(granted, s));
    };
    let stored = await store.getGrant(first.deviceId, first.role);
    let covered = coverage(stored);
    let gone = false;
    if (![...set].every(covered)) {
      // Refusing needs the request gone: a pending one may still be approved. Once it is gone,
      // whatever removed it has committed, so the grant read again now is its outcome (the read
      // above may predate an approval that committed in between).
      gone = !(await store.getPairingRequest(requestId));
      if (gone) {
        stored = await store.getGrant(first.deviceId, first.role);
        covered = coverage(stored);
      }
    }
    return { admit: [...set].filter(covered), refuse: gone ? [...set].filter((w) => !covered(w)) : [] };
  }

  /**
   * Finish waiting connects whose request is gone from the store without this instance hearing
   * of it (the periodic safety net under the events, which are best effort).
   */
  async reconcileWaiters(): Promise<void> {
    for (const requestId of [...this.waiters.keys()]) {
      try {
        if (await this.deps.store.getPairingRequest(requestId)) continue;
        await this.settleFromStore(requestId, true);
      } catch (err) {
        this.deps.log.warn('could not reconcile a waiting connect', { requestId, err: String(err) });
      }
    }
  }

  /**
   * Approve a pending request: widen the grant, finish waiting connects, widen live sessions.
   * Whether `by` may approve it was decided before (core/management-policy.ts).
   */
  async approveRequest(r: PairingRequest, by: Principal, extra?: Record<string, unknown>, opts: ApprovalOptions = {}): Promise<ApprovedRequest> {
    const { store, clock, sessions, authority } = this.deps;
    const now = clock.now();
    const stored = opts.grant !== undefined ? opts.grant : await store.getGrant(r.deviceId, r.role);
    const current = stored ? effectiveGrant(stored, now) : null;
    const scopes = normalizeScopes([...(current?.scopes ?? []), ...r.scopes]);
    // A time-bound approval ends at now + ttl; what the role held for good before stays after it.
    const terms = approvalTerms(current, r.scopes, scopes, opts.ttlMs ?? null, now);
    // An approval policy's rule approves as `rule:<name>` (approval-engine.ts).
    const byRule = by.kind === 'internal' && by.actor.startsWith('rule:');
    await store.approve({
      device: { deviceId: r.deviceId, publicKey: r.publicKey, meta: r.meta, address: r.address },
      role: r.role,
      scopes,
      via: by.kind === 'owner' ? 'owner' : byRule ? 'policy' : 'manual',
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
    this.deps.metrics.approval(now - r.createdAtMs);
    sessions.broadcastResolved(r.requestId, r.deviceId, 'approved', extra);
    authority.widenDeviceSessions(r.deviceId, r.role, r.scopes, r.requestId, terms.expiresAtMs);
    if (terms.expiresAtMs !== null || stored?.expiresAtMs != null) this.deps.timeBoundChanged?.();
    await this.resolveWaiters(r.requestId, 'approved');
    const device = await store.getDevice(r.deviceId);
    return { requestId: r.requestId, deviceId: r.deviceId, role: r.role, scopes, device, expiresAtMs: terms.expiresAtMs };
  }

  /** Reject a pending request: it is deleted, waiting connects are refused, live sessions that asked are told. */
  async rejectRequest(r: PairingRequest, by: Principal, extra?: Record<string, unknown>): Promise<void> {
    const now = this.deps.clock.now();
    await this.deps.store.deletePairingRequest(r.requestId, {
      atMs: now,
      actor: by.actor,
      action: 'pairing.rejected',
      subject: r.deviceId,
      data: { requestId: r.requestId, role: r.role, scopes: r.scopes },
    });
    this.deps.sessions.broadcastResolved(r.requestId, r.deviceId, 'rejected', extra);
    this.deps.authority.upgradeRejected(r.deviceId, r.requestId);
    await this.resolveWaiters(r.requestId, 'rejected');
  }

  /** Drop pending requests nobody retried within the TTL (checked lazily and periodically). */
  async expirePending(): Promise<number> {
    const { store, clock, sessions } = this.deps;
    const cutoff = clock.now() - this.deps.config.pendingTtlMs;
    let n = 0;
    for (const r of await store.listPairingRequests()) {
      if (r.refreshedAtMs >= cutoff) continue;
      const gone = await store.deletePairingRequest(r.requestId, {
        atMs: clock.now(),
        actor: 'gateway',
        action: 'pairing.expired',
        subject: r.deviceId,
        data: { requestId: r.requestId, role: r.role },
      });
      if (gone) {
        n++;
        sessions.broadcastResolved(r.requestId, r.deviceId, 'expired');
      }
    }
    return n;
  }

  /**
   * The gateway is stopping. Connects waiting for approval are not rejected: their requests stay
   * pending, so they are told the gateway is restarting (1012), not that an operator said no.
   */
  stop(): void {
    for (const set of this.waiters.values()) {
      for (const w of [...set]) w.finish({ type: 'reject', frame: null, closeCode: CLOSE.restart, closeReason: 'service restart' });
    }
    this.waiters.clear();
  }
}
