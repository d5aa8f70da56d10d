/**
 * The wrong-credential budget kept in PostgreSQL, so guesses spread over several instances
 * count against one budget per (address, credential kind). Same policy as the in-memory
 * FailureLimiter, with a fixed window instead of a sliding one: at most `maxFailures` wrong
 * guesses per window, then a lockout of `lockoutMs`. Each failure is one atomic statement.
 */
import type { Clock } from '../core/env.js';
import type { AuthLimiter, CredentialKind, RateLimitPolicy } from '../core/ratelimit.js';
import type { PostgresStore } from './postgres.js';

export class PgFailureLimiter implements AuthLimiter {
  private failures = 0;

  constructor(
    private readonly store: PostgresStore,
    private readonly clock: Clock,
    readonly policy: RateLimitPolicy,
  ) {}

  private key(address: string, kind: CredentialKind): string {
    // PostgreSQL text cannot hold NUL; the kind never contains "|", so the split stays unambiguous.
    return `${kind}|${address}`;
  }

  async retryAfterMs(address: string, kind: CredentialKind): Promise<number> {
    const r = await this.store.pool.query('SELECT locked_until_ms FROM auth_failures WHERE key = $1', [this.key(address, kind)]);
    const until = r.rows[0] ? Number(r.rows[0].locked_until_ms) : 0;
    return Math.max(until - this.clock.now(), 0);
  }

  async fail(address: string, kind: CredentialKind): Promise<number> {
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
    await this.store.pool.query('DELETE FROM auth_failures WHERE key = $1', [this.key(address, kind)]);
  }
}
