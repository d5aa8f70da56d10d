/**
 * Process-side helpers: start a clawgate gateway as a child process on a free loopback port
 * with a fresh state dir (timing spawn → /readyz 200), and read a process's RSS and CPU time
 * from /proc (Linux; elsewhere the readers return null).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

/** Ask the kernel for a free loopback port (listen on 0, read it, close). */
export function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not pick a free port'))));
    });
  });
}

function httpStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const req = get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

export interface SpawnedGateway {
  /** Which gateway this is (clawgate, openclaw, floor). */
  kind: string;
  pid: number;
  port: number;
  url: string;
  token: string;
  stateDir: string;
  logPath: string;
  /** spawn() → first readiness 200, milliseconds. */
  coldStartMs: number;
  /** spawn() → the 'spawn' event (process exec'd), milliseconds. */
  execMs: number;
  /** SIGTERM (to the process group), wait for exit (SIGKILL after `graceMs`); removes the state dir unless kept. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: string | null }>;
}

export interface SpawnReadyOptions {
  kind: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  port: number;
  stateDir: string;
  /** HTTP path answering 200 once the gateway accepts connects. */
  readyPath: string;
  /** Reads the shared token once ready (e.g. from the state dir). */
  token: () => string;
  keepStateDir?: boolean;
  readyTimeoutMs?: number;
  /** How often readiness is polled while starting. */
  pollMs?: number;
}

/**
 * Start a gateway process in its own process group (its helper children are stopped with it)
 * and wait until `readyPath` answers 200. Output goes to `<stateDir>/gateway.log`.
 */
export async function spawnReady(opts: SpawnReadyOptions): Promise<SpawnedGateway> {
  const { port, stateDir } = opts;
  const logPath = join(stateDir, 'gateway.log');
  const logFd = openSync(logPath, 'a');
  const t0 = performance.now();
  let execMs = Number.NaN;
  const child: ChildProcess = spawn(opts.command, opts.args, { env: opts.env, stdio: ['ignore', logFd, logFd], cwd: opts.cwd, detached: true });
  closeSync(logFd);
  child.once('spawn', () => (execMs = performance.now() - t0));
  let exited: { code: number | null; signal: string | null } | null = null;
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    }),
  );
  child.once('error', () => {});
  const signalGroup = (sig: NodeJS.Signals) => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // group already gone
    }
  };

  const cleanup = () => {
    if (!opts.keepStateDir) rmSync(stateDir, { recursive: true, force: true });
  };
  const stop = async (graceMs = 10_000) => {
    if (!exited) signalGroup('SIGTERM');
    const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
    const res = await exit;
    clearTimeout(timer);
    // Helper children that outlive the main process (OpenClaw keeps two) go with the group.
    signalGroup('SIGKILL');
    cleanup();
    return res;
  };

  const readyUrl = `http://127.0.0.1:${port}${opts.readyPath}`;
  const deadline = t0 + (opts.readyTimeoutMs ?? 60_000);
  const pollMs = opts.pollMs ?? 2;
  let coldStartMs = Number.NaN;
  while (performance.now() < deadline) {
    if (exited) break;
    if ((await httpStatus(readyUrl, 1000)) === 200) {
      coldStartMs = performance.now() - t0;
      break;
    }
    await sleep(pollMs);
  }
  if (Number.isNaN(coldStartMs) || child.pid === undefined) {
    const log = existsSync(logPath) ? readFileSync(logPath, 'utf8').slice(-2000) : '';
    await stop(1000);
    throw new Error(`${opts.kind} did not become ready on port ${port}${exited ? ` (exited: ${JSON.stringify(exited)})` : ''}\n${log}`);
  }
  let token: string;
  try {
    token = opts.token();
  } catch (err) {
    await stop(1000);
    throw err;
  }
  return { kind: opts.kind, pid: child.pid, port, url: `ws://127.0.0.1:${port}`, token, stateDir, logPath, coldStartMs, execMs, stop };
}

export interface SpawnOptions {
  /** Repository root (holds bin/clawgate.js and dist/). */
  root: string;
  /** Extra node flags for the gateway process, e.g. ['--cpu-prof', '--cpu-prof-dir=/tmp/p']. */
  nodeArgs?: string[];
  /** Gateway config written to a file and passed with --config (e.g. {gateway:{autoApproveLocal:false}}). */
  config?: Record<string, unknown>;
  keepStateDir?: boolean;
  readyTimeoutMs?: number;
  /** Use this (already seeded) state dir instead of a fresh one. */
  stateDir?: string;
  /** More `gateway run` flags (e.g. --store postgres --postgres-url …). */
  extraArgs?: string[];
}

