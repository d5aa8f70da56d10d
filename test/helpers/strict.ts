/**
 * One policy for tests that need something the machine may lack (root, network namespaces,
 * nginx, systemd-analyze): a visible skip on a developer's machine, a failure under
 * CLAWGATE_TEST_STRICT=1 (scripts/test.sh sets it when CI=true), so CI can never go green by
 * quietly testing less.
 */
import { existsSync } from 'node:fs';

export const STRICT = process.env.CLAWGATE_TEST_STRICT === '1';

/**
 * The `skip` option for describe/test: false when `missing` is null, else the reason — and
 * under the strict switch a thrown error, so the file fails instead of skipping.
 */
export function skipUnlessPresent(missing: string | null): string | false {
  if (missing === null) return false;
  if (STRICT) throw new Error(`CLAWGATE_TEST_STRICT=1: ${missing}; this machine cannot run every test`);
  return missing;
}

/** A reason when `path` does not exist (for skipUnlessPresent). */
export function missingFile(path: string, hint: string): string | null {
  return existsSync(path) ? null : `${path} is not installed (${hint})`;
}

/**
 * Inside a running test: skip it visibly with `reason`, or fail it under the strict switch.
 * Returns so the caller can `return` right after.
 */
export function skipOrFail(t: { skip(message?: string): void }, reason: string): void {
  if (STRICT) throw new Error(`CLAWGATE_TEST_STRICT=1: ${reason}`);
  t.skip(reason);
}
