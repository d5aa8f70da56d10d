/**
 * The log ring's fast paths (a line with flat fields is serialized without a copy; a line no
 * secret format can match skips the expression) must keep exactly what the plain, slow way
 * would: the same JSON and the same redactions, for any text.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../src/core/env.js';
import { LogRing, scrubSecrets } from '../src/core/log-ring.js';

// Written out again here (not imported): the reference the fast path is held to.
const FORMATS = new RegExp(
  [
    'cg[dbla]1_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}',
    'cg[so]_[A-Za-z0-9_-]{16,}',
    '[oO][cC]-[pP][aA][iI][rR]:\\/\\/[A-Za-z0-9_-]+',
    '\\/j\\/[A-Za-z0-9_-]{22}\\b',
    '[A-Za-z0-9_-]{80,}',
  ]
    .map((s) => `(?:${s})`)
    .join('|'),
  'g',
);
const slowScrub = (text: string) => text.replace(FORMATS, '[redacted]');

/** Text made of the pieces secrets are made of, so the formats really occur in it. */
const pieces = fc.constantFrom(
  'cg',
  'cgd1_',
  'cgs_',
  'cgo_',
  'cgl1_',
  '0123456789abcdef',
  '_',
  '-',
  'oc-pair://',
  'OC-Pair://',
  'oc-pair',
  ':',
  '/j/',
  '/',
  ' ',
  '"',
  'x',
  'Z9',
  'A'.repeat(21),
  'b'.repeat(40),
  'é',
);
const secretish = fc.array(pieces, { maxLength: 40 }).map((a) => a.join(''));

test('scrubbing with the pre-check redacts exactly what the formats alone redact', () => {
  fc.assert(
    fc.property(secretish, (text) => {
      assert.equal(scrubSecrets(text, []), slowScrub(text));
    }),
    { numRuns: 5000 },
  );
  // Runs exactly at and just under the 80-character threshold, alone and inside a line.
  for (const n of [79, 80, 81]) {
    const run = 'a'.repeat(n);
    assert.equal(scrubSecrets(run, []), slowScrub(run));
    assert.equal(scrubSecrets(`{"x":"${run}"}`, []), slowScrub(`{"x":"${run}"}`));
  }
});

test('a line with flat fields is written exactly as the general path writes it', () => {
  const header = fc.record({ level: fc.constantFrom('info' as const, 'warn' as const, 'error' as const), msg: fc.string({ maxLength: 30 }) });
  const value = fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean(), fc.constant(null), fc.constant(undefined));
  const fields = fc.dictionary(fc.constantFrom('connId', 'role', 'deviceId', 'address', 'code', 'n', 'x y', '"q"', 'time', 'message'), value, { maxKeys: 6 });
  fc.assert(
    fc.property(header, fields, ({ level, msg }, f) => {
      const ring = new LogRing(new ManualClock(1_700_000_000_000), () => []);
      ring.append(level, msg, f);
      const line = ring.tail({}).lines[0];
      const expected = slowScrub(JSON.stringify({ time: new Date(1_700_000_000_000).toISOString(), level, subsystem: 'gateway', message: msg, ...f }));
      assert.equal(line, expected);
    }),
    { numRuns: 2000 },
  );
});

test('the ring keeps the newest lines that fit, as written, across the end of its buffer and in any alphabet', () => {
  const piece = fc.constantFrom('é', 'ü', '日本', '😀', ' ', 'a', 'bc', '\n', '"', 'xy '.repeat(10));
  const message = fc.array(piece, { maxLength: 12 }).map((a) => a.join(''));
  fc.assert(
    fc.property(fc.array(message, { minLength: 1, maxLength: 60 }), fc.integer({ min: 100, max: 600 }), (messages, capacity) => {
      const ring = new LogRing(new ManualClock(0), () => [], capacity);
      const written: string[] = [];
      for (const m of messages) {
        ring.append('info', m);
        written.push(JSON.stringify({ time: new Date(0).toISOString(), level: 'info', subsystem: 'gateway', message: m }));
      }
      // The model: the newest lines whose sizes (bytes + newline) add up to the capacity; a
      // line larger than the capacity is kept alone while it is the newest.
      const kept: string[] = [];
      let held = 0;
      for (let i = written.length - 1; i >= 0; i--) {
        const size = Buffer.byteLength(written[i] as string) + 1;
        if (kept.length > 0 && held + size > capacity) break;
        kept.unshift(written[i] as string);
        held += size;
        if (size > capacity) break;
      }
      const tail = ring.tail({ limit: 5000, maxBytes: 1_000_000 });
      assert.deepEqual(tail.lines, kept);
      assert.equal(
        tail.size,
        written.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0),
      );
    }),
    { numRuns: 1500 },
  );
});
