/**
 * Why a slow connect is slow: sequential device-token connects (the latency row's loop) against
 * one gateway started with bench/probe-preload.ts, each connect set against what the gateway did
 * meanwhile. Numbers a noisy machine cannot fake, next to the latencies it can:
 *
 * - garbage collection pauses: how many, how long, how many connects one fell inside, and the p99
 *   of the connects no pause touched;
 * - the gateway's main thread: how often per connect it blocked (voluntary context switches)
 *   and how often the kernel took the CPU from it (involuntary ones: neighbours on the cores);
 * - the gateway's CPU time per connect (all threads, from /proc);
 * - with --heap, the bytes the gateway allocates per connect and where (sampling heap profiler).
 *
 *   node dist/bench/connect-probe.js [--n 1500] [--warmup 30] [--load-s 0] [--floor | --paired] [--heap] [--top 20] [--json]
 *
 * --floor probes the floor (bench/floor.ts) instead of clawgate, for the same figures side by side.
 * --paired probes both at once, one connect to each in turn: the two latency distributions then
 * meet the same neighbours, and their ratio is far steadier than two runs' one after the other.
 * --load-s first runs 20 concurrent clients for that long, as a full bench run does before its
 * device-token latency row (the heap the sequential connects then meet is the one load left).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type ConnectSpec, connectOnce, DEFAULT_PROFILE, MARK, MARK_COUNT, prepareMode, throughput } from './loadgen.js';
import { pickFreePort, readCpuSeconds, type SpawnedGateway, spawnGateway, spawnReady } from './proc.js';
import { r2, summarize } from './stats.js';

interface Pause {
  atMs: number;
  ms: number;
  kind: number;
}

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/** Context switches of the main thread and of all other threads of `pid` so far. */
function switches(pid: number): { main: [number, number]; others: [number, number] } {
  const out = { main: [0, 0] as [number, number], others: [0, 0] as [number, number] };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    const voluntary = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(text)?.[1] ?? 0);
    const involuntary = Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(text)?.[1] ?? 0);
    const slot = tid === String(pid) ? out.main : out.others;
    slot[0] += voluntary;
    slot[1] += involuntary;
  }
  return out;
}

/** Bytes allocated per connect, in all and by allocating function (top `top`). */
function heapSummary(profile: { head: HeapNode }, connects: number, top: number): { bytesPerConnect: number; sites: Array<{ site: string; bytes: number }> } {
  const bySite = new Map<string, number>();
  let total = 0;
  const walk = (node: HeapNode) => {
    if (node.selfSize > 0) {
      const cf = node.callFrame;
      const site = `${cf.functionName || '(anonymous)'} ${cf.url.split('/').at(-1) ?? ''}:${cf.lineNumber + 1}`;
      bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
      total += node.selfSize;
    }
    for (const c of node.children) walk(c);
  };
  walk(profile.head);
  const sites = [...bySite.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([site, bytes]) => ({ site, bytes: Math.round(bytes / connects) }));
  return { bytesPerConnect: Math.round(total / connects), sites };
}

async function startFloor(root: string, nodeArgs: string[]): Promise<SpawnedGateway> {
  const port = await pickFreePort();
  const token = randomBytes(24).toString('hex');
  return spawnReady({
    kind: 'floor',
    command: process.execPath,
    args: [...nodeArgs, join(root, 'dist', 'bench', 'floor.js'), '--port', String(port), '--token', token],
    env: { ...process.env },
    cwd: root,
    port,
    stateDir: mkdtempSync(join(tmpdir(), 'floor-probe-')),
    readyPath: '/readyz',
    token: () => token,
  });
}

/** One gateway under probe: its process, client slot, probe file and the marks of its connects. */
interface Probed {
  gw: SpawnedGateway;
  spec: ConnectSpec;
  outFile: string;
  starts: Float64Array;
  ends: Float64Array;
  before: ReturnType<typeof switches>;
  after: ReturnType<typeof switches>;
  /** CPU seconds of the gateway process when the recorded connects began and ended. */
  cpuBefore: number | null;
  cpuAfter: number | null;
}

