/** Pure helpers every adapter uses, so the adapters differ only in how they persist. */
import { createHash } from 'node:crypto';
import type { AuditEntry, AuditInput, Delivery, DeliveryAttempt, PairingRequest, UpsertRequestInput } from './types.js';

export const GENESIS_HASH = '0'.repeat(64);

/** Hash of one audit entry, chained to the previous entry's hash. */
export function auditHash(prevHash: string, seq: number, input: AuditInput): string {
  const body = JSON.stringify([seq, input.atMs, input.actor, input.action, input.subject ?? null, input.data ?? null]);
  return createHash('sha256').update(prevHash).update('\n').update(body).digest('hex');
}

export function chainAudit(prev: AuditEntry | undefined, input: AuditInput): AuditEntry {
  const seq = (prev?.seq ?? 0) + 1;
  const prevHash = prev?.hash ?? GENESIS_HASH;
  return { ...input, seq, prevHash, hash: auditHash(prevHash, seq, input) };
}

/** Verify a contiguous run of audit entries; returns the seq of the first broken link or null. */
export function verifyAuditChain(entries: readonly AuditEntry[]): number | null {
  let prevHash = GENESIS_HASH;
  let expectSeq = 1;
  for (const e of entries) {
    if (e.seq !== expectSeq || e.prevHash !== prevHash || auditHash(prevHash, e.seq, e) !== e.hash) return e.seq;
    prevHash = e.hash;
    expectSeq++;
  }
  return null;
}

/**
 * Merge a retry into the existing pending request of the same (device, role): the id is kept,
 * the timestamp refreshed, and a wider ask adds its scopes (marked as widened). A narrower or
 * equal ask never shrinks what is shown to the approver.
 */
export function mergePairingRequest(
  existing: PairingRequest | null,
  input: UpsertRequestInput,
): { request: PairingRequest; created: boolean; widened: boolean } {
  if (!existing) {
    return {
      created: true,
      widened: false,
      request: {
        requestId: input.requestId,
        deviceId: input.deviceId,
        publicKey: input.publicKey,
        role: input.role,
        scopes: [...input.scopes].sort(),
        kind: input.kind,
        meta: input.meta,
        address: input.address,
        isRepair: input.isRepair,
        createdAtMs: input.atMs,
        refreshedAtMs: input.atMs,
      },
    };
  }
  const added = input.scopes.filter((s) => !existing.scopes.includes(s));
  const widened = added.length > 0;
  return {
    created: false,
    widened,
    request: {
      ...existing,
      publicKey: input.publicKey,
      scopes: widened ? [...existing.scopes, ...added].sort() : existing.scopes,
      kind: input.kind === 'new-device' || existing.kind === 'new-device' ? (input.isRepair ? input.kind : 'new-device') : input.kind,
      meta: input.meta,
      address: input.address,
      isRepair: input.isRepair,
      refreshedAtMs: input.atMs,
      widenedAtMs: widened ? input.atMs : existing.widenedAtMs,
    },
  };
}

/** A pending delivery after one attempt (automations, issue 7): every adapter stores this. */
export function applyAttempt(d: Delivery, a: DeliveryAttempt): Delivery {
  const next: Delivery = { ...d, attempts: d.attempts + 1, lastAttemptAtMs: a.atMs, lastError: a.error, lastStatus: a.httpStatus };
  if (a.outcome === 'delivered') {
    next.status = 'delivered';
    next.deliveredAtMs = a.atMs;
    next.lastError = undefined;
  } else if (a.outcome === 'dead') {
    next.status = 'dead';
    next.deadAtMs = a.atMs;
  } else {
    next.nextAttemptAtMs = a.nextAttemptAtMs ?? a.atMs;
  }
  return next;
}
