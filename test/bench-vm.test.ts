/**
 * The idle row inside a qemu guest (`--idle-vm`): the guest boots this machine's root filesystem
 * read-only with its own kernel and raised open-file limit, runs the same build's idle row
 * against a real clawgate and the floor there, and hands the result back. Asserts what the guest
 * reports and that it came from the guest (its limit, its kernel), never timings.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openFileLimit } from '../bench/proc.js';
import { cpioNewc, GUEST_SHARED_DIR, runInVm } from '../bench/vm.js';

const RUN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'run.js');

test('bench --idle-vm holds the idle row inside a guest with its own open-file limit and reports it', { timeout: 400_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-vm-test-'));
  try {
    const out = join(dir, 'vm.json');
    const args = [
      RUN,
      '--tiny',
      '--rows-only',
      '--idle',
      '24',
      '--per-source',
      '10',
      '--idle-watchers',
      '3',
      '--idle-vm',
      '--vm-memory-mib',
      '2048',
      '--out',
      out,
    ];
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, args, { timeout: 390_000, maxBuffer: 16 * 1024 * 1024 }, (err, so, se) =>
        err ? reject(new Error(`bench exited: ${err.message}\n${so}\n${se}`)) : resolve(so),
      );
    });
    assert.match(stdout, /inside a qemu guest/);
    const idle = JSON.parse(readFileSync(out, 'utf8')).scale.idle;
    assert.equal(idle.requested, 24);
    assert.equal(idle.attempted, 24);
    // Three source addresses of ten connections each per gateway, the floor's after clawgate's.
    assert.deepEqual(idle.sourceAddresses, { clawgate: ['127.0.0.2', '127.0.0.3', '127.0.0.4'], floor: ['127.0.0.5', '127.0.0.6', '127.0.0.7'] });
    const env = idle.environment;
    assert.equal(env.kind, 'qemu');
    assert.equal(env.accel, 'tcg');
    assert.equal(env.memoryMiB, 2048);
    assert.match(env.kernel, /^\d+\.\d+/);
    assert.equal(env.hostOpenFileLimit, openFileLimit());
    // The limit the row ran under is the guest's, and above this machine's whenever this one is capped.
    assert.equal(env.openFileLimit, 1_048_576);
    for (const kind of ['clawgate', 'floor']) {
      const r = idle.byGateway[kind];
      assert.ok(r && !('error' in r), `${kind}: ${JSON.stringify(r)}`);
      const step = r.steps[0];
      assert.equal(step.target, 24);
      assert.equal(step.open, 24, `${kind} held every connection`);
      assert.ok(step.rssMiB > 0 && r.idleRssMiB > 0, `${kind} RSS read inside the guest`);
      assert.deepEqual(r.errors, {});
    }
    // Watchers saw the connects on clawgate (the floor has no watchers to tell).
    assert.ok(idle.byGateway.clawgate.watchers.bytesReceived > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a guest sees the host root read-only, the host /tmp included, writes its scratch elsewhere and hands files back through the share', {
  timeout: 200_000,
}, async () => {
  // A checkout under /tmp (CI clones into one) must be what the guest runs.
  const dir = mkdtempSync(join(tmpdir(), 'bench-vm-host-'));
  writeFileSync(join(dir, 'marker'), 'from the host');
  const lines: string[] = [];
  const run = await runInVm(
    `cat ${dir}/marker > ${GUEST_SHARED_DIR}/seen; echo "tmpdir=$TMPDIR"; touch ${dir}/written 2>/dev/null && echo writable || echo read-only; ulimit -n`,
    { accel: 'tcg', vcpus: 1, memoryMiB: 512, timeoutS: 180, log: (m) => lines.push(m) },
  );
  try {
    assert.equal(run.rc, 0, lines.join('\n'));
    assert.equal(readFileSync(join(run.outDir, 'seen'), 'utf8'), 'from the host');
    assert.ok(lines.includes('vm: tmpdir=/dev/shm'), lines.join('\n'));
    assert.ok(lines.includes('vm: read-only'), 'the host root is mounted read-only');
    assert.ok(lines.includes('vm: 1048576'), 'the raised open-file limit');
  } finally {
    run.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the initramfs archive is newc: headers, names and data padded to four bytes, a trailer', () => {
  const archive = cpioNewc([
    { name: 'bin', mode: 0o040755 },
    { name: 'init', mode: 0o100755, data: Buffer.from('#!/bin/sh\n') },
    { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
  ]);
  const entries: Array<{ name: string; mode: number; size: number; rdev: [number, number]; data: string }> = [];
  let at = 0;
  for (;;) {
    assert.equal(archive.toString('ascii', at, at + 6), '070701', `magic at ${at}`);
    const field = (i: number) => Number.parseInt(archive.toString('ascii', at + 6 + i * 8, at + 14 + i * 8), 16);
    const nameSize = field(11);
    const size = field(6);
    const name = archive.toString('utf8', at + 110, at + 110 + nameSize - 1);
    assert.equal(archive[at + 110 + nameSize - 1], 0, 'name ends in NUL');
    const dataAt = at + 110 + nameSize + ((4 - ((110 + nameSize) % 4)) % 4);
    assert.equal(dataAt % 4, 0);
    entries.push({ name, mode: field(1), size, rdev: [field(9), field(10)], data: archive.toString('utf8', dataAt, dataAt + size) });
    at = dataAt + size + ((4 - (size % 4)) % 4);
    if (name === 'TRAILER!!!') break;
  }
  assert.equal(at, archive.length, 'nothing after the trailer');
  assert.deepEqual(
    entries.map((e) => [e.name, e.mode.toString(8), e.size, e.rdev, e.data]),
    [
      ['bin', '40755', 0, [0, 0], ''],
      ['init', '100755', 10, [0, 0], '#!/bin/sh\n'],
      ['dev/console', '20600', 0, [5, 1], ''],
      ['TRAILER!!!', '0', 0, [0, 0], ''],
    ],
  );
});
