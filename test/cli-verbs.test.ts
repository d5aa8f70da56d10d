/**
 * The automation CLI verbs the help lists that no other test drives: `sessions create|spawn`,
 * `chat send`, `channels add webhook --username`, `channels deliveries --channel/--status`,
 * `channels remove`, `audit --limit`, `devices rotate --scope`, and `gateway run --password` with
 * `call --password`. Real CLI process, real
 * gateway, real store, a real HTTP listener as the webhook target.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import type { AuditEntry, ChatMessage, ChatSession, Delivery } from '../src/core/store.js';
import { cli, cliJson, removeDir, runClawgate, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';
import { waitFor } from './helpers/wait.js';
import { WebhookTarget } from './helpers/webhook.js';

/** `channels add` takes --url as the webhook's URL, so the gateway goes in --gateway-url (the `cli` helper's --url would replace the webhook URL). */
async function addWebhook(tg: TestGateway, ...args: string[]): Promise<{ channel: { name: string; url: string } }> {
  const r = await runClawgate(['channels', 'add', 'webhook', ...args, '--gateway-url', tg.url, '--json'], {
    CLAWGATE_STATE_DIR: tg.stateDir,
  });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { channel: { name: string; url: string } };
}

test('CLI: sessions create/spawn, chat send, channels --username/deliveries filters/remove, audit --limit', async () => {
  const tg = await startTestGateway();
  const target = await WebhookTarget.start();
  try {
    const created = await cliJson<{ session: ChatSession }>(tg, 'sessions', 'create', 'ops', '--label', 'Ops room', '--json');
    assert.equal(created.session.key, 'ops');
    assert.equal(created.session.label, 'Ops room');
    const spawned = await cliJson<{ session: ChatSession }>(tg, 'sessions', 'spawn', 'ops', 'ops-child', '--json');
    assert.equal(spawned.session.key, 'ops-child');
    assert.equal(spawned.session.parentId, created.session.sessionId);

    const sent = await cliJson<{ message: ChatMessage; duplicate: boolean }>(tg, 'chat', 'send', 'ops-child', 'hello', 'from', 'the', 'cli', '--json');
    assert.equal(sent.duplicate, false);
    assert.equal(sent.message.text, 'hello from the cli', 'the words after the key are the text');
    const history = await cliJson<{ messages: ChatMessage[] }>(tg, 'chat', 'history', 'ops-child', '--json');
    assert.deepEqual(
      history.messages.map((m) => m.text),
      ['hello from the cli'],
    );
    const plainSend = await cli(tg, 'chat', 'send', 'ops-child', 'second');
    assert.equal(plainSend.code, 0, plainSend.stderr);
    assert.match(plainSend.stdout, /sent #\d+ to ops-child/);
    const once = await cliJson<{ message: ChatMessage; duplicate: boolean }>(tg, 'chat', 'send', 'ops-child', 'third', '--idempotency-key', 'k-1', '--json');
    const again = await cliJson<{ message: ChatMessage; duplicate: boolean }>(tg, 'chat', 'send', 'ops-child', 'third', '--idempotency-key', 'k-1', '--json');
    assert.equal(once.duplicate, false);
    assert.equal(again.duplicate, true, 'the same --idempotency-key appends nothing');
    assert.equal(again.message.seq, once.message.seq);
    const older = await cliJson<{ messages: ChatMessage[] }>(
      tg,
      'chat',
      'history',
      'ops-child',
      '--before',
      String(once.message.seq),
      '--limit',
      '1',
      '--json',
    );
    assert.deepEqual(
      older.messages.map((m) => m.text),
      ['second'],
      '--before pages back, --limit keeps the newest of that page',
    );

    assert.equal((await addWebhook(tg, '--name', 'alerts', '--url', target.url, '--username', 'alert-bot')).channel.url, target.url);
    assert.equal((await addWebhook(tg, '--name', 'other', '--url', target.url)).channel.url, target.url);
    await cliJson(tg, 'call', 'send', '--params', '{"channel":"alerts","content":"disk full"}', '--json');
    await target.waitFor(1);
    assert.deepEqual(target.received[0]?.body, { content: 'disk full', username: 'alert-bot' });

    // Wait in the store (no CLI process per probe), then list through the CLI once.
    await waitFor(
      async () => (await tg.store.listDeliveries({ status: 'delivered' })).some((d) => d.channelName === 'alerts'),
      'a delivered delivery on channel alerts',
      { timeoutMs: 10_000 },
    );
    const delivered = (await cliJson<{ deliveries: Delivery[] }>(tg, 'channels', 'deliveries', '--channel', 'alerts', '--status', 'delivered', '--json'))
      .deliveries;
    assert.deepEqual(
      delivered.map((d) => [d.channelName, d.status]),
      [['alerts', 'delivered']],
    );
    const otherChannel = await cliJson<{ deliveries: Delivery[] }>(tg, 'channels', 'deliveries', '--channel', 'other', '--json');
    assert.deepEqual(otherChannel.deliveries, [], '--channel filters out the other channel');
    const pendingOnly = await cliJson<{ deliveries: Delivery[] }>(tg, 'channels', 'deliveries', '--status', 'pending', '--json');
    assert.deepEqual(pendingOnly.deliveries, [], '--status filters out the delivered one');

    await cliJson(tg, 'channels', 'remove', 'other', '--json');
    const channels = await cliJson<{ channels: Array<{ name: string }> }>(tg, 'channels', 'list', '--json');
    assert.deepEqual(
      channels.channels.map((c) => c.name),
      ['alerts'],
    );

    const all = await cliJson<{ entries: AuditEntry[] }>(tg, 'audit', '--json');
    assert.ok(all.entries.length > 3, 'the steps above were audited');
    const lastTwo = await cliJson<{ entries: AuditEntry[] }>(tg, 'audit', '--limit', '2', '--json');
    assert.deepEqual(
      lastTwo.entries.map((e) => e.seq),
      all.entries.slice(-2).map((e) => e.seq),
      '--limit keeps the newest entries',
    );
    for (const [args, message] of [
      [['audit', '--limit', '0', '--json'], /--limit must be a positive whole number, got 0/],
      [['audit', '--limit', 'ten', '--json'], /--limit must be a positive whole number, got ten/],
      [['call', 'health', '--timeout', 'soon'], /--timeout must be a positive whole number, got soon/],
      [['call', 'health', '--params', '{'], /--params is not valid JSON/],
    ] as const) {
      const bad = await cli(tg, ...args);
      assert.equal(bad.code, 2, `clawgate ${args.join(' ')} is a usage error`);
      assert.match(bad.stderr, message);
    }
  } finally {
    await target.close();
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('CLI: every `channels` subcommand reaches the gateway named by --gateway-url (a state dir that knows no gateway)', async () => {
  const tg = await startTestGateway();
  const target = await WebhookTarget.start();
  const elsewhere = mkdtempSync(join(tmpdir(), 'clawgate-cli-'));
  try {
    await addWebhook(tg, '--name', 'alerts', '--url', target.url);
    // Channels are admin work: the owner credential (from the environment, proven to the gateway
    // key named on the command line, never sent), since this state dir knows no gateway.
    const env = { CLAWGATE_STATE_DIR: elsewhere, CLAWGATE_TOKEN: TEST_OWNER };
    const via = ['--gateway-url', tg.url, '--gateway-key', tg.gatewayKey];
    const listed = await runClawgate(['channels', 'list', ...via, '--json'], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.ok((JSON.parse(listed.stdout) as { channels: Array<{ name: string }> }).channels.some((c) => c.name === 'alerts'));
    const deliveries = await runClawgate(['channels', 'deliveries', ...via, '--json'], env);
    assert.equal(deliveries.code, 0, deliveries.stderr);
    const removed = await runClawgate(['channels', 'remove', 'alerts', ...via, '--json'], env);
    assert.equal(removed.code, 0, removed.stderr);
    const after = await cliJson<{ channels: Array<{ name: string }> }>(tg, 'channels', 'list', '--json');
    assert.ok(!after.channels.some((c) => c.name === 'alerts'));
  } finally {
    await target.close();
    await tg.stop();
    removeDir(tg.stateDir);
    removeDir(elsewhere);
  }
});

test('CLI: help names the flag that points `channels add` at a gateway', async () => {
  const help = await promisify(execFile)(process.execPath, [join(process.cwd(), 'bin', 'clawgate.js'), 'help']);
  assert.match(help.stdout, /channels add webhook --name <n> --url <webhook-url> .*--gateway-url <ws-url>/);
  assert.match(help.stdout, /clawgate channels remove <name>/);
});

test('CLI: devices rotate --scope narrows the operator token to the scopes given', async () => {
  const tg = await startTestGateway();
  try {
    const identity = generateIdentity();
    const device = await connectGateway({
      url: tg.url,
      identity,
      auth: { token: TEST_TOKEN },
      client: { id: 'test', mode: 'test' },
      scopes: ['operator.read', 'operator.write'],
    });
    await device.close();
    const res = await cliJson<{ scopes: string[] }>(
      tg,
      'devices',
      'rotate',
      '--device',
      identity.deviceId,
      '--role',
      'operator',
      '--scope',
      'operator.read',
      '--json',
    );
    assert.deepEqual(res.scopes, ['operator.read']);
  } finally {
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('CLI: `gateway run --password` admits `call --password` with that password and refuses another', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-pw-'));
  const clientDir = mkdtempSync(join(tmpdir(), 'clawgate-pw-client-'));
  const bin = join(process.cwd(), 'bin', 'clawgate.js');
  let gw: Pick<GatewayProcess, 'kill'> | undefined;
  try {
    const started = await spawnGateway(['--password', 'correct horse'], { env: { CLAWGATE_STATE_DIR: stateDir }, onSpawn: (p) => (gw = p) });
    const url = started.url;
    const call = (password: string) =>
      promisify(execFile)(process.execPath, [bin, 'call', 'health', '--url', url, '--password', password, '--json'], {
        env: { ...process.env, CLAWGATE_STATE_DIR: clientDir },
      }).then(
        (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
      );
    const ok = await call('correct horse');
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(typeof JSON.parse(ok.stdout), 'object');
    const wrong = await call('battery staple');
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /AUTH_PASSWORD_MISMATCH/);
    assert.equal(await started.stop(), 0);
  } finally {
    await gw?.kill();
    removeDir(stateDir);
    removeDir(clientDir);
  }
});

test('CLI: `gateway install-service --print --user` runs the unit as that user', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-unit-'));
  try {
    const r = await promisify(execFile)(
      process.execPath,
      [join(process.cwd(), 'bin', 'clawgate.js'), 'gateway', 'install-service', '--print', '--user', 'clawgate-svc'],
      {
        env: { ...process.env, CLAWGATE_STATE_DIR: stateDir },
      },
    );
    assert.match(r.stdout, /^User=clawgate-svc$/m);
    assert.equal(r.stdout.match(/^User=/gm)?.length, 1, 'one User= line');
  } finally {
    removeDir(stateDir);
  }
});

test('CLI: `pair` and `status --client` refuse a --timeout that is not a positive whole number before touching any state', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-timeout-'));
  try {
    for (const args of [
      ['status', '--client', '--timeout', 'x'],
      ['pair', 'not-a-code', '--timeout', '0'],
    ]) {
      const r = await promisify(execFile)(process.execPath, [join(process.cwd(), 'bin', 'clawgate.js'), ...args], {
        env: { ...process.env, CLAWGATE_STATE_DIR: stateDir },
      }).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
      );
      assert.equal(r.code, 2, `clawgate ${args.join(' ')}`);
      assert.match(r.stderr, /--timeout must be a positive whole number/);
    }
  } finally {
    removeDir(stateDir);
  }
});
