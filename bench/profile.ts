/**
 * Summarise a V8 `.cpuprofile` (from `node --cpu-prof`): where the gateway's time goes, by
 * function (self and inclusive) and by area (clawgate file, npm package, node internals, GC).
 * Used by `npm run bench -- --cpu-prof`; also runnable on its own:
 *   node dist/bench/profile.js <file.cpuprofile> [--top 25]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileRow {
  name: string;
  ms: number;
  pct: number;
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  /** Non-idle time (everything but `(idle)`); the rows below leave `(idle)` out. */
  busyMs: number;
  byArea: ProfileRow[];
  selfByFunction: ProfileRow[];
  /** Inclusive time of clawgate's own functions (dist/src), recursion counted once. */
  inclusiveClawgate: ProfileRow[];
}

function shortUrl(url: string): string {
  const i = url.lastIndexOf('/dist/');
  if (i >= 0) return url.slice(i + 6);
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + 14);
  return url.replace(/^file:\/\//, '');
}

function areaOf(cf: CallFrame): string {
  const { url, functionName } = cf;
  if (!url) {
    if (functionName === '(idle)' || functionName === '(program)' || functionName === '(garbage collector)') return functionName;
    return '(native / V8 builtins)';
  }
  if (url.startsWith('node:')) return 'node internals';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/');
    return `npm ${rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const d = url.lastIndexOf('/dist/');
  if (d >= 0) return `clawgate ${url.slice(d + 6)}`;
  return url;
}

function keyOf(cf: CallFrame): string {
  return `${cf.functionName || '(anonymous)'} ${cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : ''}`.trim();
}

function rows(map: Map<string, number>, totalUs: number, top: number): ProfileRow[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, pct: Math.round((us / totalUs) * 1000) / 10 }));
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    // timeDeltas[i + 1] is the time until the next sample: the time spent in sample i.
    const dt = p.timeDeltas[i + 1] ?? 0;
    const id = p.samples[i] as number;
    self.set(id, (self.get(id) ?? 0) + dt);
  }
  let totalUs = 0;
  let idleUs = 0;
  const byArea = new Map<string, number>();
  const byFn = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    if (node.callFrame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const area = areaOf(node.callFrame);
    byArea.set(area, (byArea.get(area) ?? 0) + us);
    const k = keyOf(node.callFrame);
    byFn.set(k, (byFn.get(k) ?? 0) + us);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)?.callFrame;
      // clawgate's own code: the tsc modules, or the single-file build (scripts/bundle.mjs).
      if (!cf?.url.includes('/dist/src/') && !cf?.url.endsWith('/dist/clawgate.cjs')) continue;
      const ck = keyOf(cf);
      if (seen.has(ck)) continue;
      seen.add(ck);
      inclusive.set(ck, (inclusive.get(ck) ?? 0) + us);
    }
  }
  const busyUs = totalUs - idleUs || 1;
  return {
    file,
    totalMs: Math.round(totalUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    byArea: rows(byArea, busyUs, top),
    selfByFunction: rows(byFn, busyUs, top),
    inclusiveClawgate: rows(inclusive, busyUs, top),
  };
}

export function formatProfile(s: ProfileSummary): string {
  const section = (title: string, list: ProfileRow[]) =>
    [`  ${title}`, ...list.map((r) => `    ${r.pct.toFixed(1).padStart(5)}%  ${r.ms.toFixed(0).padStart(7)} ms  ${r.name}`)].join('\n');
  return [
    `CPU profile ${s.file}: ${s.totalMs} ms sampled, ${s.busyMs} ms busy (percentages are of busy time)`,
    section('by area (self time)', s.byArea),
    section('by function (self time)', s.selfByFunction),
    section('clawgate functions (inclusive time)', s.inclusiveClawgate),
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, flag, n] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: node dist/bench/profile.js <file.cpuprofile> [--top N]\n');
    process.exit(2);
  }
  process.stdout.write(`${formatProfile(summarizeProfile(file, flag === '--top' && n ? Number(n) : 25))}\n`);
}
