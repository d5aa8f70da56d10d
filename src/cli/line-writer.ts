/**
 * Log lines to a stream, gathered: the gateway logs two lines per connect, and stderr on a file
 * or pipe is written synchronously, one write syscall per call. Lines are joined and written once
 * the turn's other callbacks have run (setImmediate) — but at most once per LINE_BATCH_MS while lines
 * keep coming, so a gateway admitting thousands of connects a second makes a few dozen writes a
 * second, not one per connect. At process exit whatever is pending is written synchronously, so
 * a normal stop, an uncaught exception or process.exit loses nothing; only SIGKILL can lose the
 * last LINE_BATCH_MS of lines.
 */
export interface LineWriter {
  write(line: string): void;
  flush(): void;
}

/** The longest a line waits while the previous write is that recent. */
export const LINE_BATCH_MS = 10;
/** Pending text that is written at once, however recent the previous write. */
const MAX_PENDING_CHARS = 64 * 1024;

export function lineWriter(stream: NodeJS.WritableStream, now: () => number = () => performance.now()): LineWriter {
  let pending: string[] = [];
  let pendingChars = 0;
  let scheduled = false;
  let lastWriteAt = Number.NEGATIVE_INFINITY;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    pendingChars = 0;
    lastWriteAt = now();
    stream.write(text);
  };
  process.once('exit', flush);
  return {
    write(line: string) {
      pending.push(line);
      pendingChars += line.length;
      if (pendingChars >= MAX_PENDING_CHARS) {
        flush();
        return;
      }
      if (scheduled) return;
      scheduled = true;
      const waitMs = lastWriteAt + LINE_BATCH_MS - now();
      if (waitMs <= 0) setImmediate(flush);
      else setTimeout(flush, waitMs);
    },
    flush,
  };
}
