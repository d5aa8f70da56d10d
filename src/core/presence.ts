/**
 * Device presence for operators: the `device.presence` event says which device sessions connected or
 * disconnected. Connects are the hot path, so noting a change only appends to a bounded list;
 * at most one `device.presence` broadcast per window carries everything noted in it. The fan-out is
 * then one send per operator per window (like `tick`) however many devices connect, and the
 * payload stays small: a window with more than PRESENCE_MAX_CHANGES changes (a reconnect storm)
 * sends none of them, only `truncated: true` and the count, and clients re-read
 * `device.pair.list` / `system-presence` instead. A storm thus costs each operator one small
 * frame per window, not a list it would only replace by a re-read anyway.
 */
import type { PresenceChange, PresenceEvent } from '@clawgate/protocol/views';

/** The wire views live in the protocol module; re-exported for the gateway code that builds them. */
export type { PresenceChange, PresenceEvent };

/** Entries one `device.presence` event may carry; a window with more sends only the count. */
export const PRESENCE_MAX_CHANGES = 32;
/** Default coalescing window: a status display a second behind is fine, a broadcast per connect is not. */
export const DEFAULT_PRESENCE_WINDOW_MS = 1_000;

export class PresenceCoalescer {
  private changes: PresenceChange[] = [];
  private count = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly windowMs: number,
    /** Sends one event; failures are the emitter's to log (presence is best effort). */
    private readonly emit: (changes: PresenceChange[], count: number) => Promise<void>,
  ) {}

  note(change: PresenceChange): void {
    if (this.stopped) return;
    if (++this.count <= PRESENCE_MAX_CHANGES) this.changes.push(change);
    else this.changes = [];
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), this.windowMs);
    this.timer.unref();
  }

  private flush(): void {
    this.timer = null;
    const { changes, count } = this;
    this.changes = [];
    this.count = 0;
    void this.emit(changes, count);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
