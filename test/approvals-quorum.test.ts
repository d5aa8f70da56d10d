/**
 * Quorum approvals, approval notifications and `explain`, over real sockets, the real SQLite
 * store and the real CLI. "Remote" devices come through a trusted proxy (X-Forwarded-For from
 * loopback), so nothing they ask for is approved silently. Notification targets are local HTTP
 * servers, one per message shape.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ConnectOptions, connectGateway, type DeviceIdentity, GatewayRequestError, generateIdentity } from '../src/client/connection.js';
import type { NotifyTarget } from '../src/core/approval-notify.js';
import type { Explanation } from '../src/core/explain.js';
import { asOwner, cli, cliJson, expectRefused, removeDir, runClawgate, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { connectAsNode, RawClient } from './helpers/raw.js';
import { waitFor } from './helpers/wait.js';
import { WebhookTarget } from './helpers/webhook.js';

const REMOTE = { 'x-forwarded-for': '198.51.100.77' };
const ADMIN_ASK = ['operator.admin', 'operator.pairing'];
/** A device name written to inject mentions and markup into chat targets. */
const HOSTILE = '@everyone <!channel> <@&123> **bold** [x](http://evil.example)';

type Conn = Awaited<ReturnType<typeof connectGateway>>;

function remote(tg: TestGateway, identity: DeviceIdentity, scopes: string[], displayName = 'remote', extra: Partial<ConnectOptions> = {}): Promise<Conn> {
  return connectGateway({
    url: tg.url,
    identity,
    client: { id: 'test', mode: 'test', displayName, platform: 'linux' },
    auth: { token: TEST_TOKEN },
    headers: REMOTE,
    scopes,
    ...extra,
  });
}

async function asked(tg: TestGateway, identity: DeviceIdentity, scopes: string[], displayName = 'remote'): Promise<string> {
  const refused = await expectRefused(remote(tg, identity, scopes, displayName), 'PAIRING_REQUIRED');
  return (refused.error?.details as { requestId: string } | undefined)?.requestId as string;
}

async function ownerConn(tg: TestGateway): Promise<Conn> {
  return connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
}

