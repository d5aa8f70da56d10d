/**
 * Retention rules every adapter applies the same way (test/store-contract.ts checks them). The
 * audit log is deliberately absent: it is never pruned.
 */

/** Meta keys of Control UI sign-in links (src/core/dashboard-link.ts writes them). */
export const SIGN_IN_LINK_META_PREFIX = 'dashboard.link.';

/**
 * Whether a stored sign-in link may go: used before the cutoff, or never used and expired
 * before it. A value that does not parse is left alone (it is not ours to judge).
 */
export function signInLinkPrunable(value: string, beforeMs: number): boolean {
  let rec: { usedAtMs?: unknown; expiresAtMs?: unknown };
  try {
    rec = JSON.parse(value) as typeof rec;
  } catch {
    return false;
  }
  if (typeof rec !== 'object' || rec === null) return false;
  if (typeof rec.usedAtMs === 'number') return rec.usedAtMs < beforeMs;
  return typeof rec.expiresAtMs === 'number' && rec.expiresAtMs < beforeMs;
}

/**
 * Meta keys that belong to one pending request (`<prefix><requestId>`): its quorum votes
 * (src/core/approval-quorum.ts) and the facts its policy decision saw (src/core/explain-decision.ts).
 * They go with the request: every prune pass deletes those whose request is gone.
 */
export const APPROVAL_RECORD_META_PREFIXES = ['approval.votes.', 'approval.proofs.'] as const;

/** The request id an approval record's key belongs to, or null for any other key. */
export function approvalRecordRequestId(key: string): string | null {
  for (const prefix of APPROVAL_RECORD_META_PREFIXES) if (key.startsWith(prefix)) return key.slice(prefix.length);
  return null;
}
