/** Waiting for a condition with a deadline, instead of sleeping and hoping. */

export interface WaitOptions {
  /** Give up (and fail) after this long. */
  timeoutMs?: number;
  /** Pause between probes. */
  intervalMs?: number;
  /** Extra text for the failure message (a process's output, the last value seen). */
  detail?: () => string;
}

/**
 * Probe until it returns something other than undefined/false and return that; throw naming
 * `what` when the deadline passes first. A probe that throws fails the wait at once.
 */
export async function waitFor<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, what: string, o: WaitOptions = {}): Promise<T> {
  const timeoutMs = o.timeoutMs ?? 15_000;
  const intervalMs = o.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${o.detail ? `\n${o.detail()}` : ''}`);
    await sleepMs(intervalMs);
  }
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `p`, or a failure naming `what` once `timeoutMs` has passed (for promises that may never settle). */
export async function withDeadline<T>(p: Promise<T>, what: string, timeoutMs = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
