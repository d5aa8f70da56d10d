/**
 * `npm run bench [-- flags]`: connect latency and throughput of a gateway, printed as a table
 * and written to bench/results/latest.json.
 *
 * By default it starts its own clawgate (`node bin/clawgate.js gateway run`) on a free loopback
 * port with a fresh state dir, timing spawn → /readyz 200 (cold start), and measures, for each
 * auth mode, sequential connect latency and connects/s with concurrent clients. With
 * `--url ws://… --token …` it measures an already running gateway instead (`--pid` adds RSS and
 * CPU sampling for a process on this machine).
 *
 * Shape for later scenarios: every gateway measured is a `Target`, and `runSuite` produces one
 * `TargetResult` (one column of the table). A peer column (`--peer openclaw`) is another Target
 * run through the same suite; idle-memory / approval / revocation scenarios are further keys of
 * `TargetResult` built on `connectOnce` (`keepOpen` hands over the live socket).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, platform, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SEED_BATCH_MAX } from '../src/core/store.js';
import { clawgateLauncher, floorLauncher, type GatewayKind, LAUNCHERS, type Launcher } from './gateways.js';
import { ownerCredential } from './harness.js';
import {
  type CpuUse,
  DEFAULT_PROFILE,
  type LatencyResult,
  type LoadProfile,
  MODES,
  type Mode,
  type Prepared,
  prepareMode,
  sequentialLatency,
  type Target,
  type ThroughputResult,
  throughput,
} from './loadgen.js';
import { busyCores, openFileLimit, readPeakRssMiB, readRssMiB, readSystemCpu, readTreeRssMiB, type SpawnedGateway } from './proc.js';
import { formatProfile, summarizeProfile } from './profile.js';
import { OPENCLAW_REFERENCE } from './reference.js';
import { evaluateTargets, renderHeadline, renderTable } from './report.js';
import { runScale, type ScaleConfig, type ScaleResult, type StoreKind } from './scale.js';
import {
  type ApprovalResult,
  approvalLatency,
  type IdleResult,
  idleConnections,
  type NodeInvokeResult,
  nodeInvokeLatency,
  type RevocationResult,
  revocationLatency,
} from './scenarios.js';
import { renderSoak, runSoak, type SoakConfig } from './soak.js';
import { type Summary, summarize } from './stats.js';
import { evaluatePerfTargets, renderScale } from './targets.js';
import { vmUnavailable } from './vm.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** CPU (cores) other processes may use during a measurement before it counts as disturbed. */
const NOISE_CORES = 0.25;

const USAGE = `usage: npm run bench -- [flags]

  --quick                 short run (latency n=50, 3 s throughput, 1 cold start)
  --latency-n <n>         recorded sequential connects per mode (default 1000: p99 is then the 10th-worst)
  --warmup <n>            unrecorded connects before them (default 5)
  --concurrency <n>       concurrent clients in the throughput run (default 20)
  --duration-s <s>        throughput run length per mode (default 20)
  --modes <a,b>           subset of: ${MODES.join(', ')}
  --scopes <a,b>          requested scopes (default operator.read; "" for none)
  --cold-starts <n>       gateway starts to time (default 3; the last one is measured)
  --url <ws> --token <t>  measure an already running gateway instead of starting one
  --pid <n>               its process id, for RSS/CPU sampling
  --label <name>          column name (default clawgate, or "external" with --url)
  --cpu-prof              profile the started gateway (node --cpu-prof) and summarise it
  --gateway-node-args=<s> extra node flags for the started gateway, space separated
                          (write it with "=": --gateway-node-args="--single-threaded-gc")
  --wait-quiet-s <s>      first wait up to this long for the machine to be idle (default 30, quick 0)
  --noise-retries <n>     repeat a measurement when other processes used > ${NOISE_CORES} cores during it,
                          keeping the least disturbed attempt (default 2, quick 0)
  --keep-state            keep the temp state dir of the started gateway
  --out <file>            JSON output (default bench/results/latest.json)
  --no-reference          leave the recorded OpenClaw numbers out of the JSON
  --peer openclaw         also start the real openclaw@2026.9.6 gateway (Node 24, scripts/openclaw-cache.sh)
                          and run everything against it with the same load generator
  --no-floor              skip the floor (minimal ws server: challenge + one Ed25519 verify + one lookup)
  --idle-counts <a,b>     idle authenticated connections to hold, cumulative (default 1000,10000; quick 50)
  --peer-idle-max <n>     cap for the peer's idle connections (default 10000; it stops at its time budget)
  --idle-budget-s <s>     time allowed to open each idle-connection step (default 240, quick 20)
  --approval-n <n>        approvals to time (default 100, quick 3)
  --revocation-n <n>      revocations to time (default 100, quick 3)
  --node-invoke-n <n>     node.invoke round trips to time, clawgate only (default 1000, quick 50)
  --tiny                  smallest possible run (smoke test: proves the harness, measures nothing useful)

  scale rows (added to the run; see README "Scale"):
  --devices <n>           seed stores with n paired devices (store API, batched) and compare with a 10-device
                          store: cold start, connect median, devices list first page, approval, revocation
  --stores <a,b>          stores for --devices (default sqlite,postgres)
  --seed-batch <n>        devices per seeding transaction (default and most 10000)
  --idle <n>              hold n idle device-token connections on one instance (clawgate and the floor), client
                          side over loopback source addresses 127.0.0.2…, with 1,000 operator.read watchers
  --idle-watchers <n>     watcher sessions counting the bytes each connect sends them (default 1000)
  --per-source <n>        connections per source address (default 20000)
  --idle-vm               run the idle row inside a qemu guest booting this machine's root filesystem read-only,
                          for more connections than this machine's open-file limit allows one process (README "Scale")
  --vm-accel <tcg|kvm>    the guest's CPU: tcg emulates (default; works anywhere), kvm needs a usable /dev/kvm
  --vm-cpus <n>           guest vCPUs (default: this machine's cores)
  --vm-memory-mib <n>     guest memory (default 12288)
  --cluster               two instances on PostgreSQL: approval/revocation across instances, node.invoke routed
  --scale-n <n>           approvals / revocations / cluster crossings per scale measurement (default 100, quick 10)
  --rows-only             only the scale rows (plus clawgate and floor connect rows, which the ratios need)

  --soak <minutes>        instead of the above: one clawgate under a steady mix for <minutes> (see README "Soak"),
                          sampled every interval; JSON to bench/results/soak.json unless --out
  --soak-interval-s <s>   sample interval (default 30)
  --soak-pool <n>         pre-paired device identities connecting and disconnecting (default 2000)
  --soak-connects-per-s <n>  pool connects started per second (default 40)
  --soak-hold-ms <n>      longest a pool device holds its socket (default 3000)
  --soak-approvals-per-min <n>  new devices approved per minute (default 30)
  --soak-invokes-per-s <n>      node.invoke calls per second (default 10)`;

