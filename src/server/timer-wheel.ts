/**
 * One timer for every socket's deadlines (handshake timeout, keep-alive ping) instead of a
 * Node timer per socket: a hashed wheel of `slots` buckets, one bucket visited every `tickMs`.
 * Scheduling and cancelling are a Set insert and delete; a deadline fires on the first tick at or
 * after it (at most `tickMs` late), never early. Periodic work (pings) reschedules itself, so
 * sockets stay spread over the wheel by their connect time instead of waking together.
 *
 * An object that is woken again and again (a socket) can be its own entry (`WheelEntry`, armed
 * with `arm`): the wheel then allocates nothing per deadline, which matters when it holds a
 * deadline for each of tens of thousands of idle sockets. `schedule` wraps a plain callback.
 *
 * The interval runs only while something is scheduled, and is unref'd: the wheel never keeps
 * the process alive.
 */

export interface WheelTimer {
  /** Idempotent. */
  cancel(): void;
}

/** An object the wheel holds directly: at most one pending deadline per entry. */
export interface WheelEntry {
  /** When it is due (the wheel's clock); written by the wheel. */
  wheelAtMs: number;
  /** The bucket holding it while armed (null: not armed); written by the wheel. */
  wheelSlot: Set<WheelEntry> | null;
  /** Called once per `arm`, at or after the deadline (the entry is no longer armed by then). */
  onWheel(): void;
}

/** A callback scheduled with `schedule`. */
class CallbackEntry implements WheelEntry, WheelTimer {
  wheelAtMs = 0;
  wheelSlot: Set<WheelEntry> | null = null;
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
  private readonly slots: Array<Set<WheelEntry>>;
  private cursor = 0;
  /** Wall time of the last tick processed (monotonic clock). */
  private lastTickMs: number;
  private size = 0;
  private interval: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly tickMs: number,
    slotCount = 512,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    if (!(tickMs > 0)) throw new Error('tickMs must be positive');
    this.slots = Array.from({ length: slotCount }, () => new Set<WheelEntry>());
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

  /**
   * The wheel's clock (milliseconds, monotonic), rounded down to a whole millisecond: an entry
   * woken at or after its (whole) deadline reads a time at or past it.
   */
  now(): number {
    return Math.floor(this.nowMs());
  }

  /** Drop the pending deadline of `entry`, if any. Idempotent. */
  disarm(entry: WheelEntry): void {
    if (entry.wheelSlot?.delete(entry)) {
      entry.wheelSlot = null;
      this.size--;
      if (this.size === 0) this.stop();
    }
  }

  /** Entries scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.size;
  }

  private place(entry: WheelEntry): void {
    // Ticks from the last processed one; the slot that tick will visit holds the entry.
    const ticks = Math.max(1, Math.ceil((entry.wheelAtMs - this.lastTickMs) / this.tickMs));
    // At most one revolution less a tick ahead: an entry never lands in the bucket being visited.
    const slot = this.slots[(this.cursor + Math.min(ticks, this.slots.length - 1)) % this.slots.length] as Set<WheelEntry>;
    slot.add(entry);
    entry.wheelSlot = slot;
    this.size++;
    if (!this.interval) {
      this.lastTickMs = this.nowMs();
      this.interval = setInterval(() => this.tick(), this.tickMs);
      this.interval.unref();
    }
  }

  private stop(): void {
    if (this.interval) clearInterval(this.interval);
    this.interval = null;
  }

  /** Visit the buckets of every tick that has elapsed (a late interval catches up). */
  private tick(): void {
    const now = this.nowMs();
    const due = Math.max(1, Math.min(this.slots.length, Math.floor((now - this.lastTickMs) / this.tickMs)));
    for (let i = 0; i < due; i++) {
      this.cursor = (this.cursor + 1) % this.slots.length;
      this.lastTickMs += this.tickMs;
      const slot = this.slots[this.cursor] as Set<WheelEntry>;
      if (slot.size === 0) continue;
      for (const entry of slot) {
        if (entry.wheelAtMs > now) {
          // Further than one revolution away when placed: keep it for a later pass.
          if (entry.wheelAtMs - now > this.tickMs * this.slots.length) continue;
          slot.delete(entry);
          this.size--;
          entry.wheelSlot = null;
          this.place(entry);
          continue;
        }
        slot.delete(entry);
        entry.wheelSlot = null;
        this.size--;
        entry.onWheel();
      }
    }
    if (this.lastTickMs < now - this.tickMs * this.slots.length) this.lastTickMs = now;
    if (this.size === 0) this.stop();
  }
}
