/**
 * Automations as a user and an attacker see them: real gateway, real socket, real store, real
 * CLI process, a real local HTTP listener as the webhook target.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectGateway, GatewayRequestError, generateIdentity } from '../src/client/connection.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import type { ChatMessage, ChatSession, CronJob, CronRun, Delivery } from '../src/store/types.js';
import { asOwner, cli, cliJson, removeDir, runClawgate, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';
import { connectAsNode, deviceParams, plainParams, RawClient, rawConnect } from './helpers/raw.js';
import { waitFor } from './helpers/wait.js';
import { WebhookTarget } from './helpers/webhook.js';

async function waitUntil(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(cond, what, { timeoutMs });
}

/** A new device paired silently on loopback with the shared token, holding `scopes`. */
const pairedDevice = (tg: TestGateway, scopes: string[]) =>
  connectGateway({ url: tg.url, identity: generateIdentity(), auth: { token: TEST_TOKEN }, client: { id: 'test', mode: 'test' }, scopes });
const owner = (tg: TestGateway) => connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });

/** The CLI with no flags at all: state dir from the environment, owner credential from it. */
const localCli = (stateDir: string, ...args: string[]) => runClawgate(args, { CLAWGATE_STATE_DIR: stateDir });

/** localCli with `--json`, parsed; a failed command fails the test with its exit code and stderr. */
async function localCliJson<T>(stateDir: string, ...args: string[]): Promise<T> {
  const r = await localCli(stateDir, ...args);
  assert.equal(r.code, 0, `clawgate ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/**
 * `gateway run` on a state dir, configured only by the environment (port 0: the CLI finds the
 * gateway through the runtime file it writes). Recorded in `procs` so the test's `finally`
 * kills it even when an assertion failed first.
 */
function startProcess(stateDir: string, procs: Killable[]): Promise<GatewayProcess> {
  return spawnGateway([], { env: { CLAWGATE_STATE_DIR: stateDir, CLAWGATE_PORT: '0' }, onSpawn: (p) => procs.push(p) });
}

type Killable = Pick<GatewayProcess, 'kill'>;
const killAll = (procs: Killable[]) => Promise.all(procs.map((p) => p.kill()));

test('fresh install, zero config: `clawgate cron add` every 1s sends to a webhook channel; the listener receives it, before and after a restart, with no pairing or approval', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-auto-'));
  const target = await WebhookTarget.start();
  const procs: Killable[] = [];
  try {
    let gw = await startProcess(stateDir, procs);

    const add = await localCli(stateDir, 'channels', 'add', 'webhook', '--name', 'alerts', '--url', target.url, '--json');
    assert.equal(add.code, 0, add.stderr);
    const job = await localCli(stateDir, 'cron', 'add', '--name', 'heartbeat', '--every', '1s', '--send', 'alerts', '--content', 'still alive', '--json');
    assert.equal(job.code, 0, job.stderr);
    const jobId = (JSON.parse(job.stdout) as { job: CronJob }).job.jobId;

    await target.waitFor(2);
    for (const r of target.received) {
      assert.deepEqual(r.body, { content: 'still alive' });
      assert.equal(r.headers['content-type'], 'application/json');
      assert.ok(r.headers['idempotency-key'], 'every delivery carries an idempotency key');
    }
    assert.equal(new Set(target.received.map((r) => r.headers['idempotency-key'])).size, target.received.length, 'one key per delivery');

    const runs = await localCliJson<{ runs: CronRun[] }>(stateDir, 'cron', 'runs', 'heartbeat', '--json');
    assert.ok(runs.runs.length >= 2);
    assert.ok(
      runs.runs.every((r) => r.status === 'ok'),
      JSON.stringify(runs.runs),
    );
    // Attributable: the sends were made by the internal cron principal.
    const audit = await localCliJson<{ entries: Array<{ actor: string; action: string }> }>(stateDir, 'audit', '--json');
    const sends = audit.entries.filter((e) => e.action === 'channel.send');
    assert.ok(sends.length >= 2 && sends.every((e) => e.actor === 'internal:cron'), JSON.stringify(sends));
    assert.ok(audit.entries.some((e) => e.action === 'cron.added' && e.actor === 'owner'));
    // No pairing prompt, nothing pending, no error.
    const devices = await localCliJson<{ pending: unknown[] }>(stateDir, 'devices', 'list', '--json');
    assert.deepEqual(devices.pending, []);
    assert.doesNotMatch(gw.err(), /pairing required|"level":"error"/i);
    assert.match(gw.err(), /"principal":"internal:cron"/);

    assert.equal(await gw.stop(), 0);
    const before = target.received.length;

    gw = await startProcess(stateDir, procs);
    await target.waitFor(before + 2);
    const list = await localCliJson<{ jobs: CronJob[] }>(stateDir, 'cron', 'list', '--json');
    assert.deepEqual(
      list.jobs.map((j) => j.jobId),
      [jobId],
    );
    const deliveries = await localCliJson<{ deliveries: Delivery[] }>(stateDir, 'channels', 'deliveries', '--json');
    assert.ok(deliveries.deliveries.length >= before + 2);
    const removed = await localCli(stateDir, 'cron', 'remove', 'heartbeat', '--json');
    assert.equal(removed.code, 0, removed.stderr);
    assert.doesNotMatch(gw.err(), /pairing required|"level":"error"/i);
    assert.equal(await gw.stop(), 0);
  } finally {
    await killAll(procs);
    await target.close();
    removeDir(stateDir);
  }
});

test('a cron job that spawns a sub-session and posts into it works the same way, before and after a restart', async () => {
  let tg = await startTestGateway();
  try {
    const add = await cli(
      tg,
      'cron',
      'add',
      '--name',
      'standup',
      '--every',
      '1s',
      '--session',
      'ops',
      '--text',
      'daily status',
      '--spawn',
      '--spawn-label',
      'run',
      '--json',
    );
    assert.equal(add.code, 0, add.stderr);
    const children = async (t: TestGateway): Promise<ChatSession[]> => {
      const r = await cli(t, 'sessions', 'list', '--parent', 'ops', '--json');
      // Before the first run the parent does not exist yet (UNKNOWN_SESSION).
      if (r.code !== 0) {
        assert.match(r.stderr, /UNKNOWN_SESSION/);
        return [];
      }
      return (JSON.parse(r.stdout) as { sessions: ChatSession[] }).sessions;
    };
    // Polled in the store (a CLI process per probe is too slow a poll); the CLI reads the result.
    const spawnedInStore = async (t: TestGateway): Promise<number> => {
      const parent = await t.store.getChatSession('ops');
      return parent ? (await t.store.listChatSessions({ parentId: parent.sessionId })).length : 0;
    };
    await waitUntil(async () => (await spawnedInStore(tg)) >= 2, 'two spawned sessions');
    const first = await children(tg);
    tg = await tg.restart();
    await waitUntil(async () => (await spawnedInStore(tg)) >= first.length + 1, 'a spawn after the restart');

    const all = await children(tg);
    const parent = ((await cliJson(tg, 'sessions', 'list', '--json')) as { sessions: ChatSession[] }).sessions.find((s) => s.key === 'ops');
    assert.ok(parent, 'the parent session was created by the first run');
    assert.equal(parent.createdBy, 'internal:cron');
    for (const child of all) {
      assert.equal(child.parentId, parent.sessionId);
      assert.equal(child.createdBy, 'internal:spawn');
      assert.equal(child.label, 'run');
      const history = (await cliJson(tg, 'chat', 'history', child.key, '--json')) as { messages: ChatMessage[] };
      // A run that was cut by the restart may have spawned without posting yet; finished ones posted once.
      assert.ok(history.messages.length <= 1);
      for (const m of history.messages) {
        assert.equal(m.text, 'daily status');
        assert.equal(m.author, 'internal:cron');
      }
    }
    const runs = (await cliJson(tg, 'cron', 'runs', 'standup', '--json')) as { runs: CronRun[] };
    const ok = runs.runs.filter((r) => r.status === 'ok');
    assert.ok(ok.length >= 3, JSON.stringify(runs.runs));
    for (const r of ok) {
      const h = await cliJson<{ messages: ChatMessage[] }>(tg, 'chat', 'history', String(r.result?.spawnedSessionKey), '--json');
      assert.equal(h.messages.length, 1, `run ${r.runId} posted into its spawned session`);
    }
    // cron.run: a manual run, right now.
    const manual = await cli(tg, 'cron', 'run', 'standup', '--json');
    assert.equal(manual.code, 0, manual.stderr);
    const m = (JSON.parse(manual.stdout) as { run: CronRun }).run;
    assert.equal(m.trigger, 'manual');
    assert.equal(m.status, 'ok');
    const audit = await tg.store.listAudit();
    assert.ok(audit.some((e) => e.action === 'session.spawned' && e.actor === 'internal:spawn'));
    assert.ok(audit.some((e) => e.action === 'chat.sent' && e.actor === 'internal:cron'));
  } finally {
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('a foreign process on the host without the shared secret or owner credential gets no cron mutation, no channel send and never the internal grant, whatever it claims', async () => {
  const tg = await startTestGateway();
  const target = await WebhookTarget.start();
  try {
    const o = await owner(tg);
    await o.request('channels.add', { type: 'webhook', name: 'alerts', url: target.url });
    await o.close();
    const auditBefore = (await tg.store.listAudit()).length;

    const cronAdd = { name: 'evil', schedule: { kind: 'every', everyMs: 1000 }, action: { kind: 'send', channel: 'alerts', content: 'pwned' } };
    // Every client id and mode an internal caller might be imagined to use, with no credential.
    const ids = ['gateway-client', 'cli', 'webchat', 'cron', 'internal', 'clawgate', 'gateway'];
    const modes = ['backend', 'internal', 'cli', 'worker'];
    for (const id of ids) {
      for (const mode of modes) {
        const r = await rawConnect(tg.url, () => plainParams({ client: { id, mode }, scopes: ['operator.admin', 'operator.write'] }));
        assert.equal(r.res?.ok, false, `${id}/${mode} must not be admitted`);
        assert.ok(r.close, `${id}/${mode} is closed`);
      }
    }
    // A signed device with no credential, claiming the backend helper identity.
    const id = generateIdentity();
    for (const client of [
      { id: 'gateway-client', mode: 'backend' },
      { id: 'cli', mode: 'cli' },
    ]) {
      const r = await rawConnect(tg.url, (c) => deviceParams({ identity: id, challenge: c, client, scopes: ['operator.admin'] }));
      assert.equal(r.res?.ok, false);
      assert.equal(r.res?.error?.details?.code, 'AUTH_TOKEN_MISSING');
    }
    // Made-up credentials in every slot.
    for (const auth of [
      { token: 'internal' },
      { token: 'cgo_guess' },
      { password: 'internal' },
      { deviceToken: 'cgd_guess' },
      { bootstrapToken: 'cgb1_x_y' },
    ] as Array<Record<string, string>>) {
      const r = await rawConnect(tg.url, () => plainParams({ auth, client: { id: 'gateway-client', mode: 'backend' }, scopes: ['operator.admin'] }));
      assert.equal(r.res?.ok, false, `auth ${JSON.stringify(auth)} must not be admitted`);
    }
    // Headers: a forwarded loopback address is refused before the WebSocket exists; made-up internal headers change nothing.
    await assert.rejects(RawClient.open(tg.url, { 'x-forwarded-for': '127.0.0.1' }), (err: { statusCode?: number }) => err.statusCode === 403);
    await assert.rejects(RawClient.open(tg.url, { 'x-real-ip': '127.0.0.1' }), (err: { statusCode?: number }) => err.statusCode === 403);
    for (const headers of [
      { 'x-internal': '1' },
      { 'x-clawgate-internal': 'cron' },
      { 'x-openclaw-scopes': 'operator.admin' },
      { 'x-clawgate-principal': 'internal:cron' },
    ] as Array<Record<string, string>>) {
      const client = await RawClient.open(tg.url, headers);
      await client.challenge();
      const res = await client.request('c1', 'connect', plainParams({ client: { id: 'gateway-client', mode: 'backend' }, scopes: ['operator.admin'] }));
      assert.equal(res?.ok, false, `headers ${JSON.stringify(headers)} must not admit`);
      await client.closed;
    }
    // Another loopback name for the same host: same answer.
    const viaLocalhost = await rawConnect(tg.url.replace('127.0.0.1', 'localhost'), () =>
      plainParams({ client: { id: 'gateway-client', mode: 'backend' }, scopes: ['operator.admin'] }),
    );
    assert.equal(viaLocalhost.res?.ok, false);
    // A method call instead of connect, on a fresh socket.
    for (const [method, params] of [
      ['cron.add', cronAdd],
      ['send', { channel: 'alerts', content: 'pwned' }],
      ['cron.run', { jobId: 'x' }],
    ] as const) {
      const client = await RawClient.open(tg.url);
      await client.challenge();
      const res = await client.request('r1', method, params);
      assert.equal(res?.ok, false);
      assert.equal(res?.error?.details?.code, 'HANDSHAKE_NOT_CONNECT');
      await client.closed;
    }

    // A real foreign process: the clawgate CLI run with another user's (empty) state dir, with no credential or a guessed one.
    const foreignHome = mkdtempSync(join(tmpdir(), 'clawgate-foreign-'));
    try {
      const attempt = (...args: string[]) => runClawgate(args, { CLAWGATE_STATE_DIR: foreignHome, CLAWGATE_URL: tg.url, CLAWGATE_TOKEN: '' });
      const noCred = await attempt('cron', 'add', '--name', 'evil', '--every', '1s', '--send', 'alerts', '--content', 'pwned');
      assert.equal(noCred.code, 2, 'refused before any connection: there is no credential to present');
      assert.match(noCred.stderr, /no credential/);
      const guessedToken = await attempt('call', 'send', '--params', '{"channel":"alerts","content":"pwned"}', '--token', 'internal');
      assert.equal(guessedToken.code, 1);
      assert.match(guessedToken.stderr, /AUTH_TOKEN_MISMATCH/);
      const cronToken = await attempt('cron', 'run', 'x', '--token', 'internal');
      assert.equal(cronToken.code, 1);
      assert.match(cronToken.stderr, /AUTH_TOKEN_MISMATCH/);
      // A guessed owner credential is only ever proven, and only to the gateway key the process
      // was told: a wrong guess is a proof that does not verify.
      for (const token of ['cgo_guess', TEST_OWNER.slice(0, -1)]) {
        const keyed = ['--token', token, '--gateway-key', tg.gatewayKey];
        const guessed = await attempt('call', 'send', '--params', '{"channel":"alerts","content":"pwned"}', ...keyed);
        assert.equal(guessed.code, 1);
        assert.match(guessed.stderr, /AUTH_OWNER_PROOF_INVALID/);
        const cron = await attempt('cron', 'run', 'x', ...keyed);
        assert.equal(cron.code, 1);
        assert.match(cron.stderr, /AUTH_OWNER_PROOF_INVALID/);
      }
    } finally {
      removeDir(foreignHome);
    }

    // Nothing happened: no job, no delivery, no request at the target, no audit entry, and no internal actor anywhere.
    assert.deepEqual(await tg.store.listCronJobs(), []);
    assert.deepEqual(await tg.store.listDeliveries(), []);
    assert.equal(target.received.length, 0);
    const audit = await tg.store.listAudit();
    assert.equal(audit.length, auditBefore);
    assert.ok(!audit.some((e) => e.actor.startsWith('internal:')));

    // Even WITH the shared token, the backend helper identity is a shared-token session, never internal.
    const helper = await connectGateway({
      url: tg.url,
      auth: { token: TEST_TOKEN },
      client: { id: 'gateway-client', mode: 'backend' },
      scopes: ['operator.admin'],
    });
    assert.notEqual(helper.hello.auth.method, 'internal');
    // …and the shared token alone is worth read+write: no cron job (admin), but a send it may do is its own.
    assert.deepEqual(helper.hello.auth.scopes, ['operator.read', 'operator.write']);
    const noCron = await helper.request('cron.add', cronAdd).catch((e: unknown) => e);
    assert.ok(noCron instanceof GatewayRequestError);
    assert.equal(noCron.detailCode, 'MISSING_SCOPE');
    assert.deepEqual(await tg.store.listCronJobs(), []);
    await helper.request('send', { channel: 'alerts', content: 'from the helper' });
    const last = (await tg.store.listAudit()).filter((e) => e.action === 'channel.send').at(-1);
    assert.equal(last?.actor, 'shared-token');
    await helper.close();
    // And a shared-token client that is not a loopback helper keeps no scopes: the mutation names the scope it lacks.
    const plain = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, client: { id: 'webchat', mode: 'webchat' }, scopes: ['operator.admin'] });
    const denied = await plain.request('send', { channel: 'alerts', content: 'x' }).catch((e: unknown) => e);
    assert.ok(denied instanceof GatewayRequestError);
    assert.equal(denied.detailCode, 'MISSING_SCOPE');
    assert.equal(denied.error.details?.missingScope, 'operator.write');
    await plain.close();
  } finally {
    await target.close();
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('an operator device with only operator.read gets MISSING_SCOPE (operator.write) from chat.send, on an open socket', async () => {
  const tg = await startTestGateway();
  try {
    const o = await owner(tg);
    await o.request('sessions.create', { key: 'main' });
    await o.request('chat.send', { sessionKey: 'main', text: 'hello' });
    await o.close();

    const reader = await pairedDevice(tg, ['operator.read']);
    assert.deepEqual(reader.hello.auth.scopes, ['operator.read']);
    const err = await reader.request('chat.send', { sessionKey: 'main', text: 'let me in' }).catch((e: unknown) => e);
    assert.ok(err instanceof GatewayRequestError);
    assert.equal(err.error.code, 'FORBIDDEN');
    assert.equal(err.detailCode, 'MISSING_SCOPE');
    assert.equal(err.message, 'missing scope: operator.write');
    assert.equal(err.error.details?.missingScope, 'operator.write');
    assert.doesNotMatch(err.message, /pairing/i);
    // The socket stays open and reads still work.
    const history = await reader.request<{ messages: ChatMessage[] }>('chat.history', { sessionKey: 'main' });
    assert.deepEqual(
      history.messages.map((m) => m.text),
      ['hello'],
    );
    for (const [method, params, scope] of [
      ['send', { channel: 'x', content: 'y' }, 'operator.write'],
      ['sessions.spawn', { parentKey: 'main' }, 'operator.write'],
      ['cron.add', { name: 'n', schedule: { kind: 'every', everyMs: 1000 }, action: { kind: 'chat', sessionKey: 'main', text: 't' } }, 'operator.admin'],
      ['channels.add', { type: 'webhook', name: 'n', url: 'http://127.0.0.1:1/' }, 'operator.admin'],
    ] as const) {
      const e = await reader.request(method, params).catch((x: unknown) => x);
      assert.ok(e instanceof GatewayRequestError && e.detailCode === 'MISSING_SCOPE', method);
      assert.equal(e.error.details?.missingScope, scope, method);
    }
    assert.equal(reader.ws.readyState, reader.ws.OPEN);
    await reader.close();
  } finally {
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('chat: subscribers get a chat event; the idempotency key is honoured; history pages backwards', async () => {
  const tg = await startTestGateway();
  try {
    const o = await owner(tg);
    await o.request('sessions.create', { key: 'team', label: 'Team' });
    const watcher = await pairedDevice(tg, ['operator.read']);
    const bystander = await pairedDevice(tg, ['operator.read']);
    await watcher.request('sessions.subscribe', { sessionKey: 'team' });
    const event = watcher.waitForEvent<{ sessionKey: string; message: ChatMessage }>('chat');
    const first = await o.request<{ message: ChatMessage; duplicate: boolean }>('chat.send', { sessionKey: 'team', text: 'one', idempotencyKey: 'k1' });
    assert.equal(first.duplicate, false);
    const got = await event;
    assert.equal(got.sessionKey, 'team');
    assert.equal(got.message.text, 'one');
    assert.equal(got.message.author, 'owner');
    const again = await o.request<{ message: ChatMessage; duplicate: boolean }>('chat.send', { sessionKey: 'team', text: 'one (retry)', idempotencyKey: 'k1' });
    assert.equal(again.duplicate, true);
    assert.deepEqual(again.message, first.message);
    for (const t of ['two', 'three', 'four', 'five']) await o.request('chat.send', { sessionKey: 'team', text: t });
    // Pages of two, newest first; each page's nextBeforeSeq asks for the one before it.
    const history = (beforeSeq?: number) =>
      o.request<{ messages: ChatMessage[]; nextBeforeSeq: number | null }>('chat.history', {
        sessionKey: 'team',
        limit: 2,
        ...(beforeSeq === undefined ? {} : { beforeSeq }),
      });
    const page1 = await history();
    assert.deepEqual(
      page1.messages.map((m) => m.text),
      ['four', 'five'],
    );
    const page2 = await history(page1.nextBeforeSeq ?? 0);
    assert.deepEqual(
      page2.messages.map((m) => m.text),
      ['two', 'three'],
    );
    const page3 = await history(page2.nextBeforeSeq ?? 0);
    assert.deepEqual(
      page3.messages.map((m) => m.text),
      ['one'],
    );
    assert.equal(page3.nextBeforeSeq, null);
    // Five messages, five events to the subscriber; none to the bystander.
    await waitUntil(() => watcher.events.filter((e) => e.event === 'chat').length === 5, 'five chat events');
    assert.equal(bystander.events.filter((e) => e.event === 'chat').length, 0);
    const unknown = await o.request('chat.send', { sessionKey: 'nope', text: 'x' }).catch((e: unknown) => e);
    assert.ok(unknown instanceof GatewayRequestError && unknown.detailCode === 'UNKNOWN_SESSION');
    for (const c of [o, watcher, bystander]) await c.close();
  } finally {
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('webhook target down: retries with growing backoff, one idempotency key, then the dead-letter list; a 4xx is not retried', async () => {
  const target = await WebhookTarget.start();
  target.answer = 500;
  const tg = await startTestGateway({ config: { automations: { webhook: { maxAttempts: 3, baseBackoffMs: 100, maxBackoffMs: 1000 } } } });
  try {
    const o = await owner(tg);
    await o.request('channels.add', { type: 'webhook', name: 'alerts', url: target.url, username: 'clawgate' });
    const sent = await o.request<{ deliveryId: string; status: string }>('send', { channel: 'alerts', content: 'disk full', embeds: [{ title: 'host-1' }] });
    assert.equal(sent.status, 'pending');
    await waitUntil(async () => (await tg.store.getDelivery(sent.deliveryId))?.status === 'dead', 'dead letter');
    assert.equal(target.received.length, 3);
    assert.deepEqual(target.received[0]?.body, { content: 'disk full', username: 'clawgate', embeds: [{ title: 'host-1' }] });
    const keys = new Set(target.received.map((r) => r.headers['idempotency-key']));
    assert.equal(keys.size, 1, 'the same key on every attempt');
    const [a, b, c] = target.received.map((r) => r.atMs) as [number, number, number];
    assert.ok(b - a >= 90, `first retry waited ${b - a}ms (backoff 100ms)`);
    assert.ok(c - b >= 190, `second retry waited ${c - b}ms (backoff 200ms)`);
    const dead = await o.request<{ deliveries: Delivery[] }>('channels.deadLetters', {});
    assert.equal(dead.deliveries.length, 1);
    assert.equal(dead.deliveries[0]?.attempts, 3);
    assert.equal(dead.deliveries[0]?.lastStatus, 500);
    assert.match(dead.deliveries[0]?.lastError ?? '', /gave up after 3 attempts/);
    const cliDead = (await cliJson(tg, 'channels', 'dead-letters', '--json')) as { deliveries: Delivery[] };
    assert.equal(cliDead.deliveries[0]?.deliveryId, sent.deliveryId);
    assert.ok((await tg.store.listAudit()).some((e) => e.action === 'delivery.dead-lettered' && e.subject === sent.deliveryId));

    target.answer = 400;
    const bad = await o.request<{ deliveryId: string }>('send', { channel: 'alerts', content: 'malformed for this target' });
    await waitUntil(async () => (await tg.store.getDelivery(bad.deliveryId))?.status === 'dead', 'permanent failure');
    assert.equal((await tg.store.getDelivery(bad.deliveryId))?.attempts, 1);
    await o.close();
  } finally {
    await tg.stop();
    await target.close();
    removeDir(tg.stateDir);
  }
});

test('across a gateway restart nothing is lost: pending deliveries resume with the same idempotency key (at-least-once)', async () => {
  const target = await WebhookTarget.start();
  target.answer = 503;
  let tg = await startTestGateway({ config: { automations: { webhook: { maxAttempts: 50, baseBackoffMs: 150, maxBackoffMs: 300 } } } });
  try {
    const o = await owner(tg);
    await o.request('channels.add', { type: 'webhook', name: 'alerts', url: target.url });
    const ids: string[] = [];
    for (const n of [1, 2, 3]) ids.push((await o.request<{ deliveryId: string }>('send', { channel: 'alerts', content: `message ${n}` })).deliveryId);
    await o.close();
    await waitUntil(() => new Set(target.received.map((r) => r.body.content)).size === 3, 'a failed attempt of each');
    const keyOf = new Map<string, string>();
    for (const r of target.received) keyOf.set(String(r.body.content), String(r.headers['idempotency-key']));

    await tg.stop();
    target.answer = 200;
    const failedBefore = target.received.length;
    tg = await tg.restart();
    await waitUntil(async () => (await Promise.all(ids.map((id) => tg.store.getDelivery(id)))).every((d) => d?.status === 'delivered'), 'all delivered');
    const after = target.received.slice(failedBefore);
    for (const n of [1, 2, 3]) {
      const hits = after.filter((r) => r.body.content === `message ${n}`);
      assert.ok(hits.length >= 1, `message ${n} delivered after the restart`);
      for (const h of hits) assert.equal(h.headers['idempotency-key'], keyOf.get(`message ${n}`), 'same key as before the restart');
    }
  } finally {
    await tg.stop();
    await target.close();
    removeDir(tg.stateDir);
  }
});

test('channels from the config file; channel and cron input is validated at the edge; non-admins see only the webhook origin', async () => {
  const target = await WebhookTarget.start();
  const tg = await startTestGateway({ config: { automations: { channels: [{ name: 'ops', url: target.url, username: 'ops-bot' }] } } });
  try {
    const o = await owner(tg);
    const list = await o.request<{ channels: Array<{ name: string; url: string; source: string }> }>('channels.list', {});
    assert.deepEqual(
      list.channels.map((c) => [c.name, c.url, c.source]),
      [['ops', target.url, 'config']],
    );
    const fail = async (method: string, params: unknown, detail: string) => {
      const e = await o.request(method, params).catch((x: unknown) => x);
      assert.ok(e instanceof GatewayRequestError, `${method} should fail`);
      assert.equal(e.detailCode, detail, `${method}: ${e.message}`);
    };
    await fail('channels.add', { type: 'webhook', name: 'ops', url: target.url }, 'CHANNEL_NAME_TAKEN');
    await fail('channels.add', { type: 'webhook', name: 'x', url: 'file:///etc/passwd' }, 'INVALID_WEBHOOK_URL');
    await fail('channels.add', { type: 'webhook', name: 'x', url: 'not a url' }, 'INVALID_WEBHOOK_URL');
    await fail('channels.add', { type: 'slack', name: 'x', url: target.url }, 'INVALID_PARAMS');
    await fail('send', { channel: 'nope', content: 'x' }, 'UNKNOWN_CHANNEL');
    await fail('send', { channel: 'ops' }, 'EMPTY_MESSAGE');
    const action = { kind: 'send', channel: 'ops', content: 'x' };
    await fail('cron.add', { name: 'a', schedule: { kind: 'cron', expr: '61 * * * *' }, action }, 'INVALID_SCHEDULE');
    await fail('cron.add', { name: 'a', schedule: { kind: 'cron', expr: '* * *' }, action }, 'INVALID_SCHEDULE');
    await fail('cron.add', { name: 'a', schedule: { kind: 'cron', expr: '0 9 * * *', tz: 'Mars/Olympus' }, action }, 'INVALID_SCHEDULE');
    await fail('cron.add', { name: 'a', schedule: { kind: 'cron', expr: '0 0 30 2 *' }, action }, 'INVALID_SCHEDULE');
    await fail('cron.add', { name: 'a', schedule: { kind: 'every', everyMs: 10 }, action }, 'INVALID_SCHEDULE');
    await fail('cron.add', { name: 'a', schedule: { kind: 'every', everyMs: 1000 }, action: { kind: 'exec', cmd: 'rm' } }, 'INVALID_PARAMS');
    await fail('cron.remove', { jobId: 'missing' }, 'UNKNOWN_CRON_JOB');
    const job = await o.request<{ job: CronJob }>('cron.add', {
      name: 'nine',
      schedule: { kind: 'cron', expr: '0 9 * * mon-fri', tz: 'Europe/Berlin' },
      action,
    });
    assert.ok(job.job.nextRunAtMs && job.job.nextRunAtMs > Date.now());
    const off = await o.request<{ job: CronJob }>('cron.update', { jobId: 'nine', enabled: false });
    assert.equal(off.job.nextRunAtMs, null);
    const on = await o.request<{ job: CronJob }>('cron.update', { jobId: job.job.jobId, enabled: true });
    assert.equal(on.job.nextRunAtMs, job.job.nextRunAtMs);
    // The same through the CLI: a cron expression with a time zone, the human listing, and usage errors.
    const viaCli = await cli(
      tg,
      'cron',
      'add',
      '--name',
      'weekly',
      '--cron',
      '30 7 * * mon',
      '--tz',
      'America/New_York',
      '--send',
      'ops',
      '--content',
      'week starts',
      '--json',
    );
    assert.equal(viaCli.code, 0, viaCli.stderr);
    const weekly = (JSON.parse(viaCli.stdout) as { job: CronJob }).job;
    assert.deepEqual(weekly.schedule, { kind: 'cron', expr: '30 7 * * mon', tz: 'America/New_York' });
    const local = new Intl.DateTimeFormat('en-US', {
      timeZone: 'America/New_York',
      weekday: 'short',
      hour: 'numeric',
      minute: 'numeric',
      hourCycle: 'h23',
    }).format(weekly.nextRunAtMs ?? 0);
    assert.equal(local, 'Mon 07:30');
    const human = await cli(tg, 'cron', 'list');
    assert.match(human.stdout, /weekly {2}cron "30 7 \* \* mon" America\/New_York {2}send to ops/);
    for (const [args, message] of [
      [['cron', 'add', '--name', 'x', '--every', '10s'], /needs an action/],
      [['cron', 'add', '--name', 'x', '--every', 'often', '--send', 'ops', '--content', 'y'], /--every must be a duration/],
      [['cron', 'add', '--name', 'x', '--send', 'ops', '--content', 'y'], /needs --cron/],
      [['channels', 'add', 'slack', '--name', 'x', '--url', 'http://127.0.0.1:1/'], /channels add webhook/],
    ] as const) {
      const r = await cli(tg, ...args);
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, message);
    }
    const reader = await pairedDevice(tg, ['operator.read']);
    const seen = await reader.request<{ channels: Array<{ url: string }> }>('channels.list', {});
    assert.equal(seen.channels[0]?.url, `http://127.0.0.1:${target.port}/…`);
    assert.ok(!JSON.stringify(seen).includes('secret-token'));
    await reader.close();
    await o.close();
  } finally {
    await tg.stop();
    await target.close();
    removeDir(tg.stateDir);
  }
});

