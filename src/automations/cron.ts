/**
 * Schedules of cron jobs: 5-field cron expressions evaluated in an IANA time zone, and fixed
 * intervals. Pure: no clock, no timers; the scheduler asks "what is the first due time after t".
 *
 * Cron syntax (docs/automations.md): `minute hour day-of-month month day-of-week`, each field
 * `*`, a number, a range `a-b`, a list `a,b`, and a step `*\/n` or `a-b/n`; months `jan`–`dec`
 * and days `sun`–`sat` by name; day-of-week 0 and 7 are Sunday. When both day fields are
 * restricted a day matches either (classic cron). Wall-clock times that do not exist (the hour
 * skipped at a daylight-saving change) are skipped; times that exist twice run once.
 */
import type { CronSchedule } from '../core/store.js';

export interface ParsedCron {
  minutes: readonly number[];
  hours: readonly number[];
  daysOfMonth: ReadonlySet<number>;
  months: ReadonlySet<number>;
  daysOfWeek: ReadonlySet<number>;
  /** The field was `*` (or `*\/1`): matters for the day-of-month / day-of-week rule. */
  domStar: boolean;
  dowStar: boolean;
}

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

interface FieldSpec {
  name: string;
  min: number;
  max: number;
  names?: string[];
  /** Value of the first name (1 for months, 0 for days). */
  nameBase?: number;
}

const FIELDS: FieldSpec[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: MONTHS, nameBase: 1 },
  // 7 is accepted as Sunday and folded to 0 below.
  { name: 'day-of-week', min: 0, max: 7, names: DAYS, nameBase: 0 },
];

export type CronParse = { ok: true; cron: ParsedCron } | { ok: false; problem: string };

function parseValue(text: string, f: FieldSpec): number | null {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    return n >= f.min && n <= f.max ? n : null;
  }
  const i = f.names?.indexOf(text.toLowerCase()) ?? -1;
  return i >= 0 ? i + (f.nameBase ?? 0) : null;
}

function parseField(text: string, f: FieldSpec): { values: Set<number>; star: boolean } | string {
  const values = new Set<number>();
  let star = false;
  for (const part of text.split(',')) {
    const m = /^([^/]+)(?:\/(\d+))?$/.exec(part);
    if (!m) return `${f.name} field "${text}" is not valid`;
    const [, range, stepText] = m as unknown as [string, string, string | undefined];
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1) return `${f.name} step must be a positive whole number`;
    let lo: number;
    let hi: number;
    if (range === '*') {
      lo = f.min;
      hi = f.max === 7 ? 6 : f.max;
      if (step === 1) star = true;
    } else {
      const bounds = range.split('-');
      if (bounds.length > 2) return `${f.name} range "${range}" is not valid`;
      const a = parseValue(bounds[0] as string, f);
      const b = bounds.length === 2 ? parseValue(bounds[1] as string, f) : a;
      if (a === null || b === null) return `${f.name} value "${range}" is out of range ${f.min}-${f.max}`;
      if (a > b) return `${f.name} range "${range}" runs backwards`;
      lo = a;
      // `5/15` means "from 5 to the end, every 15" as in classic cron.
      hi = bounds.length === 1 && stepText !== undefined ? f.max : b;
    }
    for (let v = lo; v <= hi; v += step) values.add(f.max === 7 && v === 7 ? 0 : v);
  }
  return { values, star };
}

export function parseCron(expr: string): CronParse {
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) return { ok: false, problem: `expected 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}` };
  const out: Array<{ values: Set<number>; star: boolean }> = [];
  for (let i = 0; i < 5; i++) {
    const r = parseField(parts[i] as string, FIELDS[i] as FieldSpec);
    if (typeof r === 'string') return { ok: false, problem: r };
    out.push(r);
  }
  const [mi, h, dom, mon, dow] = out as [(typeof out)[0], (typeof out)[0], (typeof out)[0], (typeof out)[0], (typeof out)[0]];
  return {
    ok: true,
    cron: {
      minutes: [...mi.values].sort((a, b) => a - b),
      hours: [...h.values].sort((a, b) => a - b),
      daysOfMonth: dom.values,
      months: mon.values,
      daysOfWeek: dow.values,
      domStar: dom.star,
      dowStar: dow.star,
    },
  };
}

export function isValidTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

