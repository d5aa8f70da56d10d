/**
 * The rows that measure clawgate at scale (`npm run bench -- --devices N --idle N --cluster`):
 *
 * - devices: a store seeded with N paired devices through the store API (`seedPairedDevices`,
 *   one transaction and one audit entry per batch), SQLite and PostgreSQL, against the same store with 10 devices:
 *   cold start, device-token connect median/p99, the first page of `device.pair.list`, approval
 *   and revocation latency;
 * - idle: N device-token connections held on one instance (client side spread over several
 *   loopback source addresses, 127.0.0.2…), RSS per connection against the floor, and the bytes
 *   1,000 `operator.read` sessions receive per connect (the event-storm check);
 * - cluster: two instances on PostgreSQL (bench/cluster.ts).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { SEED_BATCH_MAX, type SeedDevice, type Store } from '../src/core/store.js';
import { type ClusterResult, clusterRows } from './cluster.js';
import type { Launcher } from './gateways.js';
import { type LoadProfile, prepareMode, sequentialLatency, type Target } from './loadgen.js';
import { openFileLimit, type SpawnedGateway, spawnGateway } from './proc.js';
import {
  type ApprovalResult,
  approvalLatency,
  type IdleResult,
  idleConnections,
  openAdminSession,
  type RevocationResult,
  revocationLatency,
} from './scenarios.js';
import { Samples, type Summary } from './stats.js';
import { GUEST_SHARED_DIR, runInVm, shellQuote, type VmEnvironment, type VmOptions } from './vm.js';

export type StoreKind = 'sqlite' | 'postgres';

export interface ScaleConfig {
  /** Paired devices to seed (null: no devices row). */
  devices: number | null;
  /** The small store the large one is compared with. */
  smallDevices: number;
  stores: StoreKind[];
  seedBatch: number;
  /** Idle device-token connections to hold (null: no idle row). */
  idle: number | null;
  idleWatchers: number;
  /** Connections per loopback source address (one address has ~28,000 ephemeral ports). */
  perSourceAddress: number;
  idleBudgetS: number;
  /** Run the idle row inside a qemu guest (bench/vm.ts) instead of on this machine (null: here). */
  idleVm: Pick<VmOptions, 'accel' | 'vcpus' | 'memoryMiB'> | null;
  cluster: boolean;
  /** Approvals / revocations / cluster crossings per measurement. */
  n: number;
  latencyN: number;
  warmup: number;
}

export interface ScaleContext {
  root: string;
  profile: LoadProfile;
  log: (msg: string) => void;
  /** Gateways started here are registered so Ctrl-C stops them too. */
  track: (gw: SpawnedGateway) => void;
  untrack: (gw: SpawnedGateway) => void;
  floor: Launcher | null;
  clawgate: Launcher;
}

// ------------------------------------------------------------------------------------------
// Seeding through the store API
// ------------------------------------------------------------------------------------------

/** A paired filler device: random key (it never connects), an operator grant, a token hash. */
function fillerDevice(atMs: number, i: number): SeedDevice {
  const key = randomBytes(32);
  return {
    deviceId: createHash('sha256').update(key).digest('hex'),
    publicKey: key.toString('base64url'),
    meta: { displayName: `seeded-${i}`, platform: 'linux', clientId: 'test', clientMode: 'test' },
    createdAtMs: atMs,
    grants: [{ role: 'operator', scopes: ['operator.read'], approvedAtMs: atMs, approvedVia: 'manual' }],
    tokens: [{ role: 'operator', tokenId: randomUUID(), secretHash: randomBytes(32), createdAtMs: atMs }],
  };
}

export interface SeedResult {
  devices: number;
  batch: number;
  seconds: number;
  devicesPerSecond: number;
}

