/**
 * A throwaway PostgreSQL cluster for tests: initdb into a temp dir, start `postgres` on a free
 * loopback port with its unix socket in the same temp dir, hand out fresh databases, and stop
 * and delete everything afterwards. PostgreSQL refuses to run as root, so when the tests run as
 * root the server runs as the `postgres` system user (Debian's package creates it).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { onFreePort } from './net.js';

export interface PgCluster {
  port: number;
  /** URL of the maintenance database (superuser `clawgate`, trust auth on loopback). */
  adminUrl: string;
  /** Create an empty database and return its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Fast shutdown (clients are disconnected), run `whileDown`, start again on the same port and data. */
  restart(whileDown?: () => Promise<void>): Promise<void>;
  /** SIGSTOP the postmaster and every backend: the server stops answering, sockets stay open. */
  pause(): void;
  /** SIGCONT what `pause` stopped. */
  resume(): void;
  stop(): Promise<void>;
}

/** The postmaster's pid (from its pid file) and its children's (backends, background workers). */
function serverPids(data: string): number[] {
  const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error('no postmaster pid');
  const children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
    .split('\n')
    .map((x) => Number(x.trim()))
    .filter((x) => Number.isInteger(x) && x > 0);
  return [pid, ...children];
}

/** Where the PostgreSQL server binaries live (the newest installed major version). */
export function pgBinDir(): string | null {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(base, versions[0], 'bin') : null;
}

/** Run a server binary as the unprivileged `postgres` user when we are root. */
function asServerUser(bin: string, args: string[]): [string, string[]] {
  if (process.getuid?.() === 0) return ['runuser', ['-u', 'postgres', '--', bin, ...args]];
  return [bin, args];
}

let dbCounter = 0;

export async function startPgCluster(): Promise<PgCluster> {
  const bin = pgBinDir();
  if (!bin) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/system-deps.sh)');
  const root = mkdtempSync(join(tmpdir(), 'clawgate-pg-'));
  const data = join(root, 'data');
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(root, uid, gid);
  }
  chmodSync(root, 0o700);
  const [initCmd, initArgs] = asServerUser(join(bin, 'initdb'), ['-D', data, '-U', 'clawgate', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-locale']);
  execFileSync(initCmd, initArgs, { stdio: 'pipe' });
  const launch = async (port: number) => {
    const [cmd, args] = asServerUser(join(bin, 'postgres'), [
      '-D',
      data,
      '-p',
      String(port),
      '-k',
      root,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'fsync=off',
      '-c',
      'max_connections=300',
    ]);
    const proc: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
    });
    proc.on('error', () => {});
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    const adminUrl = `postgres://clawgate@127.0.0.1:${port}/postgres`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const c = new pg.Client({ connectionString: adminUrl });
      c.on('error', () => {});
      let answered: string | undefined;
      try {
        await c.connect();
        answered = (await c.query<{ data_directory: string }>('SHOW data_directory')).rows[0]?.data_directory;
      } catch {
        // not up yet (or not started at all: checked below)
      }
      await c.end().catch(() => {});
      if (answered === data) return { proc, port, adminUrl };
      if (answered !== undefined || proc.exitCode !== null || Date.now() > deadline) {
        if (proc.exitCode === null) proc.kill('SIGKILL');
        await exited;
        const who = answered !== undefined ? `another cluster answers on port ${port} (${answered})` : stderr;
        throw new Error(`throwaway PostgreSQL did not start:\n${who}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  // Another test file may take the port between freePort and the bind: start again on a new
  // one. The probe checks it reached THIS cluster (its data directory), not another that
  // happens to listen on the port.
  let started: Awaited<ReturnType<typeof launch>>;
  try {
    started = await onFreePort(launch, (err) => /in use|could not bind|another cluster/i.test(String(err)));
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  let { proc } = started;
  const { port, adminUrl } = started;
  const shutdown = async () => {
    if (proc.exitCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    // SIGINT is PostgreSQL's "fast shutdown": it disconnects clients instead of waiting for
    // them. Sent to the postmaster itself (the pid file), not only to a runuser wrapper.
    const pidText = existsSync(join(data, 'postmaster.pid')) ? readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0] : '';
    const pid = Number(pidText);
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 'SIGINT');
      } catch {
        proc.kill('SIGINT');
      }
    } else proc.kill('SIGINT');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  let paused: number[] = [];
  const resume = () => {
    for (const pid of paused) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // exited meanwhile
      }
    }
    paused = [];
  };
  return {
    port,
    adminUrl,
    async createDatabase(name?: string) {
      const db = name ?? `t${process.pid}_${++dbCounter}`;
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${db}`);
      } finally {
        await c.end();
      }
      return `postgres://clawgate@127.0.0.1:${port}/${db}`;
    },
    async restart(whileDown) {
      await shutdown();
      try {
        await whileDown?.();
      } finally {
        proc = (await launch(port)).proc;
      }
    },
    pause() {
      paused = serverPids(data);
      for (const pid of paused) process.kill(pid, 'SIGSTOP');
    },
    resume,
    async stop() {
      resume();
      await shutdown();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