interface WallTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** The wall-clock time at `utcMs` in `tz` (formatters are cached: building one is slow). */
function wallTime(utcMs: number, tz: string): WallTime {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
    });
    formatters.set(tz, f);
  }
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(utcMs)) if (part.type !== 'literal') p[part.type] = Number(part.value);
  return { year: p.year as number, month: p.month as number, day: p.day as number, hour: (p.hour as number) % 24, minute: p.minute as number };
}

/**
 * The UTC instant of a wall-clock time in `tz`: the earliest of the instants that show that
 * wall time (two when clocks fall back), or null when none does (clocks jumped over it).
 */
function utcOf(w: WallTime, tz: string): number | null {
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute);
  const offsetAt = (t: number) => {
    const x = wallTime(t, tz);
    return Date.UTC(x.year, x.month - 1, x.day, x.hour, x.minute) - t;
  };
  // The zone's offsets around this day: a daylight-saving change gives two.
  const offsets = new Set([offsetAt(asUtc - 12 * 3_600_000), offsetAt(asUtc), offsetAt(asUtc + 12 * 3_600_000)]);
  let best: number | null = null;
  for (const o of offsets) {
    const t = asUtc - o;
    const back = wallTime(t, tz);
    if (back.year !== w.year || back.month !== w.month || back.day !== w.day || back.hour !== w.hour || back.minute !== w.minute) continue;
    if (best === null || t < best) best = t;
  }
  return best;
}

const DAY_MS = 86_400_000;
/** How far ahead to look before declaring an expression that never fires (e.g. `0 0 30 2 *`). */
const HORIZON_DAYS = 366 * 5;

/** The first time strictly after `afterMs` that the expression fires in `tz`, or null if never. */
export function nextCronTime(cron: ParsedCron, afterMs: number, tz = 'UTC'): number | null {
  const start = wallTime(afterMs, tz);
  const firstDay = Date.UTC(start.year, start.month - 1, start.day);
  for (let i = 0; i < HORIZON_DAYS; i++) {
    const d = new Date(firstDay + i * DAY_MS);
    const year = d.getUTCFullYear();
    const month = d.getUTCMonth() + 1;
    const day = d.getUTCDate();
    if (!cron.months.has(month)) continue;
    const domOk = cron.daysOfMonth.has(day);
    const dowOk = cron.daysOfWeek.has(d.getUTCDay());
    const dayOk = cron.domStar || cron.dowStar ? domOk && dowOk : domOk || dowOk;
    if (!dayOk) continue;
    for (const hour of cron.hours) {
      if (i === 0 && hour < start.hour) continue;
      for (const minute of cron.minutes) {
        if (i === 0 && hour === start.hour && minute < start.minute) continue;
        const t = utcOf({ year, month, day, hour, minute }, tz);
        if (t !== null && t > afterMs) return t;
      }
    }
  }
  return null;
}

/** Smallest interval accepted for `every` schedules. */
export const MIN_EVERY_MS = 1_000;

export type ScheduleCheck = { ok: true; cron: ParsedCron | null } | { ok: false; problem: string };

export function checkSchedule(s: CronSchedule): ScheduleCheck {
  if (s.kind === 'every') {
    if (!Number.isInteger(s.everyMs) || s.everyMs < MIN_EVERY_MS) return { ok: false, problem: `everyMs must be a whole number of at least ${MIN_EVERY_MS}` };
    return { ok: true, cron: null };
  }
  if (s.tz !== undefined && !isValidTimeZone(s.tz)) return { ok: false, problem: `unknown time zone "${s.tz}"` };
  const p = parseCron(s.expr);
  if (!p.ok) return p;
  return { ok: true, cron: p.cron };
}

/**
 * The next due time of a schedule strictly after `afterMs`. Intervals are anchored on `anchorMs`
 * (the job's creation), so `every 10s` fires on the same phase across restarts.
 */
export function nextRun(s: CronSchedule, afterMs: number, anchorMs: number): number | null {
  if (s.kind === 'every') {
    if (afterMs < anchorMs) return anchorMs + s.everyMs;
    const n = Math.floor((afterMs - anchorMs) / s.everyMs) + 1;
    return anchorMs + n * s.everyMs;
  }
  const p = parseCron(s.expr);
  if (!p.ok) return null;
  return nextCronTime(p.cron, afterMs, s.tz ?? 'UTC');
}

/** Parse `10s`, `5m`, `2h`, `1d`, `1500ms` into milliseconds (CLI `--every`). */
export function parseDurationMs(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return null;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(m[1]) * unit);
}