async function refusedWith(p: Promise<unknown>, code: string): Promise<GatewayRequestError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GatewayRequestError, String(err));
    assert.equal(err.detailCode, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

const eventFor = (c: Conn, event: string, requestId: string, pred: (p: Record<string, unknown>) => boolean = () => true) =>
  waitFor(
    () =>
      c.events.find((e) => e.event === event && (e.payload as { requestId?: string }).requestId === requestId && pred(e.payload as Record<string, unknown>))
        ?.payload as Record<string, unknown> | undefined,
    `${event} for ${requestId}`,
  );

interface Hooks {
  json: WebhookTarget;
  discord: WebhookTarget;
  slack: WebhookTarget;
  ntfy: WebhookTarget;
}

/** Requests a target received that mention `requestId`. */
const about = (hook: WebhookTarget, requestId: string) => hook.received.filter((r) => JSON.stringify(r.body).includes(requestId));

describe('approval quorum, notifications and explain', () => {
  let tg: TestGateway;
  let hooks: Hooks;
  const admin = generateIdentity();
  let adminConn: Conn;

  before(async () => {
    hooks = { json: await WebhookTarget.start(), discord: await WebhookTarget.start(), slack: await WebhookTarget.start(), ntfy: await WebhookTarget.start() };
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-quorum-'));
    // The first administrator device is approved before the quorum is configured (one owner
    // alone could never reach a quorum of two).
    const first = await startTestGateway({ stateDir, config: { trustedProxies: ['127.0.0.1'] } });
    const requestId = await asked(first, admin, ADMIN_ASK, 'admin laptop');
    const o = await ownerConn(first);
    await o.request('device.pair.approve', { requestId });
    await o.close();
    await first.stop();

    const channels = (Object.entries(hooks) as Array<[keyof Hooks, WebhookTarget]>).map(([name, h]) => ({ name, url: h.url }));
    const notify: NotifyTarget[] = [
      { channel: 'json' },
      { channel: 'discord', format: 'discord' },
      { channel: 'slack', format: 'slack' },
      { channel: 'ntfy', format: 'ntfy', topic: 'clawgate-approvals' },
    ];
    tg = await startTestGateway({
      stateDir,
      config: {
        trustedProxies: ['127.0.0.1'],
        // Local auto-approval may grant admin here: the quorum must still hold it back.
        sharedSecretIsAdminOnHost: true,
        approvalQuorum: { 'operator.admin': 2 },
        approvalNotify: notify,
        automations: { channels, webhook: { baseBackoffMs: 20, maxBackoffMs: 200 } },
      },
    });
    adminConn = await remote(tg, admin, ADMIN_ASK, 'admin laptop');
  });

  after(async () => {
    await adminConn?.close();
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
    for (const h of Object.values(hooks ?? {})) await h.close();
  });

  test('quorum 2: owner + an admin device; progress in devices list and events; one approver cannot approve twice', async () => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'quorum laptop');

    const requested = await eventFor(adminConn, 'device.pair.requested', requestId);
    assert.deepEqual(requested.approvals, { received: 0, required: 2, approvers: [] });
    assert.ok((requested.adds as string[]).includes('operator.admin'));

    const listed0 = await cli(tg, 'devices', 'list');
    assert.equal(listed0.code, 0, listed0.stderr);
    assert.match(listed0.stdout.split('\n').find((l) => l.includes(requestId)) ?? '', /approvals 0\/2/);

    const first = await cli(tg, 'devices', 'approve', requestId);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`approval recorded for ${requestId}: approvals 1/2`));
    const progress = await eventFor(adminConn, 'device.pair.requested', requestId, (p) => (p.approvals as { received: number }).received === 1);
    assert.deepEqual(progress.approvals, { received: 1, required: 2, approvers: ['owner'] });

    // One approval is not enough: the device is still refused under the same request.
    const again = await expectRefused(remote(tg, device, ADMIN_ASK, 'quorum laptop'), 'PAIRING_REQUIRED');
    assert.equal((again.error?.details as { requestId: string } | undefined)?.requestId, requestId);
    const listed1 = await cliJson<{ pending: Array<{ requestId: string; approvals: unknown }> }>(tg, 'devices', 'list', '--json');
    assert.deepEqual(listed1.pending.find((p) => p.requestId === requestId)?.approvals, { received: 1, required: 2, approvers: ['owner'] });
    assert.match((await cli(tg, 'devices', 'list')).stdout, /approvals 1\/2/);

    // The same approver again: refused with its catalogue code, nothing counted.
    const twice = await cli(tg, 'devices', 'approve', requestId);
    assert.notEqual(twice.code, 0);
    assert.match(twice.stderr, /\[APPROVAL_ALREADY_RECORDED\]/);
    const o = await ownerConn(tg);
    try {
      const e = await refusedWith(o.request('device.pair.approve', { requestId }), 'APPROVAL_ALREADY_RECORDED');
      assert.deepEqual((e.error.details as { approvals: unknown }).approvals, { received: 1, required: 2, approvers: ['owner'] });
    } finally {
      await o.close();
    }

    // The requesting device cannot vote for itself (its own connection holds no admin yet anyway).
    // The second, distinct approver completes it.
    const done = await adminConn.request<{ approved: Array<{ requestId: string; scopes: string[] }> }>('device.pair.approve', { requestId });
    assert.equal(done.approved.length, 1);
    assert.ok(done.approved[0]?.scopes.includes('operator.admin'));
    const resolved = await eventFor(adminConn, 'device.pair.resolved', requestId);
    assert.equal(resolved.decision, 'approved');
    assert.deepEqual(resolved.approvals, { received: 2, required: 2, approvers: ['owner', `device:${admin.deviceId}`] });
    const conn = await remote(tg, device, ADMIN_ASK, 'quorum laptop');
    assert.ok(conn.hello.auth.scopes.includes('operator.admin'));
    await conn.close();
    const audit = await tg.store.listAudit({ limit: 10_000 });
    assert.equal(audit.filter((a) => a.action === 'pairing.approval.recorded' && a.data?.requestId === requestId).length, 2);
  });

  test('a rejection by any approver ends a request under quorum, whatever approvals it had', async () => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'rejected laptop');
    const first = await adminConn.request<{ awaiting: Array<{ approvals: unknown }> }>('device.pair.approve', { requestId });
    assert.deepEqual(first.awaiting[0]?.approvals, { received: 1, required: 2, approvers: [`device:${admin.deviceId}`] });
    const rejected = await cli(tg, 'devices', 'reject', requestId);
    assert.equal(rejected.code, 0, rejected.stderr);
    const resolved = await eventFor(adminConn, 'device.pair.resolved', requestId);
    assert.equal(resolved.decision, 'rejected');
    assert.deepEqual(resolved.approvals, { received: 1, required: 2, approvers: [`device:${admin.deviceId}`] });
    // The request is gone: approving it now is refused, and the device asks afresh.
    const o = await ownerConn(tg);
    try {
      await refusedWith(o.request('device.pair.approve', { requestId }), 'UNKNOWN_REQUEST_ID');
    } finally {
      await o.close();
    }
    const fresh = await asked(tg, device, ADMIN_ASK, 'rejected laptop');
    assert.notEqual(fresh, requestId);
  });

  test('local auto-approval does not bypass the quorum: admin waits for approvals; the owner credential pairing its own device does', async () => {
    // Direct loopback with the shared secret, which this gateway treats as admin on the host.
    const device = generateIdentity();
    const local = await connectGateway({ url: tg.url, identity: device, auth: { token: TEST_TOKEN }, client: { id: 'test', mode: 'test' }, scopes: ADMIN_ASK });
    try {
      assert.ok(!local.hello.auth.scopes.includes('operator.admin'), `admitted with ${local.hello.auth.scopes.join(', ')}`);
      assert.ok(local.hello.auth.scopes.includes('operator.pairing'));
      const grant = await tg.store.getGrant(device.deviceId, 'operator');
      assert.ok(grant && !grant.scopes.includes('operator.admin'));
      const pending = await cliJson<{ pending: Array<{ deviceId: string; adds: string[]; approvals: { required: number } }> }>(tg, 'devices', 'list', '--json');
      const mine = pending.pending.find((p) => p.deviceId === device.deviceId);
      assert.ok(mine, 'the held-back scopes wait as a request');
      assert.deepEqual(mine.adds, ['operator.admin']);
      assert.equal(mine.approvals.required, 2);
    } finally {
      await local.close();
    }
    const own = generateIdentity();
    const ownerDevice = await connectGateway({ url: tg.url, ...asOwner(tg), identity: own, client: { id: 'test', mode: 'test' }, scopes: ADMIN_ASK });
    assert.ok(ownerDevice.hello.auth.scopes.includes('operator.admin'));
    await ownerDevice.close();
  });

  test('every new request and its resolution reach JSON, Discord, Slack and ntfy targets; hostile names are escaped; a failing target delays only itself', async () => {
    hooks.ntfy.answer = 503;
    const device = generateIdentity();
    const requestId = await asked(tg, device, ['operator.read'], HOSTILE);
    // The request was filed while the ntfy target refused: it is pending and listed.
    assert.ok(await tg.store.getPairingRequest(requestId));
    for (const h of [hooks.json, hooks.discord, hooks.slack]) await waitFor(() => about(h, requestId).length >= 1, 'the request notification');
    await waitFor(() => about(hooks.ntfy, requestId).length >= 1, 'a first (refused) ntfy attempt');
    hooks.ntfy.answer = 204;
    await waitFor(() => about(hooks.ntfy, requestId).length >= 2, 'the ntfy retry');

    const json = about(hooks.json, requestId)[0]?.body as { event: string; text: string; link: string; request: Record<string, unknown> };
    assert.equal(json.event, 'approval.requested');
    assert.equal(json.request.name, HOSTILE, 'JSON carries the name as data');
    assert.equal(json.request.address, '198.51.100.77');
    assert.equal(json.request.role, 'operator');
    assert.deepEqual(json.request.adds, ['operator.read']);
    assert.match(String(json.request.confirmationCode), /^\d{6}$/);
    assert.equal(json.request.approveCommand, `clawgate devices approve ${requestId}`);
    assert.match(json.link, /^http:\/\/127\.0\.0\.1:\d+\/#request=cga1_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);

    const discord = about(hooks.discord, requestId)[0]?.body as { content: string; allowed_mentions: { parse: unknown[] } };
    assert.deepEqual(discord.allowed_mentions, { parse: [] });
    assert.ok(!discord.content.includes('@everyone'), discord.content);
    assert.ok(!discord.content.includes('<@&123>'), discord.content);
    assert.ok(!discord.content.includes('**bold**'), 'markdown from the client is escaped');
    assert.ok(discord.content.includes('\\*\\*bold\\*\\*'));
    assert.ok(discord.content.includes(`clawgate devices approve ${requestId}`));
    assert.match(discord.content, /#request=cga1_/);

    const slack = about(hooks.slack, requestId)[0]?.body as { text: string; link_names: boolean };
    assert.ok(!slack.text.includes('<!channel>'), slack.text);
    assert.ok(!slack.text.includes('<@&123>'));
    assert.ok(!slack.text.includes('@everyone'));
    assert.ok(slack.text.includes('&lt;!channel&gt;'));
    assert.equal(slack.link_names, false);
    assert.match(slack.text, /<http:\/\/127\.0\.0\.1:\d+\/#request=cga1_[^|>]+\|Open in the Control UI>/);

    const ntfy = about(hooks.ntfy, requestId).at(-1)?.body as { topic: string; title: string; message: string; click: string };
    assert.equal(ntfy.topic, 'clawgate-approvals');
    assert.match(ntfy.message, new RegExp(`clawgate devices approve ${requestId}`));
    assert.match(ntfy.click, /#request=cga1_/);
    // Every message has its own link.
    const links = new Set([json.link, ntfy.click, /#request=(cga1_[^\s)>|]+)/.exec(discord.content)?.[1]]);
    assert.equal(links.size, 3);

    // The resolution reaches every target too.
    const o = await ownerConn(tg);
    await o.request('device.pair.approve', { requestId });
    await o.close();
    for (const h of Object.values(hooks)) {
      await waitFor(
        () => about(h, requestId).some((r) => /approved/.test(JSON.stringify(r.body)) && !JSON.stringify(r.body).includes('#request=')),
        'the resolution',
      );
    }
    const resolvedJson = about(hooks.json, requestId).find((r) => (r.body as { event: string }).event === 'approval.resolved')?.body as {
      request: { decision: string; name: string };
    };
    assert.equal(resolvedJson.request.decision, 'approved');
    assert.equal(resolvedJson.request.name, HOSTILE);
  });

  test('a notification link opens its request once, only for a signed-in pairing session, and approves nothing', async () => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'link laptop');
    await waitFor(() => about(hooks.json, requestId).length >= 1, 'the notification');
    const link = (about(hooks.json, requestId)[0]?.body as { link: string } | undefined)?.link ?? '';
    const token = decodeURIComponent(new URL(link).hash.slice('#request='.length));

    // A session without operator.pairing cannot redeem it.
    const reader = generateIdentity();
    const o = await ownerConn(tg);
    try {
      const rid = await asked(tg, reader, ['operator.read'], 'reader');
      await o.request('device.pair.approve', { requestId: rid });
      const readerConn = await remote(tg, reader, ['operator.read'], 'reader');
      await refusedWith(readerConn.request('approval.link.open', { token }), 'MISSING_SCOPE');
      await readerConn.close();

      const tampered = `${token.slice(0, -2)}${token.endsWith('AA') ? 'BB' : 'AA'}`;
      const bad = await refusedWith(o.request('approval.link.open', { token: tampered }), 'APPROVAL_LINK_INVALID');
      assert.equal((bad.error.details as { reason: string }).reason, 'is not valid');

      const opened = await o.request<{ requestId: string; kind: string; pending: boolean }>('approval.link.open', { token });
      assert.deepEqual(opened, { requestId, kind: 'device', pending: true });
      // Opening approved nothing: the request is pending with no approvals.
      const listed = await o.request<{ pending: Array<{ requestId: string; approvals: { received: number } }> }>('device.pair.list', {});
      assert.equal(listed.pending.find((p) => p.requestId === requestId)?.approvals.received, 0);

      const second = await refusedWith(o.request('approval.link.open', { token }), 'APPROVAL_LINK_INVALID');
      assert.equal((second.error.details as { reason: string }).reason, 'was used already');
    } finally {
      await o.close();
    }
  });
});

describe('explain agrees with the gateway’s real decision', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'] } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  /** Valid params for methods whose empty params the schema refuses (the call must reach the authority check). */
  const PARAMS: Record<string, unknown> = {
    'node.describe': { nodeId: 'no-such-node' },
    'node.invoke': { nodeId: 'no-such-node', command: 'system.run', params: {}, idempotencyKey: 'explain-1' },
    'approval.link.open': { token: 'not-a-link' },
    'device.pair.reject': { requestId: 'no-such-request' },
    'device.pair.remove': { deviceId: 'no-such-device' },
    'device.pair.rename': { deviceId: 'no-such-device', label: 'x' },
    'node.pair.approve': { requestId: 'no-such-request' },
    'node.pair.reject': { requestId: 'no-such-request' },
    'node.pair.remove': { nodeId: 'no-such-node' },
    'sessions.get': { sessionKey: 'no-such-session' },
    'chat.history': { sessionKey: 'no-such-session' },
    'cron.get': { jobId: 'no-such-job' },
    'cron.runs': { jobId: 'no-such-job' },
    'cron.remove': { jobId: 'no-such-job' },
    'channels.remove': { channel: 'no-such-channel' },
    'device.pair.setupRevoke': { setupId: 'no-such-code' },
  };

  async function pairRemote(scopes: string[], name: string): Promise<DeviceIdentity> {
    const id = generateIdentity();
    const requestId = await asked(tg, id, scopes, name);
    const o = await ownerConn(tg);
    await o.request('device.pair.approve', { requestId });
    await o.close();
    return id;
  }

  test('for every method, explain says allowed exactly when the real call passes the authority check', async () => {
    const id = await pairRemote(['operator.read', 'operator.pairing'], 'explain subject');
    const conn = await remote(tg, id, ['operator.read', 'operator.pairing'], 'explain subject');
    const o = await ownerConn(tg);
    let compared = 0;
    let allowed = 0;
    try {
      for (const spec of tg.gateway.methods.all()) {
        const params = PARAMS[spec.name] ?? {};
        const real = await conn.request(spec.name, params).then(
          () => 'allowed',
          (err: unknown) => (err instanceof GatewayRequestError ? (err.detailCode ?? 'error') : 'error'),
        );
        // The schema is checked before the scopes: a call refused for its params says nothing.
        if (real === 'INVALID_PARAMS') continue;
        const e = await o.request<Explanation>('device.explain', { target: id.deviceId, method: spec.name, params });
        const realAllowed = real !== 'MISSING_SCOPE' && real !== 'ROLE_NOT_ALLOWED';
        assert.equal(e.call?.allowed, realAllowed, `${spec.name}: explain ${JSON.stringify(e.call)} vs real ${real}`);
        if (!realAllowed) assert.equal(e.call?.code, real, spec.name);
        compared++;
        if (realAllowed) allowed++;
      }
    } finally {
      await conn.close();
      await o.close();
    }
    assert.ok(compared >= 40, `compared ${compared} methods`);
    assert.ok(allowed >= 10 && compared - allowed >= 10, `allowed ${allowed} of ${compared}`);
  });

  test('clawgate explain: holdings and pending by name, and for a refused method the one command that fixes it', async () => {
    const id = await pairRemote(['operator.read'], 'Kitchen tablet');
    // A pending upgrade: the device asks for pairing on top.
    await remote(tg, id, ['operator.read', 'operator.pairing'], 'Kitchen tablet').then((c) => c.close());
    const human = await cli(tg, 'explain', 'Kitchen tablet');
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /role operator: operator\.read; since .* \(owner\); no expiry/);
    assert.match(human.stdout, /pending \S+ \(pairing, role operator\) adds operator\.pairing/);
    assert.match(human.stdout, /run: clawgate devices approve /);

    const refused = await cliJson<Explanation>(tg, 'explain', id.deviceId, '--method', 'audit.list', '--json');
    assert.equal(refused.call?.allowed, false);
    assert.equal(refused.call?.code, 'MISSING_SCOPE');
    assert.match(refused.call?.missing ?? '', /operator\.admin/);
    const fix = refused.call?.fix ?? '';
    assert.match(fix, /^clawgate devices rotate --device [0-9a-f]{64} --role operator( --scope \S+)+$/);
    // Run the fix as printed; then explain and the real call agree that it passes.
    const ran = await cli(tg, ...fix.split(' ').slice(1));
    assert.equal(ran.code, 0, ran.stderr);
    const fixed = await cliJson<Explanation>(tg, 'explain', id.deviceId, '--method', 'audit.list', '--json');
    assert.equal(fixed.call?.allowed, true);
    const conn = await remote(tg, id, ['operator.admin'], 'Kitchen tablet');
    await conn.request('audit.list', {});
    await conn.close();

    // A pending request id names its device; a method the device's role cannot call names the role.
    const newcomer = generateIdentity();
    const requestId = await asked(tg, newcomer, ['operator.read'], 'newcomer');
    const byRequest = await cliJson<Explanation>(tg, 'explain', requestId, '--method', 'node.event', '--json');
    assert.equal(byRequest.deviceId, newcomer.deviceId);
    assert.equal(byRequest.paired, false);
    assert.equal(byRequest.pending[0]?.requestId, requestId);
    assert.equal(byRequest.call?.code, 'ROLE_NOT_ALLOWED');

    const unknown = await cli(tg, 'explain', 'nobody-by-this-name');
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /\[EXPLAIN_TARGET_UNKNOWN\]/);
  });
});

