/**
 * Loaded into every test process (`node --test --import …/exit-guard.js`, scripts/test.sh): a
 * test file whose process ends with code 0 before all of its tests ran — something called
 * process.exit(0), or the process was ended early another way — would otherwise lose the tests
 * it had not reached without a single failure (the runner counts only what the file reported).
 * The root `after` hook runs once every test of the file has finished; an exit before it turns
 * the file's exit code into 1, which the runner reports as a failed file.
 */
import { after } from 'node:test';

let finished = false;
after(() => {
  finished = true;
});
process.on('exit', (code) => {
  if (code === 0 && !finished) {
    process.stderr.write(`test file ${process.argv[1] ?? '?'} exited before all of its tests ran\n`);
    process.exitCode = 1;
  }
});