export interface BenchConfig {
  quick: boolean;
  latencyN: number;
  warmup: number;
  concurrency: number;
  durationS: number;
  modes: Mode[];
  coldStarts: number;
  settleMs: number;
  profile: LoadProfile;
  gatewayNodeArgs: string[];
  cpuProf: boolean;
  /** Column name of the measured gateway. */
  label: string;
  external: { url: string; token: string; pid: number | null } | null;
  keepState: boolean;
  waitQuietS: number;
  noiseRetries: number;
  out: string;
  reference: boolean;
  peer: GatewayKind | null;
  floor: boolean;
  idleCounts: number[];
  peerIdleMax: number;
  idleBudgetS: number;
  idleSettleMs: number;
  approvalN: number;
  revocationN: number;
  nodeInvokeN: number;
  soak: SoakConfig | null;
  scale: ScaleConfig | null;
  rowsOnly: boolean;
}

/** Attempts of a measurement and the CPU other processes used in each (the kept one is the least disturbed). */
export interface Attempts {
  attempts: number;
  otherCoresByAttempt: Array<number | null>;
}

export interface ModeResult {
  pairing: Prepared['pairing'];
  latency: (LatencyResult & Attempts) | null;
  throughput: (ThroughputResult & Attempts) | null;
  error?: string;
}

export interface TargetResult {
  label: string;
  kind: 'spawned' | 'external';
  /** Which gateway (clawgate, openclaw, floor); null for --url. */
  gateway: GatewayKind | null;
  url: string;
  pid: number | null;
  coldStart: { samplesMs: number[]; medianMs: number; execMs: number[]; stats: Summary | null } | null;
  rss: { idleMiB: number | null; idleTreeMiB: number | null; endMiB: number | null; peakMiB: number | null };
  modes: Partial<Record<Mode, ModeResult>>;
  idle?: IdleResult | { error: string } | null;
  approval?: ApprovalResult | { error: string } | null;
  revocation?: RevocationResult | { error: string } | null;
  /** node.invoke round trip through a node (clawgate only, see README). */
  nodeInvoke?: NodeInvokeResult | { measured: false; reason: string } | { error: string };
  profile?: { file: string; summary: ReturnType<typeof summarizeProfile> } | null;
  describe?: Record<string, unknown>;
}

