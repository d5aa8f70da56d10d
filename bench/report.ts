/**
 * The printed table: one row per (mode, metric), one column per measured target, and a last
 * column with the recorded reference numbers (clearly marked as not measured in this run).
 */
import { MODE_LABELS, type Mode } from './loadgen.js';
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
  );
  return out.join('\n');
}
