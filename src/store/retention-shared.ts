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
