/** Small numeric helpers for the benchmark: summaries of latency samples, growable sample buffers. */

export interface Summary {
  n: number;
  min: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Round to two decimals (milliseconds are reported with 10 µs resolution). */
export function r2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** Linear-interpolated percentile of an ascending array (`q` in 0..1). */
function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (pos - lo);
}

/** Summary of the first `n` values of `values` (the input is not modified). */
export function summarize(values: Float64Array, n = values.length): Summary | null {
  if (n === 0) return null;
  const sorted = values.slice(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] as number;
  return {
    n,
    min: r2(sorted[0] as number),
    median: r2(percentile(sorted, 0.5)),
    p90: r2(percentile(sorted, 0.9)),
    p99: r2(percentile(sorted, 0.99)),
    max: r2(sorted[n - 1] as number),
    mean: r2(sum / n),
  };
}

/** Append-only Float64 buffer that doubles when full (no per-sample allocation). */
export class Samples {
  private buf: Float64Array;
  length = 0;
  constructor(initialCapacity = 1024) {
    this.buf = new Float64Array(Math.max(16, initialCapacity));
  }
  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }
  summary(): Summary | null {
    return summarize(this.buf, this.length);
  }
}

/** Count of occurrences by string key, as a plain object for the JSON report. */
export class Counter {
  private readonly map = new Map<string, number>();
  add(key: string, n = 1): void {
    this.map.set(key, (this.map.get(key) ?? 0) + n);
  }
  get total(): number {
    let t = 0;
    for (const v of this.map.values()) t += v;
    return t;
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.map.entries()].sort((a, b) => b[1] - a[1]));
  }
}