/** Insert `n` devices in transactions of `batch` (at most SEED_BATCH_MAX) through `seedPairedDevices`. */
export async function seedDevices(store: Store, n: number, batch: number, log: (msg: string) => void): Promise<SeedResult> {
  if (batch > SEED_BATCH_MAX) throw new Error(`a seeding batch holds at most ${SEED_BATCH_MAX} devices, not ${batch}`);
  const t0 = performance.now();
  const atMs = Date.now();
  let lastLog = t0;
  for (let done = 0; done < n; ) {
    const size = Math.min(batch, n - done);
    const devices = Array.from({ length: size }, (_, k) => fillerDevice(atMs, done + k));
    const res = await store.seedPairedDevices({
      devices,
      audit: {
        atMs,
        actor: 'owner',
        action: 'devices.seeded',
        subject: devices[0]?.deviceId,
        data: { source: 'bench:seed', count: size, firstDeviceId: devices[0]?.deviceId, lastDeviceId: devices[size - 1]?.deviceId },
      },
    });
    if (!res.ok) throw new Error(`seeding refused: ${res.reason === 'exists' ? `exists (${res.deviceIds.slice(0, 3).join(', ')})` : res.reason}`);
    done += size;
    if (performance.now() - lastLog > 10_000) {
      lastLog = performance.now();
      log(`  seeded ${done.toLocaleString('en')} / ${n.toLocaleString('en')} devices`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return { devices: n, batch, seconds: Math.round(seconds * 10) / 10, devicesPerSecond: Math.round(n / seconds) };
}

// ------------------------------------------------------------------------------------------
// Devices row
// ------------------------------------------------------------------------------------------

export interface ListResult {
  method: 'device.pair.list';
  params: Record<string, unknown>;
  /** Whether the gateway honoured a page limit (else the whole listing was measured). */
  paginated: boolean;
  latencyMs: Summary | null;
  items: number | null;
  bytes: number | null;
  error?: string;
}

export interface StoreRun {
  store: StoreKind;
  seededDevices: number;
  seed: SeedResult | null;
  /** PostgreSQL: the VACUUM (ANALYZE) and CHECKPOINT after seeding (settlePostgres), milliseconds. */
  settleMs?: number;
  coldStartMs: number | null;
  /** Cold start of the strict restart on the same store (approval run). */
  strictColdStartMs: number | null;
  connect: { medianMs: number | null; p99Ms: number | null; n: number; errors: Record<string, number> } | { error: string };
  list: ListResult | { error: string };
  approval: ApprovalResult | { error: string };
  revocation: RevocationResult | { error: string };
}

export interface DevicesResult {
  devices: number;
  smallDevices: number;
  byStore: Partial<Record<StoreKind, { small: StoreRun; large: StoreRun } | { error: string }>>;
}

const fail = (err: unknown) => ({ error: (err as Error).message ?? String(err) });

async function listFirstPage(target: Target, profile: LoadProfile, repeats: number): Promise<ListResult> {
  const admin = await openAdminSession(target, profile);
  try {
    let params: Record<string, unknown> = { limit: 50 };
    let res = await admin.request('device.pair.list', params, 120_000);
    let paginated = true;
    if (!res.ok && res.error?.code !== 'closed' && res.error?.code !== 'timeout') {
      // A gateway without pagination refuses the unknown `limit`: measure the whole listing.
      params = {};
      paginated = false;
    }
    const lat = new Samples(repeats);
    let items: number | null = null;
    let bytes: number | null = null;
    for (let i = 0; i < repeats; i++) {
      const t0 = performance.now();
      res = await admin.request('device.pair.list', params, 120_000);
      const ms = performance.now() - t0;
      if (!res.ok) return { method: 'device.pair.list', params, paginated, latencyMs: lat.summary(), items, bytes, error: res.error?.code ?? 'unknown' };
      lat.push(ms);
      const paired = (res.payload as { paired?: unknown[] } | undefined)?.paired;
      items = Array.isArray(paired) ? paired.length : null;
      bytes = JSON.stringify(res.payload ?? null).length;
      if (ms > 5000) break; // an unpaginated listing of a huge store: one sample is enough
    }
    if (paginated && items !== null && items > 50) paginated = false;
    return { method: 'device.pair.list', params, paginated, latencyMs: lat.summary(), items, bytes };
  } finally {
    admin.close();
  }
}

async function openStore(kind: StoreKind, stateDir: string, pgUrl: string | null): Promise<Store> {
  if (kind === 'sqlite') {
    const { SqliteStore } = await import('../src/store/sqlite/store.js');
    return new SqliteStore(join(stateDir, 'clawgate.sqlite'));
  }
  const { PostgresStore } = await import('../src/store/postgres/store.js');
  return PostgresStore.open(pgUrl as string, { maxConnections: 2 });
}

/**
 * After a bulk load PostgreSQL still owes the seeded tables their maintenance: autovacuum's
 * ANALYZE and VACUUM of a million fresh rows (it starts within its naptime, a minute at most)
 * and the checkpoint the load's WAL asked for. Left alone they ran during the measurements that
 * follow (a second core busy for seconds on a two-core machine: the 1,000,000-device row measured
 * PostgreSQL catching up, not clawgate). Done here, before the gateway starts, for either size:
 * the store is then as a long-running one is, whatever its size.
 */
async function settlePostgres(store: Store): Promise<number> {
  const t0 = performance.now();
  const { pool } = store as import('../src/store/postgres/store.js').PostgresStore;
  await pool.query('VACUUM (ANALYZE)');
  await pool.query('CHECKPOINT');
  return Math.round(performance.now() - t0);
}

/** One store size: seed, start, connect latency, list, revocations; restart strict, approvals. */
async function storeRun(kind: StoreKind, devices: number, cfg: ScaleConfig, ctx: ScaleContext, pgUrl: string | null): Promise<StoreRun> {
  const stateDir = mkdtempSync(join(tmpdir(), `clawgate-bench-${kind}-`));
  const extraArgs = kind === 'postgres' ? ['--store', 'postgres', '--postgres-url', pgUrl as string] : [];
  const admin = { auth: { sharedSecretIsAdminOnHost: true } };
  const run: StoreRun = {
    store: kind,
    seededDevices: devices,
    seed: null,
    coldStartMs: null,
    strictColdStartMs: null,
    connect: { error: 'not run' },
    list: { error: 'not run' },
    approval: { error: 'not run' },
    revocation: { error: 'not run' },
  };
  try {
    ctx.log(`devices/${kind}: seeding ${devices.toLocaleString('en')} devices in batches of ${cfg.seedBatch}`);
    const store = await openStore(kind, stateDir, pgUrl);
    try {
      run.seed = await seedDevices(store, devices, cfg.seedBatch, ctx.log);
      if (kind === 'postgres') run.settleMs = await settlePostgres(store);
    } finally {
      await store.close();
    }
    ctx.log(`devices/${kind}: seeded in ${run.seed.seconds} s (${run.seed.devicesPerSecond}/s); starting the gateway`);
    const gw = await spawnGateway({ root: ctx.root, stateDir, extraArgs, keepStateDir: true, config: { gateway: admin }, readyTimeoutMs: 120_000 });
    ctx.track(gw);
    try {
      run.coldStartMs = Math.round(gw.coldStartMs * 10) / 10;
      const target: Target = { label: `clawgate/${kind}/${devices}`, url: gw.url, token: gw.token, pid: gw.pid };
      try {
        const prepared = await prepareMode(target, 'device-token', 10, ctx.profile);
        const lat = await sequentialLatency(target, prepared, cfg.latencyN, cfg.warmup, ctx.profile);
        run.connect = { medianMs: lat.totalMs?.median ?? null, p99Ms: lat.totalMs?.p99 ?? null, n: cfg.latencyN, errors: lat.errors };
      } catch (err) {
        run.connect = fail(err);
      }
      run.list = await listFirstPage(target, ctx.profile, 5).catch(fail);
      run.revocation = await revocationLatency(target, cfg.n, ctx.profile).catch(fail);
    } finally {
      await gw.stop();
      ctx.untrack(gw);
    }
    const strict = await spawnGateway({
      root: ctx.root,
      stateDir,
      extraArgs,
      keepStateDir: true,
      config: { gateway: { ...admin, autoApproveLocal: false } },
      readyTimeoutMs: 120_000,
    });
    ctx.track(strict);
    try {
      run.strictColdStartMs = Math.round(strict.coldStartMs * 10) / 10;
      run.approval = await approvalLatency({ label: 'strict', url: strict.url, token: strict.token, pid: strict.pid }, cfg.n, ctx.profile).catch(fail);
    } finally {
      await strict.stop();
      ctx.untrack(strict);
    }
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
  return run;
}

export async function devicesRow(cfg: ScaleConfig, ctx: ScaleContext): Promise<DevicesResult> {
  const n = cfg.devices as number;
  const out: DevicesResult = { devices: n, smallDevices: cfg.smallDevices, byStore: {} };
  for (const kind of cfg.stores) {
    let pg: Awaited<ReturnType<typeof import('../test/helpers/pg-cluster.js').startPgCluster>> | null = null;
    try {
      if (kind === 'postgres') {
        const { startPgCluster } = await import('../test/helpers/pg-cluster.js');
        pg = await startPgCluster();
      }
      const small = await storeRun(kind, cfg.smallDevices, cfg, ctx, pg ? await pg.createDatabase() : null);
      const large = await storeRun(kind, n, cfg, ctx, pg ? await pg.createDatabase() : null);
      out.byStore[kind] = { small, large };
    } catch (err) {
      out.byStore[kind] = fail(err);
      ctx.log(`devices/${kind}: FAILED: ${(err as Error).message}`);
    } finally {
      await pg?.stop();
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Idle row (100,000 connections)
// ------------------------------------------------------------------------------------------

export interface IdleScaleResult {
  requested: number;
  /** Connections actually asked for: below `requested` when the open-file limit cannot hold them. */
  attempted: number;
  limitedBy: string | null;
  openFileLimit: number | null;
  /** Client source addresses of each gateway's ramp (each gateway has its own: see idleRow). */
  sourceAddresses: Record<string, string[]>;
  byGateway: Record<string, IdleResult | { error: string }>;
  /** Where the row ran when not on this machine: the guest of --idle-vm. */
  environment?: VmEnvironment;
}

/** What the host hands the guest entry (bench/vm-guest.ts) for the idle row. */
export interface VmIdleJob {
  scale: ScaleConfig;
  profile: LoadProfile;
  floor: boolean;
}

/**
 * The idle row inside a qemu guest whose kernel lets one process hold more descriptors than this
 * machine does. The guest runs this same build (the host's root filesystem, read-only) through
 * bench/vm-guest.ts and hands the result back through the shared directory.
 */
export async function idleRowInVm(cfg: ScaleConfig, ctx: ScaleContext): Promise<IdleScaleResult> {
  const vm = cfg.idleVm as NonNullable<ScaleConfig['idleVm']>;
  const job: VmIdleJob = { scale: { ...cfg, idleVm: null }, profile: ctx.profile, floor: ctx.floor !== null };
  const gateways = ctx.floor ? 2 : 1;
  const command = `cd ${shellQuote(ctx.root)} && exec ${shellQuote(process.execPath)} --max-old-space-size=8192 dist/bench/vm-guest.js ${GUEST_SHARED_DIR}/job.json`;
  ctx.log(`idle: in a qemu guest (${vm.accel}, ${vm.vcpus} vCPU, ${vm.memoryMiB} MiB): this machine's open-file limit is ${openFileLimit()}`);
  const run = await runInVm(command, { ...vm, timeoutS: gateways * (cfg.idleBudgetS + 180) + 300, log: ctx.log }, (dir) =>
    writeFileSync(join(dir, 'job.json'), JSON.stringify(job)),
  );
  try {
    if (run.rc !== 0) throw new Error(`the idle row failed inside the guest (exit ${run.rc}; its output is above)`);
    const result = JSON.parse(readFileSync(join(run.outDir, 'result.json'), 'utf8')) as IdleScaleResult;
    return { ...result, environment: { ...run.environment, hostOpenFileLimit: openFileLimit() } };
  } finally {
    run.cleanup();
  }
}

export async function idleRow(cfg: ScaleConfig, ctx: ScaleContext): Promise<IdleScaleResult> {
  const requested = cfg.idle as number;
  const limit = openFileLimit();
  // Each connection costs a descriptor on both sides (this process and the gateway, which
  // inherits the limit); keep a margin for the store, logs and the watcher sessions.
  const room = limit === null || !Number.isFinite(limit) ? requested : Math.max(0, limit - cfg.idleWatchers - 1000);
  const attempted = Math.min(requested, room);
  const limitedBy =
    attempted < requested ? `open-file limit ${limit} (raise the hard limit, e.g. LimitNOFILE / ulimit -Hn ≥ ${requested + cfg.idleWatchers + 1000})` : null;
  if (limitedBy) ctx.log(`idle: only ${attempted} of ${requested} connections fit: ${limitedBy}`);
  const launchers = [ctx.clawgate, ...(ctx.floor ? [ctx.floor] : [])];
  // Every gateway ramps from its own source addresses, spread the same way. A closed connection
  // leaves its client port in TIME_WAIT for a minute, and a client bound to an address cannot
  // reuse such a port: a second gateway ramping from the first one's address right after it ran
  // out of ports (the floor stopped at 10,687 of 18,000 with EADDRINUSE).
  const perGateway = Math.max(1, Math.ceil(attempted / cfg.perSourceAddress));
  const out: IdleScaleResult = { requested, attempted, limitedBy, openFileLimit: limit, sourceAddresses: {}, byGateway: {} };
  for (const [index, launcher] of launchers.entries()) {
    const sources = Array.from({ length: perGateway }, (_, i) => `127.0.0.${2 + index * perGateway + i}`);
    out.sourceAddresses[launcher.kind] = sources;
    ctx.log(
      `idle/${launcher.kind}: ${cfg.idleWatchers} operator.read watchers, then ${attempted} idle device-token connections from ${sources.length} source address(es)`,
    );
    try {
      const gw = await launcher.start({ root: ctx.root });
      ctx.track(gw);
      try {
        out.byGateway[launcher.kind] = await idleConnections(
          { label: launcher.kind, url: gw.url, token: gw.token, pid: gw.pid },
          {
            counts: [attempted],
            identities: 20,
            parallel: 25,
            settleMs: 5000,
            budgetS: cfg.idleBudgetS,
            profile: ctx.profile,
            log: ctx.log,
            localAddresses: sources,
            perAddress: cfg.perSourceAddress,
            watchers: cfg.idleWatchers,
          },
        );
      } finally {
        await gw.stop();
        ctx.untrack(gw);
      }
    } catch (err) {
      out.byGateway[launcher.kind] = fail(err);
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------

export interface ScaleResult {
  devices?: DevicesResult;
  idle?: IdleScaleResult;
  cluster?: ClusterResult | { error: string };
}

export async function runScale(cfg: ScaleConfig, ctx: ScaleContext): Promise<ScaleResult> {
  const out: ScaleResult = {};
  if (cfg.devices !== null) out.devices = await devicesRow(cfg, ctx);
  if (cfg.idle !== null) out.idle = cfg.idleVm ? await idleRowInVm(cfg, ctx) : await idleRow(cfg, ctx);
  if (cfg.cluster) {
    ctx.log(`cluster: two instances on PostgreSQL, ${cfg.n} of each crossing`);
    out.cluster = await clusterRows(cfg.n, ctx.log).catch(fail);
  }
  return out;
}
