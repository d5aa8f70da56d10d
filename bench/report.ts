/**
 * The printed table: one row per (mode, metric), one column per measured target, and a last
 * column with the recorded reference numbers (clearly marked as not measured in this run).
 */
import { MODE_LABELS, MODES, type Mode } from './loadgen.js';
import type { RecordedReference } from './reference.js';
import type { TargetResult } from './run.js';

type Cell = string;

function ms(x: number | null | undefined): Cell {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function num(x: number | null | undefined, digits = 1): Cell {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return x.toFixed(digits);
}

function errCell(errors: Record<string, number> | undefined): Cell {
  if (!errors) return '—';
  const entries = Object.entries(errors);
  if (entries.length === 0) return '0';
  return entries.map(([k, v]) => `${v} ${k}`).join(', ');
}

interface Row {
  metric: string;
  cells: Cell[];
  ref: Cell;
}

export function renderTable(
  targets: TargetResult[],
  modes: readonly Mode[],
  ref: RecordedReference | null,
  cfg: { concurrency: number; durationS: number; latencyN: number },
): string {
  const rows: Array<Row | string> = [];
  const each = (f: (t: TargetResult) => Cell) => targets.map(f);

  rows.push('gateway process');
  rows.push({
    metric: 'cold start: spawn → /readyz 200 (ms, median)',
    cells: each((t) => (t.coldStart ? `${ms(t.coldStart.medianMs)} (n=${t.coldStart.samplesMs.length})` : '—')),
    ref: '—',
  });
  rows.push({
    metric: 'RSS idle, before load (MiB)',
    cells: each((t) => num(t.rss.idleMiB)),
    ref: ref ? `${num(ref.idleRssMiB.main)} (+${num(ref.idleRssMiB.helperChildren)} helpers)` : '—',
  });
  rows.push({
    metric: 'RSS at end / peak (MiB)',
    cells: each((t) => (t.rss.endMiB === null ? '—' : `${num(t.rss.endMiB)} / ${num(t.rss.peakMiB)}`)),
    ref: '—',
  });

  for (const mode of modes) {
    const r = ref?.modes[mode];
    rows.push(`${mode}: ${MODE_LABELS[mode]}`);
    const m = (t: TargetResult) => t.modes[mode];
    rows.push({ metric: 'first connect, silent pairing (ms, median)', cells: each((t) => ms(m(t)?.pairing?.latencyMs?.median)), ref: '—' });
    rows.push({
      metric: `sequential latency median (ms, n=${cfg.latencyN})`,
      cells: each((t) => ms(m(t)?.latency?.totalMs?.median)),
      ref: ms(r?.latency.median),
    });
    rows.push({ metric: '  p90 (ms)', cells: each((t) => ms(m(t)?.latency?.totalMs?.p90)), ref: ms(r?.latency.p90) });
    rows.push({ metric: '  p99 (ms)', cells: each((t) => ms(m(t)?.latency?.totalMs?.p99)), ref: ms(r?.latency.p99) });
    rows.push({ metric: '  max (ms)', cells: each((t) => ms(m(t)?.latency?.totalMs?.max)), ref: ms(r?.latency.max) });
    rows.push({
      metric: '  challenge → hello-ok median (ms) †',
      cells: each((t) => ms(m(t)?.latency?.challengeToHelloMs?.median)),
      ref: ms(r?.latency.connectToHelloMedian),
    });
    rows.push({
      metric: '  gateway main thread preempted per connect §',
      cells: each((t) => num(m(t)?.latency?.gatewayMainThread?.preemptedPerConnect, 2)),
      ref: '—',
    });
    rows.push({
      metric: `connects/s (${cfg.concurrency} clients, ${cfg.durationS} s)`,
      cells: each((t) => num(m(t)?.throughput?.connectsPerSecond)),
      ref: num(r?.throughput.connectsPerSecond),
    });
    rows.push({
      metric: '  latency under load median / p99 (ms)',
      cells: each((t) => {
        const l = m(t)?.throughput?.latencyMs;
        return l ? `${ms(l.median)} / ${ms(l.p99)}` : '—';
      }),
      ref: r ? `${ms(r.throughput.latencyMedian)} / ${ms(r.throughput.latencyP99)}` : '—',
    });
    rows.push({
      metric: '  gateway CPU (cores)',
      cells: each((t) => num(m(t)?.throughput?.gatewayCpuCoresUsed, 2)),
      ref: num(r?.throughput.gatewayCpuCores, 2),
    });
    rows.push({ metric: '  load generator CPU (cores)', cells: each((t) => num(m(t)?.throughput?.cpu.loadgenCores, 2)), ref: '—' });
    rows.push({ metric: '  other processes CPU (cores) ‡', cells: each((t) => num(m(t)?.throughput?.cpu.otherCores, 2)), ref: '—' });
    rows.push({
      metric: 'errors (latency + throughput)',
      cells: each((t) => {
        const merged: Record<string, number> = {};
        for (const e of [m(t)?.latency?.errors, m(t)?.throughput?.errors]) for (const [k, v] of Object.entries(e ?? {})) merged[k] = (merged[k] ?? 0) + v;
        const mr = m(t);
        if (mr?.error) return `mode failed: ${mr.error.length > 40 ? `${mr.error.slice(0, 40)}…` : mr.error}`;
        return mr ? errCell(merged) : '—';
      }),
      ref: r ? String(r.throughput.errors) : '—',
    });
  }

  const header: Row = { metric: 'metric', cells: targets.map((t) => `${t.label} (this run)`), ref: ref ? `${ref.label} *` : '' };
  const all = [header, ...rows.filter((r): r is Row => typeof r !== 'string')];
  const w0 = Math.max(...all.map((r) => r.metric.length));
  const wc = targets.map((_, i) => Math.max(...all.map((r) => (r.cells[i] ?? '').length)));
  const wr = Math.max(...all.map((r) => r.ref.length));
  const line = (r: Row) => [r.metric.padEnd(w0), ...r.cells.map((c, i) => c.padStart(wc[i] ?? 0)), ...(ref ? [r.ref.padStart(wr)] : [])].join('  ').trimEnd();
  const width = w0 + wc.reduce((a, b) => a + b + 2, 0) + (ref ? wr + 2 : 0);
  const out: string[] = [line(header), '-'.repeat(width)];
  for (const r of rows) out.push(typeof r === 'string' ? `\n[${r}]` : line(r));
  out.push('');
  if (ref) out.push(`* ${ref.label}: ${ref.gateway}, ${ref.recordedAt}; ${ref.note}.`);
  out.push(
    '† this run: challenge received → hello-ok received (includes building and signing the frame); recorded column: connect sent → hello-ok.',
    '‡ machine-wide busy CPU minus gateway and load generator during the throughput window (other sessions on the machine); a full run repeats disturbed measurements (--noise-retries).',
    "§ involuntary context switches of the gateway's event-loop thread per recorded connect: the kernel gave its core to another task, which neighbours outside this machine's view (other VMs) cause too; latency tails of two columns compare fairly only when these are alike.",
  );
  return out.join('\n');
}

// ------------------------------------------------------------------------------------------
// Headline: one row per metric, clawgate | peer | ratio | floor | ratio, and the issue's goals
// ------------------------------------------------------------------------------------------

export interface GoalCheck {
  goal: string;
  value: number | null;
  limit: number | null;
  unit: string;
  /** null when not measurable in this run (no peer, no floor, scenario failed). */
  met: boolean | null;
  /** How far off (value ÷ limit for "≤" goals, limit ÷ value for "≥" goals), when missed. */
  missedByFactor: number | null;
}

type Pick = (t: TargetResult) => number | null | undefined;

const byGateway = (targets: TargetResult[], kind: string) => targets.find((t) => t.gateway === kind) ?? null;

function idleStep(t: TargetResult | null, count: number) {
  if (!t?.idle || 'error' in t.idle) return null;
  return t.idle.steps.find((s) => s.target === count) ?? null;
}

function summaryOf(x: { latencyMs: { p99: number; median: number } | null } | { error: string } | null | undefined) {
  return x && !('error' in x) ? x.latencyMs : null;
}

export function evaluateTargets(targets: TargetResult[]): GoalCheck[] {
  const c = byGateway(targets, 'clawgate') ?? targets[0] ?? null;
  const o = byGateway(targets, 'openclaw');
  const f = byGateway(targets, 'floor');
  const dtMedian: Pick = (t) => t.modes['device-token']?.latency?.totalMs?.median;
  const check = (goal: string, value: number | null | undefined, limit: number | null | undefined, unit: string, dir: 'le' | 'ge'): GoalCheck => {
    const v = value ?? null;
    const l = limit ?? null;
    if (v === null || l === null || Number.isNaN(v) || Number.isNaN(l)) return { goal, value: v, limit: l, unit, met: null, missedByFactor: null };
    const met = dir === 'le' ? v <= l : v >= l;
    const r = (x: number) => Math.round(x * 100) / 100;
    return { goal, value: r(v), limit: r(l), unit, met, missedByFactor: met ? null : r(dir === 'le' ? v / l : l / v) };
  };
  const oMedian = o ? dtMedian(o) : null;
  const fMedian = f ? dtMedian(f) : null;
  const oTput = o?.modes['device-token']?.throughput?.connectsPerSecond;
  const step10k = idleStep(c, 10_000);
  return [
    check('device-token connect median ≤ 1/10 of OpenClaw’s', c ? dtMedian(c) : null, oMedian != null ? oMedian / 10 : null, 'ms', 'le'),
    check('device-token connect median ≤ 1.5 × floor', c ? dtMedian(c) : null, fMedian != null ? fMedian * 1.5 : null, 'ms', 'le'),
    check('device-token connect p99 ≤ 5 ms', c?.modes['device-token']?.latency?.totalMs?.p99, 5, 'ms', 'le'),
    check(
      'connects/s with 20 clients ≥ 20 × OpenClaw’s (device token)',
      c?.modes['device-token']?.throughput?.connectsPerSecond,
      oTput != null ? oTput * 20 : null,
      '/s',
      'ge',
    ),
    check('RSS idle ≤ 80 MiB', c?.rss.idleMiB, 80, 'MiB', 'le'),
    check('≤ 20 KiB per idle authenticated connection at 10,000', step10k && step10k.open >= 10_000 ? step10k.perConnectionKiB : null, 20, 'KiB', 'le'),
    check('cold start to ready ≤ 300 ms', c?.coldStart?.medianMs, 300, 'ms', 'le'),
    check('approval → admitted p99 ≤ 20 ms', summaryOf(c?.approval)?.p99, 20, 'ms', 'le'),
    check('revocation → closed p99 ≤ 50 ms', summaryOf(c?.revocation)?.p99, 50, 'ms', 'le'),
  ];
}

function ratio(a: number | null | undefined, b: number | null | undefined): Cell {
  if (a == null || b == null || Number.isNaN(a) || Number.isNaN(b) || b === 0) return '—';
  const r = a / b;
  return `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(3)}×`;
}

export function renderHeadline(targets: TargetResult[], goals: GoalCheck[], cfg: { concurrency: number; durationS: number; latencyN: number }): string {
  const c = byGateway(targets, 'clawgate') ?? targets[0] ?? null;
  const o = byGateway(targets, 'openclaw');
  const f = byGateway(targets, 'floor');
  const rows: Array<{ metric: string; pick: Pick; fmt: (x: number | null | undefined) => Cell; extra?: (t: TargetResult) => string }> = [];
  rows.push({ metric: 'cold start: spawn → /readyz 200 (ms, median)', pick: (t) => t.coldStart?.medianMs, fmt: ms });
  rows.push({
    metric: 'RSS idle (MiB; helper processes in brackets)',
    pick: (t) => t.rss.idleMiB,
    fmt: (x) => num(x),
    extra: (t) =>
      t.rss.idleTreeMiB != null && t.rss.idleMiB != null && t.rss.idleTreeMiB - t.rss.idleMiB > 1 ? ` [+${num(t.rss.idleTreeMiB - t.rss.idleMiB)}]` : '',
  });
  for (const mode of MODES) {
    if (!targets.some((t) => t.modes[mode])) continue;
    rows.push({ metric: `${mode}: connect median (ms, n=${cfg.latencyN})`, pick: (t) => t.modes[mode]?.latency?.totalMs?.median, fmt: ms });
    rows.push({ metric: `${mode}: connect p99 (ms)`, pick: (t) => t.modes[mode]?.latency?.totalMs?.p99, fmt: ms });
    rows.push({
      metric: `${mode}: connects/s (${cfg.concurrency} clients, ${cfg.durationS} s)`,
      pick: (t) => t.modes[mode]?.throughput?.connectsPerSecond,
      fmt: (x) => num(x),
    });
  }
  const counts = [...new Set(targets.flatMap((t) => (t.idle && !('error' in t.idle) ? t.idle.steps.map((s) => s.target) : [])))].sort((a, b) => a - b);
  for (const n of counts) {
    rows.push({
      metric: `RSS with ${n.toLocaleString('en')} idle device-token connections (MiB)`,
      pick: (t) => idleStep(t, n)?.rssMiB,
      fmt: (x) => num(x),
      extra: (t) => {
        const s = idleStep(t, n);
        return s && s.open < n ? ` (only ${s.open} open)` : '';
      },
    });
    rows.push({ metric: `  per connection at ${n.toLocaleString('en')} (KiB)`, pick: (t) => idleStep(t, n)?.perConnectionKiB, fmt: (x) => num(x) });
  }
  rows.push({ metric: 'approval → waiting client admitted p99 (ms)', pick: (t) => summaryOf(t.approval)?.p99, fmt: ms });
  rows.push({ metric: '  median (ms)', pick: (t) => summaryOf(t.approval)?.median, fmt: ms });
  rows.push({ metric: 'revocation → socket closed p99 (ms)', pick: (t) => summaryOf(t.revocation)?.p99, fmt: ms });
  rows.push({ metric: '  median (ms)', pick: (t) => summaryOf(t.revocation)?.median, fmt: ms });
  const invoke = (t: TargetResult) => (t.nodeInvoke && 'latencyMs' in t.nodeInvoke ? t.nodeInvoke.latencyMs : null);
  rows.push({ metric: 'node.invoke round trip median (ms)', pick: (t) => invoke(t)?.median, fmt: (x) => (x == null ? 'n/a ¶' : ms(x)) });
  rows.push({ metric: '  p99 (ms)', pick: (t) => invoke(t)?.p99, fmt: (x) => (x == null ? 'n/a ¶' : ms(x)) });

  const cols: Array<{ head: string; cell: (r: (typeof rows)[number]) => Cell }> = [{ head: 'metric', cell: (r) => r.metric }];
  const val = (t: TargetResult | null, r: (typeof rows)[number]) => (t ? `${r.fmt(r.pick(t))}${r.extra ? r.extra(t) : ''}` : '—');
  const raw = (t: TargetResult | null, r: (typeof rows)[number]) => (t ? r.pick(t) : null);
  cols.push({ head: c?.label ?? 'clawgate', cell: (r) => val(c, r) });
  if (o) {
    cols.push({ head: o.label, cell: (r) => val(o, r) });
    cols.push({ head: `${c?.label ?? 'clawgate'}/${o.label}`, cell: (r) => ratio(raw(c, r), raw(o, r)) });
  }
  if (f) {
    cols.push({ head: 'floor', cell: (r) => val(f, r) });
    cols.push({ head: `${c?.label ?? 'clawgate'}/floor`, cell: (r) => ratio(raw(c, r), raw(f, r)) });
  }
  const grid = [cols.map((k) => k.head), ...rows.map((r) => cols.map((k) => k.cell(r)))];
  const widths = cols.map((_, i) => Math.max(...grid.map((g) => (g[i] ?? '').length)));
  const line = (g: string[]) => g.map((x, i) => (i === 0 ? x.padEnd(widths[i] ?? 0) : x.padStart(widths[i] ?? 0))).join('  ');
  const out = [line(grid[0] as string[]), '-'.repeat(widths.reduce((a, b) => a + b + 2, -2)), ...grid.slice(1).map(line)];
  out.push('', '¶ not measured: the node.invoke scenario speaks clawgate’s node protocol only (see bench/README.md).', '', 'goals:');
  for (const g of goals) {
    const state = g.met === null ? 'not measured' : g.met ? 'MET' : `MISSED by ${g.missedByFactor}×`;
    out.push(`  ${state.padEnd(16)} ${g.goal}: ${g.value ?? '—'} ${g.unit} (limit ${g.limit ?? '—'} ${g.unit})`);
  }
  return out.join('\n');
}
