#!/usr/bin/env node
// Entry point of the `clawgate` binary: runs the compiled CLI (npm install builds it).
// `gateway run` prefers the single-file build (dist/clawgate.mjs, scripts/bundle.mjs): one file
// to load instead of hundreds starts the gateway in about half the time. It is used only when it
// is at least as new as the tsc output, so a rebuild without the bundle step never runs stale code.
import { statSync } from 'node:fs';

const argv = process.argv.slice(2);

function bundleIsFresh() {
  try {
    const bundle = statSync(new URL('../dist/clawgate.mjs', import.meta.url)).mtimeMs;
    return bundle >= statSync(new URL('../dist/src/cli/main.js', import.meta.url)).mtimeMs;
  } catch {
    return false;
  }
}

const useBundle = argv[0] === 'gateway' && argv[1] === 'run' && process.env.CLAWGATE_NO_BUNDLE !== '1' && bundleIsFresh();
const { main } = await import(useBundle ? '../dist/clawgate.mjs' : '../dist/src/cli/main.js');

main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`clawgate: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
