/**
 * Failed-authentication limiter keyed by (address bucket, credential kind).
 * Only wrong credentials count; a success clears that key. After `maxFailures` within
 * `windowMs` the key is locked for `lockoutMs`. Loopback is NOT exempt: a foreign process on
 * the gateway host must not be able to guess faster than a remote one.
 *
 * Failures count per bucket, not per exact address (addressBucket below): a client that can
 * pick its source address cheaply (any of 127/8 on the host, any of the 2^64 addresses of its
 * IPv6 /64) would otherwise get a fresh budget per address.
 *
 * The table is bounded (`maxKeys`). A locked key is never dropped before its lockout ends, or a
 * flood of new keys would unlock it; room is made by dropping the least recently failed key that
 * is not locked. When every key is locked, a new key is refused as rate-limited (fail closed)
 * until the earliest lockout ends.
 */
import type { Clock } from './env.js';

export type CredentialKind = 'shared' | 'password' | 'device-token' | 'bootstrap' | 'owner';

export interface RateLimitPolicy {
  maxFailures: number;
  windowMs: number;
  lockoutMs: number;
  maxKeys: number;
}

export const DEFAULT_RATE_LIMIT: RateLimitPolicy = { maxFailures: 10, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 10_000 };

/** The bucket every loopback address (127/8, ::1, ::ffff:127.x) shares. */
export const LOOPBACK_BUCKET = 'loopback';

/** Dotted-quad IPv4 (no leading zeros beyond a lone 0, as node's isIP accepts), as 4 octets. */
function parseIpv4(text: string): number[] | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

