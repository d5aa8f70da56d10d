/**
 * The performance targets (ratios to the floor, scale rows) and their verdicts: every target is
 * computed from this run's JSON only; a target whose inputs were not measured says so.
 */

import { CLUSTER_ROWS } from './cluster.js';
import type { GoalCheck } from './report.js';
import type { TargetResult } from './run.js';
import type { ScaleResult, StoreRun } from './scale.js';

const r2 = (x: number) => Math.round(x * 100) / 100;

function check(goal: string, value: number | null | undefined, limit: number | null | undefined, unit: string, dir: 'le' | 'ge'): GoalCheck {
  const v = value ?? null;
  const l = limit ?? null;
  if (v === null || l === null || Number.isNaN(v) || Number.isNaN(l))
    return { goal, value: v === null ? null : r2(v), limit: l, unit, met: null, missedByFactor: null };
  const met = dir === 'le' ? v <= l : v >= l;
  return { goal, value: r2(v), limit: r2(l), unit, met, missedByFactor: met ? null : r2(dir === 'le' ? v / l : l / v) };
}

/** A reported figure with no limit (always "reported" when measured). */
function reported(goal: string, value: number | null | undefined, unit: string): GoalCheck {
  return { goal, value: value == null ? null : r2(value), limit: null, unit, met: value == null ? null : true, missedByFactor: null };
}

const byGateway = (targets: TargetResult[], kind: string) => targets.find((t) => t.gateway === kind) ?? null;

/** Gateway CPU milliseconds per connect in the throughput window. */
function cpuPerConnectMs(t: TargetResult | null): number | null {
  const tp = t?.modes['device-token']?.throughput;
  if (!tp || tp.gatewayCpuCoresUsed == null || tp.connectsPerSecond <= 0) return null;
  return (tp.gatewayCpuCoresUsed / tp.connectsPerSecond) * 1000;
}

function idleStep(t: TargetResult | null, count: number) {
  if (!t?.idle || 'error' in t.idle) return null;
  return t.idle.steps.find((s) => s.target === count) ?? null;
}

const ratio = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null || b === 0 ? null : a / b);

function okRun(x: StoreRun | undefined) {
  return x && !('error' in x.connect) ? x : null;
}

function latencyOf(x: { latencyMs: { median: number } | null } | { error: string } | undefined): number | null {
  return x && !('error' in x) ? (x.latencyMs?.median ?? null) : null;
}

