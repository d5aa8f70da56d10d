/**
 * The wrong-credential budget kept in PostgreSQL, so guesses spread over several instances
 * count against one budget per (address bucket, credential kind): the same addressBucket as
 * the in-memory FailureLimiter (all loopback is one bucket, IPv6 counts per /64). Same policy,
 * with a fixed window instead of a sliding one: at most `maxFailures` wrong guesses per window,
 * then a lockout of `lockoutMs`. Each failure is one atomic statement. Rows are dropped only
 * once both their window and their lockout are over, so a locked key is never forgotten early;
 * the table is bounded by the number of buckets seen within one window or lockout.
 */
import type { Clock } from '../../core/env.js';
import { type AuthLimiter, type CredentialKind, limiterKey, type RateLimitPolicy } from '../../core/ratelimit.js';
import type { PostgresStore } from './store.js';

/** Most keys remembered as "seen without failures" (beyond it they are forgotten: a success then deletes as before). */
const ABSENT_KEYS_MAX = 10_000;

export class PgFailureLimiter implements AuthLimiter {
  private failures = 0;

  /**
   * Keys whose latest check here found no row, since then neither failed nor succeeded here. A
   * success on such a key has nothing of its own to clear: every connect checks its key before
   * it proves anything, so the success takes effect at that check (inside the connect, as if
   * it had finished then), and a failure counted meanwhile, here or on another instance, comes
   * after it and stays counted. That saves the connect path its DELETE (one round trip of four).
   * A failure here forgets the key, so the next success deletes again.
   */
  private readonly seenAbsent = new Set<string>();

  constructor(
    private readonly store: PostgresStore,
    private readonly clock: Clock,
    readonly policy: RateLimitPolicy,
  ) {}

  private key(address: string, kind: CredentialKind): string {
    // No NUL in the key (PostgreSQL text cannot hold one): limiterKey joins with "|".
    return limiterKey(address, kind);
  }

  async retryAfterMs(address: string, kind: CredentialKind): Promise<number> {
    const key = this.key(address, kind);
    const r = await this.store.pool.query('SELECT locked_until_ms FROM auth_failures WHERE key = $1', [key]);
    if (r.rows[0]) this.seenAbsent.delete(key);
    else {
      if (this.seenAbsent.size >= ABSENT_KEYS_MAX) this.seenAbsent.clear();
      this.seenAbsent.add(key);
    }
    const until = r.rows[0] ? Number(r.rows[0].locked_until_ms) : 0;
    return Math.max(until - this.clock.now(), 0);
  }

  async fail(address: string, kind: CredentialKind): Promise<number> {
    this.seenAbsent.delete(this.key(address, kind));
    const now = this.clock.now();
    const { maxFailures, windowMs, lockoutMs } = this.policy;
    // One statement: count this failure (a new window when the old one is over) and lock the key
    // when the count reaches the budget. The row lock of the upsert serializes racing instances.
    const r = await this.store.pool.query(
      `INSERT INTO auth_failures AS f (key, window_start_ms, failures, locked_until_ms)
         VALUES ($1::text, $2::bigint, CASE WHEN $4::int <= 1 THEN 0 ELSE 1 END, CASE WHEN $4::int <= 1 THEN $2::bigint + $5::bigint ELSE 0 END)
       ON CONFLICT (key) DO UPDATE SET
         window_start_ms = CASE WHEN $2::bigint - f.window_start_ms >= $3::bigint OR f.failures + 1 >= $4::int THEN $2::bigint ELSE f.window_start_ms END,
         failures = CASE WHEN $2::bigint - f.window_start_ms >= $3::bigint THEN 1 WHEN f.failures + 1 >= $4::int THEN 0 ELSE f.failures + 1 END,
         locked_until_ms = CASE WHEN $2::bigint - f.window_start_ms < $3::bigint AND f.failures + 1 >= $4::int
           THEN $2::bigint + $5::bigint ELSE f.locked_until_ms END
       RETURNING f.locked_until_ms`,
      [this.key(address, kind), now, windowMs, maxFailures, lockoutMs],
    );
    const until = Number(r.rows[0]?.locked_until_ms ?? 0);
    // Bounded like the in-memory map: keys whose window and lockout are over are dropped now and then.
    if (++this.failures % 100 === 0) {
      await this.store.pool.query('DELETE FROM auth_failures WHERE window_start_ms < $1 AND locked_until_ms < $2', [now - windowMs, now]);
    }
    return until === now + lockoutMs ? lockoutMs : 0;
  }

  async succeed(address: string, kind: CredentialKind): Promise<void> {
    const key = this.key(address, kind);
    if (this.seenAbsent.delete(key)) return;
    // A lock set by another instance meanwhile stands: only a counting row is cleared.
    await this.store.pool.query('DELETE FROM auth_failures WHERE key = $1 AND locked_until_ms <= $2', [key, this.clock.now()]);
  }
}
