#!/usr/bin/env node
'use strict';
// Entry point of the `clawgate` binary: runs the compiled CLI (npm install builds it).
// `gateway run` prefers the single-file build (dist/clawgate.cjs with its V8 code cache,
// bin/single-file.js): one file whose bytecode is ready instead of hundreds of modules to find
// and compile. It is used only when it is at least as new as the tsc output, so a rebuild
// without the bundle step never runs stale code. This directory is CommonJS (bin/package.json):
// `gateway run` then never starts Node's ES module loader.
const argv = process.argv.slice(2);

function run(main) {
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`clawgate: ${err?.stack ?? err}\n`);
      process.exitCode = 1;
    },
  );
}

// Only `gateway run` loads the bundle's loader (and the built-ins it needs).
const singleFile = argv[0] === 'gateway' && argv[1] === 'run' && process.env.CLAWGATE_NO_BUNDLE !== '1' ? require('./single-file.js') : null;
if (singleFile?.bundleIsFresh()) {
  const bundle = singleFile.loadBundle();
  bundle.exports.setBuildInfo({ build: 'single-file', codeCache: bundle.codeCache });
  run(bundle.exports.main);
} else {
  import('../dist/src/cli/main.js').then(({ main }) => run(main));
}
