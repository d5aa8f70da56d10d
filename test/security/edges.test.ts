/**
 * Small holes at the edges of the gateway, each over a real gateway: the internal principal is
 * not an administrator, browser origins behind a proxy come from configuration only, a session
 * with no scopes keeps the small frame cap, HTTP answers never echo the path and always carry
 * nosniff, and a connect stuck authenticating is timed out.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, test } from 'node:test';
import { MAX_PAYLOAD_BYTES, MAX_PREAUTH_PAYLOAD_BYTES } from '@clawgate/protocol/frames';
import { ADMIN, PAIRING, READ, WRITE } from '@clawgate/protocol/scopes';
import { connectGateway, generateIdentity } from '../../src/client/connection.js';
import { InternalPrincipal, isAdmin } from '../../src/core/principal.js';
import type { Store } from '../../src/store/types.js';
import { asOwner, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { deviceParams, plainParams, RawClient, rawConnect } from '../helpers/raw.js';

async function withGateway(t: { after(fn: () => Promise<void>): void }, opts: Parameters<typeof startTestGateway>[0] = {}): Promise<TestGateway> {
  const tg = await startTestGateway({ store: 'memory', ...opts });
  t.after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });
  return tg;
}

/** Wait for `check` to hold, polling; fails after `deadlineMs` (a deadline, not a timing claim). */
async function until(what: string, check: () => boolean, deadlineMs = 10_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('the internal principal is not an administrator', () => {
  test('isAdmin: owner and operator.admin only', () => {
    assert.equal(isAdmin(new InternalPrincipal('cron', [READ, WRITE, PAIRING])), false);
    assert.equal(isAdmin(new InternalPrincipal('cron', [ADMIN])), true, 'only through a scope it holds');
  });

  test('an internal caller holding operator.pairing cannot remove another device or approve a node, as any pairing-only caller', async (t) => {
    const tg = await withGateway(t, { config: { autoApproveLocal: false } });
    // A device paired by the owner credential (always silent).
    const identity = generateIdentity();
    const phone = await connectGateway({ url: tg.url, identity, ...asOwner(tg), scopes: [READ], client: { id: 'test', mode: 'test' } });
    const deviceId = identity.deviceId;
    await phone.close();
    assert.ok(await tg.store.getDevice(deviceId));
    const internal = new InternalPrincipal('cron', [READ, WRITE, PAIRING]);
    const removed = await tg.gateway.call(internal, 'device.pair.remove', { deviceId });
    assert.equal(removed.ok, false, 'refused');
    if (!removed.ok) assert.equal((removed.error.details as { code?: string }).code, 'MANAGEMENT_DENIED');
    assert.ok(await tg.store.getDevice(deviceId), 'the device is still paired');

    // A node asking to pair leaves a request that only an administrator may approve.
    const ask = await rawConnect(tg.url, (ch) =>
      deviceParams({
        identity: generateIdentity(),
        challenge: ch,
        role: 'node',
        scopes: [],
        client: { id: 'node-host', mode: 'node' },
        auth: { token: TEST_TOKEN },
      }),
    );
    assert.equal(ask.res?.error?.details?.code, 'PAIRING_REQUIRED');
    const requestId = (ask.res?.error?.details as { requestId?: string } | undefined)?.requestId;
    assert.ok(requestId);
    const approved = await tg.gateway.call(internal, 'device.pair.approve', { requestId });
    assert.equal(approved.ok, false, 'approving a node role needs operator.admin');
    if (!approved.ok) assert.equal((approved.error.details as { code?: string }).code, 'APPROVAL_DENIED');
    assert.equal((await tg.store.listPairingRequests()).length, 1, 'still pending');
  });
});

/** An HTTP upgrade request from `localAddress` with these headers: the status line's code and body. */
function upgrade(
  port: number,
  headers: Record<string, string>,
  localAddress = '127.0.0.1',
  path = '/',
): Promise<{ status: number; body: string; nosniff: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      path,
      localAddress,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': Buffer.alloc(16, 7).toString('base64'),
        ...headers,
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, body: '', nosniff: false });
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, nosniff: res.headers['x-content-type-options'] === 'nosniff' }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('origin check behind a trusted proxy', () => {
  const PROXY = '127.0.0.2';

  test('a rebound name forwarded as Host or X-Forwarded-Host is not the gateway; only publicUrl and allowedOrigins are', async (t) => {
    const tg = await withGateway(t, {
      config: { trustedProxies: [PROXY], publicUrl: 'wss://gw.example.test/', allowedOrigins: ['https://admin.example.test'] },
    });
    const port = tg.server.port;
    const proxied = (origin: string, host: string) =>
      upgrade(port, { Origin: origin, Host: host, 'X-Forwarded-Host': host, 'X-Forwarded-For': '203.0.113.5', 'X-Forwarded-Proto': 'https' }, PROXY);
    const rebound = await proxied('https://evil.example', 'evil.example');
    assert.equal(rebound.status, 403, 'the page of a rebound name may not drive the gateway');
    assert.match(rebound.body, /origin_not_allowed/);
    assert.equal((await proxied('https://evil.example', 'gw.example.test')).status, 403);
    assert.equal((await proxied('https://gw.example.test', 'gw.example.test')).status, 101, 'the publicUrl origin');
    assert.equal((await proxied('https://gw.example.test', 'anything.example')).status, 101, 'whatever Host the proxy forwards');
    assert.equal((await proxied('https://admin.example.test', 'gw.example.test')).status, 101, 'a listed origin');
    assert.equal((await proxied('http://gw.example.test', 'gw.example.test')).status, 403, 'another scheme is another origin');
  });

  test('without publicUrl or allowedOrigins, no forwarded name opens the door', async (t) => {
    const tg = await withGateway(t, { config: { trustedProxies: [PROXY] } });
    const r = await upgrade(
      tg.server.port,
      { Origin: 'https://gw.example.test', Host: 'gw.example.test', 'X-Forwarded-Host': 'gw.example.test', 'X-Forwarded-For': '203.0.113.5' },
      PROXY,
    );
    assert.equal(r.status, 403);
    assert.match(r.body, /publicUrl/, 'the refusal names the setting that would allow it');
    // A direct browser on the gateway's own address is still its own origin.
    const direct = await upgrade(tg.server.port, { Origin: `http://127.0.0.1:${tg.server.port}` });
    assert.equal(direct.status, 101);
  });
});

