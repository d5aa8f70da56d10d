/**
 * The CLI's SDK credential store in `<state dir>/client/`, shared by `pair`, `status --client`,
 * every operator command (gateway-session.ts) and the companion. Its own module so those can
 * import it without importing each other.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Checkpoint, FileCredentialStore } from '@clawgate/client';

/**
 * TEST-ONLY crash hook: when CLAWGATE_TEST_CRASH_AT names a checkpoint (docs/client.md lists
 * them), the process SIGKILLs itself there, so tests can prove the hand-off survives a crash at
 * that exact point. Unset in normal use; it never changes behaviour otherwise.
 */
export function crashHook(): ((name: Checkpoint) => void) | undefined {
  const at = process.env.CLAWGATE_TEST_CRASH_AT;
  if (!at) return undefined;
  return (name) => {
    if (name === at) process.kill(process.pid, 'SIGKILL');
  };
}

export function clientStore(stateDir: string): FileCredentialStore {
  const dir = join(stateDir, 'client');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const checkpoint = crashHook();
  return new FileCredentialStore(dir, checkpoint ? { checkpoint } : {});
}
