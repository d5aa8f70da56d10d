/**
 * Failed-authentication limiter keyed by (client address, credential kind).
 * Only wrong credentials count; a success clears that key. After `maxFailures` within
 * `windowMs` the key is locked for `lockoutMs`. Loopback is NOT exempt: a foreign process on
 * the gateway host must not be able to guess faster than a remote one. The map is bounded
 * so a flood of addresses cannot grow memory without limit.
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

/**
 * What the gateway needs from a failure budget. The in-memory FailureLimiter answers at once;
 * a shared one (several instances on PostgreSQL) answers from the store.
 */
export interface AuthLimiter {
  readonly policy: RateLimitPolicy;
  retryAfterMs(address: string, kind: CredentialKind): number | Promise<number>;
  fail(address: string, kind: CredentialKind): number | Promise<number>;
  succeed(address: string, kind: CredentialKind): void | Promise<void>;
}

interface Entry {
  failures: number[];
  lockedUntilMs: number;
}

export class FailureLimiter implements AuthLimiter {
  private readonly entries = new Map<string, Entry>();
  constructor(
    private readonly clock: Clock,
    readonly policy: RateLimitPolicy = DEFAULT_RATE_LIMIT,
  ) {}

  private key(address: string, kind: CredentialKind): string {
    return `${kind}\u0000${address}`;
  }

  /** Milliseconds until this key may try again, or 0 when it is not locked. */
  retryAfterMs(address: string, kind: CredentialKind): number {
    const e = this.entries.get(this.key(address, kind));
    if (!e) return 0;
    const left = e.lockedUntilMs - this.clock.now();
    return Math.max(left, 0);
  }

  /** Record a wrong credential; returns the lockout in ms when this failure triggered one. */
  fail(address: string, kind: CredentialKind): number {
    const k = this.key(address, kind);
    const now = this.clock.now();
    let e = this.entries.get(k);
    if (!e) {
      if (this.entries.size >= this.policy.maxKeys) {
        const oldest = this.entries.keys().next().value;
        if (oldest !== undefined) this.entries.delete(oldest);
      }
      e = { failures: [], lockedUntilMs: 0 };
      this.entries.set(k, e);
    }
    e.failures = e.failures.filter((t) => now - t < this.policy.windowMs);
    e.failures.push(now);
    if (e.failures.length >= this.policy.maxFailures) {
      e.lockedUntilMs = now + this.policy.lockoutMs;
      e.failures = [];
      return this.policy.lockoutMs;
    }
    return 0;
  }

  succeed(address: string, kind: CredentialKind): void {
    this.entries.delete(this.key(address, kind));
  }
}