/** IPv6 text (with `::`, an embedded IPv4 tail, no zone) as 8 16-bit groups. */
function parseIpv6(text: string): number[] | null {
  if (!/^[0-9a-f:.]+$/i.test(text)) return null;
  let head = text;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.')) {
    const v4 = parseIpv4(text.slice(lastColon + 1));
    if (!v4) return null;
    tail = [((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number)];
    head = text.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::", "64:ff9b::1.2.3.4" leaves "64:ff9b::", "::ffff:1.2.3.4" leaves "::ffff:"
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === '') return [];
    const out: number[] = [];
    for (const g of s.split(':')) {
      if (!/^[0-9a-f]{1,4}$/i.test(g)) return null;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const left = groups(halves[0] as string);
  const right = halves.length === 2 ? groups(halves[1] as string) : [];
  if (!left || !right) return null;
  const known = left.length + right.length + tail.length;
  if (halves.length === 2) {
    if (known > 7) return null;
    return [...left, ...new Array<number>(8 - known).fill(0), ...right, ...tail];
  }
  return known === 8 ? [...left, ...tail] : null;
}

/**
 * The rate-limit bucket of a client address: what one guesser cannot multiply by choosing
 * another source address. All loopback (127/8, ::1, IPv4-mapped 127.x) is one bucket, since any
 * process on the host can bind any of them; an IPv6 address counts by its /64 (the smallest
 * block a site is handed, so one client holds all of it); IPv4-mapped IPv6 counts as the IPv4
 * address; any other IPv4 counts per address. Anything that is not an IP (`unknown`, from a
 * proxy that did not say) is its own bucket. Pure: the same input always gives the same bucket.
 */
export function addressBucket(address: string): string {
  let a = address.trim().toLowerCase();
  if (a.startsWith('[') && a.endsWith(']')) a = a.slice(1, -1);
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  const v4 = parseIpv4(a);
  if (v4) return v4[0] === 127 ? LOOPBACK_BUCKET : v4.join('.');
  const v6 = parseIpv6(a);
  if (!v6) return `other:${a}`;
  const isMapped = v6.slice(0, 5).every((g) => g === 0) && v6[5] === 0xffff;
  if (isMapped) {
    const hi = v6[6] as number;
    const lo = v6[7] as number;
    return addressBucket(`${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`);
  }
  if (v6.slice(0, 7).every((g) => g === 0) && v6[7] === 1) return LOOPBACK_BUCKET;
  return `${v6
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/**
 * What the gateway needs from a failure budget. The in-memory FailureLimiter answers at once;
 * a shared one (several instances on PostgreSQL) answers from the store. Both take the client
 * address as attributed and count it by addressBucket.
 */
export interface AuthLimiter {
  readonly policy: RateLimitPolicy;
  retryAfterMs(address: string, kind: CredentialKind): number | Promise<number>;
  fail(address: string, kind: CredentialKind): number | Promise<number>;
  succeed(address: string, kind: CredentialKind): void | Promise<void>;
}

/** The storage key of (address, kind): kind and bucket, joined by a character neither contains. */
export function limiterKey(address: string, kind: CredentialKind): string {
  return `${kind}|${addressBucket(address)}`;
}

export class FailureLimiter implements AuthLimiter {
  /** Keys still counting failures, least recently failed first (the eviction order). */
  private readonly counting = new Map<string, number[]>();
  /** Locked keys and when each lock ends; insertion order is lock order, hence expiry order. */
  private readonly locked = new Map<string, number>();

  constructor(
    private readonly clock: Clock,
    readonly policy: RateLimitPolicy = DEFAULT_RATE_LIMIT,
  ) {}

  /** Keys held now (counting and locked); never more than policy.maxKeys. */
  get size(): number {
    return this.counting.size + this.locked.size;
  }

  /** Milliseconds until this key may try again, or 0 when it is not locked. */
  retryAfterMs(address: string, kind: CredentialKind): number {
    // Nothing counted or locked (the usual state): no key to compute, no table to look at.
    if (this.counting.size === 0 && this.locked.size === 0) return 0;
    const now = this.clock.now();
    this.dropEndedLocks(now);
    const k = limiterKey(address, kind);
    const until = this.locked.get(k);
    if (until !== undefined) return Math.max(until - now, 1);
    if (this.counting.has(k)) return 0;
    return this.refusedNewKeyMs(now);
  }

  /** Record a wrong credential; returns the lockout in ms when this failure triggered one. */
  fail(address: string, kind: CredentialKind): number {
    const k = limiterKey(address, kind);
    const now = this.clock.now();
    this.dropEndedLocks(now);
    // Already locked (a guess that raced the lock): the lock stands as it is.
    if (this.locked.has(k)) return 0;
    let failures = this.counting.get(k);
    if (failures) this.counting.delete(k);
    else {
      // No room: every key is locked. The guess is not recorded, and retryAfterMs already
      // refuses this key until a lock ends, so nothing is lost by failing closed here.
      if (!this.makeRoom()) return 0;
      failures = [];
    }
    failures = failures.filter((t) => now - t < this.policy.windowMs);
    failures.push(now);
    if (failures.length >= this.policy.maxFailures) {
      this.locked.set(k, now + this.policy.lockoutMs);
      return this.policy.lockoutMs;
    }
    // Re-inserted last: the eviction order is by most recent failure.
    this.counting.set(k, failures);
    return 0;
  }

  succeed(address: string, kind: CredentialKind): void {
    if (this.counting.size > 0) this.counting.delete(limiterKey(address, kind));
  }

  private dropEndedLocks(now: number): void {
    for (const [k, until] of this.locked) {
      if (until > now) break;
      this.locked.delete(k);
    }
  }

  /** Free one slot if the table is full; false when every slot holds a live lock. */
  private makeRoom(): boolean {
    if (this.size < this.policy.maxKeys) return true;
    const oldest = this.counting.keys().next();
    if (oldest.done) return false;
    this.counting.delete(oldest.value);
    return true;
  }

  /** For a key the table does not hold: 0 when it could be added, else the wait for the first lock to end. */
  private refusedNewKeyMs(now: number): number {
    if (this.size < this.policy.maxKeys || this.counting.size > 0) return 0;
    const first = this.locked.values().next();
    return first.done ? 0 : Math.max(first.value - now, 1);
  }
}
