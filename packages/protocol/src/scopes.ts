/**
 * Operator scopes and their implication rules (PROTOCOL.md §10 Dispatch).
 * admin satisfies every operator scope; write satisfies read and talk. Anything else needs an
 * exact match, so an unknown future scope is never granted by accident.
 */
import { isSafeText } from './text.js';

export const OPERATOR_SCOPES = [
  'operator.read',
  'operator.write',
  'operator.admin',
  'operator.pairing',
  'operator.approvals',
  'operator.questions',
  'operator.talk',
  'operator.talk.secrets',
] as const;
export type OperatorScope = (typeof OPERATOR_SCOPES)[number];

export const ADMIN: OperatorScope = 'operator.admin';
export const READ: OperatorScope = 'operator.read';
export const WRITE: OperatorScope = 'operator.write';
export const PAIRING: OperatorScope = 'operator.pairing';

/**
 * The most the shared gateway token or password grants by itself (PROTOCOL.md §What the shared
 * secret grants). That secret is handed to remote devices and node hosts, so it must never be
 * owner-equivalent: admin, pairing and the rest need the owner's approval of a pending request.
 */
export const SHARED_SECRET_SCOPES: readonly string[] = [READ, WRITE];

const KNOWN = new Set<string>(OPERATOR_SCOPES);
export function isKnownScope(scope: string): boolean {
  return KNOWN.has(scope);
}

/** Does `granted` satisfy `required`? `granted` is a normalized scope list (see normalizeScopes). */
export function scopeSatisfied(granted: ReadonlySet<string> | readonly string[], required: string): boolean {
  const has = (s: string) => (Array.isArray(granted) ? granted.includes(s) : (granted as ReadonlySet<string>).has(s));
  if (has(required)) return true;
  if (!required.startsWith('operator.')) return false;
  if (has(ADMIN)) return true;
  if ((required === READ || required === 'operator.talk') && has(WRITE)) return true;
  return false;
}

/** Are all `requested` scopes covered by `granted`? */
export function scopesCovered(granted: readonly string[], requested: readonly string[]): boolean {
  const set = new Set(granted);
  return requested.every((s) => scopeSatisfied(set, s));
}

/** The scopes of `requested` that `granted` does not cover. */
export function uncoveredScopes(granted: readonly string[], requested: readonly string[]): string[] {
  const set = new Set(granted);
  return requested.filter((s) => !scopeSatisfied(set, s));
}

/**
 * Trim, de-duplicate, sort, and make implied scopes explicit (admin ⇒ read+write, write ⇒ read).
 * A scope with an unsafe character (protocol/text.ts) is dropped: no real scope has one, and an
 * approver must not be shown it.
 */
export function normalizeScopes(scopes: readonly string[]): string[] {
  const out = new Set<string>();
  for (const raw of scopes) {
    const s = raw.trim();
    if (s && isSafeText(s)) out.add(s);
  }
  if (out.has(ADMIN)) {
    out.add(READ);
    out.add(WRITE);
  }
  if (out.has(WRITE)) out.add(READ);
  return [...out].sort();
}

/** Every operator scope: what the owner credential holds. */
export const ALL_OPERATOR_SCOPES: readonly string[] = normalizeScopes(OPERATOR_SCOPES);