describe('quorum and notify configuration is checked at startup', () => {
  test('a bad quorum key or an unknown notify channel stops `gateway run` with the key named', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-quorum-cfg-'));
    try {
      const write = async (cfg: unknown) => {
        const path = join(dir, 'config.json');
        (await import('node:fs')).writeFileSync(path, JSON.stringify(cfg));
        return runClawgate(['gateway', 'run', '--port', '0', '--config', path], { CLAWGATE_STATE_DIR: dir });
      };
      const badScope = await write({ gateway: { approvals: { quorum: { 'operator.bogus': 2 } } } });
      assert.notEqual(badScope.code, 0);
      assert.match(badScope.stderr, /gateway\.approvals\.quorum\["operator\.bogus"\]/);
      const badCount = await write({ gateway: { approvals: { quorum: { 'node:system.run': 0 } } } });
      assert.match(badCount.stderr, /gateway\.approvals\.quorum\["node:system\.run"\] must be a whole number/);
      const badChannel = await write({
        gateway: { approvals: { notify: ['alerts', 'pager'] } },
        automations: { channels: { webhooks: [{ name: 'alerts', url: 'http://127.0.0.1:9/x' }] } },
      });
      assert.notEqual(badChannel.code, 0);
      assert.match(badChannel.stderr, /gateway\.approvals\.notify\[1\]: "pager" is not a channel/);
    } finally {
      removeDir(dir);
    }
  });
});

