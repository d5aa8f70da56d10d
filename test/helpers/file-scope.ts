/**
 * Resources a test file creates and removes after its last test: temp dirs and test gateways,
 * released in reverse order even when a test failed. Call once at the top of a test file.
 */
import { after } from 'node:test';
import { tempDir } from './client.js';
import { removeDir, startTestGateway, type TestGateway } from './gateway.js';

export interface FileScope {
  /** Run `fn` after the file's last test (reverse order of registration). */
  cleanup: { push(fn: () => Promise<void> | void): void };
  /** A temp dir removed at the end. */
  dir(prefix: string): string;
  /** A test gateway stopped (and its state dir removed) at the end. */
  gateway(): Promise<TestGateway>;
}

export function fileScope(): FileScope {
  const tasks: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const c of tasks.reverse()) await c();
  });
  const cleanup = { push: (fn: () => Promise<void> | void) => void tasks.push(fn) };
  return {
    cleanup,
    dir(prefix) {
      const d = tempDir(prefix);
      cleanup.push(() => removeDir(d));
      return d;
    },
    async gateway() {
      const tg = await startTestGateway();
      cleanup.push(() => removeDir(tg.stateDir));
      cleanup.push(() => tg.stop());
      return tg;
    },
  };
}