test('a cron job that invokes a node command runs it through node.invoke with the internal grant; host-level commands are refused at cron.add', async () => {
  const tg = await startTestGateway();
  try {
    const identity = generateIdentity();
    const node = await RawClient.open(tg.url);
    const res = await connectAsNode(node, identity, {
      name: 'kiosk',
      auth: { token: TEST_TOKEN },
      caps: ['canvas', 'system'],
      commands: ['canvas.present', 'system.run'],
    });
    assert.equal(res?.ok, true, JSON.stringify(res?.error));
    const invoked: Array<{ command: string; paramsJSON?: string }> = [];
    node.ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as {
        type?: string;
        event?: string;
        payload?: { id: string; nodeId: string; command: string; paramsJSON?: string };
      };
      if (f.type !== 'event' || f.event !== 'node.invoke.request' || !f.payload) return;
      invoked.push({ command: f.payload.command, ...(f.payload.paramsJSON ? { paramsJSON: f.payload.paramsJSON } : {}) });
      node.send({
        type: 'req',
        id: `r${invoked.length}`,
        method: 'node.invoke.result',
        params: { id: f.payload.id, nodeId: f.payload.nodeId, ok: true, payloadJSON: '{"shown":true}' },
      });
    });
    const o = await owner(tg);
    const pending = await o.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {});
    const req = pending.pending.find((p) => p.nodeId === identity.deviceId);
    assert.ok(req);
    await o.request('node.pair.approve', { requestId: req.requestId });

    const add = await cli(
      tg,
      'cron',
      'add',
      '--name',
      'kiosk',
      '--every',
      '1s',
      '--node',
      // A unique id prefix names the node, as in every `nodes` command.
      identity.deviceId.slice(0, 12),
      '--command',
      'canvas.present',
      '--params',
      '{"url":"https://example.test"}',
      '--json',
    );
    assert.equal(add.code, 0, add.stderr);
    await waitUntil(() => invoked.length >= 1, 'a node invocation');
    assert.deepEqual(invoked[0], { command: 'canvas.present', paramsJSON: '{"url":"https://example.test"}' });
    const jobId = (JSON.parse(add.stdout) as { job: CronJob }).job.jobId;
    await waitUntil(async () => (await tg.store.listCronRuns(jobId)).length >= 1, 'a recorded run');
    const runs = (await cliJson(tg, 'cron', 'runs', 'kiosk', '--json')) as { runs: CronRun[] };
    assert.equal(runs.runs[0]?.status, 'ok', JSON.stringify(runs.runs[0]));
    assert.equal(runs.runs[0]?.result?.invoked, 'canvas.present');

    const refused = await o
      .request('cron.add', {
        name: 'shell',
        schedule: { kind: 'every', everyMs: 1000 },
        action: { kind: 'node', nodeId: identity.deviceId, command: 'browser.proxy', params: { url: 'http://127.0.0.1/' } },
      })
      .catch((e: unknown) => e);
    assert.ok(refused instanceof GatewayRequestError);
    assert.equal(refused.detailCode, 'CRON_ACTION_UNAVAILABLE');
    assert.equal(refused.error.details?.requiredScope, 'operator.admin');
    assert.ok(!invoked.some((i) => i.command === 'browser.proxy'));
    await o.request('cron.remove', { jobId: 'kiosk' });
    await o.close();
    await node.close();
  } finally {
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('config file: automations.channels.webhooks and the webhook policy reach a real `gateway run`; a malformed block is a usage error', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-auto-'));
  const target = await WebhookTarget.start();
  target.answer = 500;
  const procs: Killable[] = [];
  try {
    const configPath = join(stateDir, 'config.json');
    writeFileSync(
      configPath,
      JSON.stringify({
        automations: { channels: { webhooks: [{ name: 'ops', url: target.url, username: 'ops-bot' }] }, webhook: { maxAttempts: 2, baseBackoffMs: 50 } },
      }),
    );
    const gw = await spawnGateway(['--config', configPath], { env: { CLAWGATE_STATE_DIR: stateDir }, onSpawn: (p) => procs.push(p) });
    const list = await localCliJson<{
      channels: Array<{ name: string; source: string; url: string }>;
    }>(stateDir, 'channels', 'list', '--json');
    assert.deepEqual(
      list.channels.map((c) => [c.name, c.source, c.url]),
      [['ops', 'config', target.url]],
    );
    const sent = await localCli(stateDir, 'call', 'send', '--params', '{"channel":"ops","content":"from config"}', '--json');
    assert.equal(sent.code, 0, sent.stderr);
    const deliveryId = (JSON.parse(sent.stdout) as { deliveryId: string }).deliveryId;
    // maxAttempts 2 from the file: two attempts, then the dead-letter list (polled in the
    // store the gateway writes, not by a CLI process per probe).
    const store = new SqliteStore(join(stateDir, 'clawgate.sqlite'));
    try {
      await waitUntil(async () => (await store.getDelivery(deliveryId))?.status === 'dead', 'dead letter');
    } finally {
      await store.close();
    }
    const dead = await localCliJson<{ deliveries: Delivery[] }>(stateDir, 'channels', 'dead-letters', '--json');
    assert.ok(dead.deliveries.some((d) => d.deliveryId === deliveryId));
    assert.equal(target.received.length, 2);
    assert.deepEqual(target.received[0]?.body, { content: 'from config', username: 'ops-bot' });
    await gw.stop();

    writeFileSync(configPath, JSON.stringify({ automations: { channels: { webhooks: { name: 'x' } } } }));
    const bad = await localCli(stateDir, 'gateway', 'run', '--config', configPath);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /automations\.channels\.webhooks must be a list/);
    writeFileSync(configPath, JSON.stringify({ automations: { channels: { webhooks: [{ name: 'x', url: 'ftp://example.test/' }] } } }));
    const badUrl = await localCli(stateDir, 'gateway', 'run', '--config', configPath);
    assert.equal(badUrl.code, 2);
    assert.match(badUrl.stderr, /url must be an http\(s\) URL/);
  } finally {
    await killAll(procs);
    await target.close();
    removeDir(stateDir);
  }
});