export function evaluatePerfTargets(targets: TargetResult[], scale: ScaleResult): GoalCheck[] {
  const c = byGateway(targets, 'clawgate');
  const f = byGateway(targets, 'floor');
  const dt = (t: TargetResult | null) => t?.modes['device-token'];
  const out: GoalCheck[] = [];
  const cps = ratio(dt(c)?.throughput?.connectsPerSecond, dt(f)?.throughput?.connectsPerSecond);
  out.push(check('device-token connects/s ≥ 0.9 × floor', cps, cps === null ? null : 0.9, '× floor', 'ge'));
  const cpu = ratio(cpuPerConnectMs(c), cpuPerConnectMs(f));
  out.push(check('gateway CPU per device-token connect ≤ 1.25 × floor', cpu, cpu === null ? null : 1.25, '× floor', 'le'));
  const med = ratio(dt(c)?.latency?.totalMs?.median, dt(f)?.latency?.totalMs?.median);
  out.push(check('device-token connect median ≤ 1.2 × floor', med, med === null ? null : 1.2, '× floor', 'le'));
  const p99 = ratio(dt(c)?.latency?.totalMs?.p99, dt(f)?.latency?.totalMs?.p99);
  out.push(check('device-token connect p99 ≤ 1.5 × floor', p99, p99 === null ? null : 1.5, '× floor', 'le'));
  out.push(check('cold start spawn → /readyz ≤ 120 ms', c?.coldStart?.medianMs, 120, 'ms', 'le'));
  const idleRss = ratio(c?.rss.idleMiB, f?.rss.idleMiB);
  out.push(check('idle RSS ≤ 1.15 × floor', idleRss, idleRss === null ? null : 1.15, '× floor', 'le'));
  const per10k = ratio(idleStep(c, 10_000)?.perConnectionKiB, idleStep(f, 10_000)?.perConnectionKiB);
  out.push(check('RSS per idle connection at 10,000 ≤ 1.1 × floor', per10k, per10k === null ? null : 1.1, '× floor', 'le'));

  const idle = scale.idle;
  if (idle) {
    const ci = idle.byGateway.clawgate;
    const fi = idle.byGateway.floor;
    const cStep = ci && !('error' in ci) ? ci.steps[0] : undefined;
    const fStep = fi && !('error' in fi) ? fi.steps[0] : undefined;
    out.push(
      check(
        `idle device-token connections held on one instance ≥ ${idle.requested.toLocaleString('en')}`,
        cStep?.open ?? null,
        idle.requested,
        'connections',
        'ge',
      ),
    );
    const per = ratio(cStep?.perConnectionKiB, fStep?.perConnectionKiB);
    out.push(check(`RSS per idle connection at ${idle.attempted.toLocaleString('en')} ≤ 1.1 × floor`, per, per === null ? null : 1.1, '× floor', 'le'));
    const w = ci && !('error' in ci) ? ci.watchers : null;
    out.push(reported(`bytes sent per connect to ${w?.sessions ?? '—'} operator.read sessions (event storm)`, w?.bytesPerConnect, 'bytes'));
  }
  const dev = scale.devices;
  if (dev) {
    for (const [kind, r] of Object.entries(dev.byStore)) {
      const small = r && !('error' in r) ? okRun(r.small) : null;
      const large = r && !('error' in r) ? okRun(r.large) : null;
      const med = (x: StoreRun | null) => (x && !('error' in x.connect) ? x.connect.medianMs : null);
      const n = dev.devices.toLocaleString('en');
      const connect = ratio(med(large), med(small));
      out.push(check(`${kind}: connect median with ${n} devices ≤ 1.1 × with ${dev.smallDevices}`, connect, connect === null ? null : 1.1, '×', 'le'));
      const list = large && !('error' in large.list) ? large.list : null;
      out.push(
        check(
          `${kind}: devices list first page < 50 ms at ${n}${list && !list.paginated ? ' (NOT paginated: whole listing)' : ''}`,
          list?.latencyMs?.median,
          50,
          'ms',
          'le',
        ),
      );
      // "Independent of the device count": within 25 % (or 1 ms) of the small store's median.
      const indep = (a: number | null, b: number | null) => (a === null || b === null ? null : a <= b * 1.25 || a - b <= 1 ? 1 : a / b / 1.25);
      const appr = indep(latencyOf(large?.approval), latencyOf(small?.approval));
      out.push(check(`${kind}: approval median at ${n} within 1.25 × (or 1 ms) of ${dev.smallDevices}`, appr, appr === null ? null : 1, '', 'le'));
      const rev = indep(latencyOf(large?.revocation), latencyOf(small?.revocation));
      out.push(check(`${kind}: revocation median at ${n} within 1.25 × (or 1 ms) of ${dev.smallDevices}`, rev, rev === null ? null : 1, '', 'le'));
      const cold = large?.coldStartMs ?? null;
      out.push(check(`${kind}: cold start with ${n} devices ≤ 120 ms`, cold, 120, 'ms', 'le'));
    }
  }
  const cl = scale.cluster;
  if (cl) {
    const res = 'error' in cl ? null : cl.results;
    out.push(check('cluster: approval on A → device waiting on B admitted p99 ≤ 20 ms', res?.[CLUSTER_ROWS.approve]?.p99, 20, 'ms', 'le'));
    out.push(check('cluster: revoke on A → socket on B closed p99 ≤ 50 ms', res?.[CLUSTER_ROWS.revoke]?.p99, 50, 'ms', 'le'));
    out.push(reported('cluster: node.invoke routed A → node on B p99', res?.[CLUSTER_ROWS.invoke]?.p99, 'ms'));
  }
  return out;
}

