/**
 * Smoke test of the benchmark's scale rows (`--devices`, `--idle`, `--cluster`) at toy sizes:
 * real clawgate processes on SQLite and PostgreSQL, the floor, a two-instance cluster, the load
 * generator over several loopback source addresses. Asserts that every row is produced and the
 * JSON has its shape and the target verdicts; never timings (speed belongs to `npm run bench`).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SEED_BATCH_MAX } from '../src/core/store.js';

const RUN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'run.js');

interface Verdict {
  goal: string;
  value: number | null;
  limit: number | null;
  met: boolean | null;
}

test('bench --rows-only --devices --idle --cluster produces every scale row and the target verdicts', { timeout: 280_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-scale-test-'));
  try {
    const out = join(dir, 'scale.json');
    const args = [
      RUN,
      '--tiny',
      '--rows-only',
      '--devices',
      '300',
      '--seed-batch',
      '100',
      '--idle',
      '30',
      '--per-source',
      '12',
      '--idle-watchers',
      '4',
      '--cluster',
      '--scale-n',
      '2',
      '--out',
      out,
    ];
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, args, { timeout: 270_000, maxBuffer: 16 * 1024 * 1024 }, (err, so, se) =>
        err ? reject(new Error(`bench exited: ${err.message}\n${se}`)) : resolve(so),
      );
    });
    assert.match(stdout, /targets \(ratios to the floor/);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    // The connect rows the floor ratios need: device-token only, for clawgate and the floor.
    assert.deepEqual(Object.keys(report.targets).sort(), ['clawgate', 'floor']);
    for (const t of Object.values(report.targets) as Array<{ modes: Record<string, unknown> }>) assert.deepEqual(Object.keys(t.modes), ['device-token']);

    // Devices: both stores, the small and the seeded store, every measurement present.
    const dev = report.scale.devices;
    assert.equal(dev.devices, 300);
    for (const store of ['sqlite', 'postgres']) {
      const r = dev.byStore[store];
      assert.equal(r.error, undefined, `${store}: ${r.error}`);
      for (const [size, n] of [
        ['small', 10],
        ['large', 300],
      ] as const) {
        const run = r[size];
        assert.equal(run.seededDevices, n);
        assert.equal(run.seed.devices, n);
        assert.ok(run.coldStartMs > 0);
        assert.equal(typeof run.connect.medianMs, 'number', `${store} ${size} connect`);
        assert.deepEqual(run.connect.errors, {});
        assert.equal(run.list.error, undefined, `${store} ${size} list: ${run.list.error}`);
        assert.ok(run.list.items >= Math.min(n, 50), `${store} ${size} list items ${run.list.items}`);
        assert.deepEqual(run.revocation.errors, {}, `${store} ${size} revocation`);
        assert.equal(run.revocation.latencyMs.n, 2);
        assert.deepEqual(run.approval.errors, {}, `${store} ${size} approval`);
        assert.deepEqual(run.approval.how, { wait: 2 });
      }
    }

    // Idle: all 30 held on clawgate and the floor, each from its own three source addresses, watchers counted.
    const idle = report.scale.idle;
    assert.equal(idle.requested, 30);
    assert.equal(idle.attempted, 30);
    assert.equal(idle.limitedBy, null);
    assert.deepEqual(idle.sourceAddresses, { clawgate: ['127.0.0.2', '127.0.0.3', '127.0.0.4'], floor: ['127.0.0.5', '127.0.0.6', '127.0.0.7'] });
    for (const kind of ['clawgate', 'floor']) {
      const r = idle.byGateway[kind];
      assert.equal(r.error, undefined, `${kind}: ${r.error}`);
      assert.equal(r.steps[0].open, 30);
      assert.equal(r.droppedByGateway, 0);
      assert.equal(r.watchers.sessions, 4);
      assert.equal(typeof r.watchers.bytesPerConnect, 'number');
    }

    // Cluster: the three crossings, each measured twice.
    const cl = report.scale.cluster;
    assert.equal(cl.error, undefined, cl.error);
    assert.deepEqual(Object.keys(cl.results).sort(), [
      'approve on A → hello-ok on B (ms)',
      'node.invoke A → node on B → A (ms)',
      'revoke on A → close on B (ms)',
    ]);
    for (const s of Object.values(cl.results) as Array<{ n: number }>) assert.equal(s.n, 2);

    // Verdicts: every target of the table, each with a value (measured) in this run.
    const verdicts = report.perfTargets as Verdict[];
    const goals = verdicts.map((v) => v.goal);
    for (const g of [
      'device-token connects/s ≥ 0.9 × floor',
      'gateway CPU per device-token connect ≤ 1.25 × floor',
      'device-token connect median ≤ 1.2 × floor',
      'cold start spawn → /readyz ≤ 120 ms',
      'cluster: approval on A → device waiting on B admitted p99 ≤ 20 ms',
    ])
      assert.ok(goals.includes(g), `verdict "${g}" missing`);
    for (const v of verdicts.filter((x) => !x.goal.includes('10,000') && !x.goal.startsWith('idle RSS')))
      assert.notEqual(v.value, null, `"${v.goal}" was not measured`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench --seed-batch above the store batch limit is refused before anything starts', async () => {
  const failure = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [RUN, '--tiny', '--rows-only', '--devices', '20', '--seed-batch', String(SEED_BATCH_MAX + 1)],
      { timeout: 60_000 },
      (err, _so, se) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stderr: se }),
    );
  });
  assert.notEqual(failure.code, 0);
  assert.match(failure.stderr, new RegExp(`--seed-batch must be at most ${SEED_BATCH_MAX}`));
});