describe('frame cap of a session without scopes', () => {
  const big = (id: string) => JSON.stringify({ type: 'req', id, method: 'health', params: { pad: 'x'.repeat(MAX_PREAUTH_PAYLOAD_BYTES + 1024) } });

  test('an operator with no scopes keeps the 64 KiB pre-auth cap (close 1009); a scoped one may send more', async (t) => {
    const tg = await withGateway(t);
    // A device-less shared-secret client that is not a local helper gets no scopes.
    const bare = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, client: { id: 'test', mode: 'test' }, scopes: [READ] }));
    assert.equal(bare.res?.ok, true, JSON.stringify(bare.res?.error));
    const hello = bare.res?.payload as { auth: { scopes: string[] }; policy: { maxPayload: number } };
    assert.deepEqual(hello.auth.scopes, []);
    assert.equal(hello.policy.maxPayload, MAX_PREAUTH_PAYLOAD_BYTES, 'hello-ok advertises the cap that applies');
    bare.client.send(big('b1'));
    const answered = await bare.client.response('b1', 10_000);
    assert.equal(answered, null, `never parsed, never answered (got ${JSON.stringify(answered?.error)})`);
    assert.equal((await bare.client.closed).code, 1009);

    const scoped = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, scopes: [READ] }));
    assert.equal((scoped.res?.payload as { policy: { maxPayload: number } } | undefined)?.policy.maxPayload, MAX_PAYLOAD_BYTES);
    const answer = await scoped.client.request('s1', 'health', { pad: 'x'.repeat(MAX_PREAUTH_PAYLOAD_BYTES + 1024) });
    assert.equal(answer?.error?.details?.code, 'INVALID_PARAMS', 'parsed and judged');
    await scoped.client.close();
  });

  test('a device session admitted with no scopes gets the large cap once its scope upgrade is approved', async (t) => {
    const tg = await withGateway(t);
    const identity = generateIdentity();
    const first = await connectGateway({ url: tg.url, identity, auth: { token: TEST_TOKEN }, scopes: [], client: { id: 'test', mode: 'test' } });
    const deviceToken = first.hello.auth.deviceToken as string;
    await first.close();
    const c = await RawClient.open(tg.url);
    t.after(() => c.close().then(() => undefined));
    const ch = await c.challenge();
    const res = await c.request('c1', 'connect', deviceParams({ identity, challenge: ch, scopes: [READ], auth: { deviceToken } }));
    const hello = res?.payload as { auth: { scopes: string[]; pendingRequestId?: string }; policy: { maxPayload: number } };
    assert.deepEqual(hello.auth.scopes, []);
    assert.equal(hello.policy.maxPayload, MAX_PREAUTH_PAYLOAD_BYTES);
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    await owner.request('device.pair.approve', { requestId: hello.auth.pendingRequestId });
    await owner.close();
    assert.ok(await c.event('auth.updated'), 'told of the wider scopes');
    const answer = await c.request('r1', 'health', { pad: 'x'.repeat(MAX_PREAUTH_PAYLOAD_BYTES + 1024) });
    assert.equal(answer?.error?.details?.code, 'INVALID_PARAMS', 'a large frame is parsed now');
  });
});