function ms(x: number | null | undefined): string {
  if (x == null || Number.isNaN(x)) return '—';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** The scale rows as a table, then the verdicts. */
export function renderScale(scale: ScaleResult, verdicts: GoalCheck[]): string {
  const out: string[] = [];
  if (scale.devices) {
    const d = scale.devices;
    out.push(`devices (store seeded through seedPairedDevices; small = ${d.smallDevices}, large = ${d.devices.toLocaleString('en')}):`);
    for (const [kind, r] of Object.entries(d.byStore)) {
      if (!r || 'error' in r) {
        out.push(`  ${kind}: FAILED ${r?.error ?? ''}`);
        continue;
      }
      for (const [size, x] of [
        ['small', r.small],
        ['large', r.large],
      ] as const) {
        const conn = 'error' in x.connect ? `connect FAILED ${x.connect.error}` : `connect median ${ms(x.connect.medianMs)} p99 ${ms(x.connect.p99Ms)} ms`;
        const list =
          'error' in x.list
            ? `list FAILED ${x.list.error}`
            : `list ${ms(x.list.latencyMs?.median)} ms (${x.list.items ?? '?'} items${x.list.paginated ? '' : ', unpaginated'}${x.list.error ? `, ${x.list.error}` : ''})`;
        out.push(
          `  ${kind} ${size.padEnd(5)} ${String(x.seededDevices).padStart(8)} devices: seed ${x.seed ? `${x.seed.seconds} s` : '—'}, cold start ${ms(x.coldStartMs)} ms, ${conn}, ${list}, ` +
            `approval median ${ms(latencyOf(x.approval))} ms, revocation median ${ms(latencyOf(x.revocation))} ms`,
        );
      }
    }
  }
  if (scale.idle) {
    const i = scale.idle;
    out.push(
      `idle: ${i.attempted.toLocaleString('en')} of ${i.requested.toLocaleString('en')} connections, each gateway from its own ${Object.values(i.sourceAddresses)[0]?.length ?? 0} source address(es)${i.limitedBy ? ` — limited by ${i.limitedBy}` : ''}`,
    );
    const env = i.environment;
    if (env)
      out.push(
        `  inside a qemu guest (${env.accel === 'tcg' ? 'software-emulated CPU' : 'kvm'}, ${env.vcpus} vCPU, ${env.memoryMiB} MiB, kernel ${env.kernel}, booted in ${env.bootMs} ms): ` +
          `open-file limit ${env.openFileLimit.toLocaleString('en')} there, ${env.hostOpenFileLimit?.toLocaleString('en') ?? 'unknown'} here; ` +
          `memory and counts compare with the floor beside them${env.accel === 'tcg' ? ', ramp times do not compare with this machine' : ''}`,
      );
    for (const [kind, r] of Object.entries(i.byGateway)) {
      if ('error' in r) {
        out.push(`  ${kind}: FAILED ${r.error}`);
        continue;
      }
      const s = r.steps[0];
      out.push(
        `  ${kind.padEnd(8)} idle ${r.idleRssMiB ?? '—'} MiB → ${s?.rssMiB ?? '—'} MiB with ${s?.open ?? 0} open (${s?.perConnectionKiB ?? '—'} KiB each, ramp ${s?.rampSeconds ?? '—'} s), ` +
          `watchers ${r.watchers ? `${r.watchers.bytesReceived} bytes / ${r.watchers.frames} frames (${r.watchers.bytesPerConnect ?? '—'} per connect)` : '—'}, errors ${JSON.stringify(r.errors)}`,
      );
    }
  }
  if (scale.cluster) {
    if ('error' in scale.cluster) out.push(`cluster: FAILED ${scale.cluster.error}`);
    else
      for (const [k, s] of Object.entries(scale.cluster.results))
        out.push(`cluster: ${k.padEnd(38)} ${s ? `median ${ms(s.median)} p99 ${ms(s.p99)} (n=${s.n})` : '—'}`);
  }
  out.push('', 'targets (ratios to the floor measured in this same run):');
  for (const g of verdicts) {
    const state = g.met === null ? 'not measured' : g.limit === null ? 'reported' : g.met ? 'MET' : `MISSED by ${g.missedByFactor}×`;
    out.push(`  ${state.padEnd(16)} ${g.goal}: ${g.value ?? '—'} ${g.unit}${g.limit !== null ? ` (limit ${g.limit})` : ''}`);
  }
  return out.join('\n');
}
