/**
 * Which build of the CLI runs, for the "gateway started" log line: the tsc modules, or the
 * single-file build (dist/clawgate.cjs) that bin/clawgate.js loads for `gateway run`, and
 * whether V8 took that bundle's code cache (used) or compiled it from source (missing, or
 * rejected: made by another Node or from another bundle).
 */
export interface BuildInfo {
  build: 'single-file' | 'modules';
  codeCache?: 'used' | 'rejected' | 'missing' | 'off';
}

let current: BuildInfo = { build: 'modules' };

/** Called by the loader of the single-file build before the CLI runs. */
export function setBuildInfo(info: BuildInfo): void {
  current = info;
}

export function buildInfo(): BuildInfo {
  return current;
}
