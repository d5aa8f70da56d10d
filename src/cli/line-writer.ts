/**
 * Log lines to a stream, gathered per turn of the event loop: the gateway logs two lines per
 * connect, and stderr on a file or pipe is written synchronously, so a busy turn made one write
 * syscall per line. Lines are joined and written once the turn's other callbacks have run
 * (setImmediate), and at process exit whatever is pending is written synchronously, so a normal
 * stop, an uncaught exception or process.exit loses nothing; only SIGKILL can lose the last turn.
 */
export interface LineWriter {
  write(line: string): void;
  flush(): void;
}

export function lineWriter(stream: NodeJS.WritableStream): LineWriter {
  let pending: string[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending.length === 0) return;
    const text = pending.join('');
    pending = [];
    stream.write(text);
  };
  process.once('exit', flush);
  return {
    write(line: string) {
      pending.push(line);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}