test('a gateway killed (SIGKILL) while a delivery is in flight delivers it after the restart, with the same idempotency key', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-auto-'));
  const target = await WebhookTarget.start();
  target.answer = 'hang';
  const procs: Killable[] = [];
  try {
    let gw = await startProcess(stateDir, procs);
    assert.equal((await localCli(stateDir, 'channels', 'add', 'webhook', '--name', 'alerts', '--url', target.url)).code, 0);
    const sent = await localCli(stateDir, 'call', 'send', '--params', '{"channel":"alerts","content":"survives a crash"}', '--json');
    assert.equal(sent.code, 0, sent.stderr);
    const { deliveryId, idempotencyKey } = JSON.parse(sent.stdout) as { deliveryId: string; idempotencyKey: string };
    // The attempt is in flight (the target holds the request); the process dies without any cleanup.
    await target.waitFor(1);
    await gw.kill();

    target.answer = 204;
    gw = await startProcess(stateDir, procs);
    await target.waitFor(2);
    assert.deepEqual(
      target.received.map((r) => [r.body.content, r.headers['idempotency-key']]),
      [
        ['survives a crash', idempotencyKey],
        ['survives a crash', idempotencyKey],
      ],
    );
    const store = new SqliteStore(join(stateDir, 'clawgate.sqlite'));
    try {
      await waitUntil(async () => (await store.getDelivery(deliveryId))?.status === 'delivered', 'recorded as delivered');
    } finally {
      await store.close();
    }
    const list = await localCliJson<{ deliveries: Delivery[] }>(stateDir, 'channels', 'deliveries', '--json');
    assert.ok(list.deliveries.some((d) => d.deliveryId === deliveryId && d.status === 'delivered'));
    assert.equal(await gw.stop(), 0);
  } finally {
    await killAll(procs);
    await target.close();
    removeDir(stateDir);
  }
});

