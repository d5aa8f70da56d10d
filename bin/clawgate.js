#!/usr/bin/env node
// Entry point of the `clawgate` binary: runs the compiled CLI (npm install builds it).
// `gateway run` prefers the single-file build (dist/clawgate.cjs with its V8 code cache,
// bin/single-file.js): one file whose bytecode is ready instead of hundreds of modules to find
// and compile. It is used only when it is at least as new as the tsc output, so a rebuild
// without the bundle step never runs stale code.
import { bundleIsFresh, loadBundle } from './single-file.js';

const argv = process.argv.slice(2);

const useBundle = argv[0] === 'gateway' && argv[1] === 'run' && process.env.CLAWGATE_NO_BUNDLE !== '1' && bundleIsFresh();
let main;
if (useBundle) {
  const bundle = loadBundle();
  bundle.exports.setBuildInfo({ build: 'single-file', codeCache: bundle.codeCache });
  main = bundle.exports.main;
} else {
  ({ main } = await import('../dist/src/cli/main.js'));
}

main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`clawgate: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
