/**
 * Smoke test of the connect probe (bench/connect-probe.ts): it starts a real clawgate (and the
 * floor) with the probe preload, drives sequential device-token connects over loopback and
 * reports the collection pauses, the main thread's context switches and the allocations per
 * connect it read from inside the gateway. Shapes only, never timings.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const PROBE = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'connect-probe.js');

function probe(args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PROBE, '--json', ...args], { timeout: 110_000 }, (err, so, se) =>
      err ? reject(new Error(`probe exited: ${err.message}\n${se}`)) : resolve(JSON.parse(so) as Record<string, unknown>),
    );
  });
}

interface ProbeReport {
  gateway: string;
  connects: number;
  latencyMs: { n: number; median: number };
  gc: { pauses: number; connectsWithAPause: number };
  cpuMicrosPerConnect: number | null;
  mainThreadPerConnect: { blocked: number; preempted: number };
  heap?: { bytesPerConnect: number; sites: Array<{ site: string; bytes: number }> };
}

function checkReport(r: ProbeReport, which: string, connects: number): void {
  assert.equal(r.gateway, which);
  assert.equal(r.connects, connects);
  assert.equal(r.latencyMs.n, connects);
  assert.ok(r.latencyMs.median > 0);
  assert.ok(r.gc.connectsWithAPause <= connects && r.gc.pauses >= 0);
  // Read from /proc in clock ticks: present, possibly 0 over a few connects.
  assert.ok(r.cpuMicrosPerConnect !== null && r.cpuMicrosPerConnect >= 0, `${which} cpu`);
  // A sequential connect waits for the network at least once: the main thread blocked.
  assert.ok(r.mainThreadPerConnect.blocked > 0, `${which} main thread`);
  // The profile came from the gateway process (written by the preload on request).
  assert.ok(r.heap && r.heap.bytesPerConnect > 0, `${which}: allocation profile read from the gateway`);
  assert.equal(r.heap.sites.length, 5);
}

test('the probe reports pauses, context switches and allocations per connect from inside clawgate', { timeout: 120_000 }, async () => {
  checkReport((await probe(['--n', '40', '--warmup', '3', '--heap', '--top', '5'])) as unknown as ProbeReport, 'clawgate', 40);
});

test('paired, the probe drives clawgate and the floor in turn and compares them', { timeout: 120_000 }, async () => {
  const r = (await probe(['--paired', '--n', '30', '--warmup', '3', '--heap', '--top', '5'])) as unknown as {
    paired: { medianRatio: number; p90Ratio: number; p99Ratio: number; cpuRatio: number | null };
    reports: ProbeReport[];
  };
  assert.equal(r.reports.length, 2);
  checkReport(r.reports[0] as ProbeReport, 'clawgate', 30);
  checkReport(r.reports[1] as ProbeReport, 'floor', 30);
  for (const k of ['medianRatio', 'p90Ratio', 'p99Ratio'] as const) assert.ok(r.paired[k] > 0, k);
});