async function startProbed(which: 'clawgate' | 'floor', root: string, preload: string, n: number, loadS: number): Promise<Probed> {
  const outFile = join(tmpdir(), `clawgate-probe-${process.pid}-${which}.json`);
  // Read by the preload in the child: each gateway gets its own file.
  process.env.BENCH_PROBE_OUT = outFile;
  const nodeArgs = ['--import', preload];
  const gw = which === 'floor' ? await startFloor(root, nodeArgs) : await spawnGateway({ root, nodeArgs });
  try {
    const target = { label: gw.kind, url: gw.url, token: gw.token, pid: gw.pid };
    const spec = (await prepareMode(target, 'device-token', 1, DEFAULT_PROFILE)).specs[0];
    if (!spec) throw new Error('no client slot prepared');
    if (loadS > 0) await throughput(target, await prepareMode(target, 'device-token', 20, DEFAULT_PROFILE), 20, loadS, DEFAULT_PROFILE);
    const zero = switches(gw.pid);
    return { gw, spec, outFile, starts: new Float64Array(n), ends: new Float64Array(n), before: zero, after: zero, cpuBefore: null, cpuAfter: null };
  } catch (err) {
    await gw.stop();
    throw err;
  }
}

/** What one probed gateway did over its recorded connects. */
async function reportOf(p: Probed, n: number, heapWanted: boolean, top: number) {
  process.kill(p.gw.pid, 'SIGUSR2');
  const deadline = Date.now() + 10_000;
  while (!existsSync(p.outFile) && Date.now() < deadline) await sleep(20);
  await sleep(50);
  const { starts, ends } = p;
  const pauses = (JSON.parse(readFileSync(p.outFile, 'utf8')) as Pause[]).filter(
    (x) => x.atMs + x.ms >= (starts[0] as number) && x.atMs <= (ends[n - 1] as number),
  );
  const latency = new Float64Array(n);
  const untouched: number[] = [];
  let touched = 0;
  for (let i = 0; i < n; i++) {
    const s = starts[i] as number;
    const e = ends[i] as number;
    latency[i] = e - s;
    if (pauses.some((x) => x.atMs + x.ms >= s && x.atMs <= e)) touched++;
    else untouched.push(e - s);
  }
  const heapFile = `${p.outFile}.heap`;
  const heap = heapWanted && existsSync(heapFile) ? heapSummary(JSON.parse(readFileSync(heapFile, 'utf8')) as { head: HeapNode }, n, top) : null;
  const { before, after } = p;
  return {
    gateway: p.gw.kind,
    connects: n,
    latencyMs: summarize(latency),
    p99WithoutGcMs: summarize(Float64Array.from(untouched))?.p99 ?? null,
    gc: {
      pauses: pauses.length,
      perThousandConnects: r2((pauses.length * 1000) / n),
      medianPauseMs: summarize(Float64Array.from(pauses.map((x) => x.ms)))?.median ?? null,
      totalPauseMs: r2(pauses.reduce((a, x) => a + x.ms, 0)),
      connectsWithAPause: touched,
      /** V8's kinds: 1 scavenge, 2 mark-compact, 4 incremental marking step, 8 weak callbacks. */
      byKind: Object.fromEntries(
        [...new Set(pauses.map((x) => x.kind))]
          .sort()
          .map((k) => [k, { pauses: pauses.filter((x) => x.kind === k).length, ms: r2(pauses.filter((x) => x.kind === k).reduce((a, x) => a + x.ms, 0)) }]),
      ),
    },
    /** Gateway CPU time (all threads, user + system) per recorded connect, from /proc (clock-tick resolution). */
    cpuMicrosPerConnect: p.cpuBefore !== null && p.cpuAfter !== null ? Math.round(((p.cpuAfter - p.cpuBefore) * 1e6) / n) : null,
    mainThreadPerConnect: { blocked: r2((after.main[0] - before.main[0]) / n), preempted: r2((after.main[1] - before.main[1]) / n) },
    otherThreadsPerConnect: { blocked: r2((after.others[0] - before.others[0]) / n), preempted: r2((after.others[1] - before.others[1]) / n) },
    ...(heap ? { heap } : {}),
  };
}

type Report = Awaited<ReturnType<typeof reportOf>>;