/** Start `node bin/clawgate.js gateway run` on a free port with a fresh state dir and wait until ready. */
export async function spawnGateway(opts: SpawnOptions): Promise<SpawnedGateway> {
  const port = await pickFreePort();
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'clawgate-bench-'));
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CLAWGATE_')) env[k] = v;
  const extra: string[] = [];
  if (opts.config) {
    const file = join(stateDir, 'bench-config.json');
    writeFileSync(file, JSON.stringify(opts.config));
    extra.push('--config', file);
  }
  const args = [
    ...(opts.nodeArgs ?? []),
    join(opts.root, 'bin', 'clawgate.js'),
    'gateway',
    'run',
    '--port',
    String(port),
    '--bind',
    'loopback',
    '--state-dir',
    stateDir,
    ...extra,
    ...(opts.extraArgs ?? []),
  ];
  return spawnReady({
    kind: 'clawgate',
    command: process.execPath,
    args,
    env,
    cwd: opts.root,
    port,
    stateDir,
    readyPath: '/readyz',
    keepStateDir: opts.keepStateDir,
    readyTimeoutMs: opts.readyTimeoutMs ?? 30_000,
    token: () => {
      const creds = JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')) as { token?: unknown };
      if (typeof creds.token !== 'string') throw new Error(`no token in ${join(stateDir, 'credentials.json')}`);
      return creds.token;
    },
  });
}

/** Resident set size of a process in MiB (VmRSS), or null when unavailable. */
export function readRssMiB(pid: number): number | null {
  return readStatusKb(pid, 'VmRSS');
}

/** Peak resident set size of a process in MiB (VmHWM), or null when unavailable. */
export function readPeakRssMiB(pid: number): number | null {
  return readStatusKb(pid, 'VmHWM');
}

function readStatusKb(pid: number, field: string): number | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : null;
  } catch {
    return null;
  }
}

let clockTicks: number | null = null;
function ticksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds consumed so far by a process (all threads), or null. */
export function readCpuSeconds(pid: number): number | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
    return (utime + stime) / ticksPerSecond();
  } catch {
    return null;
  }
}

/**
 * Context switches of a process's main thread (its event loop) so far: voluntary (it blocked,
 * waiting for the network) and involuntary (the kernel gave its core to another task). The
 * involuntary ones count neighbours the machine-wide CPU figures cannot see (other VMs on the
 * host): a connect whose gateway lost its core waits for it to come back. Null off Linux.
 */
export function readMainThreadSwitches(pid: number): { voluntary: number; involuntary: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const voluntary = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(text);
    const involuntary = /^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(text);
    return voluntary && involuntary ? { voluntary: Number(voluntary[1]), involuntary: Number(involuntary[1]) } : null;
  } catch {
    return null;
  }
}

/** Jiffies of the whole machine from /proc/stat: busy (everything but idle and iowait) and total. */
export interface SystemCpu {
  busy: number;
  total: number;
}

export function readSystemCpu(): SystemCpu | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

/** Cores busy machine-wide between two readings (0 .. cpu count). */
export function busyCores(a: SystemCpu | null, b: SystemCpu | null, cpuCount: number): number | null {
  if (!a || !b || b.total <= a.total) return null;
  return Math.round(((b.busy - a.busy) / (b.total - a.total)) * cpuCount * 100) / 100;
}

/** Direct children of a process (all threads), from /proc/<pid>/task/<tid>/children. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) for (const c of text.split(/\s+/)) out.push(Number(c));
    }
  } catch {
    // process gone or /proc unavailable
  }
  return out;
}

/** RSS of a process and all its descendants (MiB): OpenClaw keeps helper processes. */
export function readTreeRssMiB(pid: number): number | null {
  const own = readRssMiB(pid);
  if (own === null) return null;
  let total = own;
  const stack = childrenOf(pid);
  const seen = new Set<number>([pid]);
  while (stack.length > 0) {
    const p = stack.pop() as number;
    if (seen.has(p)) continue;
    seen.add(p);
    total += readRssMiB(p) ?? 0;
    stack.push(...childrenOf(p));
  }
  return Math.round(total * 10) / 10;
}

/** Soft limit on open files of this process (/proc/self/limits), or null. */
export function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return null;
    return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
  } catch {
    return null;
  }
}
