/**
 * Loaded into a gateway under test with `node --import <this file>` (bench/connect-probe.ts does
 * it): records every garbage collection pause with its wall-clock start (epoch milliseconds, the
 * clock the load generator marks connects with), and on request samples the allocations the
 * gateway makes. Nothing is written until asked:
 *
 * - SIGHUP starts the sampling heap profiler (every allocation, also those a collection freed);
 * - SIGUSR2 writes `$BENCH_PROBE_OUT` (the pauses) and `$BENCH_PROBE_OUT.heap` (the
 *   allocation profile, when it was started).
 *
 * Measurement only: it never changes what the gateway does, and only runs when its variable is set.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { PerformanceObserver, performance } from 'node:perf_hooks';

// Not CLAWGATE_-prefixed: the bench's launcher passes no CLAWGATE_ variable to the gateway.
const out = process.env.BENCH_PROBE_OUT;
if (out) {
  const pauses: Array<{ atMs: number; ms: number; kind: number }> = [];
  const origin = performance.timeOrigin;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      pauses.push({ atMs: origin + e.startTime, ms: e.duration, kind: (e as { detail?: { kind?: number } }).detail?.kind ?? 0 });
  }).observe({ entryTypes: ['gc'] });
  const session = new Session();
  session.connect();
  let sampling = false;
  process.on('SIGHUP', () => {
    sampling = true;
    // 256-byte sampling interval; freed objects kept in the profile: this is the allocation rate.
    session.post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  });
  process.on('SIGUSR2', () => {
    if (!sampling) {
      writeFileSync(out, JSON.stringify(pauses));
      return;
    }
    session.post('HeapProfiler.stopSampling', (err, res) => {
      writeFileSync(`${out}.heap`, err ? JSON.stringify({ error: String(err) }) : JSON.stringify(res.profile));
      writeFileSync(out, JSON.stringify(pauses));
    });
  });
}
