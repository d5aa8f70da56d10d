/**
 * Resource faults of the SQLite store, each on a real `clawgate gateway run` process and a real
 * file system: a read-only state dir (a read-only bind mount), a full disk (a small tmpfs), the
 * database's write lock held by another process, and a corrupt database file. Each must give a
 * clear refusal or a catalogued retryable error naming the cause, never a crash or corruption,
 * and recover without manual surgery once the cause is gone; `clawgate doctor` names each one.
 * Mounting needs root: as another user these tests are skipped (they say so).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { connectGateway, type GatewayConnection } from '../src/client/connection.js';
import { verifyAuditChain } from '../src/store/shared.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { asClusterOwner, clusterStateDir } from './helpers/instance.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';
import { waitFor } from './helpers/wait.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const isRoot = process.getuid?.() === 0;
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups.reverse()) {
    try {
      c();
    } catch {
      // best effort: a mount already gone
    }
  }
});

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BIN, ...args], { timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

interface DoctorCheck {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  message: string;
}
async function doctor(stateDir: string): Promise<Map<string, DoctorCheck>> {
  const r = await cli(['doctor', '--state-dir', stateDir, '--json', '--timeout', '2000']);
  const parsed = JSON.parse(r.stdout) as { checks: DoctorCheck[] };
  return new Map(parsed.checks.map((c) => [c.name, c]));
}

/** A state dir with the test credentials, used once by a real gateway (so the database exists). */
async function usedStateDir(parent?: string): Promise<string> {
  const made = clusterStateDir();
  let dir = made;
  if (parent) {
    dir = join(parent, 'state');
    mkdirSync(dir);
    for (const f of ['credentials.json', 'gateway-key.pem', 'config.json']) copyFileSync(join(made, f), join(dir, f));
    rmSync(made, { recursive: true, force: true });
  } else cleanups.push(() => rmSync(made, { recursive: true, force: true }));
  const gw = await start(dir);
  const op = await owner(gw);
  await op.request('sessions.create', { key: 'before' });
  await op.close();
  await gw.stop();
  return dir;
}

async function start(stateDir: string): Promise<GatewayProcess> {
  const gw = await spawnGateway(['--state-dir', stateDir, '--config', join(stateDir, 'config.json')]);
  cleanups.push(() => void gw.kill());
  return gw;
}

function owner(gw: GatewayProcess): Promise<GatewayConnection> {
  return connectGateway({ url: gw.url, ...asClusterOwner, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] });
}

function detailCode(err: unknown): string | undefined {
  return (err as { error?: { details?: { code?: string } } | null }).error?.details?.code;
}