function print(r: Report): void {
  const l = r.latencyMs;
  console.log(`${r.gateway}: ${r.connects} sequential device-token connects`);
  console.log(
    `  latency median ${l?.median} / p90 ${l?.p90} / p99 ${l?.p99} / max ${l?.max} ms; p99 of the connects no GC pause touched ${r.p99WithoutGcMs} ms`,
  );
  console.log(
    `  GC: ${r.gc.pauses} pauses (${r.gc.perThousandConnects} per 1000 connects), median ${r.gc.medianPauseMs} ms, ${r.gc.totalPauseMs} ms in all; inside ${r.gc.connectsWithAPause} connects`,
  );
  console.log(`  GC by kind (1 scavenge, 2 mark-compact, 4 incremental marking, 8 weak callbacks): ${JSON.stringify(r.gc.byKind)}`);
  console.log(`  gateway CPU per connect: ${r.cpuMicrosPerConnect} µs`);
  console.log(
    `  main thread per connect: blocked ${r.mainThreadPerConnect.blocked}, preempted ${r.mainThreadPerConnect.preempted} (other threads: ${r.otherThreadsPerConnect.blocked} / ${r.otherThreadsPerConnect.preempted})`,
  );
  if (r.heap) {
    console.log(`  allocated per connect: ${(r.heap.bytesPerConnect / 1024).toFixed(1)} KiB; by function:`);
    for (const x of r.heap.sites) console.log(`    ${String(x.bytes).padStart(6)} B  ${x.site}`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '1500' },
      warmup: { type: 'string', default: '30' },
      floor: { type: 'boolean', default: false },
      paired: { type: 'boolean', default: false },
      heap: { type: 'boolean', default: false },
      top: { type: 'string', default: '20' },
      json: { type: 'boolean', default: false },
      'load-s': { type: 'string', default: '0' },
    },
  });
  const n = Number(values.n);
  const warmup = Number(values.warmup);
  const top = Number(values.top);
  const loadS = Number(values['load-s']);
  if (!(n > 0 && warmup >= 0 && top >= 0 && loadS >= 0)) throw new Error('--n, --warmup, --top and --load-s take numbers');
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const preload = fileURLToPath(new URL('./probe-preload.js', import.meta.url));
  const which: Array<'clawgate' | 'floor'> = values.paired ? ['clawgate', 'floor'] : [values.floor ? 'floor' : 'clawgate'];
  const probed: Probed[] = [];
  try {
    for (const w of which) probed.push(await startProbed(w, root, preload, n, loadS));
    const marks = new Float64Array(MARK_COUNT);
    const origin = performance.timeOrigin;
    for (let i = 0; i < warmup + n; i++) {
      if (i === warmup) {
        for (const p of probed) if (values.heap) process.kill(p.gw.pid, 'SIGHUP');
        if (values.heap) await sleep(200);
        for (const p of probed) {
          p.before = switches(p.gw.pid);
          p.cpuBefore = readCpuSeconds(p.gw.pid);
        }
      }
      // Paired: one connect to each, the order swapped every round, so both meet the same
      // neighbours at the same moments and neither always follows the other.
      for (let k = 0; k < probed.length; k++) {
        const p = probed[(i + k) % probed.length] as Probed;
        const err = await connectOnce(p.spec, { timeoutMs: DEFAULT_PROFILE.timeoutMs, marks, waitClose: true });
        if (err !== null) throw new Error(`${p.gw.kind}: connect ${i + 1} failed: ${err}`);
        if (i < warmup) continue;
        p.starts[i - warmup] = origin + (marks[MARK.start] as number);
        p.ends[i - warmup] = origin + (marks[MARK.hello] as number);
      }
    }
    for (const p of probed) {
      p.after = switches(p.gw.pid);
      p.cpuAfter = readCpuSeconds(p.gw.pid);
    }
    const reports: Report[] = [];
    for (const p of probed) reports.push(await reportOf(p, n, values.heap === true, top));
    const [a, b] = reports;
    const ratio = (f: (r: Report) => number | null | undefined) => {
      const x = a ? f(a) : null;
      const y = b ? f(b) : null;
      return x && y ? r2(x / y) : null;
    };
    const paired = b
      ? {
          medianRatio: ratio((r) => r.latencyMs?.median),
          p90Ratio: ratio((r) => r.latencyMs?.p90),
          p99Ratio: ratio((r) => r.latencyMs?.p99),
          cpuRatio: ratio((r) => r.cpuMicrosPerConnect),
        }
      : null;
    if (values.json) {
      console.log(JSON.stringify(paired ? { paired, reports } : a, null, 2));
      return;
    }
    for (const r of reports) print(r);
    if (paired) {
      console.log(
        `clawgate / floor, connects interleaved: median ${paired.medianRatio}×, p90 ${paired.p90Ratio}×, p99 ${paired.p99Ratio}×, CPU per connect ${paired.cpuRatio}×`,
      );
    }
  } finally {
    for (const p of probed) {
      rmSync(p.outFile, { force: true });
      rmSync(`${p.outFile}.heap`, { force: true });
      await p.gw.stop();
    }
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
