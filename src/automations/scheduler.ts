/**
 * The cron scheduler: one alarm set to the earliest due job; runs are serialized, recorded in
 * the store with the job's next due time in the same transaction.
 *
 * Missed-run policy (docs/automations.md): a job whose due time passed while the gateway was
 * down (or asleep) runs ONCE when the scheduler starts, marked `catch-up`, however many
 * occurrences were missed; its next due time is then computed from now, not from the missed
 * time, so downtime never produces a burst of runs.
 */
import type { Clock, Random } from '../core/env.js';
import type { Logger } from '../core/logger.js';
import type { CronJob, CronRun, CronTrigger, Store } from '../core/store.js';
import { nextRun } from './cron.js';
import { Alarm, type Timers } from './timers.js';

/** How long the scheduler waits after a pass that failed (store unavailable) before trying again. */
const RETRY_AFTER_FAILURE_MS = 5_000;

export type ActionOutcome = { ok: true; result: Record<string, unknown> } | { ok: false; error: string };

export interface SchedulerDeps {
  store: Store;
  clock: Clock;
  random: Random;
  timers: Timers;
  log: Logger;
  /** Carry out a job's action (with the internal principal). Never throws for expected failures. */
  runAction(job: CronJob, runId: string): Promise<ActionOutcome>;
}

export class CronScheduler {
  private readonly alarm: Alarm;
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private started = false;

  constructor(private readonly deps: SchedulerDeps) {
    this.alarm = new Alarm(
      deps.timers,
      () => deps.clock.now(),
      () => this.enqueue(() => this.tick('schedule')),
    );
  }

  /**
   * Start: run every job that was due before now once (catch-up), then wait for the next. A
   * stopped scheduler may start again (a cluster instance that lost leadership and regained it).
   */
  start(): Promise<void> {
    this.started = true;
    this.stopped = false;
    // Never rejects: a failed pass is logged by enqueue, and the alarm tries again.
    return this.enqueue(() => this.tick('catch-up')).catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.alarm.clear();
    await this.chain.catch(() => undefined);
  }

  /** Re-read the jobs after a change (add, update, remove) and re-arm. */
  changed(): Promise<void> {
    if (!this.started) return Promise.resolve();
    return this.enqueue(() => this.tick('schedule')).catch(() => undefined);
  }

  /** Run one job now (cron.run), independent of its schedule; its next due time is kept. */
  runNow(jobId: string): Promise<CronRun | null> {
    return this.enqueue(async () => {
      const job = await this.deps.store.getCronJob(jobId);
      if (!job) return null;
      return this.run(job, 'manual', this.deps.clock.now(), job.nextRunAtMs);
    });
  }

  /** Serialize every pass and run: a job never runs twice at once. */
  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(() => (this.stopped ? (null as T) : fn()));
    this.chain = p.catch((err) => this.deps.log.error('cron pass failed', { err: String((err as Error)?.stack ?? err) }));
    return p;
  }

  private async tick(trigger: Exclude<CronTrigger, 'manual'>): Promise<void> {
    const { store, clock } = this.deps;
    const now = clock.now();
    // The earliest next due time, gathered while passing over the jobs: the pass already holds
    // every job and knows the next due time it just recorded, so arming needs no second read.
    let earliest: number | null = null;
    let failed = true;
    try {
      for (const job of await store.listCronJobs()) {
        if (this.stopped) return;
        let dueAtMs = job.enabled ? job.nextRunAtMs : null;
        if (dueAtMs !== null && dueAtMs <= now) {
          // Due now: run once; the next due time is the first occurrence after now (missed ones collapse).
          const next = nextRun(job.schedule, Math.max(now, clock.now()), job.createdAtMs);
          dueAtMs = (await this.run(job, trigger, dueAtMs, next)) ? next : null;
        }
        if (dueAtMs !== null && (earliest === null || dueAtMs < earliest)) earliest = dueAtMs;
      }
      failed = false;
    } finally {
      // Re-arm even after a failed pass (e.g. the store was briefly unavailable): the schedule
      // must not stop, and must not spin either, so a failed pass waits RETRY_AFTER_FAILURE_MS.
      // Nothing scheduled: still wake up now and then, in case the store changed under us.
      if (!this.stopped) {
        this.alarm.clear();
        this.alarm.set(failed ? clock.now() + RETRY_AFTER_FAILURE_MS : (earliest ?? clock.now() + 60_000));
      }
    }
  }

  private async run(job: CronJob, trigger: CronTrigger, dueAtMs: number, nextRunAtMs: number | null): Promise<CronRun | null> {
    const { clock, random, store, log } = this.deps;
    const runId = random.uuid();
    const startedAtMs = clock.now();
    let outcome: ActionOutcome;
    try {
      outcome = await this.deps.runAction(job, runId);
    } catch (err) {
      // A bug in an action must not stop the scheduler; the run records it.
      outcome = { ok: false, error: `internal error: ${String((err as Error)?.message ?? err)}` };
      log.error('cron action threw', { jobId: job.jobId, err: String((err as Error)?.stack ?? err) });
    }
    const run: CronRun = {
      runId,
      jobId: job.jobId,
      trigger,
      dueAtMs,
      startedAtMs,
      finishedAtMs: clock.now(),
      status: outcome.ok ? 'ok' : 'error',
      ...(outcome.ok ? { result: outcome.result } : { error: outcome.error }),
    };
    const saved = await store.recordCronRun(run, nextRunAtMs);
    log.info('cron run', {
      jobId: job.jobId,
      name: job.name,
      runId,
      trigger,
      status: run.status,
      principal: 'internal:cron',
      ...(run.error ? { error: run.error } : {}),
    });
    return saved ? run : null;
  }
}