/** Fill the file system holding `file` to the last block. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
  }
  try {
    for (;;) writeSync(fd, chunk, 0, 512);
  } catch {
    // the last partial blocks
  }
  closeSync(fd);
}

function mount(args: string[]): void {
  execFileSync('mount', args, { stdio: 'pipe' });
}

describe('SQLite resource faults', { skip: isRoot ? false : 'mounting a read-only dir and a small tmpfs needs root' }, () => {
  test('a read-only state dir: gateway run exits non-zero naming the dir and the fix, doctor fails state-dir, and it starts once writable', async () => {
    const dir = await usedStateDir();
    mount(['--bind', dir, dir]);
    cleanups.push(() => execFileSync('umount', [dir]));
    mount(['-o', 'remount,bind,ro', dir]);
    const r = await cli(['gateway', 'run', '--state-dir', dir, '--config', join(dir, 'config.json'), '--port', '0']);
    assert.equal(r.code, 1, r.stdout);
    assert.ok(r.stderr.includes(dir), r.stderr);
    assert.match(r.stderr, /not writable \(read-only file system\): remount it read-write/);
    const checks = await doctor(dir);
    assert.equal(checks.get('state-dir')?.status, 'fail');
    assert.match(checks.get('state-dir')?.message ?? '', /read-only file system/);
    // The cause gone, it starts with the state it had.
    mount(['-o', 'remount,bind,rw', dir]);
    const gw = await start(dir);
    const op = await owner(gw);
    const sessions = await op.request<{ sessions: Array<{ key: string }> }>('sessions.list', {});
    assert.ok(sessions.sessions.some((s) => s.key === 'before'));
    await op.close();
    await gw.stop();
  });

  test('a corrupt database file: gateway run refuses naming the file and the recovery step, doctor fails store-integrity, a restored backup starts', async () => {
    const dir = await usedStateDir();
    const file = join(dir, 'clawgate.sqlite');
    const backup = `${file}.backup`;
    copyFileSync(file, backup);
    // Garbage over the header: not a SQLite database any more.
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, 0);
    closeSync(fd);
    const r = await cli(['gateway', 'run', '--state-dir', dir, '--config', join(dir, 'config.json'), '--port', '0']);
    assert.equal(r.code, 1, r.stdout);
    assert.ok(r.stderr.includes(file), r.stderr);
    assert.match(r.stderr, /not a readable SQLite database.*restore your backup/);
    assert.equal(
      readFileSync(file)
        .subarray(0, 100)
        .every((x) => x === 0x5a),
      true,
      'the refused file is left as it was, for salvage',
    );
    const checks = await doctor(dir);
    assert.equal(checks.get('store-integrity')?.status, 'fail');
    assert.match(checks.get('store-integrity')?.message ?? '', /restore your backup/);

    // The recovery step as written: move it aside, restore the backup.
    renameSync(file, `${file}.corrupt`);
    for (const x of ['-wal', '-shm']) if (existsSync(file + x)) unlinkSync(file + x);
    copyFileSync(backup, file);
    assert.equal((await doctor(dir)).get('store-integrity')?.status, 'ok');
    const gw = await start(dir);
    const op = await owner(gw);
    const sessions = await op.request<{ sessions: Array<{ key: string }> }>('sessions.list', {});
    assert.ok(sessions.sessions.some((s) => s.key === 'before'));
    await op.close();
    await gw.stop();
  });

  test("another process holding the database's write lock: writes answer STORE_UNAVAILABLE (busy), the gateway stays up, doctor warns store-lock, and writes work once it lets go", async () => {
    const dir = await usedStateDir();
    const file = join(dir, 'clawgate.sqlite');
    const gw = await start(dir);
    const op = await owner(gw);
    let holder: ChildProcess | null = null;
    try {
      // A real second process takes the write lock and keeps it until killed.
      holder = spawn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import Database from 'better-sqlite3'; const db = new Database(${JSON.stringify(file)}); db.exec('BEGIN IMMEDIATE'); console.log('locked'); setInterval(() => {}, 1000);`,
        ],
        { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const h = holder;
      cleanups.push(() => h.kill('SIGKILL'));
      await new Promise<void>((resolve, reject) => {
        h.stdout?.on('data', (d: Buffer) => d.toString().includes('locked') && resolve());
        h.once('exit', (code) => reject(new Error(`the lock holder exited (${code})`)));
      });
      const refused = await op.request('sessions.create', { key: 'while-locked' }).catch((err: unknown) => err);
      assert.equal(detailCode(refused), 'STORE_UNAVAILABLE', String(refused));
      assert.match((refused as Error).message, /busy/);
      assert.equal((refused as { error: { retryable?: boolean } }).error.retryable, true);
      // Reads still work (WAL), on the same socket.
      await op.request('sessions.list', {});
      const checks = await doctor(dir);
      assert.equal(checks.get('store-lock')?.status, 'warn');
      assert.match(checks.get('store-lock')?.message ?? '', /another process holds the write lock/);
      h.kill('SIGKILL');
      await new Promise((r) => h.once('exit', r));
      await op.request('sessions.create', { key: 'after-lock' });
      assert.equal((await doctor(dir)).get('store-lock')?.status, 'ok');
    } finally {
      holder?.kill('SIGKILL');
      await op.close();
      await gw.stop();
    }
  });

  test('a full disk: writes answer STORE_UNAVAILABLE (disk full), nothing is corrupted, doctor fails disk-space, writes work once space is freed, and a start on a full disk is refused naming it', async (t) => {
    const mnt = mkdtempSync(join(tmpdir(), 'clawgate-tmpfs-'));
    mount(['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mnt]);
    cleanups.push(() => {
      execFileSync('umount', ['-l', mnt]);
      rmSync(mnt, { recursive: true, force: true });
    });
    const dir = await usedStateDir(mnt);
    const gw = await start(dir);
    const op = await owner(gw);
    try {
      await op.request('sessions.create', { key: 'full' });
      const filler = join(mnt, 'filler');
      fill(filler);
      // SQLite reuses WAL space it already has: write until the file must grow.
      let refused: unknown = null;
      let written = 0;
      const text = 'x'.repeat(3_000);
      for (let i = 0; i < 500 && refused === null; i++) {
        refused = await op.request('chat.send', { sessionKey: 'full', text, idempotencyKey: `k${i}` }).then(
          () => null,
          (err: unknown) => err,
        );
        if (refused === null) written++;
      }
      t.diagnostic(`${written} messages went in before the disk was full`);
      assert.ok(refused, 'a write failed once the disk was full');
      assert.equal(detailCode(refused), 'STORE_UNAVAILABLE', String(refused));
      assert.match((refused as Error).message, /disk full/);
      assert.equal((await doctor(dir)).get('disk-space')?.status, 'fail');
      // The gateway is up and serves reads on the same socket.
      await op.request('sessions.list', {});
      unlinkSync(filler);
      await waitFor(
        () =>
          op.request('chat.send', { sessionKey: 'full', text: 'after', idempotencyKey: 'after' }).then(
            () => true,
            () => false,
          ),
        'a write once space was freed',
        { timeoutMs: 20_000, intervalMs: 200 },
      );
      // Not 'ok': 8 MiB is under the low-space warning threshold, but no longer full.
      assert.equal((await doctor(dir)).get('disk-space')?.status, 'warn');
    } finally {
      await op.close();
      await gw.stop();
    }
    // Starting on the full file system is refused, naming it.
    fill(join(mnt, 'filler'));
    const refused = await cli(['gateway', 'run', '--state-dir', dir, '--config', join(dir, 'config.json'), '--port', '0']);
    unlinkSync(join(mnt, 'filler'));
    assert.equal(refused.code, 1, refused.stdout);
    assert.ok(refused.stderr.includes(`the file system of ${dir} is full: free space there`), refused.stderr);
    // Nothing corrupted: the file passes integrity and its audit chain verifies.
    const checks = await doctor(dir);
    assert.equal(checks.get('store-integrity')?.status, 'ok', String(checks.get('store-integrity')?.message));
    const store = new SqliteStore(join(dir, 'clawgate.sqlite'));
    try {
      assert.equal(verifyAuditChain(await store.listAudit()), null);
    } finally {
      await store.close();
    }
  });
});
