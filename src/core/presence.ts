/**
 * Device presence for operators: the `presence` event says which device sessions connected or
 * disconnected. Connects are the hot path, so noting a change only appends to a bounded list;
 * at most one `presence` broadcast per window carries everything noted in it. The fan-out is
 * then one send per operator per window (like `tick`) however many devices connect, and the
 * payload never grows past PRESENCE_MAX_CHANGES entries: beyond that the event says
 * `truncated: true` and clients re-read `device.pair.list` / `system-presence` instead.
 */
import type { Role } from '../protocol/frames.js';

/** Entries one `presence` event may carry; more in one window are dropped and flagged. */
export const PRESENCE_MAX_CHANGES = 64;
/** Default coalescing window: a status display a second behind is fine, a broadcast per connect is not. */
export const DEFAULT_PRESENCE_WINDOW_MS = 1_000;

export interface PresenceChange {
  connId: string;
  deviceId: string;
  role: Role;
  clientId: string;
  clientMode: string;
  state: 'connected' | 'disconnected';
  atMs: number;
}

export interface PresenceEvent {
  ts: number;
  /** In the order they happened; `deviceConnected` is whether the device still had a session anywhere when the event was sent. */
  changes: Array<PresenceChange & { deviceConnected: boolean }>;
  /** More changes happened in the window than the event carries. */
  truncated: boolean;
}

export class PresenceCoalescer {
  private changes: PresenceChange[] = [];
  private truncated = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly windowMs: number,
    /** Sends one event; failures are the emitter's to log (presence is best effort). */
    private readonly emit: (changes: PresenceChange[], truncated: boolean) => Promise<void>,
  ) {}

  note(change: PresenceChange): void {
    if (this.stopped) return;
    if (this.changes.length < PRESENCE_MAX_CHANGES) this.changes.push(change);
    else this.truncated = true;
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), this.windowMs);
    this.timer.unref();
  }

  private flush(): void {
    this.timer = null;
    const { changes, truncated } = this;
    this.changes = [];
    this.truncated = false;
    void this.emit(changes, truncated);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
