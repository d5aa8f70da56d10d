#!/usr/bin/env node
// Entry point of the `clawgate` binary: runs the compiled CLI (npm install builds it).
import { main } from '../dist/src/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`clawgate: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
