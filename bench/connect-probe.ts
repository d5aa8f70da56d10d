/**
 * Why a slow connect is slow: sequential device-token connects (the latency row's loop) against
 * one gateway started with bench/probe-preload.ts, each connect set against what the gateway did
 * meanwhile. Numbers a noisy machine cannot fake, next to the latencies it can:
 *
 * - garbage collection pauses: how many, how long, how many connects one fell inside, and the p99
 *   of the connects no pause touched;
 * - the gateway's main thread: how often per connect it blocked (voluntary context switches)
 *   and how often the kernel took the CPU from it (involuntary ones: neighbours on the cores);
 * - with --heap, the bytes the gateway allocates per connect and where (sampling heap profiler).
 *
 *   node dist/bench/connect-probe.js [--n 1500] [--warmup 30] [--load-s 0] [--floor] [--heap] [--top 20] [--json]
 *
 * --floor probes the floor (bench/floor.ts) instead of clawgate, for the same figures side by side.
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
import { connectOnce, DEFAULT_PROFILE, MARK, MARK_COUNT, prepareMode, throughput } from './loadgen.js';
import { pickFreePort, type SpawnedGateway, spawnGateway, spawnReady } from './proc.js';
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

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '1500' },
      warmup: { type: 'string', default: '30' },
      floor: { type: 'boolean', default: false },
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
  const outFile = join(tmpdir(), `clawgate-probe-${process.pid}.json`);
  process.env.BENCH_PROBE_OUT = outFile;
  const nodeArgs = ['--import', preload];
  const gw = values.floor ? await startFloor(root, nodeArgs) : await spawnGateway({ root, nodeArgs });
  try {
    const target = { label: gw.kind, url: gw.url, token: gw.token, pid: gw.pid };
    const spec = (await prepareMode(target, 'device-token', 1, DEFAULT_PROFILE)).specs[0];
    if (!spec) throw new Error('no client slot prepared');
    if (loadS > 0) await throughput(target, await prepareMode(target, 'device-token', 20, DEFAULT_PROFILE), 20, loadS, DEFAULT_PROFILE);
    const marks = new Float64Array(MARK_COUNT);
    const origin = performance.timeOrigin;
    const starts = new Float64Array(n);
    const ends = new Float64Array(n);
    let before = switches(gw.pid);
    for (let i = 0; i < warmup + n; i++) {
      if (i === warmup) {
        if (values.heap) {
          process.kill(gw.pid, 'SIGHUP');
          await sleep(200);
        }
        before = switches(gw.pid);
      }
      const err = await connectOnce(spec, { timeoutMs: DEFAULT_PROFILE.timeoutMs, marks, waitClose: true });
      if (err !== null) throw new Error(`connect ${i + 1} failed: ${err}`);
      if (i < warmup) continue;
      starts[i - warmup] = origin + (marks[MARK.start] as number);
      ends[i - warmup] = origin + (marks[MARK.hello] as number);
    }
    const after = switches(gw.pid);
    process.kill(gw.pid, 'SIGUSR2');
    const deadline = Date.now() + 10_000;
    while (!existsSync(outFile) && Date.now() < deadline) await sleep(20);
    await sleep(50);
    const pauses = (JSON.parse(readFileSync(outFile, 'utf8')) as Pause[]).filter(
      (p) => p.atMs + p.ms >= (starts[0] as number) && p.atMs <= (ends[n - 1] as number),
    );
    const latency = new Float64Array(n);
    const untouched: number[] = [];
    let touched = 0;
    for (let i = 0; i < n; i++) {
      const s = starts[i] as number;
      const e = ends[i] as number;
      latency[i] = e - s;
      if (pauses.some((p) => p.atMs + p.ms >= s && p.atMs <= e)) touched++;
      else untouched.push(e - s);
    }
    const heapFile = `${outFile}.heap`;
    const heap = values.heap && existsSync(heapFile) ? heapSummary(JSON.parse(readFileSync(heapFile, 'utf8')) as { head: HeapNode }, n, top) : null;
    const report = {
      gateway: gw.kind,
      connects: n,
      latencyMs: summarize(latency),
      p99WithoutGcMs: summarize(Float64Array.from(untouched))?.p99 ?? null,
      gc: {
        pauses: pauses.length,
        perThousandConnects: r2((pauses.length * 1000) / n),
        medianPauseMs: summarize(Float64Array.from(pauses.map((p) => p.ms)))?.median ?? null,
        totalPauseMs: r2(pauses.reduce((a, p) => a + p.ms, 0)),
        connectsWithAPause: touched,
        /** V8's kinds: 1 scavenge, 2 mark-compact, 4 incremental marking step, 8 weak callbacks. */
        byKind: Object.fromEntries(
          [...new Set(pauses.map((p) => p.kind))]
            .sort()
            .map((k) => [k, { pauses: pauses.filter((p) => p.kind === k).length, ms: r2(pauses.filter((p) => p.kind === k).reduce((a, p) => a + p.ms, 0)) }]),
        ),
      },
      mainThreadPerConnect: { blocked: r2((after.main[0] - before.main[0]) / n), preempted: r2((after.main[1] - before.main[1]) / n) },
      otherThreadsPerConnect: { blocked: r2((after.others[0] - before.others[0]) / n), preempted: r2((after.others[1] - before.others[1]) / n) },
      ...(heap ? { heap } : {}),
    };
    if (values.json) {
      console.log(JSON.stringify(report, null, 2));
      return;
    }
    const l = report.latencyMs;
    console.log(`${report.gateway}: ${n} sequential device-token connects`);
    console.log(
      `  latency median ${l?.median} / p90 ${l?.p90} / p99 ${l?.p99} / max ${l?.max} ms; p99 of the connects no GC pause touched ${report.p99WithoutGcMs} ms`,
    );
    console.log(
      `  GC: ${report.gc.pauses} pauses (${report.gc.perThousandConnects} per 1000 connects), median ${report.gc.medianPauseMs} ms, ${report.gc.totalPauseMs} ms in all; inside ${touched} connects`,
    );
    console.log(`  GC by kind (1 scavenge, 2 mark-compact, 4 incremental marking, 8 weak callbacks): ${JSON.stringify(report.gc.byKind)}`);
    console.log(
      `  main thread per connect: blocked ${report.mainThreadPerConnect.blocked}, preempted ${report.mainThreadPerConnect.preempted} (other threads: ${report.otherThreadsPerConnect.blocked} / ${report.otherThreadsPerConnect.preempted})`,
    );
    if (heap) {
      console.log(`  allocated per connect: ${(heap.bytesPerConnect / 1024).toFixed(1)} KiB; by function:`);
      for (const s of heap.sites) console.log(`    ${String(s.bytes).padStart(6)} B  ${s.site}`);
    }
  } finally {
    rmSync(outFile, { force: true });
    rmSync(`${outFile}.heap`, { force: true });
    await gw.stop();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
