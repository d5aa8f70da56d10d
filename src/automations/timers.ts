/** Injected timers, so the scheduler and the delivery worker run under a test's own clock. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemTimers: Timers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    // Automations never keep a stopping process alive on their own.
    t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

/**
 * A one-shot wake-up that re-arms to the earliest requested time. Long sleeps are cut to
 * `maxSleepMs` so a wall-clock jump (suspend, NTP step) is noticed within that bound.
 */
export class Alarm {
  private handle: unknown = null;
  private atMs: number | null = null;
  constructor(
    private readonly timers: Timers,
    private readonly nowMs: () => number,
    private readonly fire: () => void,
    private readonly maxSleepMs = 60_000,
  ) {}

  /** Wake at `atMs` (or earlier if already armed earlier). */
  set(atMs: number): void {
    if (this.atMs !== null && this.atMs <= atMs) return;
    this.clear();
    this.atMs = atMs;
    const delay = Math.min(Math.max(0, atMs - this.nowMs()), this.maxSleepMs);
    this.handle = this.timers.setTimeout(() => {
      this.handle = null;
      this.atMs = null;
      this.fire();
    }, delay);
  }

  clear(): void {
    if (this.handle !== null) this.timers.clearTimeout(this.handle);
    this.handle = null;
    this.atMs = null;
  }
}
