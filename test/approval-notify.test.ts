/**
 * The pure parts of quorum and notifications, and the link records in a real SQLite store:
 * config checking, which quorum a request falls under, escaping for each chat target, link
 * expiry and retention.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { APPROVAL_LINK_TTL_MS, escapeDiscord, escapeSlack, mintRequestLink, openRequestLink, parseNotifyTargets } from '../src/core/approval-notify.js';
import { quorumConfigProblem, requiredForCommands, requiredForScopes } from '../src/core/approval-quorum.js';
import { ManualClock, systemRandom } from '../src/core/env.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { removeDir } from './helpers/gateway.js';

describe('quorum configuration and requirements', () => {
  test('bad keys and counts are named; good ones pass', () => {
    assert.equal(quorumConfigProblem({ 'operator.admin': 2, 'node:system.run': 3 }), null);
    assert.match(quorumConfigProblem({ 'operator.root': 2 }) ?? '', /quorum\["operator\.root"\]: not an operator scope/);
    assert.match(quorumConfigProblem({ 'node:': 2 }) ?? '', /quorum\["node:"\]/);
    assert.match(quorumConfigProblem({ 'operator.admin': 1.5 }) ?? '', /whole number from 1 to 9/);
    assert.match(quorumConfigProblem({ 'operator.admin': 10 }) ?? '', /whole number from 1 to 9/);
    assert.match(quorumConfigProblem(['operator.admin']) ?? '', /must be an object/);
  });

  test('a request needs the largest quorum among what it adds, implied scopes included', () => {
    const q = { 'operator.write': 2, 'operator.admin': 3, 'node:system.run': 2 };
    assert.equal(requiredForScopes(q, ['operator.read']), 1);
    assert.equal(requiredForScopes(q, ['operator.write']), 2);
    assert.equal(requiredForScopes(q, ['operator.admin']), 3, 'admin implies write and is listed itself');
    assert.equal(requiredForScopes({ 'operator.write': 2 }, ['operator.admin']), 2, 'admin implies write');
    assert.equal(requiredForScopes(undefined, ['operator.admin']), 1);
    assert.equal(requiredForCommands(q, ['system.which']), 1);
    assert.equal(requiredForCommands(q, ['system.which', 'system.run']), 2);
  });

  test('notify targets must name configured channels; ntfy needs a topic', () => {
    assert.deepEqual(parseNotifyTargets(['a', { channel: 'b', format: 'slack' }], ['a', 'b']), [{ channel: 'a' }, { channel: 'b', format: 'slack' }]);
    assert.match(String(parseNotifyTargets(['c'], ['a'])), /notify\[0\]: "c" is not a channel/);
    assert.match(String(parseNotifyTargets([{ channel: 'a', format: 'ntfy' }], ['a'])), /notify\[0\]\.topic/);
    assert.match(String(parseNotifyTargets([{ channel: 'a', format: 'teams' }], ['a'])), /notify\[0\]\.format/);
    assert.match(String(parseNotifyTargets([{ channel: 'a', extra: 1 }], ['a'])), /notify\[0\]\.extra is not a notify setting/);
  });
});

describe('escaping client strings for chat targets', () => {
  test('Discord: no mention or markdown survives', () => {
    const out = escapeDiscord('@everyone @here <@123> <@&9> <#5> **b** __u__ `c` [l](http://x) > q');
    for (const raw of ['@everyone', '@here', '<@123>', '<@&9>', '<#5>', '**b**', '__u__', '`c`', '[l](']) assert.ok(!out.includes(raw), `${raw} in ${out}`);
  });
  test('Slack: control characters become entities, mentions and formatting break', () => {
    const out = escapeSlack('<!channel> <!here|x> <@U1> @channel *b* _i_ ~s~ a&b');
    for (const raw of ['<!channel>', '<!here', '<@U1>', '@channel', '*b*', '_i_', '~s~']) assert.ok(!out.includes(raw), `${raw} in ${out}`);
    assert.ok(out.includes('a&amp;b'));
  });
  test('both: one line, bounded, control characters replaced', () => {
    const out = escapeDiscord(`line1\nline2\u202E${'x'.repeat(200)}`);
    assert.ok(!out.includes('\n') && !out.includes('\u202E'));
    assert.ok(out.length < 200);
  });
});

describe('notification links in a real store', () => {
  test('a link expires; expired and used links are pruned with the sign-in links', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-links-'));
    const store = new SqliteStore(join(dir, 'clawgate.sqlite'));
    const clock = new ManualClock(1_700_000_000_000);
    const gw = { store, clock, random: systemRandom };
    try {
      const late = await mintRequestLink(gw, 'req-1', 'device');
      const used = await mintRequestLink(gw, 'req-2', 'node');
      assert.deepEqual(await openRequestLink(gw, used.token), { ok: true, requestId: 'req-2', kind: 'node' });
      clock.advance(APPROVAL_LINK_TTL_MS);
      assert.deepEqual(await openRequestLink(gw, late.token), { ok: false, reason: 'has expired' });
      assert.deepEqual(await openRequestLink(gw, used.token), { ok: false, reason: 'was used already' });
      const counts = await store.pruneRetained({
        deliveredBeforeMs: null,
        cronRunsBeforeMs: null,
        signInLinksBeforeMs: clock.now() + 1,
        setupCodesBeforeMs: null,
      });
      assert.equal(counts.signInLinks, 2);
      assert.deepEqual(await openRequestLink(gw, late.token), { ok: false, reason: 'is not valid' });
    } finally {
      await store.close();
      removeDir(dir);
    }
  });
});
