/**
 * Protocol fuzzing, short mode with a fixed seed: generated frames, connect params and method
 * params against a spawned gateway (real socket, real SQLite store). The process must survive,
 * every refusal must be a catalogued code and never INTERNAL_ERROR, and its memory must stay
 * bounded (test/helpers/fuzz.ts; docs/reliability.md). `npm run chaos -- --fuzz 100000` is the long mode.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CATALOGUE } from '../src/protocol/errors.js';
import { fromSchema, rawFrame, runFuzz } from './helpers/fuzz.js';

const SEED = 20_261_206;

test('fuzzed frames, connects and method calls: the gateway never dies, answers only catalogued codes, keeps its memory bounded', async () => {
  const report = await runFuzz({ seed: SEED, frames: 400 });
  assert.deepEqual(report.failures, [], `seed ${SEED}:\n${report.failures.join('\n')}`);
  assert.equal(report.cases, 400);
  // The generators reach past validation into handlers (else the run proves little).
  assert.ok((report.answers.ok ?? 0) > 10, JSON.stringify(report.answers));
  for (const code of ['INVALID_PARAMS', 'UNKNOWN_METHOD', 'INVALID_CONNECT_PARAMS']) {
    assert.ok((report.answers[code] ?? 0) > 0, `no ${code}: ${JSON.stringify(report.answers)}`);
  }
  for (const code of Object.keys(report.answers)) {
    if (code !== 'ok' && code !== 'no-answer') assert.ok(code in CATALOGUE, `${code} is catalogued`);
  }
  assert.ok(report.rss.baselineBytes > 0 && report.rss.finalBytes <= report.rss.boundBytes, JSON.stringify(report.rss));
});

test('the generators are deterministic for a seed and produce the hostile shapes they promise', () => {
  const a = fc.sample(rawFrame, { seed: SEED, numRuns: 300 });
  const b = fc.sample(rawFrame, { seed: SEED, numRuns: 300 });
  assert.deepEqual(a, b);
  const text = a.filter((f): f is string => typeof f === 'string');
  assert.ok(
    text.some((f) => f.length > 65_536),
    'a frame over the pre-auth cap',
  );
  assert.ok(
    text.some((f) => f.startsWith('[[[[[[[[[[') || f.startsWith('{"a":{"a":')),
    'a deeply nested frame',
  );
  assert.ok(
    a.some((f) => Buffer.isBuffer(f)),
    'a binary frame',
  );
  assert.ok(
    text.some((f) => {
      try {
        JSON.parse(f);
        return false;
      } catch {
        return true;
      }
    }),
    'malformed JSON',
  );
  const params = fc.sample(fromSchema({ type: 'object', properties: { n: { type: 'integer', minimum: 1, maximum: 5 } }, required: ['n'] }), {
    seed: SEED,
    numRuns: 200,
  });
  assert.ok(params.some((p) => typeof p === 'object' && p !== null && Number.isInteger((p as { n?: unknown }).n)));
  assert.ok(params.some((p) => typeof p !== 'object' || p === null || !Number.isInteger((p as { n?: unknown }).n)));
});
