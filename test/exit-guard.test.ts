/**
 * The exit guard every test process loads: a file that exits with code 0 halfway through its
 * tests fails instead of passing with the unreached tests silently missing.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { removeDir } from './helpers/gateway.js';

const GUARD = join(process.cwd(), 'dist', 'test', 'helpers', 'exit-guard.js');

function runFile(body: string, guarded: boolean): Promise<{ code: number; out: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-exit-guard-'));
  const file = join(dir, 'fixture.test.mjs');
  writeFileSync(file, `import { describe, test } from 'node:test';\n${body}\n`);
  const args = ['--test', '--test-force-exit', ...(guarded ? ['--import', GUARD] : []), file];
  return new Promise((resolve) => {
    // A runner of its own, not a child of this one (the variable would make it report to us).
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    execFile(process.execPath, args, { env }, (err, stdout, stderr) => {
      removeDir(dir);
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

const EXITS_HALFWAY = `describe('first', () => { test('a', () => {}); });
describe('second', () => { test('exits', () => { process.exit(0); }); test('never reached', () => {}); });`;

test('a test file that exits with code 0 before its last tests fails under the guard (and passes silently without it)', async () => {
  const bare = await runFile(EXITS_HALFWAY, false);
  assert.equal(bare.code, 0, 'without the guard the early exit goes unnoticed');
  assert.doesNotMatch(bare.out, /never reached/);
  const guarded = await runFile(EXITS_HALFWAY, true);
  assert.notEqual(guarded.code, 0, guarded.out);
  assert.match(guarded.out, /exited before all of its tests ran/);
});

test('a file whose tests all run passes under the guard, failing tests still fail', async () => {
  const ok = await runFile(`describe('s', () => { test('a', async () => { await new Promise((r) => setTimeout(r, 20)); }); }); test('b', () => {});`, true);
  assert.equal(ok.code, 0, ok.out);
  const failing = await runFile(`test('a', () => { throw new Error('boom'); });`, true);
  assert.notEqual(failing.code, 0);
  assert.doesNotMatch(failing.out, /exited before/);
});
