/**
 * Every client string is safe to show (docs/security.md §Client strings): a device cannot forge
 * what `clawgate devices list` shows an approver with terminal escapes, NUL, line breaks or bidi
 * overrides; connect metadata is cleaned (never refused), names set through a method are refused
 * with TEXT_NOT_PRINTABLE, unsafe command names are dropped, and the CLI escapes what it prints.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { cleanText, findUnsafe, isSafeText, printable, printableLines } from '@clawgate/protocol/text';
import { connectGateway, GatewayRequestError, generateIdentity } from '../../src/client/connection.js';
import { ownerCall } from '../helpers/client.js';
import { cli, cliJson, expectRefused, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { connectAsNode, RawClient } from '../helpers/raw.js';

/** Hand-written nasty strings: each must be caught (fast-check is not a dependency). */
const NASTY: Array<[string, string]> = [
  ['CSI conceal', 'phone\x1b[8m hidden'],
  ['OSC title with BEL', 'x\x1b]0;owned\x07y'],
  ['OSC 8 hyperlink', '\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\'],
  ['NUL', 'a\x00b'],
  ['newline forging a line', 'laptop\nscopes: operator.read'],
  ['carriage return', 'laptop\rscopes: operator.read'],
  ['tab', 'a\tb'],
  ['DEL', 'a\x7fb'],
  ['C1 CSI', 'a\x9b8mb'],
  ['C1 NEL', 'a\x85b'],
  ['RLO override', 'invoice\u202Egpj.exe'],
  ['LRO', 'a\u202Db'],
  ['RLE/PDF', '\u202Bx\u202C'],
  ['isolates', '\u2066a\u2069\u2067b\u2068'],
  ['LRM/RLM', 'a\u200Eb\u200F'],
  ['Arabic letter mark', 'a\u061Cb'],
  ['zero width space', 'ad\u200Bmin'],
  ['word joiner', 'a\u2060b'],
  ['BOM', '\uFEFFadmin'],
  ['soft hyphen', 'ad\u00ADmin'],
  ['line separator', 'a\u2028b'],
  ['paragraph separator', 'a\u2029b'],
  ['tag characters (ASCII smuggling)', 'ok\u{E0061}\u{E0064}\u{E006D}'],
  ['lone surrogate', 'a\uD800b'],
  ['Hangul filler', '\u3164'],
];

/** Strings people really use: never touched. */
const FINE = ['Pixel 8', 'Zoë’s MacBook', 'محمد', 'עברית', '日本語の端末', 'नमस्ते', 'می‌خواهم', '👨‍👩‍👧 family', '❤️', 'e\u0301'];

/** Nothing in `s` a terminal or a bidi algorithm would act on. */
function assertInert(s: string, what: string): void {
  assert.equal(findUnsafe(s), null, `${what} holds ${JSON.stringify(findUnsafe(s))}: ${JSON.stringify(s)}`);
}

describe('protocol/text: the one definition of unsafe', () => {
  test('every nasty string is caught, cleaned and escaped; ordinary names in any script are untouched', () => {
    for (const [name, s] of NASTY) {
      assert.notEqual(findUnsafe(s), null, name);
      assert.equal(isSafeText(s), false, name);
      assertInert(cleanText(s), `cleanText(${name})`);
      assert.ok(cleanText(s).includes('\uFFFD'), `${name}: replaced visibly, not silently dropped`);
      const shown = printable(s);
      assert.match(shown, /^[\x20-\x7e\u00a0-\u{10ffff}]*$/u, `${name}: printable output has no control`);
      assertInert(shown, `printable(${name})`);
      // The escape is JSON's, so escaping a JSON line keeps its value.
      assert.equal(JSON.parse(printable(JSON.stringify(s))), s, `${name}: escaped JSON still parses to the same value`);
    }
    for (const s of FINE) {
      assert.equal(findUnsafe(s), null, s);
      assert.equal(cleanText(s), s);
      assert.equal(printable(s), s);
    }
    assert.equal(printableLines('a\x1bb\nc\u202Ed'), 'a\\u001Bb\nc\\u202Ed', 'the CLI keeps its own line breaks, escapes the rest');
    assert.deepEqual(findUnsafe('ok\u202Eevil'), { index: 2, codePoint: 'U+202E', kind: 'a bidirectional control character' });
  });
});

describe('a device cannot forge what an approver reads', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'] } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  const FORGED_NAME = 'laptop\x1b[8m\x1b]0;pwned\x07\x00\u202E\nscopes: operator.read  code 0000-0000  from 10.0.0.1';

  test('connect metadata with escapes, NUL and bidi is stored cleaned; `clawgate devices list` shows the real scopes and code', async () => {
    const id = generateIdentity();
    await expectRefused(
      connectGateway({
        url: tg.url,
        identity: id,
        headers: { 'x-forwarded-for': '198.51.100.40' },
        client: { id: 'test', mode: 'test', displayName: FORGED_NAME, platform: 'linux\x1b[2J', deviceFamily: 'Phone\u2066x' },
        auth: { token: TEST_TOKEN },
        scopes: ['operator.admin'],
      }),
      'PAIRING_REQUIRED',
    );

    // The stored request holds the cleaned name: visible replacement characters, nothing that acts.
    const [request] = await tg.store.listPairingRequests(id.deviceId);
    assert.ok(request, 'a pending request was filed');
    for (const [k, v] of Object.entries(request.meta)) if (typeof v === 'string') assertInert(v, `stored meta.${k}`);
    assert.ok(request.meta.displayName?.startsWith('laptop\uFFFD[8m'), String(request.meta.displayName));
    assert.equal(request.meta.platform, 'linux\uFFFD[2J');

    const list = await cliJson<{ pending: Array<{ requestId: string; deviceId: string; confirmationCode: string; scopes: string[] }> }>(
      tg,
      'devices',
      'list',
      '--json',
    );
    const pending = list.pending.find((p) => p.deviceId === id.deviceId);
    assert.ok(pending);
    assert.deepEqual(pending.scopes, ['operator.admin', 'operator.read', 'operator.write']);

    const human = await cli(tg, 'devices', 'list');
    assert.equal(human.code, 0, human.stderr);
    assertInert(human.stdout.replace(/\n/g, ''), 'devices list output');
    const lines = human.stdout.split('\n');
    const row = lines.filter((l) => l.includes(pending.requestId));
    assert.equal(row.length, 1, `one line for the request:\n${human.stdout}`);
    assert.match(row[0] as string, /scopes operator\.admin, operator\.read, operator\.write/);
    assert.ok(row[0]?.includes(`code ${pending.confirmationCode}`), 'the real confirmation code is on the request line');
    assert.ok(row[0]?.includes('from 198.51.100.40'), 'the real address is on the request line');
    assert.equal(
      lines.some((l) => /^\s*scopes: operator\.read/.test(l)),
      false,
      'the forged "scopes:" text does not start a line of its own',
    );
  });

  test('an operator rename with control characters is refused with TEXT_NOT_PRINTABLE naming the field; the label is unchanged', async () => {
    const id = generateIdentity();
    const op = await connectGateway({ url: tg.url, identity: id, client: { id: 'test', mode: 'test', displayName: 'plain' }, auth: { token: TEST_TOKEN } });
    await op.close();

    const viaCli = await cli(tg, 'devices', 'rename', id.deviceId, 'mine\x1b[8m');
    assert.equal(viaCli.code, 1);
    assert.match(viaCli.stderr, /\[TEXT_NOT_PRINTABLE\]/);
    assert.match(viaCli.stderr, /label contains a control character \(U\+001B\)/);
    assertInert(viaCli.stderr.replace(/\n/g, ''), 'the refusal printed by the CLI');

    for (const [name, s] of NASTY) {
      try {
        await ownerCall(tg, 'device.pair.rename', { deviceId: id.deviceId, label: `x${s}x` });
        assert.fail(`${name}: rename accepted`);
      } catch (err) {
        assert.ok(err instanceof GatewayRequestError, String(err));
        assert.equal(err.error.code, 'INVALID_REQUEST', name);
        assert.equal(err.error.details?.code, 'TEXT_NOT_PRINTABLE', name);
        assert.equal(err.error.details?.field, 'label', name);
        assert.equal(err.error.details?.method, 'device.pair.rename', name);
      }
    }
    assert.equal((await tg.store.getDevice(id.deviceId))?.label, undefined, 'no refused rename was stored');
    await ownerCall(tg, 'device.pair.rename', { deviceId: id.deviceId, label: 'Zoë’s 👨‍👩‍👧 محمد' });
    assert.equal((await tg.store.getDevice(id.deviceId))?.label, 'Zoë’s 👨‍👩‍👧 محمد', 'ordinary names in any script are kept as typed');
  });

  test('second line of defence: a name stored before this check (written straight to the store) is printed escaped', async () => {
    const id = generateIdentity();
    const op = await connectGateway({ url: tg.url, identity: id, client: { id: 'test', mode: 'test', displayName: 'old' }, auth: { token: TEST_TOKEN } });
    await op.close();
    const legacy = 'legacy\x1b[8m\u202E\nscopes: none';
    assert.equal(await tg.store.renameDevice(id.deviceId, legacy, { atMs: 1, actor: 'test', action: 'device.renamed', subject: id.deviceId }), true);
    for (const args of [['devices', 'list'], ['devices', 'list', '--json'], ['audit'], ['call', 'device.pair.list']]) {
      const r = await cli(tg, ...args);
      assert.equal(r.code, 0, r.stderr);
      assertInert(r.stdout.replace(/\n/g, ''), `clawgate ${args.join(' ')} output`);
    }
    const r = await cli(tg, 'devices', 'list');
    const row = r.stdout.split('\n').find((l) => l.includes(id.deviceId));
    assert.ok(row?.includes('legacy\\u001B[8m\\u202E\\u000Ascopes: none'), `escaped in place, on the device's own line: ${row}`);
  });

  test('other names set through methods are refused too: setup-code label, session label, cron job name', async () => {
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['device.pair.setupCode', { label: 'lab\u202Eel' }, 'label'],
      ['sessions.create', { label: 'a\x1b[31mb' }, 'label'],
      ['cron.add', { name: 'job\nother', schedule: { kind: 'every', everyMs: 60_000 }, action: { kind: 'chat', sessionKey: 'k', text: 't' } }, 'name'],
      ['channels.add', { type: 'webhook', name: 'hook', url: 'https://example.com/h', username: 'bot\u200B' }, 'username'],
    ];
    for (const [method, params, field] of cases) {
      try {
        await ownerCall(tg, method, params);
        assert.fail(`${method} accepted an unsafe ${field}`);
      } catch (err) {
        assert.ok(err instanceof GatewayRequestError, String(err));
        assert.equal(err.error.details?.code, 'TEXT_NOT_PRINTABLE', `${method}: ${err.error.message}`);
        assert.equal(err.error.details?.field, field, method);
      }
    }
  });

  test('a node declaring command and cap names with controls: those names are dropped, the node is admitted, the rest is listed', async () => {
    const id = generateIdentity();
    const node = await RawClient.open(tg.url);
    try {
      const res = await connectAsNode(node, id, {
        auth: { token: TEST_TOKEN },
        name: 'node\x1b[8m\u202E',
        caps: ['system', 'cap\x1b'],
        commands: ['system.run', 'system.which\x1b[8m', 'canvas\u202Epresent', 'evil\n  approving needs: nothing'],
      });
      assert.equal(res?.ok, true, JSON.stringify(res?.error));
      const list = await ownerCall<{ pending: Array<{ nodeId: string; commands: string[]; displayName: string | null }> }>(tg, 'node.pair.list', {});
      const p = list.pending.find((x) => x.nodeId === id.deviceId);
      assert.ok(p, 'the surface request is listed');
      assert.deepEqual(p.commands, ['system.run']);
      assertInert(p.displayName ?? '', 'node display name');
      const stored = await tg.store.listNodeSurfaceRequests();
      const mine = stored.find((r) => r.deviceId === id.deviceId);
      assert.deepEqual(mine?.commands, ['system.run']);
      assert.deepEqual(mine?.caps, ['system']);

      const human = await cli(tg, 'nodes', 'pending');
      assert.equal(human.code, 0, human.stderr);
      assertInert(human.stdout.replace(/\n/g, ''), 'nodes pending output');
      assert.equal(/^\s*approving needs: nothing/m.test(human.stdout), false);

      try {
        await ownerCall(tg, 'node.rename', { nodeId: id.deviceId, displayName: 'n\u2067ode' });
        assert.fail('node.rename accepted a bidi isolate');
      } catch (err) {
        assert.ok(err instanceof GatewayRequestError);
        assert.equal(err.error.details?.code, 'TEXT_NOT_PRINTABLE');
        assert.equal(err.error.details?.field, 'displayName');
      }
    } finally {
      await node.close();
    }
  });
});
