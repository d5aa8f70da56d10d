/**
 * One timer for every socket's deadlines (handshake timeout, keep-alive ping) instead of a
 * Node timer per socket: a hashed wheel of `slots` buckets, one bucket visited every `tickMs`.
 * A deadline fires on the first tick at or after it (at most `tickMs` late), never early.
 * Periodic work (pings) reschedules itself, so sockets stay spread over the wheel by their
 * connect time instead of waking together.
 *
 * A bucket is an intrusive doubly linked list: an entry carries its own links, so arming,
 * disarming and firing allocate nothing and no per-bucket table grows, shrinks or is copied as
 * tens of thousands of idle sockets move through the wheel every ping period. An object that is
 * woken again and again (a socket) is its own entry (`WheelEntry`, armed with `arm`/`armAt`);
 * `schedule` wraps a plain callback.
 *
 * The interval runs only while something is scheduled, and is unref'd: the wheel never keeps
 * the process alive. It stops at the first tick that finds the wheel empty, not when the last
 * entry leaves: connects that come one at a time (each socket gone before the next arrives)
 * would otherwise start and stop a Node interval apiece.
 */

/** The interval functions the wheel uses (Node's; injectable). */
export interface IntervalTimers {
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

const nodeIntervals: IntervalTimers = {
  setInterval: (fn, ms) => setInterval(fn, ms).unref(),
  clearInterval: (handle) => clearInterval(handle as ReturnType<typeof setInterval>),
};

export interface WheelTimer {
  /** Idempotent. */
  cancel(): void;
}

/** The links of a bucket list; written by the wheel only. */
export interface WheelLink {
  wheelPrev: WheelLink | null;
  wheelNext: WheelLink | null;
}

/** An object the wheel holds directly: at most one pending deadline per entry. */
export interface WheelEntry extends WheelLink {
  /** When it is due (the wheel's clock, whole milliseconds); written by the wheel. */
  wheelAtMs: number;
  /** Called once per arming, at or after the deadline (the entry is no longer armed by then). */
  onWheel(): void;
}

/** The head of a circular bucket list (empty: linked to itself). */
class Bucket implements WheelLink {
  wheelPrev: WheelLink = this;
  wheelNext: WheelLink = this;
}

function link(bucket: Bucket, entry: WheelLink): void {
  const tail = bucket.wheelPrev;
  entry.wheelPrev = tail;
  entry.wheelNext = bucket;
  tail.wheelNext = entry;
  bucket.wheelPrev = entry;
}

function unlink(entry: WheelLink): void {
  (entry.wheelPrev as WheelLink).wheelNext = entry.wheelNext;
  (entry.wheelNext as WheelLink).wheelPrev = entry.wheelPrev;
  entry.wheelPrev = null;
  entry.wheelNext = null;
}

/** A callback scheduled with `schedule`. */
class CallbackEntry implements WheelEntry, WheelTimer {
  wheelAtMs = 0;
  wheelPrev: WheelLink | null = null;
  wheelNext: WheelLink | null = null;
  constructor(
    private readonly wheel: TimerWheel,
    private readonly fn: () => void,
  ) {}
  onWheel(): void {
    this.fn();
  }
  cancel(): void {
    this.wheel.disarm(this);
  }
}

export class TimerWheel {
  private readonly slots: Bucket[];
  /** The entries of the bucket being visited, moved out of it so firing may arm and disarm freely. */
  private readonly visiting = new Bucket();
  private cursor = 0;
  /** Wall time of the last tick processed (monotonic clock). */
  private lastTickMs: number;
  private size = 0;
  private interval: unknown = null;

  constructor(
    readonly tickMs: number,
    slotCount = 512,
    private readonly nowMs: () => number = () => performance.now(),
    private readonly timers: IntervalTimers = nodeIntervals,
  ) {
    if (!(tickMs > 0)) throw new Error('tickMs must be positive');
    this.slots = Array.from({ length: slotCount }, () => new Bucket());
    this.lastTickMs = nowMs();
  }

