/**
 * The pure parts of automations under a test's own clock: cron expressions and time zones,
 * the scheduler's missed-run policy, and the webhook worker's retry, dead-letter and outbox
 * rules (with an injected HTTP client and timers).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkSchedule, nextCronTime, nextRun, parseCron, parseDurationMs } from '../src/automations/cron.js';
import { CronScheduler } from '../src/automations/scheduler.js';
import type { Timers } from '../src/automations/timers.js';
import { backoffMs, DeliveryWorker, type HttpPost, type WebhookPolicy } from '../src/automations/webhook.js';
import { ManualClock } from '../src/core/env.js';
import { silentLogger } from '../src/core/logger.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import type { CronJob, CronSchedule } from '../src/store/types.js';

/** Timers driven by a ManualClock: `advance` fires due callbacks in time order, letting async work settle in between. */
class FakeTimers implements Timers {
  private seq = 0;
  private pending = new Map<number, { atMs: number; fn: () => void }>();
  constructor(readonly clock: ManualClock) {}
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.pending.set(id, { atMs: this.clock.now() + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  async advance(ms: number): Promise<void> {
    const end = this.clock.now() + ms;
    for (;;) {
      await settle();
      const next = [...this.pending.entries()].filter(([, t]) => t.atMs <= end).sort((a, b) => a[1].atMs - b[1].atMs)[0];
      if (!next) break;
      this.pending.delete(next[0]);
      if (next[1].atMs > this.clock.now()) this.clock.advance(next[1].atMs - this.clock.now());
      next[1].fn();
    }
    if (end > this.clock.now()) this.clock.advance(end - this.clock.now());
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

const utc = (s: string) => Date.parse(s);

describe('cron expressions', () => {
  test('fields, ranges, lists, steps and names', () => {
    const c = parseCron('*/15 9-17 * jan,jul mon-fri');
    assert.ok(c.ok);
    assert.deepEqual(c.cron.minutes, [0, 15, 30, 45]);
    assert.deepEqual(c.cron.hours, [9, 10, 11, 12, 13, 14, 15, 16, 17]);
    assert.deepEqual(
      [...c.cron.months].sort((a, b) => a - b),
      [1, 7],
    );
    assert.deepEqual([...c.cron.daysOfWeek].sort(), [1, 2, 3, 4, 5]);
    const sunday = parseCron('0 0 * * 7');
    assert.ok(sunday.ok);
    assert.deepEqual([...sunday.cron.daysOfWeek], [0]);
    const from = parseCron('5/20 * * * *');
    assert.ok(from.ok);
    assert.deepEqual(from.cron.minutes, [5, 25, 45]);
  });

  test('invalid expressions name the problem', () => {
    for (const [expr, problem] of [
      ['* * * *', /expected 5 fields/],
      ['60 * * * *', /minute value "60" is out of range/],
      ['* 24 * * *', /hour/],
      ['* * 0 * *', /day-of-month/],
      ['* * * 13 *', /month/],
      ['* * * * 8', /day-of-week/],
      ['*/0 * * * *', /step/],
      ['5-1 * * * *', /backwards/],
      ['a * * * *', /minute value "a"/],
    ] as const) {
      const r = parseCron(expr);
      assert.ok(!r.ok, expr);
      assert.match(r.problem, problem, expr);
    }
  });

  test('next time in UTC, strictly after the given instant', () => {
    const c = parseCron('30 9 * * *');
    assert.ok(c.ok);
    assert.equal(nextCronTime(c.cron, utc('2026-03-02T08:00:00Z')), utc('2026-03-02T09:30:00Z'));
    assert.equal(nextCronTime(c.cron, utc('2026-03-02T09:30:00Z')), utc('2026-03-03T09:30:00Z'));
    const weekdays = parseCron('0 9 * * mon-fri');
    assert.ok(weekdays.ok);
    // 2026-03-06 is a Friday: the next weekday 09:00 after Friday noon is Monday.
    assert.equal(nextCronTime(weekdays.cron, utc('2026-03-06T12:00:00Z')), utc('2026-03-09T09:00:00Z'));
    const leap = parseCron('0 0 29 2 *');
    assert.ok(leap.ok);
    assert.equal(nextCronTime(leap.cron, utc('2026-03-01T00:00:00Z')), utc('2028-02-29T00:00:00Z'));
  });

  test('day-of-month and day-of-week both restricted: either matches (classic cron)', () => {
    const c = parseCron('0 0 13 * fri');
    assert.ok(c.ok);
    // After Thu 2026-03-05: Fri 03-06 comes before the 13th.
    assert.equal(nextCronTime(c.cron, utc('2026-03-05T12:00:00Z')), utc('2026-03-06T00:00:00Z'));
  });

  test('time zones, including both daylight-saving changes', () => {
    const c = parseCron('0 9 * * *');
    assert.ok(c.ok);
    // 09:00 in Berlin is 08:00Z in winter and 07:00Z in summer.
    assert.equal(nextCronTime(c.cron, utc('2026-01-10T00:00:00Z'), 'Europe/Berlin'), utc('2026-01-10T08:00:00Z'));
    assert.equal(nextCronTime(c.cron, utc('2026-07-10T00:00:00Z'), 'Europe/Berlin'), utc('2026-07-10T07:00:00Z'));
    assert.equal(nextCronTime(c.cron, utc('2026-01-10T00:00:00Z'), 'America/New_York'), utc('2026-01-10T14:00:00Z'));
    // 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00 → 03:00): that day is skipped.
    const gap = parseCron('30 2 * * *');
    assert.ok(gap.ok);
    assert.equal(nextCronTime(gap.cron, utc('2026-03-28T12:00:00Z'), 'Europe/Berlin'), utc('2026-03-30T00:30:00Z'));
    // 2026-10-25 02:30 happens twice in Berlin: it runs once, at the first one (00:30Z), then next day.
    const first = nextCronTime(gap.cron, utc('2026-10-24T12:00:00Z'), 'Europe/Berlin');
    assert.equal(first, utc('2026-10-25T00:30:00Z'));
    assert.equal(nextCronTime(gap.cron, first as number, 'Europe/Berlin'), utc('2026-10-26T01:30:00Z'));
  });

  test('schedules: validation, intervals anchored on creation, durations', () => {
    assert.deepEqual(checkSchedule({ kind: 'cron', expr: '0 9 * * *', tz: 'Nowhere/Land' }), { ok: false, problem: 'unknown time zone "Nowhere/Land"' });
    assert.equal(checkSchedule({ kind: 'every', everyMs: 999 }).ok, false);
    assert.equal(checkSchedule({ kind: 'every', everyMs: 1000 }).ok, true);
    const every: CronSchedule = { kind: 'every', everyMs: 10_000 };
    assert.equal(nextRun(every, 1_000, 1_000), 11_000);
    assert.equal(nextRun(every, 25_000, 1_000), 31_000);
    assert.equal(nextRun(every, 31_000, 1_000), 41_000);
    assert.equal(nextRun({ kind: 'cron', expr: '0 0 31 2 *' }, 0, 0), null, 'never fires');
    assert.equal(parseDurationMs('10s'), 10_000);
    assert.equal(parseDurationMs('1.5m'), 90_000);
    assert.equal(parseDurationMs('2h'), 7_200_000);
    assert.equal(parseDurationMs('soon'), null);
  });
});

function job(store: SqliteStore, over: Partial<CronJob> & Pick<CronJob, 'schedule' | 'createdAtMs' | 'nextRunAtMs'>) {
  return store.createCronJob({
    jobId: over.jobId ?? 'job-1',
    name: over.name ?? 'job',
    action: { kind: 'send', channel: 'c', content: 'x' },
    enabled: true,
    createdBy: 'owner',
    audit: { atMs: over.createdAtMs, actor: 'owner', action: 'cron.added' },
    ...over,
  });
}

describe('scheduler', () => {
  const T0 = utc('2026-03-02T00:00:00Z');

  function setup() {
    const clock = new ManualClock(T0);
    const timers = new FakeTimers(clock);
    const store = new SqliteStore(':memory:');
    const runs: Array<{ jobId: string; atMs: number }> = [];
    let n = 0;
    const scheduler = new CronScheduler({
      store,
      clock,
      random: { bytes: (k) => Buffer.alloc(k), uuid: () => `run-${++n}` },
      timers,
      log: silentLogger,
      runAction: async (j) => {
        runs.push({ jobId: j.jobId, atMs: clock.now() });
        return j.name === 'broken' ? { ok: false, error: 'target said no' } : { ok: true, result: { n: runs.length } };
      },
    });
    return { clock, timers, store, runs, scheduler };
  }

  test('runs an interval job on time, records each run and moves the next due time', async () => {
    const { timers, store, runs, scheduler } = setup();
    await job(store, { schedule: { kind: 'every', everyMs: 10_000 }, createdAtMs: T0, nextRunAtMs: T0 + 10_000 });
    await scheduler.start();
    assert.equal(runs.length, 0);
    await timers.advance(9_999);
    assert.equal(runs.length, 0);
    await timers.advance(1);
    assert.deepEqual(runs, [{ jobId: 'job-1', atMs: T0 + 10_000 }]);
    await timers.advance(30_000);
    assert.deepEqual(
      runs.map((r) => r.atMs - T0),
      [10_000, 20_000, 30_000, 40_000],
    );
    const saved = await store.getCronJob('job-1');
    assert.equal(saved?.nextRunAtMs, T0 + 50_000);
    assert.equal(saved?.lastRunAtMs, T0 + 40_000);
    const history = await store.listCronRuns('job-1');
    assert.equal(history.length, 4);
    assert.ok(history.every((r) => r.trigger === 'schedule' && r.status === 'ok'));
    await scheduler.stop();
  });

  test('missed runs after downtime: ONE catch-up run at start, then back on schedule (no burst)', async () => {
    const { clock, timers, store, runs, scheduler } = setup();
    // Due at T0+10s, but the gateway was down until T0+1h: 360 occurrences were missed.
    await job(store, { schedule: { kind: 'every', everyMs: 10_000 }, createdAtMs: T0, nextRunAtMs: T0 + 10_000 });
    await job(store, { jobId: 'daily', name: 'daily', schedule: { kind: 'cron', expr: '0 0 * * *' }, createdAtMs: T0, nextRunAtMs: T0 + 86_400_000 });
    clock.advance(3_600_000);
    await scheduler.start();
    assert.deepEqual(runs, [{ jobId: 'job-1', atMs: T0 + 3_600_000 }]);
    const [caught] = await store.listCronRuns('job-1');
    assert.equal(caught?.trigger, 'catch-up');
    assert.equal(caught?.dueAtMs, T0 + 10_000);
    assert.equal((await store.getCronJob('job-1'))?.nextRunAtMs, T0 + 3_610_000);
    await timers.advance(10_000);
    assert.equal(runs.length, 2);
    assert.equal((await store.listCronRuns('job-1'))[0]?.trigger, 'schedule');
    assert.equal((await store.listCronRuns('daily')).length, 0, 'a job not yet due does not run');
    await scheduler.stop();
  });

  test('a failing action is recorded as an error run and the schedule continues; disabled jobs never run; manual runs keep the schedule', async () => {
    const { timers, store, runs, scheduler } = setup();
    await job(store, { name: 'broken', schedule: { kind: 'every', everyMs: 5_000 }, createdAtMs: T0, nextRunAtMs: T0 + 5_000 });
    await job(store, { jobId: 'off', name: 'off', enabled: false, schedule: { kind: 'every', everyMs: 1_000 }, createdAtMs: T0, nextRunAtMs: null });
    await scheduler.start();
    await timers.advance(10_000);
    const history = await store.listCronRuns('job-1');
    assert.equal(history.length, 2);
    assert.ok(history.every((r) => r.status === 'error' && r.error === 'target said no'));
    assert.equal((await store.listCronRuns('off')).length, 0);
    const manual = await scheduler.runNow('off');
    assert.equal(manual?.trigger, 'manual');
    assert.equal((await store.getCronJob('off'))?.nextRunAtMs, null);
    assert.equal(runs.filter((r) => r.jobId === 'off').length, 1);
    assert.equal(await scheduler.runNow('missing'), null);
    await scheduler.stop();
  });

  test('a pass that fails (store unavailable) is retried after 5 s, without spinning, and the schedule goes on', async () => {
    const { clock, timers, store, runs, scheduler } = setup();
    await job(store, { schedule: { kind: 'every', everyMs: 1_000 }, createdAtMs: T0, nextRunAtMs: T0 + 1_000 });
    await scheduler.start();
    const real = store.listCronJobs.bind(store);
    let calls = 0;
    let failing = true;
    store.listCronJobs = async () => {
      calls++;
      if (failing) throw new Error('database is locked');
      return real();
    };
    await timers.advance(1_000);
    assert.equal(runs.length, 0);
    const during = calls;
    await timers.advance(4_000);
    assert.ok(calls - during <= 2, `no tight retry loop while failing (${calls - during} calls in 4 s)`);
    failing = false;
    await timers.advance(6_000);
    assert.ok(runs.length >= 1, 'runs again once the store answers');
    assert.ok((runs[0]?.atMs ?? 0) >= T0 + 5_000);
    // The store was failing until T0+5s, so the bound above holds whatever the retry delay; the
    // failed pass at T0+1s re-arms for T0+6s, and that is when the first run happens.
    assert.equal(runs[0]?.atMs, T0 + 6_000, 'the retry comes 5 s after the failed pass');
    assert.ok(clock.now() >= T0 + 11_000);
    await scheduler.stop();
  });

  test('each pass reads the job list once: arming uses the due times the pass already holds', async () => {
    const { timers, store, runs, scheduler } = setup();
    await job(store, { schedule: { kind: 'every', everyMs: 10_000 }, createdAtMs: T0, nextRunAtMs: T0 + 10_000 });
    const real = store.listCronJobs.bind(store);
    let reads = 0;
    store.listCronJobs = async () => {
      reads++;
      return real();
    };
    await scheduler.start();
    assert.equal(reads, 1, 'the catch-up pass');
    await timers.advance(30_000);
    assert.equal(runs.length, 3);
    assert.equal(reads, 4, 'one read per scheduled pass, none to re-arm');
    await scheduler.stop();
  });

  test('a job added while running is picked up (changed) and a removed one stops', async () => {
    const { timers, store, runs, scheduler } = setup();
    await scheduler.start();
    await job(store, { schedule: { kind: 'every', everyMs: 2_000 }, createdAtMs: T0, nextRunAtMs: T0 + 2_000 });
    await scheduler.changed();
    await timers.advance(4_000);
    assert.equal(runs.length, 2);
    await store.removeCronJob('job-1', { atMs: T0, actor: 'owner', action: 'cron.removed' });
    await scheduler.changed();
    await timers.advance(10_000);
    assert.equal(runs.length, 2);
    await scheduler.stop();
  });
});

describe('webhook delivery worker', () => {
  const T0 = 1_800_000_000_000;
  const policy: WebhookPolicy = { maxAttempts: 4, baseBackoffMs: 1_000, maxBackoffMs: 3_000, timeoutMs: 5_000 };

  async function setup(post: HttpPost) {
    const clock = new ManualClock(T0);
    const timers = new FakeTimers(clock);
    const store = new SqliteStore(':memory:');
    await store.putChannel({
      channelId: 'ch',
      name: 'alerts',
      url: 'http://127.0.0.1:9/hook',
      source: 'api',
      createdBy: 'owner',
      createdAtMs: T0,
      audit: { atMs: T0, actor: 'owner', action: 'channel.added' },
    });
    const worker = new DeliveryWorker({ store, clock, timers, post, policy, log: silentLogger });
    const enqueue = (id: string) =>
      store.enqueueDelivery({
        deliveryId: id,
        channelId: 'ch',
        channelName: 'alerts',
        body: { content: id },
        idempotencyKey: `key-${id}`,
        actor: 'internal:cron',
        createdAtMs: clock.now(),
        audit: { atMs: clock.now(), actor: 'internal:cron', action: 'channel.send' },
      });
    return { clock, timers, store, worker, enqueue };
  }

  test('backoff doubles and is capped', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((n) => backoffMs(policy, n)),
      [1_000, 2_000, 3_000, 3_000, 3_000],
    );
  });

  test('the outbox entry exists before the first attempt; retries follow the backoff; the budget ends in the dead-letter list', async () => {
    const attempts: Array<{ atMs: number; key: string; persisted: string | undefined }> = [];
    let ctx: Awaited<ReturnType<typeof setup>> | null = null;
    const post: HttpPost = async (_url, _body, headers) => {
      const c = ctx as Awaited<ReturnType<typeof setup>>;
      attempts.push({ atMs: c.clock.now(), key: headers['Idempotency-Key'] as string, persisted: (await c.store.getDelivery('d1'))?.status });
      return { status: 502 };
    };
    ctx = await setup(post);
    await ctx.enqueue('d1');
    ctx.worker.start();
    await ctx.timers.advance(60_000);
    assert.deepEqual(
      attempts.map((a) => a.atMs - T0),
      [0, 1_000, 3_000, 6_000],
    );
    assert.ok(attempts.every((a) => a.key === 'key-d1' && a.persisted === 'pending'));
    const d = await ctx.store.getDelivery('d1');
    assert.equal(d?.status, 'dead');
    assert.equal(d?.attempts, 4);
    assert.equal(d?.lastStatus, 502);
    await ctx.worker.stop();
  });

  test('Retry-After on 429 is honoured (up to the cap); a success records delivered', async () => {
    const answers = [{ status: 429, retryAfter: '2' }, { status: 204 }];
    const times: number[] = [];
    let clock: ManualClock | null = null;
    const ctx = await setup(async () => {
      times.push((clock as ManualClock).now());
      return answers.shift() ?? { status: 204 };
    });
    clock = ctx.clock;
    await ctx.enqueue('d1');
    ctx.worker.start();
    await ctx.timers.advance(10_000);
    assert.deepEqual(
      times.map((t) => t - T0),
      [0, 2_000],
    );
    const d = await ctx.store.getDelivery('d1');
    assert.equal(d?.status, 'delivered');
    assert.equal(d?.deliveredAtMs, T0 + 2_000);
    await ctx.worker.stop();
  });

  test('network errors and timeouts are retried; stopping mid-attempt does not count the attempt', async () => {
    let mode: 'refuse' | 'hang' = 'refuse';
    const ctx = await setup(
      (_u, _b, _h, signal) =>
        new Promise((_resolve, reject) => {
          if (mode === 'refuse') reject(new Error('connect ECONNREFUSED'));
          else signal.addEventListener('abort', () => reject(new Error('aborted')));
        }),
    );
    await ctx.enqueue('d1');
    ctx.worker.start();
    await ctx.timers.advance(0);
    let d = await ctx.store.getDelivery('d1');
    assert.equal(d?.attempts, 1);
    assert.equal(d?.lastError, 'connect ECONNREFUSED');
    mode = 'hang';
    await ctx.timers.advance(1_000);
    await ctx.timers.advance(5_000);
    d = await ctx.store.getDelivery('d1');
    assert.equal(d?.attempts, 2);
    assert.equal(d?.lastError, 'timed out after 5000ms');
    // The third attempt hangs; the gateway stops before it finishes.
    await ctx.timers.advance(2_000);
    await ctx.worker.stop();
    d = await ctx.store.getDelivery('d1');
    assert.equal(d?.status, 'pending');
    assert.equal(d?.attempts, 2, 'the cut attempt is retried after the restart, not counted');
  });

  test('a pass that fails (store unavailable) is retried later; the outbox is not forgotten', async () => {
    const ctx = await setup(async () => ({ status: 204 }));
    await ctx.enqueue('d1');
    const real = ctx.store.dueDeliveries.bind(ctx.store);
    let failing = true;
    ctx.store.dueDeliveries = async (now, limit) => {
      if (failing) throw new Error('database is locked');
      return real(now, limit);
    };
    ctx.worker.start();
    await ctx.timers.advance(1_000);
    assert.equal((await ctx.store.getDelivery('d1'))?.status, 'pending');
    failing = false;
    await ctx.timers.advance(5_000);
    assert.equal((await ctx.store.getDelivery('d1'))?.status, 'delivered');
    await ctx.worker.stop();
  });

  test('a 4xx is permanent; a removed channel dead-letters its deliveries', async () => {
    const ctx = await setup(async () => ({ status: 404 }));
    await ctx.enqueue('d1');
    ctx.worker.start();
    await ctx.timers.advance(0);
    assert.equal((await ctx.store.getDelivery('d1'))?.status, 'dead');
    assert.equal((await ctx.store.getDelivery('d1'))?.attempts, 1);
    await ctx.store.removeChannel('alerts', { atMs: T0, actor: 'owner', action: 'channel.removed' });
    await ctx.enqueue('d2');
    ctx.worker.kick();
    await ctx.timers.advance(0);
    const d2 = await ctx.store.getDelivery('d2');
    assert.equal(d2?.status, 'dead');
    assert.equal(d2?.lastError, 'channel was removed');
    await ctx.worker.stop();
  });
});
