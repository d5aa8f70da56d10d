/**
 * `npm run bench -- --soak <minutes>`: one real clawgate process under a steady, bounded mix for
 * a fixed time, sampled every interval, to show whether its memory and file descriptors stay flat.
 *
 * The mix (loopback only): a pool of pre-paired device identities (device tokens) connecting,
 * holding the socket a moment and disconnecting at a steady rate; a trickle of new devices that
 * wait on their socket for approval and are approved by the owner's session; node.invoke calls
 * to one echo node; a /healthz round trip every 250 ms. The gateway is started with nothing paired
 * silently (`autoApproveLocal: false`) so every new device, the node included, needs an approval.
 *
 * The gateway does not export its event-loop delay (its /metrics has no process metrics), so the
 * report measures it from outside: the p99 of the /healthz round trip per interval, which a
 * blocked event loop delays one for one.
 */
import { readdirSync } from 'node:fs';
import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WebSocket } from 'ws';
import { connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { ownerCredential } from './harness.js';
import { ConnectSpec, connectOnce, DEFAULT_PROFILE, type LoadProfile, MARK, MARK_COUNT, type Target, withDisplayName } from './loadgen.js';
import { readRssMiB, type SpawnedGateway } from './proc.js';
import { Counter, Samples, type Summary } from './stats.js';

export interface SoakConfig {
  minutes: number;
  intervalS: number;
  /** Pre-paired device identities connecting and disconnecting. */
  pool: number;
  /** Device connects started per second. */
  connectsPerS: number;
  /** Longest time a pool device keeps its socket before closing it (uniform 0…holdMaxMs). */
  holdMaxMs: number;
  /** New devices approved per minute. */
  approvalsPerMin: number;
  invokesPerS: number;
  /** Most pool connects in flight at once (bounds the load generator when the gateway slows). */
  maxInFlight: number;
}

export interface SoakInterval {
  index: number;
  /** Seconds since the soak started (end of the interval). */
  atS: number;
  rssMiB: number | null;
  fds: number | null;
  connects: number;
  connectP99Ms: number | null;
  approvals: number;
  invokes: number;
  healthzP99Ms: number | null;
  /** Unexpected errors in this interval (by kind in `errorKinds`). */
  errors: number;
  errorKinds: Record<string, number>;
}

export interface SoakVerdict {
  flat: boolean;
  rss: { firstMedianMiB: number | null; lastMedianMiB: number | null; allowedMiB: number | null; flat: boolean };
  fds: { firstMedian: number | null; lastMedian: number | null; allowed: number; flat: boolean };
  rule: string;
  /** Intervals compared (after the warm-up interval). */
  intervalsCompared: number;
}

export interface SoakResult {
  config: SoakConfig;
  gateway: { pid: number; url: string; describe: string };
  pairing: { pool: number; seconds: number; errors: Record<string, number> };
  healthzNote: string;
  intervals: SoakInterval[];
  totals: { connects: number; approvals: number; invokes: number; errors: number; errorKinds: Record<string, number> };
  verdict: SoakVerdict;
}

const HEALTHZ_NOTE =
  'healthz p99: the gateway exports no event-loop delay, so it is measured from outside as the p99 /healthz round trip in the interval (a blocked event loop delays it one for one)';

export const VERDICT_RULE =
  'after the first (warm-up) interval: median RSS of the last third within 10 % + 8 MiB of the first third; median open fds of the last third within ±16 of the first third';

/** Open file descriptors of a process (entries of /proc/<pid>/fd); null where there is no /proc. */
export function countFds(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Flat or not, by VERDICT_RULE. Pure: the intervals in, the verdict out. */
export function soakVerdict(intervals: Pick<SoakInterval, 'rssMiB' | 'fds'>[]): SoakVerdict {
  const rest = intervals.slice(1);
  const third = Math.max(1, Math.ceil(rest.length / 3));
  const first = rest.slice(0, third);
  const last = rest.slice(-third);
  const nums = (xs: Array<number | null>) => xs.filter((x): x is number => typeof x === 'number');
  const r1 = median(nums(first.map((i) => i.rssMiB)));
  const r2 = median(nums(last.map((i) => i.rssMiB)));
  const f1 = median(nums(first.map((i) => i.fds)));
  const f2 = median(nums(last.map((i) => i.fds)));
  const allowedMiB = r1 === null ? null : Math.round((r1 * 0.1 + 8) * 10) / 10;
  const rssFlat = r1 !== null && r2 !== null && allowedMiB !== null && r2 - r1 <= allowedMiB;
  const fdsFlat = f1 !== null && f2 !== null && Math.abs(f2 - f1) <= 16;
  return {
    flat: rest.length > 0 && rssFlat && fdsFlat,
    rss: { firstMedianMiB: r1, lastMedianMiB: r2, allowedMiB, flat: rssFlat },
    fds: { firstMedian: f1, lastMedian: f2, allowed: 16, flat: fdsFlat },
    rule: VERDICT_RULE,
    intervalsCompared: rest.length,
  };
}

function healthz(port: number, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port, path: '/healthz', timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? performance.now() - t0 : `healthz:http:${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve(`healthz:${e.code ?? e.message}`));
    req.end();
  });
}

/**
 * One new device approved by `admin`: it connects with the shared token declaring
 * `device-pairing-wait`, the gateway files a request (`device.pair.waiting`), the admin approves
 * it and the same socket gets hello-ok with the device token. Resolves with the device-token
 * spec of the device, or the error kind.
 */
async function pairOne(target: Target, admin: GatewayConnection, profile: LoadProfile, marks: Float64Array): Promise<ConnectSpec | string> {
  const identity = generateIdentity();
  const client = withDisplayName(profile.deviceClient, identity);
  const spec = new ConnectSpec(target.url, profile, client, { token: target.token }, identity, ['device-pairing-wait']);
  let deviceToken: unknown = null;
  let approveErr: string | null = null;
  let approving: Promise<void> | null = null;
  const outcome = await connectOnce(spec, {
    timeoutMs: profile.timeoutMs,
    marks,
    waitClose: true,
    onPreHelloEvent: (event, payload) => {
      if (event !== 'device.pair.waiting' || typeof payload?.requestId !== 'string' || approving) return;
      approving = admin.request('device.pair.approve', { requestId: payload.requestId }).then(
        () => {},
        (err: Error) => {
          approveErr = `approve:${err.message.slice(0, 60)}`;
        },
      );
    },
    onHello: (p) => {
      deviceToken = (p.auth as { deviceToken?: unknown } | undefined)?.deviceToken;
    },
  });
  if (approving) await approving;
  if (approveErr) return approveErr;
  if (outcome !== null) return outcome;
  if (typeof deviceToken !== 'string') return 'no-device-token';
  return new ConnectSpec(target.url, profile, client, { deviceToken }, identity);
}

/** The echo node on a gateway that pairs nothing silently: refused, approved by the owner, reconnected, surface approved. */
async function startApprovedEchoNode(url: string, token: string, op: GatewayConnection) {
  const identity = generateIdentity();
  const connectNode = () =>
    connectGateway({
      url,
      role: 'node',
      identity,
      auth: { token },
      client: { id: 'node-host', mode: 'node', displayName: 'soak-node' },
      commands: ['bench.echo'],
    });
  let node: GatewayConnection;
  try {
    node = await connectNode();
  } catch {
    const list = await op.request<{ pending: Array<{ requestId: string; role?: string }> }>('device.pair.list', {});
    const req = list.pending.find((p) => p.role === 'node') ?? list.pending[0];
    if (!req) throw new Error('the node was refused but filed no pairing request');
    await op.request('device.pair.approve', { requestId: req.requestId });
    node = await connectNode();
  }
  let answered = 0;
  node.onEvent((event, payload) => {
    if (event !== 'node.invoke.request') return;
    const p = payload as { id: string; nodeId: string; paramsJSON?: string };
    answered++;
    node.request('node.invoke.result', { id: p.id, nodeId: p.nodeId, ok: true, payloadJSON: p.paramsJSON ?? 'null' }).catch(() => {});
  });
  const surfaces = await op.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {});
  const sreq = surfaces.pending[0];
  if (!sreq) throw new Error('the node filed no surface request');
  await op.request('node.pair.approve', { requestId: sreq.requestId });
  return { node, nodeId: sreq.nodeId, answered: () => answered };
}

/** Per-interval counters, swapped out at each sample. */
class Window {
  connects = 0;
  connectMs = new Samples(4096);
  approvals = 0;
  invokes = 0;
  healthzMs = new Samples(256);
  errors = new Counter();
}

/**
 * Run the soak against `gw` (started by the caller, stopped by the caller). Every loop checks
 * the deadline, so it ends by itself at `minutes`, then waits for in-flight work (bounded by the
 * connect timeout) before the last sample.
 */
export async function runSoak(gw: SpawnedGateway, cfg: SoakConfig, log: (m: string) => void): Promise<SoakResult> {
  const profile: LoadProfile = { ...DEFAULT_PROFILE, scopes: ['operator.read'] };
  const target: Target = { label: 'clawgate', url: gw.url, token: gw.token, pid: gw.pid };
  const op = await connectGateway({ url: gw.url, ...ownerCredential(gw.stateDir), client: { id: 'cli', mode: 'cli' } });
  const echo = await startApprovedEchoNode(gw.url, gw.token, op);
  const pool: ConnectSpec[] = [];
  const pairErrors = new Counter();
  const open = new Set<WebSocket>();
  try {
    // The pool, approved in batches of 20 concurrent pairings.
    const tPair = performance.now();
    const BATCH = 20;
    while (pool.length < cfg.pool) {
      const n = Math.min(BATCH, cfg.pool - pool.length);
      const got = await Promise.all(Array.from({ length: n }, () => pairOne(target, op, profile, new Float64Array(MARK_COUNT))));
      for (const g of got) {
        if (typeof g === 'string') pairErrors.add(g);
        else pool.push(g);
      }
      if (pairErrors.total > 10) throw new Error(`pairing the pool failed: ${JSON.stringify(pairErrors.toJSON())}`);
      if (pool.length % 500 < BATCH) log(`soak: ${pool.length}/${cfg.pool} devices paired`);
    }
    const pairingS = Math.round((performance.now() - tPair) / 100) / 10;
    log(`soak: pool of ${pool.length} paired in ${pairingS} s; running ${cfg.minutes} min, a sample every ${cfg.intervalS} s`);

    const t0 = performance.now();
    const deadline = t0 + cfg.minutes * 60_000;
    const running = () => performance.now() < deadline;
    let w = new Window();
    const intervals: SoakInterval[] = [];
    const totals = { connects: 0, approvals: 0, invokes: 0, errors: new Counter() };
    const inflight = new Set<Promise<void>>();
    const track = (p: Promise<void>) => {
      inflight.add(p);
      p.finally(() => inflight.delete(p));
    };
    const err = (kind: string) => {
      w.errors.add(kind);
      totals.errors.add(kind);
    };

    // Pool churn: a steady rate of connects, each holding its socket 0…holdMaxMs.
    let poolConnects = 0;
    const churn = async () => {
      const every = 1000 / cfg.connectsPerS;
      let next = performance.now();
      while (running()) {
        if (poolConnects < cfg.maxInFlight) {
          poolConnects++;
          const spec = pool[Math.floor(Math.random() * pool.length)] as ConnectSpec;
          const marks = new Float64Array(MARK_COUNT);
          track(
            connectOnce(spec, {
              timeoutMs: profile.timeoutMs,
              marks,
              keepOpen: (ws) => {
                open.add(ws);
                setTimeout(() => {
                  ws.close(1000);
                  open.delete(ws);
                }, Math.random() * cfg.holdMaxMs).unref();
              },
            }).then((e) => {
              poolConnects--;
              if (e !== null) return err(`connect:${e}`);
              w.connects++;
              totals.connects++;
              w.connectMs.push((marks[MARK.hello] as number) - (marks[MARK.start] as number));
            }),
          );
        } else err('loadgen:max-in-flight');
        next += every;
        const wait = next - performance.now();
        if (wait > 0) await sleep(Math.min(wait, deadline - performance.now()));
        else if (wait < -1000) next = performance.now(); // fell behind: do not burst to catch up
      }
    };

    const approvals = async () => {
      const every = 60_000 / cfg.approvalsPerMin;
      const marks = new Float64Array(MARK_COUNT);
      while (running()) {
        const t = performance.now();
        const r = await pairOne(target, op, profile, marks);
        if (typeof r === 'string') err(`approval:${r}`);
        else {
          w.approvals++;
          totals.approvals++;
        }
        const rest = every - (performance.now() - t);
        if (rest > 0) await sleep(Math.min(rest, Math.max(0, deadline - performance.now())));
      }
    };

    const invokes = async () => {
      const every = 1000 / cfg.invokesPerS;
      let i = 0;
      while (running()) {
        const t = performance.now();
        try {
          await op.request('node.invoke', { nodeId: echo.nodeId, command: 'bench.echo', params: { i: i++ } });
          w.invokes++;
          totals.invokes++;
        } catch (e) {
          err(`invoke:${String((e as Error).message).slice(0, 60)}`);
        }
        const rest = every - (performance.now() - t);
        if (rest > 0) await sleep(Math.min(rest, Math.max(0, deadline - performance.now())));
      }
    };

    const prober = async () => {
      while (running()) {
        const r = await healthz(gw.port, 5000);
        if (typeof r === 'number') w.healthzMs.push(r);
        else err(r);
        await sleep(Math.min(250, Math.max(0, deadline - performance.now())));
      }
    };

    const sample = () => {
      const done = w;
      w = new Window();
      const row: SoakInterval = {
        index: intervals.length,
        atS: Math.round((performance.now() - t0) / 100) / 10,
        rssMiB: readRssMiB(gw.pid),
        fds: countFds(gw.pid),
        connects: done.connects,
        connectP99Ms: (done.connectMs.summary() as Summary | null)?.p99 ?? null,
        approvals: done.approvals,
        invokes: done.invokes,
        healthzP99Ms: done.healthzMs.summary()?.p99 ?? null,
        errors: done.errors.total,
        errorKinds: done.errors.toJSON(),
      };
      intervals.push(row);
      log(`soak: ${formatRow(row)}`);
    };
    const sampler = async () => {
      let next = t0 + cfg.intervalS * 1000;
      while (next <= deadline + 1) {
        await sleep(Math.max(0, next - performance.now()));
        sample();
        next += cfg.intervalS * 1000;
      }
    };

    await Promise.all([churn(), approvals(), invokes(), prober(), sampler()]);
    await Promise.all([...inflight]);
    for (const ws of open) ws.close(1000);
    const verdict = soakVerdict(intervals);
    return {
      config: cfg,
      gateway: { pid: gw.pid, url: gw.url, describe: 'node bin/clawgate.js gateway run (loopback, fresh state dir, autoApproveLocal: false)' },
      pairing: { pool: pool.length, seconds: pairingS, errors: pairErrors.toJSON() },
      healthzNote: HEALTHZ_NOTE,
      intervals,
      totals: {
        connects: totals.connects,
        approvals: totals.approvals,
        invokes: totals.invokes,
        errors: totals.errors.total,
        errorKinds: totals.errors.toJSON(),
      },
      verdict,
    };
  } finally {
    for (const ws of open) ws.terminate();
    await echo.node.close().catch(() => {});
    await op.close().catch(() => {});
  }
}

const fmt = (x: number | null, d = 1) => (x === null ? '-' : x.toFixed(d));

function formatRow(r: SoakInterval): string {
  return [
    String(r.index).padStart(3),
    fmt(r.atS).padStart(8),
    fmt(r.rssMiB).padStart(8),
    fmt(r.fds, 0).padStart(5),
    String(r.connects).padStart(8),
    fmt(r.connectP99Ms, 2).padStart(10),
    String(r.approvals).padStart(6),
    String(r.invokes).padStart(7),
    fmt(r.healthzP99Ms, 2).padStart(10),
    String(r.errors).padStart(6),
  ].join(' ');
}

export function renderSoak(r: SoakResult): string {
  const head = `  # ${'t (s)'.padStart(8)} ${'RSS MiB'.padStart(8)} ${'fds'.padStart(5)} ${'connects'.padStart(8)} ${'conn p99'.padStart(10)} ${'approv'.padStart(6)} ${'invokes'.padStart(7)} ${'hlthz p99'.padStart(10)} ${'errors'.padStart(6)}`;
  const v = r.verdict;
  const lines = [
    `clawgate soak — ${r.config.minutes} min, pool ${r.pairing.pool} devices (paired in ${r.pairing.seconds} s), ${r.config.connectsPerS} connects/s, ${r.config.approvalsPerMin} approvals/min, ${r.config.invokesPerS} invokes/s, sample every ${r.config.intervalS} s`,
    '',
    head,
    ...r.intervals.map(formatRow),
    '',
    `(${r.healthzNote}; conn p99 = open → hello-ok of pool devices, ms)`,
    `totals: ${r.totals.connects} connects, ${r.totals.approvals} approvals, ${r.totals.invokes} invokes, ${r.totals.errors} unexpected errors${r.totals.errors ? ` ${JSON.stringify(r.totals.errorKinds)}` : ''}`,
    `verdict: ${v.flat ? 'FLAT' : 'NOT FLAT'} — RSS ${fmt(v.rss.firstMedianMiB)} → ${fmt(v.rss.lastMedianMiB)} MiB (allowed +${fmt(v.rss.allowedMiB)}: ${v.rss.flat ? 'ok' : 'grew'}), fds ${fmt(v.fds.firstMedian, 0)} → ${fmt(v.fds.lastMedian, 0)} (±${v.fds.allowed}: ${v.fds.flat ? 'ok' : 'changed'}); rule: ${v.rule}`,
  ];
  return lines.join('\n');
}
