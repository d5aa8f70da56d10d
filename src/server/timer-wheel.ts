/**
 * One timer for every socket's deadlines (handshake timeout, keep-alive ping) instead of a
 * Node timer per socket: a hashed wheel of `slots` buckets, one bucket visited every `tickMs`.
 * Scheduling and cancelling are a Set insert and delete; a deadline fires on the first tick at or
 * after it (at most `tickMs` late), never early. Periodic work (pings) reschedules itself, so
 * sockets stay spread over the wheel by their connect time instead of waking together.
 *
 * The interval runs only while something is scheduled, and is unref'd: the wheel never keeps
 * the process alive.
 */

export interface WheelTimer {
  /** Idempotent. */
  cancel(): void;
}

interface Entry extends WheelTimer {
  atMs: number;
  fn: () => void;
  slot: Set<Entry> | null;
}

export class TimerWheel {
  private readonly slots: Array<Set<Entry>>;
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
    this.slots = Array.from({ length: slotCount }, () => new Set<Entry>());
    this.lastTickMs = nowMs();
  }

  /** Run `fn` once, `delayMs` from now (to within one tick, never earlier). */
  schedule(delayMs: number, fn: () => void): WheelTimer {
    const entry: Entry = {
      atMs: this.nowMs() + delayMs,
      fn,
      slot: null,
      cancel: () => {
        if (entry.slot?.delete(entry)) {
          entry.slot = null;
          this.size--;
          if (this.size === 0) this.stop();
        }
      },
    };
    this.place(entry);
    return entry;
  }

  /** Entries scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.size;
  }

  private place(entry: Entry): void {
    // Ticks from the last processed one; the slot that tick will visit holds the entry.
    const ticks = Math.max(1, Math.ceil((entry.atMs - this.lastTickMs) / this.tickMs));
    // At most one revolution less a tick ahead: an entry never lands in the bucket being visited.
    const slot = this.slots[(this.cursor + Math.min(ticks, this.slots.length - 1)) % this.slots.length] as Set<Entry>;
    slot.add(entry);
    entry.slot = slot;
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
      const slot = this.slots[this.cursor] as Set<Entry>;
      if (slot.size === 0) continue;
      for (const entry of slot) {
        if (entry.atMs > now) {
          // Further than one revolution away when placed: keep it for a later pass.
          if (entry.atMs - now > this.tickMs * this.slots.length) continue;
          slot.delete(entry);
          this.size--;
          entry.slot = null;
          this.place(entry);
          continue;
        }
        slot.delete(entry);
        entry.slot = null;
        this.size--;
        entry.fn();
      }
    }
    if (this.lastTickMs < now - this.tickMs * this.slots.length) this.lastTickMs = now;
    if (this.size === 0) this.stop();
  }
}