describe('HTTP answers', () => {
  test('a 404 does not echo the path; every answer carries X-Content-Type-Options: nosniff', async (t) => {
    const tg = await withGateway(t, { config: { contextPath: '/cg', allowedOrigins: [] } });
    const base = `http://127.0.0.1:${tg.server.port}`;
    const probe = '/cg/<script>alert(1)</script>';
    const missing = await fetch(`${base}${probe}`);
    assert.equal(missing.status, 404);
    const text = await missing.text();
    assert.ok(!text.includes('script') && !text.includes('alert'), `body echoes nothing of the path: ${text}`);
    assert.equal(missing.headers.get('x-content-type-options'), 'nosniff');
    for (const path of ['/healthz', '/readyz', '/cg/healthz', '/cg', '/cg/', '/nope']) {
      const r = await fetch(`${base}${path}`, { redirect: 'manual' });
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff', `${path} (${r.status})`);
      await r.arrayBuffer();
    }
    const post = await fetch(`${base}/cg/`, { method: 'POST' });
    assert.equal(post.headers.get('x-content-type-options'), 'nosniff', `POST / (${post.status})`);
    // Refused upgrades: wrong path (nothing echoed) and a foreign origin.
    const wrongPath = await upgrade(tg.server.port, {}, '127.0.0.1', '/elsewhere-<b>');
    assert.equal(wrongPath.status, 404);
    assert.ok(!wrongPath.body.includes('elsewhere'), wrongPath.body);
    assert.ok(wrongPath.nosniff);
    const foreign = await upgrade(tg.server.port, { Origin: 'https://evil.example' }, '127.0.0.1', '/cg');
    assert.equal(foreign.status, 403);
    assert.ok(foreign.nosniff);
  });
});

describe('handshake timeout', () => {
  test('a connect stuck authenticating (a hung store) is closed with HANDSHAKE_TIMEOUT, and its late result is dropped', async (t) => {
    const tg = await withGateway(t, { config: { handshakeTimeoutMs: 300 } });
    // The store hangs: listGrants answers only when the test lets it.
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let hung = 0;
    let resumed = 0;
    const store = tg.store as Store & { listGrants: Store['listGrants'] };
    const real = store.listGrants.bind(store);
    store.listGrants = async (...args: Parameters<Store['listGrants']>) => {
      hung++;
      await gate;
      const out = await real(...args);
      resumed++;
      return out;
    };
    t.after(() => release());
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth: { token: TEST_TOKEN } }));
    assert.equal(hung, 1, 'the connect reached the store');
    assert.equal(r.res, null, 'no answer');
    assert.deepEqual(r.close, { code: 1008, reason: 'handshake timeout' });
    release();
    await until('the hung call returned', () => resumed === 1);
    await until('no session is left behind', () => tg.gateway.sessions.size === 0);
  });

  test('a connect timed out while authenticating leaves no approval waiter behind when its result is a wait', async (t) => {
    const tg = await withGateway(t, { config: { handshakeTimeoutMs: 300, autoApproveLocal: false } });
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const store = tg.store as Store & { listGrants: Store['listGrants'] };
    const real = store.listGrants.bind(store);
    store.listGrants = async (...args: Parameters<Store['listGrants']>) => {
      await gate;
      return real(...args);
    };
    t.after(() => release());
    const identity = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity, challenge: ch, auth: { token: TEST_TOKEN }, caps: ['device-pairing-wait'] }));
    assert.deepEqual(r.close, { code: 1008, reason: 'handshake timeout' });
    store.listGrants = real;
    release();
    const pending = async () => (await tg.store.listPairingRequests()).filter((p) => p.deviceId === identity.deviceId);
    const end = Date.now() + 10_000;
    while ((await pending()).length === 0) {
      if (Date.now() > end) assert.fail('the late connect filed no request');
      await new Promise((res) => setTimeout(res, 10));
    }
    // Approving it must not admit a session for the socket that is long gone.
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    await owner.request('device.pair.approve', { requestId: (await pending())[0]?.requestId });
    assert.deepEqual(
      [...tg.gateway.sessions.values()].map((s) => s.deviceId ?? s.kind),
      ['owner'],
      'only the owner session; none for the timed-out connect',
    );
    await owner.close();
  });

  test('a connect waiting for approval outlives the handshake timeout', async (t) => {
    const tg = await withGateway(t, { config: { handshakeTimeoutMs: 300, autoApproveLocal: false } });
    const waiter = await RawClient.open(tg.url);
    t.after(() => waiter.close().then(() => undefined));
    const ch = await waiter.challenge();
    waiter.send({
      type: 'req',
      id: 'c1',
      method: 'connect',
      params: deviceParams({ identity: generateIdentity(), challenge: ch, auth: { token: TEST_TOKEN }, caps: ['device-pairing-wait'] }),
    });
    const waiting = await waiter.event('device.pair.waiting');
    assert.ok(waiting);
    // A socket opened after the waiter and silent: once the timeout has closed it, the waiter's has passed too.
    const idle = await RawClient.open(tg.url);
    assert.deepEqual(await idle.closed, { code: 1008, reason: 'handshake timeout' });
    assert.ok(waiter.open, 'the waiting connect is still open');
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    await owner.request('device.pair.approve', { requestId: (waiting.payload as { requestId: string }).requestId });
    await owner.close();
    const res = await waiter.response('c1');
    assert.equal(res?.ok, true, JSON.stringify(res?.error));
  });
});