function int(v: unknown, name: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number ≥ ${min}, got ${String(v)}`);
  return n;
}

/** `--seed-batch`: 1 to the store's SEED_BATCH_MAX, refused here rather than after a long seeding start. */
function vmOption(values: Record<string, unknown>): NonNullable<ScaleConfig['idleVm']> {
  const accel = (values['vm-accel'] as string | undefined) ?? 'tcg';
  if (accel !== 'tcg' && accel !== 'kvm') throw new Error(`--vm-accel takes tcg or kvm, got ${accel}`);
  const unavailable = vmUnavailable();
  if (unavailable) throw new Error(`--idle-vm: ${unavailable}`);
  return {
    accel,
    vcpus: int(values['vm-cpus'], 'vm-cpus', 1) ?? cpus().length,
    memoryMiB: int(values['vm-memory-mib'], 'vm-memory-mib', 256) ?? 12_288,
  };
}

function seedBatchOption(v: unknown): number {
  const n = int(v, 'seed-batch', 1) ?? SEED_BATCH_MAX;
  if (n > SEED_BATCH_MAX) throw new Error(`--seed-batch must be at most ${SEED_BATCH_MAX}, got ${n}`);
  return n;
}

function parseConfig(argv: string[]): BenchConfig {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      quick: { type: 'boolean' },
      'latency-n': { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string' },
      'duration-s': { type: 'string' },
      modes: { type: 'string' },
      scopes: { type: 'string' },
      'cold-starts': { type: 'string' },
      'settle-ms': { type: 'string' },
      url: { type: 'string' },
      token: { type: 'string' },
      pid: { type: 'string' },
      label: { type: 'string' },
      'cpu-prof': { type: 'boolean' },
      'gateway-node-args': { type: 'string' },
      'keep-state': { type: 'boolean' },
      'wait-quiet-s': { type: 'string' },
      'noise-retries': { type: 'string' },
      out: { type: 'string' },
      'no-reference': { type: 'boolean' },
      peer: { type: 'string' },
      'no-floor': { type: 'boolean' },
      'idle-counts': { type: 'string' },
      'peer-idle-max': { type: 'string' },
      'idle-budget-s': { type: 'string' },
      'approval-n': { type: 'string' },
      'revocation-n': { type: 'string' },
      'node-invoke-n': { type: 'string' },
      tiny: { type: 'boolean' },
      devices: { type: 'string' },
      stores: { type: 'string' },
      'seed-batch': { type: 'string' },
      idle: { type: 'string' },
      'idle-watchers': { type: 'string' },
      'per-source': { type: 'string' },
      'idle-vm': { type: 'boolean' },
      'vm-accel': { type: 'string' },
      'vm-cpus': { type: 'string' },
      'vm-memory-mib': { type: 'string' },
      cluster: { type: 'boolean' },
      'scale-n': { type: 'string' },
      'rows-only': { type: 'boolean' },
      soak: { type: 'string' },
      'soak-interval-s': { type: 'string' },
      'soak-pool': { type: 'string' },
      'soak-connects-per-s': { type: 'string' },
      'soak-hold-ms': { type: 'string' },
      'soak-approvals-per-min': { type: 'string' },
      'soak-invokes-per-s': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const tiny = values.tiny === true;
  const quick = values.quick === true || tiny;
  if (values.peer !== undefined && values.peer !== 'openclaw') throw new Error(`--peer must be openclaw, got ${values.peer}`);
  const idleCounts = (values['idle-counts'] ?? (tiny ? '5' : quick ? '50' : '1000,10000')).split(',').map((x) => int(x.trim(), 'idle-counts', 1) as number);
  const modes = values.modes === undefined ? [...MODES] : values.modes.split(',').map((m) => m.trim());
  for (const m of modes) if (!(MODES as readonly string[]).includes(m)) throw new Error(`unknown mode ${m} (modes: ${MODES.join(', ')})`);
  if ((values.url === undefined) !== (values.token === undefined)) throw new Error('--url and --token go together');
  const scopes = values.scopes === undefined ? DEFAULT_PROFILE.scopes : values.scopes.split(',').filter((s) => s.length > 0);
  const durationS = values['duration-s'] === undefined ? (tiny ? 0.5 : quick ? 3 : 20) : Number(values['duration-s']);
  if (!Number.isFinite(durationS) || durationS <= 0 || durationS > 3600) throw new Error('--duration-s must be a number of seconds in (0, 3600]');
  const external =
    values.url !== undefined && values.token !== undefined ? { url: values.url, token: values.token, pid: int(values.pid, 'pid', 1) ?? null } : null;
  if (external && !/^wss?:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(\/|$)/.test(external.url)) {
    throw new Error(`--url must be a loopback address (this harness only generates loopback traffic), got ${external.url}`);
  }
  const positive = (name: string, def: number, max: number): number => {
    const v = (values as Record<string, unknown>)[name];
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || n > max) throw new Error(`--${name} must be a number in (0, ${max}], got ${String(v)}`);
    return n;
  };
  const soak: SoakConfig | null =
    values.soak === undefined
      ? null
      : {
          minutes: positive('soak', 1, 24 * 60),
          intervalS: positive('soak-interval-s', 30, 3600),
          pool: Math.round(positive('soak-pool', 2000, 100_000)),
          connectsPerS: positive('soak-connects-per-s', 40, 10_000),
          holdMaxMs: positive('soak-hold-ms', 3000, 600_000),
          approvalsPerMin: positive('soak-approvals-per-min', 30, 6000),
          invokesPerS: positive('soak-invokes-per-s', 10, 10_000),
          maxInFlight: 500,
        };
  const stores = (values.stores ?? 'sqlite,postgres').split(',').map((x) => x.trim());
  for (const st of stores) if (st !== 'sqlite' && st !== 'postgres') throw new Error(`--stores takes sqlite and/or postgres, got ${st}`);
  const devices = int(values.devices, 'devices', 1) ?? null;
  const idle = int(values.idle, 'idle', 1) ?? null;
  const scale: ScaleConfig | null =
    devices === null && idle === null && values.cluster !== true
      ? null
      : {
          devices,
          smallDevices: 10,
          stores: stores as StoreKind[],
          seedBatch: seedBatchOption(values['seed-batch']),
          idle,
          idleWatchers: int(values['idle-watchers'], 'idle-watchers', 0) ?? (tiny ? 5 : 1000),
          perSourceAddress: int(values['per-source'], 'per-source', 1) ?? 20_000,
          idleBudgetS: int(values['idle-budget-s'], 'idle-budget-s', 1) ?? 600,
          idleVm: values['idle-vm'] === true ? vmOption(values) : null,
          cluster: values.cluster === true,
          n: int(values['scale-n'], 'scale-n', 1) ?? (tiny ? 2 : quick ? 10 : 100),
          latencyN: int(values['latency-n'], 'latency-n', 1) ?? (tiny ? 5 : quick ? 50 : 200),
          warmup: int(values.warmup, 'warmup', 0) ?? (tiny ? 1 : 5),
        };
  const rowsOnly = values['rows-only'] === true;
  if (rowsOnly && !scale) throw new Error('--rows-only needs --devices, --idle or --cluster');
  return {
    soak,
    scale,
    rowsOnly,
    quick,
    // A p99 of 200 samples is the second-worst one: a single preemption decides it. 1,000 make
    // it the tenth-worst, which a verdict can stand on.
    latencyN: int(values['latency-n'], 'latency-n', 1) ?? (tiny ? 5 : quick ? 50 : 1000),
    warmup: int(values.warmup, 'warmup', 0) ?? (tiny ? 1 : 5),
    concurrency: int(values.concurrency, 'concurrency', 1) ?? (tiny ? 2 : 20),
    durationS,
    modes: modes as Mode[],
    coldStarts: int(values['cold-starts'], 'cold-starts', 1) ?? (quick ? 1 : 3),
    settleMs: int(values['settle-ms'], 'settle-ms', 0) ?? (tiny ? 0 : quick ? 200 : 1000),
    profile: { ...DEFAULT_PROFILE, scopes },
    gatewayNodeArgs: values['gateway-node-args'] ? values['gateway-node-args'].split(' ').filter(Boolean) : [],
    cpuProf: values['cpu-prof'] === true,
    external,
    label: values.label ?? (external ? 'external' : 'clawgate'),
    keepState: values['keep-state'] === true,
    waitQuietS: int(values['wait-quiet-s'], 'wait-quiet-s', 0) ?? (quick ? 0 : 30),
    noiseRetries: int(values['noise-retries'], 'noise-retries', 0) ?? (quick ? 0 : 2),
    out: values.out ? resolve(values.out) : join(ROOT, 'bench', 'results', soak ? 'soak.json' : 'latest.json'),
    reference: values['no-reference'] !== true,
    peer: (values.peer as GatewayKind | undefined) ?? null,
    floor: values['no-floor'] !== true,
    idleCounts,
    peerIdleMax: int(values['peer-idle-max'], 'peer-idle-max', 0) ?? 10_000,
    idleBudgetS: int(values['idle-budget-s'], 'idle-budget-s', 1) ?? (quick ? 20 : 240),
    idleSettleMs: tiny ? 100 : quick ? 1000 : 5000,
    approvalN: int(values['approval-n'], 'approval-n', 0) ?? (tiny ? 2 : quick ? 3 : 100),
    revocationN: int(values['revocation-n'], 'revocation-n', 0) ?? (tiny ? 2 : quick ? 3 : 100),
    nodeInvokeN: int(values['node-invoke-n'], 'node-invoke-n', 0) ?? (tiny ? 3 : quick ? 50 : 1000),
  };
}

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

/** Machine-wide busy cores over `ms` (other sessions on a shared machine skew every number). */
async function backgroundCores(ms = 1000): Promise<number | null> {
  const a = readSystemCpu();
  await sleep(ms);
  return busyCores(a, readSystemCpu(), cpus().length);
}

/** Wait (bounded) for one second in which the machine is nearly idle. */
async function waitQuiet(maxS: number, thresholdCores = 0.25): Promise<{ waitedS: number; busyCores: number | null; quiet: boolean }> {
  const t0 = Date.now();
  let busy = await backgroundCores();
  while (busy !== null && busy > thresholdCores && Date.now() - t0 < maxS * 1000) {
    if (Date.now() - t0 < 1500) log(`machine busy (${busy} cores used by other processes): waiting up to ${maxS} s for it to settle`);
    busy = await backgroundCores();
  }
  return { waitedS: Math.round((Date.now() - t0) / 100) / 10, busyCores: busy, quiet: busy !== null && busy <= thresholdCores };
}

/** Gateways this process started: stopped on the way out, whatever happens. */
const live = new Set<SpawnedGateway>();

async function startGw(launcher: Launcher, cfg: BenchConfig, opts: { nodeArgs?: string[]; strict?: boolean } = {}): Promise<SpawnedGateway> {
  const gw = await launcher.start({ root: ROOT, nodeArgs: opts.nodeArgs, strict: opts.strict, keepStateDir: cfg.keepState });
  live.add(gw);
  return gw;
}

async function stopGateway(gw: SpawnedGateway): Promise<{ code: number | null; signal: string | null }> {
  const exit = await gw.stop();
  live.delete(gw);
  return exit;
}

/** Run a measurement; repeat it (bounded) while other processes disturb it, keep the least disturbed. */
async function leastDisturbed<T extends { cpu: CpuUse }>(what: string, cfg: BenchConfig, run: () => Promise<T>): Promise<T & Attempts> {
  let best: T | null = null;
  const others: Array<number | null> = [];
  for (let attempt = 0; attempt <= cfg.noiseRetries; attempt++) {
    const r = await run();
    const other = r.cpu.otherCores;
    others.push(other);
    if (best === null || (other ?? 0) < (best.cpu.otherCores ?? 0)) best = r;
    if (other === null || other <= NOISE_CORES || attempt === cfg.noiseRetries) break;
    log(`${what}: other processes used ${other} cores during it; waiting for quiet and repeating (${attempt + 1}/${cfg.noiseRetries})`);
    await waitQuiet(cfg.waitQuietS);
  }
  return { ...(best as T), attempts: others.length, otherCoresByAttempt: others };
}

/** The measurements of one target: each mode prepared, then sequential latency, then throughput. */
async function runSuite(target: Target, cfg: BenchConfig, result: TargetResult): Promise<TargetResult> {
  for (const mode of cfg.modes) {
    const mr: ModeResult = { pairing: null, latency: null, throughput: null };
    result.modes[mode] = mr;
    try {
      log(`${target.label} ${mode}: preparing ${cfg.concurrency} client slot(s)`);
      const prepared = await prepareMode(target, mode, cfg.concurrency, cfg.profile);
      mr.pairing = prepared.pairing;
      await sleep(cfg.settleMs);
      log(`${target.label} ${mode}: ${cfg.latencyN} sequential connects (+${cfg.warmup} warm-up)`);
      mr.latency = await leastDisturbed(`${target.label} ${mode} latency`, cfg, () =>
        sequentialLatency(target, prepared, cfg.latencyN, cfg.warmup, cfg.profile),
      );
      await sleep(cfg.settleMs);
      log(`${target.label} ${mode}: ${cfg.concurrency} clients for ${cfg.durationS} s`);
      mr.throughput = await leastDisturbed(`${target.label} ${mode} throughput`, cfg, () =>
        throughput(target, prepared, cfg.concurrency, cfg.durationS, cfg.profile),
      );
      await sleep(cfg.settleMs);
    } catch (err) {
      mr.error = (err as Error).message;
      log(`${target.label} ${mode}: FAILED: ${mr.error}`);
    }
  }
  return result;
}

function machine() {
  const c = cpus();
  let commit: string | null = null;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (dirty) commit += '+dirty';
  } catch {
    commit = null;
  }
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version?: string };
  return {
    cpuModel: c[0]?.model ?? 'unknown',
    cpuCount: c.length,
    totalMemoryMiB: Math.round(totalmem() / 1024 / 1024),
    os: `${platform()} ${release()}`,
    arch: process.arch,
    node: process.version,
    clawgate: { version: pkg.version ?? null, commit },
  };
}

/** The newest `.cpuprofile` in `dir` written after `sinceMs` (the gateway writes it on exit). */
function newestProfile(dir: string, sinceMs: number): string | null {
  if (!existsSync(dir)) return null;
  let best: string | null = null;
  let bestMtime = sinceMs;
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.cpuprofile')) continue;
    const path = join(dir, f);
    const mtime = statSync(path).mtimeMs;
    if (mtime >= bestMtime) {
      best = path;
      bestMtime = mtime;
    }
  }
  return best;
}

const NODE_INVOKE_REASON =
  "not driven against OpenClaw: its gateway keeps node commands to its own allow-list and needs its node surface approval flow; the scenario speaks clawgate's node protocol only";

/** Everything measured on one gateway kind: cold starts, modes, revocation, idle memory, approval. */
async function measureGateway(launcher: Launcher, cfg: BenchConfig, label: string, idleCounts: number[], startedAt: Date): Promise<TargetResult> {
  const profDir = join(ROOT, 'bench', 'results', 'profiles');
  const nodeArgs = launcher.kind === 'clawgate' ? [...cfg.gatewayNodeArgs, ...(cfg.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [])] : [];
  // Starts with extra node flags (profiling) are not representative: time plain starts instead.
  const throwaway = nodeArgs.length > 0 ? cfg.coldStarts : cfg.coldStarts - 1;
  const samples: number[] = [];
  const execMs: number[] = [];
  for (let i = 0; i < throwaway; i++) {
    const gw = await startGw(launcher, cfg);
    samples.push(gw.coldStartMs);
    execMs.push(gw.execMs);
    log(`${label} cold start ${i + 1}: ${gw.coldStartMs.toFixed(1)} ms`);
    await stopGateway(gw);
  }
  const gw = await startGw(launcher, cfg, { nodeArgs });
  if (nodeArgs.length === 0) {
    samples.push(gw.coldStartMs);
    execMs.push(gw.execMs);
  }
  log(`${label} pid ${gw.pid} ready on ${gw.url} after ${gw.coldStartMs.toFixed(1)} ms (state ${gw.stateDir})`);
  const t: Target = { label, url: gw.url, token: gw.token, pid: gw.pid };
  // OpenClaw keeps starting sidecars for a while after /readyz: let it settle before reading RSS.
  await sleep(launcher.kind === 'openclaw' ? Math.max(cfg.settleMs, cfg.quick ? 2000 : 10_000) : cfg.settleMs);
  const stats = summarize(Float64Array.from(samples));
  const res: TargetResult = {
    label,
    kind: 'spawned',
    gateway: launcher.kind,
    url: t.url,
    pid: t.pid,
    coldStart: {
      samplesMs: samples.map((x) => Math.round(x * 10) / 10),
      medianMs: stats?.median ?? Number.NaN,
      execMs: execMs.map((x) => Math.round(x * 10) / 10),
      stats,
    },
    rss: { idleMiB: readRssMiB(gw.pid), idleTreeMiB: readTreeRssMiB(gw.pid), endMiB: null, peakMiB: null },
    modes: {},
    describe: launcher.describe(),
  };
  try {
    await runSuite(t, cfg, res);
    if (launcher.pairing && cfg.revocationN > 0) {
      log(`${label}: ${cfg.revocationN} revocations`);
      res.revocation = await revocationLatency(t, cfg.revocationN, cfg.profile).catch((err: Error) => ({ error: err.message }));
    }
    if (launcher.kind === 'clawgate' && cfg.nodeInvokeN > 0) {
      log(`${label}: ${cfg.nodeInvokeN} node.invoke round trips`);
      try {
        const owner = ownerCredential(gw.stateDir);
        res.nodeInvoke = await nodeInvokeLatency(t, owner, cfg.nodeInvokeN, cfg.warmup);
      } catch (err) {
        res.nodeInvoke = { error: (err as Error).message };
      }
    }
    res.rss.endMiB = readRssMiB(gw.pid);
    res.rss.peakMiB = readPeakRssMiB(gw.pid);
  } finally {
    const exit = await stopGateway(gw);
    if (exit.code !== 0 && launcher.kind === 'clawgate') log(`${label} exited with ${JSON.stringify(exit)} (log: ${gw.logPath})`);
  }
  if (idleCounts.length > 0) {
    // A fresh process, like the reference's idle-memory runs: the load above grew the heap, and
    // connections would partly reuse that memory and look cheaper than they are.
    log(`${label}: idle connections ${idleCounts.join(' → ')} on a fresh instance`);
    try {
      const fresh = await startGw(launcher, cfg);
      try {
        await sleep(launcher.kind === 'openclaw' ? (cfg.quick ? 2000 : 10_000) : 0);
        const ft: Target = { label, url: fresh.url, token: fresh.token, pid: fresh.pid };
        res.idle = await idleConnections(ft, {
          counts: idleCounts,
          identities: Math.min(cfg.concurrency, 20),
          parallel: 25,
          settleMs: cfg.idleSettleMs,
          budgetS: cfg.idleBudgetS,
          profile: cfg.profile,
          log,
        });
      } finally {
        await stopGateway(fresh);
      }
    } catch (err) {
      res.idle = { error: (err as Error).message };
    }
  }
  if (cfg.cpuProf && launcher.kind === 'clawgate') {
    const file = newestProfile(profDir, startedAt.getTime());
    if (file) {
      const summary = summarizeProfile(file);
      res.profile = { file, summary };
      process.stdout.write(`\n${formatProfile(summary)}\n`);
    } else log(`no CPU profile found in ${profDir} (the gateway must exit cleanly to write one)`);
  }
  if (launcher.pairing && cfg.approvalN > 0) {
    log(`${label}: ${cfg.approvalN} approvals (a second instance that pairs nothing silently)`);
    try {
      const strict = await startGw(launcher, cfg, { strict: true });
      try {
        if (launcher.kind === 'openclaw') await sleep(cfg.quick ? 2000 : 5000);
        res.approval = await approvalLatency({ label, url: strict.url, token: strict.token, pid: strict.pid }, cfg.approvalN, cfg.profile);
      } finally {
        await stopGateway(strict);
      }
    } catch (err) {
      res.approval = { error: (err as Error).message };
    }
  }
  if (launcher.kind === 'openclaw') res.nodeInvoke = { measured: false, reason: NODE_INVOKE_REASON };
  return res;
}

async function main(): Promise<number> {
  let cfg: BenchConfig;
  try {
    cfg = parseConfig(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const startedAt = new Date();
  if (cfg.soak) return soakMain(cfg, cfg.soak, startedAt);
  const targets: TargetResult[] = [];
  const loadavgAtStart = loadavg().map((x) => Math.round(x * 100) / 100);
  const fdLimit = openFileLimit();
  const maxIdle = Math.max(0, ...cfg.idleCounts);
  if (fdLimit !== null && fdLimit < maxIdle + 1000)
    log(`open-file limit ${fdLimit} is below ${maxIdle} idle connections: run through "npm run bench" (it raises ulimit -n to the hard limit)`);
  const quiet = await waitQuiet(cfg.waitQuietS);
  if (!quiet.quiet) log(`other processes keep ${quiet.busyCores} cores busy: numbers will be noisy`);

  if (cfg.external) {
    const t: Target = { label: cfg.label, url: cfg.external.url, token: cfg.external.token, pid: cfg.external.pid };
    const res: TargetResult = {
      label: t.label,
      kind: 'external',
      gateway: null,
      url: t.url,
      pid: t.pid,
      coldStart: null,
      rss: { idleMiB: t.pid !== null ? readRssMiB(t.pid) : null, idleTreeMiB: null, endMiB: null, peakMiB: null },
      modes: {},
    };
    await runSuite(t, cfg, res);
    if (t.pid !== null) res.rss = { ...res.rss, endMiB: readRssMiB(t.pid), peakMiB: readPeakRssMiB(t.pid) };
    targets.push(res);
  } else {
    // --rows-only: the connect rows the floor ratios need, without idle steps, approvals or revocations.
    const baseCfg: BenchConfig = cfg.rowsOnly ? { ...cfg, modes: ['device-token'], idleCounts: [], approvalN: 0, revocationN: 0, nodeInvokeN: 0 } : cfg;
    targets.push(await measureGateway(clawgateLauncher, baseCfg, cfg.label, baseCfg.idleCounts, startedAt));
    if (cfg.peer && !cfg.rowsOnly) {
      const peerCounts = cfg.idleCounts.filter((n) => n <= cfg.peerIdleMax);
      targets.push(await measureGateway(LAUNCHERS[cfg.peer], cfg, cfg.peer, peerCounts, startedAt));
    }
    if (cfg.floor) targets.push(await measureGateway(floorLauncher, baseCfg, 'floor', baseCfg.idleCounts, startedAt));
  }
  let scale: ScaleResult | null = null;
  if (cfg.scale && !cfg.external) {
    scale = await runScale(cfg.scale, {
      root: ROOT,
      profile: cfg.profile,
      log,
      track: (gw) => live.add(gw),
      untrack: (gw) => live.delete(gw),
      clawgate: clawgateLauncher,
      floor: cfg.floor ? floorLauncher : null,
    });
  }
  const perfTargets = evaluatePerfTargets(targets, scale ?? {});

  const finishedAt = new Date();
  const report = {
    schema: 'clawgate-bench/2',
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    command: `npm run bench --${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`,
    machine: machine(),
    environment: {
      loadavgAtStart,
      otherCpuCoresBeforeRun: quiet.busyCores,
      waitedForQuietS: quiet.waitedS,
      openFileLimit: fdLimit,
      note: 'the machine is shared (2 cores, up to 8 engineers): every latency/throughput result has cpu.otherCores, the machine CPU not used by the gateway or the load generator during it',
    },
    config: {
      quick: cfg.quick,
      latencyN: cfg.latencyN,
      warmup: cfg.warmup,
      concurrency: cfg.concurrency,
      durationS: cfg.durationS,
      modes: cfg.modes,
      coldStarts: cfg.coldStarts,
      settleMs: cfg.settleMs,
      role: cfg.profile.role,
      scopes: cfg.profile.scopes,
      devicelessClient: cfg.profile.devicelessClient,
      deviceClient: cfg.profile.deviceClient,
      timeoutMs: cfg.profile.timeoutMs,
      gatewayNodeArgs: cfg.gatewayNodeArgs,
      cpuProf: cfg.cpuProf,
      peer: cfg.peer,
      floor: cfg.floor,
      idleCounts: cfg.idleCounts,
      peerIdleMax: cfg.peerIdleMax,
      idleBudgetS: cfg.idleBudgetS,
      idleSettleMs: cfg.idleSettleMs,
      approvalN: cfg.approvalN,
      revocationN: cfg.revocationN,
      nodeInvokeN: cfg.nodeInvokeN,
      target: cfg.external ? { url: cfg.external.url, pid: cfg.external.pid } : 'spawned gateways (fresh state dirs, loopback)',
    },
    targets: Object.fromEntries(targets.map((t) => [t.label, t])),
    goals: evaluateTargets(targets),
    scale,
    perfTargets,
    reference: cfg.reference ? { ...OPENCLAW_REFERENCE, measuredInThisRun: false } : null,
  };
  mkdirSync(dirname(cfg.out), { recursive: true });
  writeFileSync(cfg.out, `${JSON.stringify(report, null, 2)}\n`);

  const m = report.machine;
  const noisy = targets.flatMap((t) =>
    Object.entries(t.modes).flatMap(([mode, r]) =>
      [
        ['latency', r?.latency?.cpu.otherCores],
        ['throughput', r?.throughput?.cpu.otherCores],
      ]
        .filter(([, o]) => typeof o === 'number' && o > NOISE_CORES)
        .map(([what, o]) => `${t.label} ${mode} ${what} (${o} cores)`),
    ),
  );
  process.stdout.write(
    `\nclawgate bench — ${m.cpuCount} × ${m.cpuModel}, ${m.totalMemoryMiB} MiB, node ${m.node}, ${cfg.quick ? 'quick' : 'full'} run` +
      ` (load generator on the same machine; load average at start ${loadavgAtStart.join(' ')}; other processes used ${quiet.busyCores ?? '?'} cores just before)\n\n` +
      `${renderHeadline(targets, report.goals, cfg)}\n\n` +
      `details per auth mode:\n${renderTable(targets, cfg.modes, cfg.reference && !cfg.peer ? OPENCLAW_REFERENCE : null, cfg)}\n` +
      `\n${renderScale(scale ?? {}, perfTargets)}\n` +
      (noisy.length ? `\nWARNING: other processes were busy during ${noisy.join(', ')}: treat those numbers as noisy.\n` : '') +
      `\nwrote ${cfg.out}\n`,
  );
  const failed =
    targets.some(
      (t) =>
        Object.values(t.modes).some((r) => r?.error) ||
        (t.idle && 'error' in t.idle) ||
        (t.approval && 'error' in t.approval) ||
        (t.revocation && 'error' in t.revocation),
    ) || scaleFailed(scale);
  return failed ? 1 : 0;
}

/** A scale row that could not run at all (a partial result is not a failure: the verdicts say what was missed). */
function scaleFailed(scale: ScaleResult | null): boolean {
  if (!scale) return false;
  const stores = Object.values(scale.devices?.byStore ?? {});
  return (
    stores.some((r) => !r || 'error' in r || 'error' in r.large.connect || 'error' in r.small.connect) ||
    Object.values(scale.idle?.byGateway ?? {}).some((r) => 'error' in r) ||
    (scale.cluster !== undefined && 'error' in scale.cluster)
  );
}

/** The soak: one strict clawgate (nothing pairs silently), the mix for the given minutes, the table and the JSON. */
async function soakMain(cfg: BenchConfig, soak: SoakConfig, startedAt: Date): Promise<number> {
  const fdLimit = openFileLimit();
  const loadavgAtStart = loadavg().map((x) => Math.round(x * 100) / 100);
  const gw = await startGw(clawgateLauncher, cfg, { strict: true });
  log(`soak gateway pid ${gw.pid} ready on ${gw.url} (state ${gw.stateDir}, log ${gw.logPath})`);
  let result: Awaited<ReturnType<typeof runSoak>>;
  try {
    result = await runSoak(gw, soak, log);
  } finally {
    const exit = await stopGateway(gw);
    if (exit.code !== 0) log(`soak gateway exited with ${JSON.stringify(exit)} (log: ${gw.logPath})`);
  }
  const report = {
    schema: 'clawgate-bench-soak/1',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`,
    machine: machine(),
    environment: { loadavgAtStart, openFileLimit: fdLimit },
    ...result,
  };
  mkdirSync(dirname(cfg.out), { recursive: true });
  writeFileSync(cfg.out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`\n${renderSoak(result)}\n\nwrote ${cfg.out}\n`);
  return result.totals.errors === 0 && result.verdict.flat ? 0 : 1;
}

async function shutdown(signal: string): Promise<void> {
  log(`${signal}: stopping ${live.size} gateway(s)`);
  await Promise.all([...live].map((g) => g.stop(2000)));
  process.exit(130);
}
process.once('SIGINT', () => void shutdown('SIGINT'));
process.once('SIGTERM', () => void shutdown('SIGTERM'));

main().then(
  (code) => {
    process.exitCode = code;
  },
  async (err) => {
    process.stderr.write(`bench: ${(err as Error)?.stack ?? err}\n`);
    await Promise.all([...live].map((g) => g.stop(2000)));
    process.exitCode = 1;
  },
);
