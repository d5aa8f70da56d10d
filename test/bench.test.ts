/**
 * Smoke test of the benchmark harness: `bench/run.ts --tiny` starts a real clawgate and the
 * floor server, drives every scenario with the real load generator over loopback and writes
 * the JSON report. Proves the harness works end to end; asserts shapes and success, never
 * timings (speed is measured by `npm run bench`, not by tests).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { soakVerdict } from '../bench/soak.js';

const RUN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'run.js');

test('bench --tiny measures clawgate and the floor in every scenario and writes the report', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-test-'));
  try {
    const out = join(dir, 'latest.json');
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [RUN, '--tiny', '--idle-counts', '3,6', '--out', out], { timeout: 110_000 }, (err, so, se) =>
        err ? reject(new Error(`bench exited: ${err.message}\n${se}`)) : resolve(so),
      );
    });
    assert.match(stdout, /goals:/);
    assert.match(stdout, /clawgate\/floor/);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    assert.equal(report.schema, 'clawgate-bench/2');
    assert.equal(typeof report.machine.cpuCount, 'number');
    assert.equal(report.environment.loadavgAtStart.length, 3);
    assert.deepEqual(Object.keys(report.targets).sort(), ['clawgate', 'floor']);
    for (const label of ['clawgate', 'floor']) {
      const t = report.targets[label];
      assert.ok(t.coldStart.medianMs > 0, `${label} cold start`);
      assert.ok(t.rss.idleMiB > 0, `${label} idle rss`);
      for (const mode of ['shared-deviceless', 'shared-device', 'device-token']) {
        const m = t.modes[mode];
        assert.equal(m.error, undefined, `${label} ${mode}: ${m.error}`);
        assert.equal(m.latency.totalMs.n, 5);
        assert.deepEqual(m.latency.errors, {});
        // Read from /proc for the started gateway: a sequential connect blocks its loop at least once.
        assert.ok(m.latency.gatewayMainThread.blockedPerConnect > 0, `${label} ${mode} main thread`);
        assert.ok(m.latency.gatewayMainThread.preemptedPerConnect >= 0, `${label} ${mode} preemptions`);
        assert.ok(m.throughput.completedHelloOk > 0);
      }
      // Both idle steps reached exactly (the harness holds exactly N sockets per step).
      assert.deepEqual(
        t.idle.steps.map((s: { target: number; open: number }) => [s.target, s.open]),
        [
          [3, 3],
          [6, 6],
        ],
      );
      assert.equal(t.idle.droppedByGateway, 0);
    }
    const c = report.targets.clawgate;
    // Approval: the client waited on its socket (device-pairing-wait) and was admitted each time.
    assert.deepEqual(c.approval.how, { wait: 2 });
    assert.deepEqual(c.approval.errors, {});
    // Revocation: each revoked device-token socket was closed with 4001.
    assert.deepEqual(c.revocation.closeCodes, { 4001: 2 });
    assert.deepEqual(c.revocation.errors, {});
    // node.invoke: every call (1 warm-up + 3 timed) reached the node and came back.
    assert.equal(c.nodeInvoke.latencyMs.n, 3);
    assert.equal(c.nodeInvoke.answeredByNode, 4);
    assert.deepEqual(c.nodeInvoke.errors, {});
    assert.equal(report.targets.floor.approval, undefined);
    const goals = report.goals.map((g: { goal: string }) => g.goal);
    assert.equal(goals.length, 9);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench --soak runs one clawgate for a fraction of a minute, samples every interval and gives a verdict', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-soak-test-'));
  try {
    const out = join(dir, 'soak.json');
    // Exit 1 means NOT FLAT or unexpected errors: flatness over 15 s on a shared machine is not
    // this test's business (the report's verdict is checked for shape, the errors for zero).
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [RUN, '--soak', '0.25', '--soak-interval-s', '5', '--soak-pool', '40', '--soak-connects-per-s', '20', '--out', out],
        { timeout: 110_000 },
        (err, so, se) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout: so, stderr: se }),
      );
    });
    assert.ok(code === 0 || code === 1, `bench --soak exited ${code}\n${stderr}`);
    assert.match(stdout, /clawgate soak/);
    assert.match(stdout, /verdict: (FLAT|NOT FLAT)/);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    assert.equal(report.schema, 'clawgate-bench-soak/1');
    assert.equal(report.pairing.pool, 40);
    assert.ok(report.intervals.length >= 2, `intervals: ${report.intervals.length}`);
    for (const row of report.intervals) {
      assert.ok(row.rssMiB > 0, 'rss sampled');
      assert.ok(row.fds > 0, 'fds sampled');
      assert.ok(row.connects > 0, 'pool devices connected');
      assert.equal(typeof row.connectP99Ms, 'number');
      assert.equal(typeof row.healthzP99Ms, 'number');
      assert.equal(typeof row.approvals, 'number');
      assert.ok(row.invokes > 0, 'node.invoke answered');
    }
    assert.ok(report.totals.approvals > 0, 'new devices approved by the owner session');
    assert.equal(report.totals.errors, 0, JSON.stringify(report.totals.errorKinds));
    assert.equal(typeof report.verdict.flat, 'boolean');
    assert.equal(typeof report.verdict.rss.flat, 'boolean');
    assert.equal(typeof report.verdict.fds.flat, 'boolean');
    assert.equal(code, report.verdict.flat ? 0 : 1, 'exit code follows the verdict');
    // The gateway was stopped at the end: its process is gone.
    assert.throws(() => process.kill(report.gateway.pid, 0));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the soak verdict skips the warm-up interval and compares the medians of the first and last thirds', () => {
  const rows = (rss: number[], fds: number[]) => rss.map((r, i) => ({ rssMiB: r, fds: fds[i] ?? null }));
  // Warm-up at 50 MiB is ignored; 100 → 117 MiB is within 10 % + 8 MiB (18 MiB); fds 80 → 96 within ±16.
  const flat = soakVerdict(rows([50, 100, 100, 105, 110, 117, 117], [40, 80, 80, 85, 90, 96, 96]));
  assert.equal(flat.intervalsCompared, 6);
  assert.deepEqual([flat.rss.firstMedianMiB, flat.rss.lastMedianMiB, flat.rss.allowedMiB], [100, 117, 18]);
  assert.equal(flat.flat, true);
  const grew = soakVerdict(rows([50, 100, 100, 105, 110, 119, 119], [40, 80, 80, 80, 80, 80, 80]));
  assert.equal(grew.rss.flat, false);
  assert.equal(grew.flat, false);
  const leaked = soakVerdict(rows([50, 100, 100, 100, 100, 100, 100], [40, 80, 80, 90, 95, 97, 97]));
  assert.equal(leaked.fds.flat, false);
  assert.equal(leaked.flat, false);
  // Only the warm-up interval: nothing to compare, never flat.
  assert.equal(soakVerdict(rows([50], [40])).flat, false);
});
