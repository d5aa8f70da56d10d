/**
 * Protocol fuzzing, short mode with a fixed seed: generated frames, connect params and method
 * params against a spawned gateway (real socket, real SQLite store). The process must survive,
 * every refusal must be a catalogued code and never INTERNAL_ERROR, and its memory must stay
 * bounded (test/helpers/fuzz.ts; docs/reliability.md). `npm run chaos -- --fuzz 100000` is the long mode.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CATALOGUE } from '@clawgate/protocol/errors';
import fc from 'fast-check';
import { fromSchema, rawFrame, runFuzz } from './helpers/fuzz.js';
import { ownerAuth, removeDir, startTestGateway } from './helpers/gateway.js';
import { plainParams, RawClient } from './helpers/raw.js';
import { WebhookTarget } from './helpers/webhook.js';

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

test('params nested deeper than 64 levels are refused as INVALID_PARAMS, not a thrown exception, and the socket stays usable', async (t) => {
  const tg = await startTestGateway();
  const target = await WebhookTarget.start();
  t.after(async () => {
    await tg.stop();
    await target.close();
    removeDir(tg.stateDir);
  });
  const c = await RawClient.open(tg.url);
  const challenge = (await c.challenge()) as { nonce: string; gateway?: { publicKey: string } };
  assert.equal((await c.request('c1', 'connect', plainParams({ auth: ownerAuth(challenge, tg.url), scopes: ['operator.admin'] })))?.ok, true);
  assert.equal((await c.request('a1', 'channels.add', { type: 'webhook', name: 'deep', url: target.url }))?.ok, true);
  // The fuzzer's find: an embed this deep overflowed JSON.stringify in the store (INTERNAL_ERROR).
  const deep = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;
  for (const n of [200, 5_000, 100_000]) {
    c.send(`{"type":"req","id":"d${n}","method":"send","params":{"channel":"deep","content":"x","embeds":[{"k":${deep(n)}}]}}`);
    const res = await c.response(`d${n}`, 20_000);
    assert.equal(res?.ok, false, `depth ${n}`);
    assert.equal(res?.error?.code, 'INVALID_REQUEST');
    assert.equal(res?.error?.details?.code, 'INVALID_PARAMS', JSON.stringify(res?.error).slice(0, 300));
    assert.match(String(res?.error?.message), /params nest deeper than 64 levels/);
    assert.match(String(res?.error?.details?.path), /^\/embeds\/0\/k\/a\/a/);
  }
  // Within the limit (params → embeds → [0] → k → 58 levels) it is an ordinary send.
  const fine = await c.request('ok', 'send', { channel: 'deep', content: 'x', embeds: [{ k: JSON.parse(deep(58)) }] });
  assert.equal(fine?.ok, true, JSON.stringify(fine?.error));
  assert.equal((await c.request('h', 'health', {}))?.ok, true);
  await target.waitFor(1);
  await c.close();
});
