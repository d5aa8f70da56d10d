/**
 * The gateway's stderr log lines: built member by member (no merged copy of the fields, one ISO
 * timestamp per millisecond), they are exactly the JSON of `{ ts, level, msg, ...fields }`.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { jsonLogger, jsonLogLine } from '../src/cli/json-logger.js';
import { isoClock } from '../src/core/json-line.js';
import { waitFor } from './helpers/wait.js';

const merged = (ts: string, level: string, msg: string, fields?: Record<string, unknown>) => `${JSON.stringify({ ts, level, msg, ...fields })}\n`;

test('a line is the JSON of ts, level, msg and the fields merged, whatever the fields hold', () => {
  const ts = '2026-12-07T06:50:46.123Z';
  const cases: Array<[string, Record<string, unknown> | undefined]> = [
    ['session opened', undefined],
    ['session opened', {}],
    ['only undefined', { a: undefined }],
    ['flat', { connId: 'c1', role: 'operator', deviceId: 'ab'.repeat(32), address: '127.0.0.1', n: 3, ok: true, none: null, gone: undefined }],
    ['nested "quoted" \\ msg\n with \u2028 and é', { err: 'line\n"two"', scopes: ['operator.read'], data: { a: [1, { b: 'c' }] } }],
    // A field named like the line's own members replaces it, as in an object spread.
    ['overridden', { msg: 'from the fields', level: 'debug', ts: 'then' }],
    ['one own member', { level: 'warn', x: 1 }],
    // A fields object that serializes as something else than an object.
    ['toJSON', { x: 1, toJSON: () => 'not an object' }],
  ];
  for (const [msg, fields] of cases) {
    const line = jsonLogLine(ts, 'info', msg, fields);
    assert.equal(line, merged(ts, 'info', msg, fields), msg);
    assert.deepEqual(JSON.parse(line), JSON.parse(merged(ts, 'info', msg, fields)), msg);
  }
});

test('the timestamp is the clock in ISO 8601, following it across milliseconds', () => {
  let nowMs = Date.UTC(2026, 11, 7, 6, 50, 46, 123);
  const iso = isoClock(() => nowMs);
  assert.equal(iso(), '2026-12-07T06:50:46.123Z');
  assert.equal(iso(), '2026-12-07T06:50:46.123Z');
  nowMs += 1;
  assert.equal(iso(), '2026-12-07T06:50:46.124Z');
  nowMs += 86_400_000;
  assert.equal(iso(), '2026-12-08T06:50:46.124Z');
});

test('the logger writes one line per call with its level, in order, through the line writer', async () => {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  const nowMs = Date.UTC(2026, 11, 7, 6, 50, 46, 123);
  const log = jsonLogger(sink, () => nowMs);
  log.info('session opened', { connId: 'c1' });
  log.warn('socket error', { err: 'boom' });
  log.error('connect crashed');
  await waitFor(() => chunks.join('').split('\n').length === 4, 'three lines');
  const ts = '2026-12-07T06:50:46.123Z';
  assert.equal(
    chunks.join(''),
    merged(ts, 'info', 'session opened', { connId: 'c1' }) + merged(ts, 'warn', 'socket error', { err: 'boom' }) + merged(ts, 'error', 'connect crashed'),
  );
});