test('the CLI as a user: sessions create and spawn, chat send (idempotent) and history, channels remove', async () => {
  const tg = await startTestGateway();
  const target = await WebhookTarget.start();
  try {
    const created = await cliJson<{ session: ChatSession }>(tg, 'sessions', 'create', 'desk', '--label', 'front desk', '--json');
    assert.equal(created.session.key, 'desk');
    assert.equal(created.session.label, 'front desk');
    const spawned = await cliJson<{ session: ChatSession }>(tg, 'sessions', 'spawn', 'desk', 'desk-1', '--json');
    assert.equal(spawned.session.key, 'desk-1');
    assert.equal(spawned.session.parentId, created.session.sessionId);
    const children = await cliJson<{ sessions: ChatSession[] }>(tg, 'sessions', 'list', '--parent', 'desk', '--json');
    assert.deepEqual(
      children.sessions.map((s) => s.key),
      ['desk-1'],
    );
    const spawnUsage = await cli(tg, 'sessions', 'spawn');
    assert.equal(spawnUsage.code, 2);

    const first = await cliJson<{ message: ChatMessage; duplicate: boolean }>(
      tg,
      'chat',
      'send',
      'desk-1',
      'hello',
      'there',
      '--idempotency-key',
      'k1',
      '--json',
    );
    assert.equal(first.message.text, 'hello there');
    assert.equal(first.duplicate, false);
    const again = await cliJson<{ message: ChatMessage; duplicate: boolean }>(
      tg,
      'chat',
      'send',
      'desk-1',
      'hello',
      'there',
      '--idempotency-key',
      'k1',
      '--json',
    );
    assert.equal(again.duplicate, true);
    assert.equal(again.message.messageId, first.message.messageId);
    const text = await cli(tg, 'chat', 'send', 'desk-1', 'second');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^sent #\d+ to desk-1/);
    const history = await cliJson<{ messages: ChatMessage[] }>(tg, 'chat', 'history', 'desk-1', '--json');
    assert.deepEqual(
      history.messages.map((m) => m.text),
      ['hello there', 'second'],
    );
    assert.equal((await cli(tg, 'chat', 'send', 'desk-1')).code, 2, 'no text is a usage error');

    // `channels add` takes --url as the webhook's address, so the gateway's comes by --gateway-url.
    const add = await runClawgate(['channels', 'add', 'webhook', '--name', 'gone', '--url', target.url, '--gateway-url', tg.url, '--json'], {
      CLAWGATE_STATE_DIR: tg.stateDir,
    });
    assert.equal(add.code, 0, add.stderr);
    const removed = await cliJson(tg, 'channels', 'remove', 'gone', '--json');
    assert.deepEqual(removed, { removed: true });
    const list = await cliJson<{ channels: Array<{ name: string }> }>(tg, 'channels', 'list', '--json');
    assert.ok(!list.channels.some((c) => c.name === 'gone'));
    const missing = await cli(tg, 'channels', 'remove', 'gone');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /UNKNOWN_CHANNEL/);
    assert.equal((await tg.store.listAudit()).filter((e) => e.action === 'channel.removed' && e.subject === 'gone').length, 1);
  } finally {
    await target.close();
    await tg.stop();
    removeDir(tg.stateDir);
  }
});