  /** Run `fn` once, `delayMs` from now (to within one tick, never earlier). */
  schedule(delayMs: number, fn: () => void): WheelTimer {
    const entry = new CallbackEntry(this, fn);
    this.arm(entry, delayMs);
    return entry;
  }

  /** Wake `entry` once, `delayMs` from now (to within one tick, never earlier); replaces its pending deadline. */
  arm(entry: WheelEntry, delayMs: number): void {
    this.armAt(entry, this.nowMs() + delayMs);
  }

  /** Wake `entry` once at `atMs` of `now()`'s clock (to within one tick, never earlier); replaces its pending deadline. */
  armAt(entry: WheelEntry, atMs: number): void {
    this.disarm(entry);
    // Rounded up to a whole millisecond (never early): an integer is stored in the entry itself,
    // where a fractional time would be a separate heap number per entry.
    entry.wheelAtMs = Math.ceil(atMs);
    this.place(entry);
  }

  /** Drop the pending deadline of `entry`, if any. Idempotent. */
  disarm(entry: WheelEntry): void {
    if (entry.wheelPrev === null) return;
    unlink(entry);
    this.size--;
  }

  /**
   * The wheel's clock (milliseconds, monotonic), rounded down to a whole millisecond: an entry
   * woken at or after its (whole) deadline reads a time at or past it.
   */
  now(): number {
    return Math.floor(this.nowMs());
  }

  /** Entries scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.size;
  }

  private place(entry: WheelEntry): void {
    // Ticks from the last processed one; the slot that tick will visit holds the entry.
    const ticks = Math.max(1, Math.ceil((entry.wheelAtMs - this.lastTickMs) / this.tickMs));
    // At most one revolution less a tick ahead: an entry never lands in the bucket being visited.
    link(this.slots[(this.cursor + Math.min(ticks, this.slots.length - 1)) % this.slots.length] as Bucket, entry);
    this.size++;
    if (!this.interval) {
      this.lastTickMs = this.nowMs();
      this.interval = this.timers.setInterval(() => this.tick(), this.tickMs);
    }
  }

  private stop(): void {
    if (this.interval) this.timers.clearInterval(this.interval);
    this.interval = null;
  }

  /** Visit the buckets of every tick that has elapsed (a late interval catches up). */
  private tick(): void {
    const now = this.nowMs();
    const due = Math.max(1, Math.min(this.slots.length, Math.floor((now - this.lastTickMs) / this.tickMs)));
    const visiting = this.visiting;
    for (let i = 0; i < due; i++) {
      this.cursor = (this.cursor + 1) % this.slots.length;
      this.lastTickMs += this.tickMs;
      const slot = this.slots[this.cursor] as Bucket;
      if (slot.wheelNext === slot) continue;
      // Move the bucket's entries to `visiting` (an entry fired may disarm another one of them).
      visiting.wheelNext = slot.wheelNext;
      visiting.wheelPrev = slot.wheelPrev;
      (visiting.wheelNext as WheelLink).wheelPrev = visiting;
      (visiting.wheelPrev as WheelLink).wheelNext = visiting;
      slot.wheelNext = slot;
      slot.wheelPrev = slot;
      while (visiting.wheelNext !== visiting) {
        const entry = visiting.wheelNext as WheelEntry;
        if (entry.wheelAtMs > now && entry.wheelAtMs - now > this.tickMs * this.slots.length) {
          // Further than one revolution away when placed: back in this bucket for a later pass.
          unlink(entry);
          link(slot, entry);
          continue;
        }
        unlink(entry);
        this.size--;
        if (entry.wheelAtMs > now) this.place(entry);
        else entry.onWheel();
      }
    }
    if (this.lastTickMs < now - this.tickMs * this.slots.length) this.lastTickMs = now;
    if (this.size === 0) this.stop();
  }
}
