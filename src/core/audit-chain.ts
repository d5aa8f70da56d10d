/** The audit log's hash chain: every adapter writes it, core anchors and verifies it. */
import { createHash } from 'node:crypto';
import type { AuditEntry, AuditInput } from './store.js';

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
export function verifyAuditChain(entries: readonly AuditEntry[], after?: Pick<AuditEntry, 'seq' | 'hash'>): number | null {
  // `after`: the last entry of the previous page, so a long log is verified a page at a time.
  let prevHash = after?.hash ?? GENESIS_HASH;
  let expectSeq = (after?.seq ?? 0) + 1;
  for (const e of entries) {
    if (e.seq !== expectSeq || e.prevHash !== prevHash || auditHash(prevHash, e.seq, e) !== e.hash) return e.seq;
    prevHash = e.hash;
    expectSeq++;
  }
  return null;
}
