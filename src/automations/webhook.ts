/**
 * The webhook delivery worker: drains the persisted outbox (store `deliveries`). A delivery is
 * written before its first attempt and its outcome after each attempt, so a crash or restart
 * between the two means one more attempt, never a lost message: delivery is at-least-once, and
 * every attempt carries the same `Idempotency-Key` header so the target can drop repeats.
 *
 * Retry policy (docs/automations.md): network errors, timeouts, 408, 425, 429 and 5xx are
 * retried after `baseBackoffMs * 2^(attempt-1)` (capped at `maxBackoffMs`; a `Retry-After` on
 * 429/503 is honoured up to that cap); any other status (4xx, 3xx: redirects are not followed)
 * is permanent. After `maxAttempts` attempts,
 * or on a permanent failure, the delivery goes to the dead-letter list.
 */
import type { Clock } from '../core/env.js';
import type { Logger } from '../core/logger.js';
import type { Delivery, Store } from '../core/store.js';
import { Alarm, type Timers } from './timers.js';

export interface WebhookPolicy {
  maxAttempts: number;
  baseBackoffMs: number;
  maxBackoffMs: number;
  /** Per-attempt timeout. */
  timeoutMs: number;
}

export const DEFAULT_WEBHOOK_POLICY: WebhookPolicy = { maxAttempts: 8, baseBackoffMs: 1_000, maxBackoffMs: 300_000, timeoutMs: 10_000 };

export interface HttpResponse {
  status: number;
  /** `Retry-After` header, if any. */
  retryAfter?: string | null | undefined;
}

/** Injected HTTP POST: resolves with the status, rejects on a network error or timeout. */
export type HttpPost = (url: string, body: string, headers: Record<string, string>, signal: AbortSignal) => Promise<HttpResponse>;

export const fetchPost: HttpPost = async (url, body, headers, signal) => {
  const res = await fetch(url, { method: 'POST', body, headers, signal, redirect: 'manual' });
  // Drain the body so the connection is released.
  await res.arrayBuffer().catch(() => undefined);
  return { status: res.status, retryAfter: res.headers.get('retry-after') };
};

export const IDEMPOTENCY_HEADER = 'Idempotency-Key';
const BATCH = 16;
/** How long the worker waits after a pass that failed (store unavailable) before trying again. */
const RETRY_AFTER_FAILURE_MS = 5_000;

export function backoffMs(policy: WebhookPolicy, attempt: number): number {
  return Math.min(policy.maxBackoffMs, policy.baseBackoffMs * 2 ** Math.max(0, attempt - 1));
}

function retryAfterMs(value: string | null | undefined, nowMs: number): number | null {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
}

function retryable(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

export interface DeliveryWorkerDeps {
  store: Store;
  clock: Clock;
  timers: Timers;
  post: HttpPost;
  policy: WebhookPolicy;
  log: Logger;
}

export class DeliveryWorker {
  private readonly alarm: Alarm;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private readonly inflight = new Set<AbortController>();

  constructor(private readonly deps: DeliveryWorkerDeps) {
    this.alarm = new Alarm(
      deps.timers,
      () => deps.clock.now(),
      () => this.kick(),
    );
  }

  start(): void {
    this.kick();
  }

  /** Drain whatever is due now (called after an enqueue and by the alarm). */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.drain()
      .catch((err) => {
        this.deps.log.error('webhook delivery pass failed', { err: String((err as Error)?.stack ?? err) });
        // The outbox is still there: try again later instead of waiting for the next send.
        if (!this.stopped) this.alarm.set(this.deps.clock.now() + RETRY_AFTER_FAILURE_MS);
      })
      .finally(() => {
        this.running = null;
        if (this.again && !this.stopped) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Resolves when no pass is running (tests and shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Stop: abort attempts in flight (they stay pending and are retried after a restart). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.alarm.clear();
    for (const ac of this.inflight) ac.abort();
    await this.idle();
  }

  private async drain(): Promise<void> {
    const { store, clock } = this.deps;
    for (;;) {
      if (this.stopped) return;
      const due = await store.dueDeliveries(clock.now(), BATCH);
      if (due.length === 0) break;
      await Promise.all(due.map((d) => this.attempt(d)));
    }
    if (this.stopped) return;
    const next = await store.nextDeliveryDueAtMs();
    if (next !== null) this.alarm.set(next);
  }

  private async attempt(d: Delivery): Promise<void> {
    const { store, clock, policy, log } = this.deps;
    const channel = await store.getChannel(d.channelId);
    const attempt = d.attempts + 1;
    if (!channel) {
      await this.deadLetter(d, 'channel was removed');
      return;
    }
    const ac = new AbortController();
    this.inflight.add(ac);
    const timer = this.deps.timers.setTimeout(() => ac.abort(), policy.timeoutMs);
    let status: number | undefined;
    let retryAfter: string | null | undefined;
    let error: string | undefined;
    try {
      const res = await this.deps.post(
        channel.url,
        JSON.stringify(d.body),
        { 'content-type': 'application/json', 'user-agent': 'clawgate-webhook/1', [IDEMPOTENCY_HEADER]: d.idempotencyKey },
        ac.signal,
      );
      status = res.status;
      retryAfter = res.retryAfter;
    } catch (err) {
      error = ac.signal.aborted
        ? this.stopped
          ? 'aborted: gateway stopping'
          : `timed out after ${policy.timeoutMs}ms`
        : String((err as Error)?.message ?? err);
    } finally {
      this.deps.timers.clearTimeout(timer);
      this.inflight.delete(ac);
    }
    // An attempt cut short by shutdown is not counted: the delivery stays as it was and runs again after the restart.
    if (this.stopped) return;
    if (status !== undefined && status >= 200 && status < 300) {
      await store.recordDeliveryAttempt({ deliveryId: d.deliveryId, atMs: clock.now(), outcome: 'delivered', httpStatus: status });
      log.info('webhook delivered', { deliveryId: d.deliveryId, channel: d.channelName, attempt, actor: d.actor });
      return;
    }
    const why = error ?? `HTTP ${status}`;
    const permanent = status !== undefined && !retryable(status);
    if (permanent || attempt >= policy.maxAttempts) {
      await this.deadLetter(d, permanent ? `${why} (not retried)` : `${why}; gave up after ${attempt} attempts`, status);
      return;
    }
    let wait = backoffMs(policy, attempt);
    const hinted = status === 429 || status === 503 ? retryAfterMs(retryAfter, clock.now()) : null;
    if (hinted !== null) wait = Math.min(policy.maxBackoffMs, Math.max(wait, hinted));
    await store.recordDeliveryAttempt({
      deliveryId: d.deliveryId,
      atMs: clock.now(),
      outcome: 'retry',
      nextAttemptAtMs: clock.now() + wait,
      error: why,
      httpStatus: status,
    });
    log.warn('webhook delivery failed; will retry', { deliveryId: d.deliveryId, channel: d.channelName, attempt, error: why, retryInMs: wait });
  }

  private async deadLetter(d: Delivery, error: string, httpStatus?: number): Promise<void> {
    const now = this.deps.clock.now();
    await this.deps.store.recordDeliveryAttempt({
      deliveryId: d.deliveryId,
      atMs: now,
      outcome: 'dead',
      error,
      httpStatus,
      deadAudit: {
        atMs: now,
        actor: 'internal:deliver',
        action: 'delivery.dead-lettered',
        subject: d.deliveryId,
        data: { channel: d.channelName, attempts: d.attempts + 1, error },
      },
    });
    this.deps.log.warn('webhook delivery dead-lettered', { deliveryId: d.deliveryId, channel: d.channelName, error });
  }
}