describe('quorum on node commands (node:<command>)', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: { approvalQuorum: { 'node:system.run': 2 } } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('a surface with system.run needs two approvers; progress in nodes pending and the events; no double approval', async () => {
    // An administrator device, paired by the owner credential (its own device: not held back).
    const watcher = await connectGateway({ url: tg.url, ...asOwner(tg), identity: generateIdentity(), client: { id: 'cli', mode: 'cli' }, scopes: ADMIN_ASK });
    const id = generateIdentity();
    const node = await RawClient.open(tg.url);
    try {
      const res = await connectAsNode(node, id, { auth: { token: TEST_TOKEN }, caps: ['system'], commands: ['system.run', 'system.which'] });
      assert.equal(res?.ok, true, JSON.stringify(res?.error));
      const requested = await waitFor(
        () => watcher.events.find((e) => e.event === 'node.pair.requested' && (e.payload as { nodeId: string }).nodeId === id.deviceId)?.payload,
        'node.pair.requested',
      );
      const requestId = (requested as { requestId: string }).requestId;
      assert.deepEqual((requested as { approvals: unknown }).approvals, { received: 0, required: 2, approvers: [] });
      assert.match((await cli(tg, 'nodes', 'pending')).stdout, /approvals 0\/2/);

      const first = await cli(tg, 'nodes', 'approve', requestId);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stdout, /approvals 1\/2/);
      assert.match((await cli(tg, 'nodes', 'pending')).stdout, /approvals 1\/2/);
      assert.equal((await tg.store.getNodeSurface(id.deviceId)) ?? null, null, 'one approval approves nothing');
      const twice = await cli(tg, 'nodes', 'approve', requestId);
      assert.match(twice.stderr, /\[APPROVAL_ALREADY_RECORDED\]/);

      const done = await watcher.request<{ node: { commands: string[] } }>('node.pair.approve', { requestId });
      assert.deepEqual(done.node.commands, ['system.run', 'system.which']);
      const resolved = await waitFor(
        () => watcher.events.find((e) => e.event === 'node.pair.resolved' && (e.payload as { requestId: string }).requestId === requestId)?.payload,
        'node.pair.resolved',
      );
      assert.equal((resolved as { approvals: { received: number; required: number } }).approvals.received, 2);
    } finally {
      await node.close();
      await watcher.close();
    }
  });
});
