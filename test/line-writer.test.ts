/**
 * The gateway's stderr log lines are gathered: one write for a turn's lines, in order, at most
 * one write per LINE_BATCH_MS while lines keep coming, and nothing lost when the process exits
 * at once or dies of an exception.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { LINE_BATCH_MS, lineWriter } from '../src/cli/line-writer.js';
import { waitFor } from './helpers/wait.js';

test('lines written in one turn reach the stream in one write, in order; a busy writer batches', async () => {
  const writes: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      writes.push(String(chunk));
      cb();
    },
  });
  let nowMs = 1000;
  const w = lineWriter(sink, () => nowMs);
  w.write('a\n');
  w.write('b\n');
  w.write('c\n');
  assert.deepEqual(writes, []);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes, ['a\nb\nc\n']);
  // Within LINE_BATCH_MS of that write: held past the next turn, then written with what follows.
  nowMs += LINE_BATCH_MS / 2;
  w.write('d\n');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes, ['a\nb\nc\n']);
  w.write('e\n');
  await waitFor(() => writes.length === 2, 'the held lines to be written');
  assert.deepEqual(writes, ['a\nb\nc\n', 'd\ne\n']);
  // Once LINE_BATCH_MS has passed since the last write, a line goes out at the next turn again.
  nowMs += LINE_BATCH_MS;
  w.write('f\n');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes.at(-1), 'f\n');
  // A large backlog is written at once, however recent the last write.
  const big = `${'x'.repeat(70 * 1024)}\n`;
  w.write(big);
  assert.equal(writes.at(-1), big);
});

function child(body: string): Promise<{ code: number | null; stderr: string }> {
  const mod = join(process.cwd(), 'dist', 'src', 'cli', 'line-writer.js');
  const src = `import { lineWriter } from ${JSON.stringify(mod)}; const w = lineWriter(process.stderr); ${body}`;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', src], (err, _out, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
    );
  });
}

test('lines pending when the process exits at once, or throws, are written', async () => {
  const exited = await child("w.write('one\\n'); w.write('two\\n'); process.exit(3);");
  assert.equal(exited.code, 3);
  assert.equal(exited.stderr, 'one\ntwo\n');
  const crashed = await child("w.write('before the crash\\n'); throw new Error('boom');");
  assert.notEqual(crashed.code, 0);
  assert.match(crashed.stderr, /before the crash\n/);
  assert.match(crashed.stderr, /boom/);
});
