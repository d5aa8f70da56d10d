/**
 * Pairing scenarios over real sockets and the real SQLite store. A "remote" client is one that
 * reaches the gateway through a trusted proxy: the test connects from loopback with an
 * X-Forwarded-For header while the gateway trusts 127.0.0.1 as its proxy, which is exactly
 * how a client behind nginx looks to the gateway (never local, whatever address it reports).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  type ConnectError,
  type ConnectOptions,
  connectGateway,
  type DeviceIdentity,
  type GatewayRequestError,
  generateIdentity,
} from '../src/client/connection.js';
import { ManualClock } from '../src/core/env.js';
import { asOwner, cli, cliJson, expectRefused, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { approveRequestInStore } from './helpers/store-fixtures.js';
import { withDeadline } from './helpers/wait.js';

const REMOTE = { 'x-forwarded-for': '198.51.100.23' };

function operator(tg: TestGateway, identity: DeviceIdentity, extra: Partial<ConnectOptions> = {}): Promise<Awaited<ReturnType<typeof connectGateway>>> {
  return connectGateway({
    url: tg.url,
    identity,
    client: { id: 'test', mode: 'test', displayName: 'scenario' },
    ...(extra.owner ? {} : { auth: { token: TEST_TOKEN } }),
    ...extra,
  });
}

const cfg = { trustedProxies: ['127.0.0.1'] };

describe('remote operator pairing', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: cfg });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('(a) pending → clawgate devices approve → admitted with a device token → reconnects with it', async () => {
    const id = generateIdentity();
    const scopes = ['operator.read', 'operator.write'];
    const refused = await expectRefused(operator(tg, id, { headers: REMOTE, scopes }), 'PAIRING_REQUIRED');
    const details = refused.error!.details as { requestId: string; reason: string; deviceId: string };
    assert.equal(details.reason, 'not-paired');
    assert.equal(details.deviceId, id.deviceId);
    assert.equal(refused.closeCode, 1008);
    assert.match(refused.closeReason, /^pairing required/);

    // A retry keeps the same request id.
    const again = await expectRefused(operator(tg, id, { headers: REMOTE, scopes }), 'PAIRING_REQUIRED');
    assert.equal((again.error!.details as { requestId: string }).requestId, details.requestId);

    const listed = await cli(tg, 'devices', 'list', '--json');
    assert.equal(listed.code, 0, listed.stderr);
    const list = JSON.parse(listed.stdout) as { pending: Array<{ requestId: string; remoteIp: string; scopes: string[] }> };
    const pending = list.pending.find((p) => p.requestId === details.requestId);
    assert.ok(pending, 'request listed');
    assert.equal(pending.remoteIp, '198.51.100.23');

    const approved = await cli(tg, 'devices', 'approve', details.requestId);
    assert.equal(approved.code, 0, approved.stderr);

    const conn = await operator(tg, id, { headers: REMOTE, scopes });
    assert.deepEqual(conn.hello.auth.scopes, scopes);
    const token = conn.hello.auth.deviceToken;
    assert.ok(token, 'device token issued on the first admitted connect');
    await conn.close();

    const byToken = await connectGateway({
      url: tg.url,
      identity: id,
      client: { id: 'test', mode: 'test' },
      auth: { deviceToken: token },
      scopes,
      headers: REMOTE,
    });
    assert.equal(byToken.hello.auth.method, 'device-token');
    assert.deepEqual(byToken.hello.auth.scopes, scopes);
    await byToken.close();
  });

  test('a client that asked to wait is admitted on the same socket the moment it is approved', async () => {
    const id = generateIdentity();
    const events: string[] = [];
    const watcher = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const seen = watcher.waitForEvent<{ requestId: string; deviceId: string }>('device.pair.requested', 5000, (p) => p.deviceId === id.deviceId);
    const waiting = operator(tg, id, {
      headers: REMOTE,
      scopes: ['operator.read'],
      caps: ['device-pairing-wait'],
      onEvent: (e) => events.push(e),
      timeoutMs: 10_000,
    });
    const requested = await seen;
    await watcher.request('device.pair.approve', { requestId: requested.requestId });
    const conn = await waiting;
    assert.ok(events.includes('device.pair.waiting'));
    assert.deepEqual(conn.hello.auth.scopes, ['operator.read']);
    assert.ok(conn.hello.auth.deviceToken);
    await conn.close();
    await watcher.close();
  });

  test('a request decided after it was filed but before its connect started waiting (another instance was quicker) still finishes the connect', async () => {
    const store = tg.store;
    const file = store.upsertPairingRequest.bind(store);
    // Exactly the window another instance can hit: the request is committed and visible, the
    // connect that filed it is not registered as waiting yet, and an approval commits and is
    // announced to no one waiting. Simulated here by approving inside the store call itself.
    store.upsertPairingRequest = async (input) => {
      const res = await file(input);
      await approveRequestInStore(store, res.request);
      return res;
    };
    try {
      const id = generateIdentity();
      const conn = await operator(tg, id, { headers: REMOTE, scopes: ['operator.read'], caps: ['device-pairing-wait'], timeoutMs: 10_000 });
      assert.deepEqual(conn.hello.auth.scopes, ['operator.read']);
      assert.ok(conn.hello.auth.deviceToken, 'a token is issued at admission');
      await conn.close();
    } finally {
      store.upsertPairingRequest = file;
    }
  });

  test('a rejected waiting client is told so and closed', async () => {
    const id = generateIdentity();
    const watcher = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const seen = watcher.waitForEvent<{ requestId: string; deviceId: string }>('device.pair.requested', 5000, (p) => p.deviceId === id.deviceId);
    const waiting = operator(tg, id, { headers: REMOTE, caps: ['device-pairing-wait'] });
    waiting.catch(() => {});
    const requested = await seen;
    await watcher.request('device.pair.reject', { requestId: requested.requestId });
    await assert.rejects(waiting, (err: ConnectError) => err.closeCode === 1008 && /pairing rejected/.test(err.closeReason));
    await watcher.close();
  });

  test('(c) a paired device asking for one more scope connects, gets MISSING_SCOPE with the request id, and is widened live', async () => {
    const id = generateIdentity();
    const first = await expectRefused(operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] }), 'PAIRING_REQUIRED');
    assert.equal((await cli(tg, 'devices', 'approve', (first.error!.details as { requestId: string }).requestId)).code, 0);

    const conn = await operator(tg, id, { headers: REMOTE, scopes: ['operator.read', 'operator.pairing'] });
    assert.deepEqual(conn.hello.auth.scopes, ['operator.read']);
    const requestId = conn.hello.auth.pendingRequestId;
    assert.ok(requestId, 'hello-ok names the pending upgrade');
    await assert.rejects(conn.request('device.pair.list', {}), (err: GatewayRequestError) => {
      assert.equal(err.error.code, 'FORBIDDEN');
      assert.equal(err.detailCode, 'MISSING_SCOPE');
      assert.equal((err.error.details as { missingScope: string }).missingScope, 'operator.pairing');
      assert.equal((err.error.details as { requestId: string }).requestId, requestId);
      return true;
    });
    const list = (await cliJson(tg, 'devices', 'list', '--json')) as { pending: Array<{ requestId: string; kind: string; adds: string[] }> };
    const upgrade = list.pending.find((p) => p.requestId === requestId);
    assert.equal(upgrade?.kind, 'scope-upgrade');
    assert.deepEqual(upgrade?.adds, ['operator.pairing']);

    const updated = conn.waitForEvent<{ scopes: string[] }>('auth.updated');
    assert.equal((await cli(tg, 'devices', 'approve', requestId)).code, 0);
    assert.deepEqual((await updated).scopes, ['operator.pairing', 'operator.read']);
    const res = await conn.request<{ paired: unknown[] }>('device.pair.list', {});
    assert.ok(Array.isArray(res.paired));
    await conn.close();
  });

  test('(d) revoke and rotate close the live socket; the old token is refused; the rotated one works', async () => {
    const id = generateIdentity();
    const first = await expectRefused(operator(tg, id, { headers: REMOTE, scopes: ['operator.read', 'operator.pairing'] }), 'PAIRING_REQUIRED');
    await cli(tg, 'devices', 'approve', (first.error!.details as { requestId: string }).requestId);
    const conn = await operator(tg, id, { headers: REMOTE, scopes: ['operator.read', 'operator.pairing'] });
    const oldToken = conn.hello.auth.deviceToken as string;
    assert.ok(oldToken);

    // Self-rotation: the new token comes back in-band, then this socket closes.
    const rotated = await conn.request<{ token: string; tokenDelivery: string }>('device.token.rotate', { deviceId: id.deviceId, role: 'operator' });
    assert.equal(rotated.tokenDelivery, 'in-band');
    const closed = await conn.closed;
    assert.equal(closed.code, 4001);
    assert.equal(closed.reason, 'device token rotated');
    const opts = { url: tg.url, identity: id, client: { id: 'test', mode: 'test' }, scopes: ['operator.read', 'operator.pairing'], headers: REMOTE };
    await expectRefused(connectGateway({ ...opts, auth: { deviceToken: oldToken } }), 'AUTH_DEVICE_TOKEN_MISMATCH');
    const again = await connectGateway({ ...opts, auth: { deviceToken: rotated.token } });

    // Revocation by the owner closes the live socket (no reconnect or tick needed).
    const revoked = await cli(tg, 'devices', 'revoke', '--device', id.deviceId, '--role', 'operator', '--json');
    assert.equal(revoked.code, 0, revoked.stderr);
    const c2 = await again.closed;
    assert.equal(c2.code, 4001);
    assert.equal(c2.reason, 'device token revoked');
    await expectRefused(connectGateway({ ...opts, auth: { deviceToken: rotated.token } }), 'AUTH_DEVICE_TOKEN_MISMATCH');
    // The revoked role must be approved again: a remote shared-token connect files a new request.
    const re = await expectRefused(operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] }), 'PAIRING_REQUIRED');
    assert.equal((re.error!.details as { reason: string }).reason, 'not-paired');
  });

  test('remove closes every socket of the device and forgets it', async () => {
    const id = generateIdentity();
    await expectRefused(operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] }), 'PAIRING_REQUIRED');
    assert.equal((await cli(tg, 'devices', 'approve', id.deviceId)).code, 0);
    // Two live sessions of the one device (and one of another device, which must stay).
    const conns = [
      await operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] }),
      await operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] }),
    ];
    const otherId = generateIdentity();
    const other = await operator(tg, otherId, { scopes: ['operator.read'] });
    assert.equal([...tg.gateway.sessions.values()].filter((s) => s.deviceId === id.deviceId).length, 2);
    const res = await cli(tg, 'devices', 'remove', id.deviceId);
    assert.equal(res.code, 0, res.stderr);
    for (const c of conns) assert.deepEqual(await withDeadline(c.closed, 'each session of the device to close'), { code: 4001, reason: 'device removed' });
    assert.ok(
      [...tg.gateway.sessions.values()].some((s) => s.deviceId === otherId.deviceId),
      "another device's session stays open",
    );
    await other.close();
    const list = (await cliJson(tg, 'devices', 'list', '--json')) as { paired: Array<{ deviceId: string }> };
    assert.ok(!list.paired.some((d) => d.deviceId === id.deviceId));
  });

  test('approving an unknown id answers with the current request ids', async () => {
    const id = generateIdentity();
    const refused = await expectRefused(operator(tg, id, { headers: REMOTE }), 'PAIRING_REQUIRED');
    const res = await cli(tg, 'devices', 'approve', 'no-such-request');
    assert.equal(res.code, 1);
    assert.match(res.stderr, /unknown requestId/);
    const watcher = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    await assert.rejects(watcher.request('device.pair.approve', { requestId: 'no-such-request' }), (err: GatewayRequestError) => {
      const pending = (err.error.details as { pending: Array<{ requestId: string }> }).pending;
      return pending.some((p) => p.requestId === (refused.error!.details as { requestId: string }).requestId);
    });
    await watcher.close();
  });
});

describe('restart between request and approval', () => {
  test('(b) the same request id survives a restart and is approvable afterwards', async () => {
    let tg = await startTestGateway({ config: cfg });
    try {
      const id = generateIdentity();
      const before = await expectRefused(operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] }), 'PAIRING_REQUIRED');
      const requestId = (before.error!.details as { requestId: string }).requestId;
      tg = await tg.restart();
      const after = await expectRefused(operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] }), 'PAIRING_REQUIRED');
      assert.equal((after.error!.details as { requestId: string }).requestId, requestId);
      const approved = await cli(tg, 'devices', 'approve', requestId);
      assert.equal(approved.code, 0, approved.stderr);
      const conn = await operator(tg, id, { headers: REMOTE, scopes: ['operator.read'] });
      assert.deepEqual(conn.hello.auth.scopes, ['operator.read']);
      await conn.close();
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('local pairing and node role', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway();
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('a local client with the shared token is paired silently; another local device is not removed by it', async () => {
    const a = generateIdentity();
    const b = generateIdentity();
    const ca = await operator(tg, a, { scopes: ['operator.read'] });
    assert.ok(ca.hello.auth.deviceToken);
    await ca.close();
    const cb = await operator(tg, b, { scopes: ['operator.read'] });
    await cb.close();
    const list = (await cliJson(tg, 'devices', 'list', '--json')) as { paired: Array<{ deviceId: string }> };
    assert.ok(list.paired.some((d) => d.deviceId === a.deviceId));
    assert.ok(list.paired.some((d) => d.deviceId === b.deviceId));
  });

  test('(e) rotating the node role works: the live node socket alone gets the new token pushed before the 4001 close; the operator never sees it', async () => {
    const id = generateIdentity();
    const nodeOpts = { url: tg.url, identity: id, role: 'node' as const, client: { id: 'node-host', mode: 'node' } };
    const node = await connectGateway({ ...nodeOpts, auth: { token: TEST_TOKEN } });
    const first = node.hello.auth.deviceToken as string;
    assert.equal(node.hello.auth.role, 'node');
    assert.ok(node.hello.features.events.includes('device.token.rotated'));
    // The same device as an operator, and an admin operator elsewhere: neither may receive the node's token.
    const sameDeviceOperator = await operator(tg, id, { scopes: ['operator.read'] });
    const admin = await operator(tg, generateIdentity(), { scopes: ['operator.admin'] });

    const res = await cli(tg, 'devices', 'rotate', '--device', id.deviceId, '--role', 'node', '--json');
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout) as { tokenDelivery: string; token?: string; role: string };
    assert.equal(out.tokenDelivery, 'pushed-live');
    assert.equal(out.token, undefined);
    assert.ok(!res.stdout.includes('cgd1_'), 'no secret in the operator result');
    assert.equal((await node.closed).code, 4001);
    const pushed = node.events.filter((e) => e.event === 'device.token.rotated');
    assert.equal(pushed.length, 1);
    const ev = pushed[0]?.payload as { deviceId: string; role: string; scopes: string[]; deviceToken: string; tokenId: string; issuedAtMs: number };
    assert.equal(ev.deviceId, id.deviceId);
    assert.equal(ev.role, 'node');
    assert.deepEqual(ev.scopes, []);
    assert.match(ev.deviceToken, /^cgd1_/);
    assert.notEqual(ev.deviceToken, first);
    assert.equal(typeof ev.tokenId, 'string');

    // A round trip on each operator socket: anything sent to them before now has arrived.
    await sameDeviceOperator.request('health', {});
    await admin.request('health', {});
    for (const c of [sameDeviceOperator, admin]) {
      assert.deepEqual(
        c.events.filter((e) => e.event === 'device.token.rotated' || JSON.stringify(e.payload ?? null).includes(ev.deviceToken)),
        [],
      );
    }
    await sameDeviceOperator.close();
    await admin.close();

    await expectRefused(connectGateway({ ...nodeOpts, auth: { deviceToken: first } }), 'AUTH_DEVICE_TOKEN_MISMATCH');
    const byPushed = await connectGateway({ ...nodeOpts, auth: { deviceToken: ev.deviceToken } });
    assert.equal(byPushed.hello.auth.method, 'device-token');
    assert.equal(byPushed.hello.auth.role, 'node');
    await byPushed.close();
    await byPushed.closed;

    // Offline: withheld, with the next step for the person rotating; the gateway token renews it.
    const offline = await cli(tg, 'devices', 'rotate', '--device', id.deviceId, '--role', 'node');
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stdout, /was not connected, so the new token was withheld/);
    await expectRefused(connectGateway({ ...nodeOpts, auth: { deviceToken: ev.deviceToken } }), 'AUTH_DEVICE_TOKEN_MISMATCH');
    const again = await connectGateway({ ...nodeOpts, auth: { token: TEST_TOKEN } });
    const second = again.hello.auth.deviceToken as string;
    assert.ok(second && second !== first && second !== ev.deviceToken);
    await again.close();
    const byToken = await connectGateway({ ...nodeOpts, auth: { deviceToken: second } });
    assert.equal(byToken.hello.auth.method, 'device-token');
    await byToken.close();
  });

  test('rotating another live operator device pushes its new operator token (with its scopes) to that device only', async () => {
    const target = generateIdentity();
    const dev = await operator(tg, target, { scopes: ['operator.read'] });
    const old = dev.hello.auth.deviceToken as string;
    const admin = await operator(tg, generateIdentity(), { scopes: ['operator.admin', 'operator.pairing'], ...asOwner(tg) });
    const res = await admin.request<{ tokenDelivery: string; token?: string }>('device.token.rotate', { deviceId: target.deviceId, role: 'operator' });
    assert.deepEqual([res.tokenDelivery, res.token], ['pushed-live', undefined]);
    assert.equal((await dev.closed).code, 4001);
    const ev = dev.events.find((e) => e.event === 'device.token.rotated')?.payload as { role: string; scopes: string[]; deviceToken: string } | undefined;
    assert.ok(ev);
    assert.deepEqual([ev.role, ev.scopes], ['operator', ['operator.read']]);
    await admin.request('health', {});
    assert.equal(admin.events.filter((e) => e.event === 'device.token.rotated').length, 0);
    await admin.close();
    await expectRefused(operator(tg, target, { scopes: ['operator.read'], auth: { deviceToken: old } }), 'AUTH_DEVICE_TOKEN_MISMATCH');
    const again = await operator(tg, target, { scopes: ['operator.read'], auth: { deviceToken: ev.deviceToken } });
    assert.equal(again.hello.auth.method, 'device-token');
    await again.close();
  });

  test('(f) a local process without the shared secret or owner credential cannot pair or widen anything', async () => {
    const stranger = generateIdentity();
    await expectRefused(
      connectGateway({ url: tg.url, identity: stranger, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] }),
      'AUTH_TOKEN_MISSING',
    );
    await expectRefused(
      connectGateway({ url: tg.url, identity: stranger, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'], auth: { token: 'guess' } }),
      'AUTH_TOKEN_MISMATCH',
    );
    // Device-less, every client id and mode: no scopes without the secret.
    for (const client of [
      { id: 'cli', mode: 'cli' },
      { id: 'gateway-client', mode: 'backend' },
    ]) {
      await expectRefused(connectGateway({ url: tg.url, client, scopes: ['operator.admin'] }), 'DEVICE_IDENTITY_REQUIRED');
    }
    // A paired device with only its device token asks for admin: admitted with what it holds, never widened.
    const dev = generateIdentity();
    const paired = await operator(tg, dev, { scopes: ['operator.read'] });
    const token = paired.hello.auth.deviceToken as string;
    await paired.close();
    const wider = await connectGateway({
      url: tg.url,
      identity: dev,
      client: { id: 'test', mode: 'test' },
      auth: { deviceToken: token },
      scopes: ['operator.read', 'operator.admin'],
    });
    assert.deepEqual(wider.hello.auth.scopes, ['operator.read']);
    assert.ok(wider.hello.auth.pendingRequestId);
    await wider.close();
    const grant = await tg.store.getGrant(dev.deviceId, 'operator');
    assert.deepEqual(grant?.scopes, ['operator.read']);
  });

  test('audit: every trust change is in the hash chain and `clawgate audit --verify` checks it', async () => {
    const res = await cli(tg, 'audit', '--json', '--verify');
    assert.equal(res.code, 0, res.stderr);
    const body = JSON.parse(res.stdout) as { entries: Array<{ action: string }>; verified: boolean };
    assert.equal(body.verified, true);
    const actions = new Set(body.entries.map((e) => e.action));
    for (const a of ['pairing.approved', 'token.issued', 'token.rotated']) assert.ok(actions.has(a), `audit has ${a}`);
  });
});

describe('policy and lifecycle', () => {
  test('autoApproveLocal=false: even a local shared-token client waits for approval', async () => {
    const tg = await startTestGateway({ config: { autoApproveLocal: false } });
    try {
      const id = generateIdentity();
      const refused = await expectRefused(operator(tg, id, { scopes: ['operator.read'] }), 'PAIRING_REQUIRED');
      assert.equal((refused.error!.details as { reason: string }).reason, 'not-paired');
      // The owner credential is still authority enough to pair itself.
      const owner = await connectGateway({
        url: tg.url,
        identity: generateIdentity(),
        client: { id: 'cli', mode: 'cli' },
        ...asOwner(tg),
        scopes: ['operator.admin'],
      });
      assert.ok(owner.hello.auth.deviceToken);
      await owner.close();
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });

  test('pending requests expire after the TTL without a retry, a retry keeps one alive; approving then names the current ids', async () => {
    // The gateway's own clock, moved by hand: the default 7-day TTL, no real waiting.
    const clock = new ManualClock(Date.now());
    const tg = await startTestGateway({ config: cfg, clock });
    try {
      const DAY_MS = 24 * 60 * 60 * 1000;
      const requestIdOf = (e: ConnectError) => (e.error!.details as { requestId: string }).requestId;
      const stale = generateIdentity();
      const staleId = requestIdOf(await expectRefused(operator(tg, stale, { headers: REMOTE }), 'PAIRING_REQUIRED'));
      const kept = generateIdentity();
      const keptId = requestIdOf(await expectRefused(operator(tg, kept, { headers: REMOTE }), 'PAIRING_REQUIRED'));
      clock.advance(6 * DAY_MS);
      // A retry inside the TTL refreshes the request (same id) ...
      assert.equal(requestIdOf(await expectRefused(operator(tg, kept, { headers: REMOTE }), 'PAIRING_REQUIRED')), keptId);
      // ... so 8 days after both were filed only the one nobody retried is gone.
      clock.advance(2 * DAY_MS);
      const fresh = generateIdentity();
      const freshId = requestIdOf(await expectRefused(operator(tg, fresh, { headers: REMOTE }), 'PAIRING_REQUIRED'));
      const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
      await assert.rejects(owner.request('device.pair.approve', { requestId: staleId }), (err: GatewayRequestError) => {
        assert.equal(err.detailCode, 'UNKNOWN_REQUEST_ID');
        const ids = (err.error.details as { pending: Array<{ requestId: string }> }).pending.map((p) => p.requestId);
        assert.deepEqual(new Set(ids), new Set([keptId, freshId]));
        return true;
      });
      const audit = await tg.store.listAudit();
      const expired = audit.filter((e) => e.action === 'pairing.expired').map((e) => (e.data as { requestId: string }).requestId);
      assert.deepEqual(expired, [staleId]);
      await owner.close();
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });

  test('rename sets a label that survives re-pairing and is shown in the listing', async () => {
    const tg = await startTestGateway();
    try {
      const id = generateIdentity();
      await (await operator(tg, id, { scopes: ['operator.read'] })).close();
      const res = await cli(tg, 'devices', 'rename', id.deviceId, 'kitchen tablet');
      assert.equal(res.code, 0, res.stderr);
      await (await operator(tg, id, { scopes: ['operator.read', 'operator.write'] })).close();
      const list = (await cliJson(tg, 'devices', 'list', '--json')) as { paired: Array<{ deviceId: string; label: string }> };
      assert.equal(list.paired.find((d) => d.deviceId === id.deviceId)?.label, 'kitchen tablet');
      const bad = await cli(tg, 'devices', 'rename', id.deviceId, 'x'.repeat(65));
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /1 to 64 characters/);
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('clawgate devices reject (CLI)', () => {
  test('rejecting by request id removes the request and the device must ask again', async () => {
    const tg = await startTestGateway({ config: cfg });
    try {
      const id = generateIdentity();
      const first = await expectRefused(operator(tg, id, { headers: REMOTE }), 'PAIRING_REQUIRED');
      const requestId = (first.error!.details as { requestId: string }).requestId;
      const res = await cli(tg, 'devices', 'reject', requestId, '--json');
      assert.equal(res.code, 0, res.stderr);
      assert.deepEqual(JSON.parse(res.stdout), { requestId, deviceId: id.deviceId });
      const list = (await cliJson(tg, 'devices', 'list', '--json')) as { pending: Array<{ requestId: string }> };
      assert.equal(list.pending.length, 0);
      const again = await expectRefused(operator(tg, id, { headers: REMOTE }), 'PAIRING_REQUIRED');
      assert.notEqual((again.error!.details as { requestId: string }).requestId, requestId);
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});
