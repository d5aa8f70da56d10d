/**
 * What the transport promises, over real sockets: the keep-alive ping and the end of a silent
 * peer, `/readyz` during a shutdown, the frame-size limits at their exact boundaries, no
 * `permessage-deflate`, and `X-Real-IP` as the fallback a trusted proxy may send. Sizes are
 * written as literal numbers (64 KiB, 25 MiB): the test states the documented limit, it does not
 * read it back from the constant it checks.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { generateIdentity } from '../src/client/connection.js';
import { removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { deviceParams, type Frame, plainParams, RawClient } from './helpers/raw.js';
import { waitFor, withDeadline } from './helpers/wait.js';

const PREAUTH_LIMIT_BYTES = 64 * 1024;
const POSTAUTH_LIMIT_BYTES = 25 * 1024 * 1024;

/** `frame` serialized and padded (inside `pad`) to exactly `bytes` bytes of UTF-8. */
function frameOfSize(frame: Record<string, unknown>, pad: (filler: string) => void, bytes: number): string {
  pad('');
  const base = Buffer.byteLength(JSON.stringify(frame));
  assert.ok(base <= bytes, 'the empty frame fits');
  pad('x'.repeat(bytes - base));
  const text = JSON.stringify(frame);
  assert.equal(Buffer.byteLength(text), bytes);
  return text;
}

/** A connect of exactly `bytes` bytes with the shared token (the padding is the user agent). */
function connectOfSize(bytes: number): string {
  const params = plainParams({ auth: { token: TEST_TOKEN } });
  const frame = { type: 'req', id: 'c1', method: 'connect', params };
  return frameOfSize(frame, (filler) => (params.userAgent = filler), bytes);
}

/** An authenticated raw socket and its connection id (hello-ok `server.connId`). */
async function authenticated(url: string, headers?: Record<string, string>, options = {}): Promise<RawClient & { connId: string }> {
  const c = await RawClient.open(url, headers, options);
  await c.challenge();
  const res = await c.request('c1', 'connect', plainParams({ auth: { token: TEST_TOKEN }, scopes: ['operator.read'] }));
  assert.ok(res?.ok, JSON.stringify(res?.error));
  const connId = (res.payload as { server: { connId: string } }).server.connId;
  return Object.assign(c, { connId });
}

describe('frame size limits and compression', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ store: 'memory' });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('before authentication a frame of exactly 64 KiB is read; one byte more closes 1009 with no response', async () => {
    const fits = await RawClient.open(tg.url);
    await fits.challenge();
    fits.send(connectOfSize(PREAUTH_LIMIT_BYTES));
    // Read and judged on its content: the over-long user agent is named, the close is a policy one.
    const res = await fits.response('c1');
    assert.equal(res?.error?.details?.code, 'INVALID_CONNECT_PARAMS', JSON.stringify(res));
    assert.match(res?.error?.message ?? '', /userAgent/);
    assert.equal((await fits.closed).code, 1008);

    const over = await RawClient.open(tg.url);
    await over.challenge();
    over.send(connectOfSize(PREAUTH_LIMIT_BYTES + 1));
    assert.deepEqual(await withDeadline(over.closed, 'the close'), { code: 1009, reason: '' });
    assert.deepEqual(
      over.frames.filter((f) => f.type === 'res'),
      [],
    );
  });

  test('after authentication a frame of exactly 25 MiB is read; one byte more closes 1009', async () => {
    const c = await authenticated(tg.url);
    const params: Record<string, unknown> = {};
    c.send(frameOfSize({ type: 'req', id: 'big', method: 'health', params }, (filler) => (params.pad = filler), POSTAUTH_LIMIT_BYTES));
    const res = await c.response('big', 30_000);
    assert.ok(res, 'a response to the 25 MiB frame (whatever it says about the params)');
    assert.ok(c.open);

    const params2: Record<string, unknown> = {};
    c.send(frameOfSize({ type: 'req', id: 'bigger', method: 'health', params: params2 }, (filler) => (params2.pad = filler), POSTAUTH_LIMIT_BYTES + 1));
    assert.deepEqual(await withDeadline(c.closed, 'the close'), { code: 1009, reason: '' });
    assert.equal(
      c.frames.some((f) => f.id === 'bigger'),
      false,
    );
  });

  test('permessage-deflate is never negotiated, even when the client offers it', async () => {
    const ws = new WebSocket(tg.url, { perMessageDeflate: true });
    const offered = new Promise<string | undefined>((resolve) =>
      ws.once('upgrade', (res) => resolve(res.headers['sec-websocket-extensions'] as string | undefined)),
    );
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    assert.equal(await offered, undefined, 'no Sec-WebSocket-Extensions in the 101 response');
    assert.equal(ws.extensions, '');
    ws.close();
  });
});

describe('the raw test client itself', () => {
  test('next() hands out each recorded frame once: asking twice gets the second answer, not the first again', async () => {
    const tg = await startTestGateway({ store: 'memory' });
    try {
      const c = await authenticated(tg.url);
      c.send({ type: 'req', id: 'same', method: 'health' });
      c.send({ type: 'req', id: 'same', method: 'health' });
      const first = await c.response('same');
      const second = await c.response('same');
      assert.ok(first && second);
      assert.notEqual(first, second);
      assert.equal(c.frames.filter((f) => f.id === 'same').length, 2);
      await c.close();
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('keep-alive', () => {
  let tg: TestGateway;
  before(async () => {
    // 25 s in production (PROTOCOL.md); injected short here so nothing waits in real time.
    tg = await startTestGateway({ store: 'memory', config: { pingIntervalMs: 100 } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('the gateway pings every socket; one that answers stays connected', async () => {
    const c = await authenticated(tg.url);
    let pings = 0;
    c.ws.on('ping', () => pings++);
    await waitFor(() => pings >= 4, 'four pings', { timeoutMs: 10_000 });
    assert.ok(c.open, 'answered every ping: still open');
    assert.ok(tg.gateway.sessions.has(c.connId));
    await c.close();
  });

  test('a peer that never answers a ping is terminated (1006) and its session ends', async () => {
    const silent = await authenticated(tg.url, undefined, { autoPong: false });
    let pings = 0;
    silent.ws.on('ping', () => pings++);
    assert.ok(tg.gateway.sessions.has(silent.connId));
    const closed = await withDeadline(silent.closed, 'the silent peer to be dropped', 5_000);
    assert.equal(closed.code, 1006, 'terminated, no close frame');
    assert.ok(pings >= 1, 'it was pinged before it was dropped');
    await waitFor(() => !tg.gateway.sessions.has(silent.connId), 'the session to end');
  });
});

describe('/readyz', () => {
  test('200 while serving, 503 {ready:false} from the moment a shutdown begins (/healthz still 200)', async () => {
    const tg = await startTestGateway({ store: 'memory' });
    try {
      const http = tg.url.replace(/^ws/, 'http');
      const ready = await fetch(`${http}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { ready: true, failing: [], checks: { listening: { ok: true }, store: { ok: true } } });
      // Hold the shutdown in a stop hook so the window between "stopping" and "closed" can be observed.
      let release = () => {};
      let hookRan = false;
      tg.gateway.onStop(
        () =>
          new Promise<void>((resolve) => {
            hookRan = true;
            release = resolve;
          }),
      );
      const stopping = tg.stop();
      await waitFor(() => hookRan, 'the shutdown to reach the stop hook');
      const during = await fetch(`${http}/readyz`);
      assert.equal(during.status, 503);
      const body = (await during.json()) as { ready: boolean; failing: string[] };
      assert.equal(body.ready, false);
      assert.deepEqual(body.failing, ['listening'], 'what is failing is named');
      assert.equal((await fetch(`${http}/healthz`)).status, 200, 'alive, just not ready');
      release();
      await stopping;
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('X-Real-IP from a trusted proxy', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ store: 'memory', config: { trustedProxies: ['127.0.0.1'] } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  const pairingRequest = async (headers: Record<string, string>): Promise<{ res: Frame | null; address: string | undefined }> => {
    const identity = generateIdentity();
    const c = await RawClient.open(tg.url, headers);
    const challenge = await c.challenge();
    const res = await c.request('c1', 'connect', deviceParams({ identity, challenge, auth: { token: TEST_TOKEN } }));
    await c.closed;
    const pending = await tg.store.listPairingRequests(identity.deviceId);
    return { res, address: pending[0]?.address };
  };

  test('without X-Forwarded-For or Forwarded, the client is the X-Real-IP address (never local)', async () => {
    const { res, address } = await pairingRequest({ 'x-real-ip': '198.51.100.44' });
    // Local clients are approved silently; this one must ask, from the address the proxy named.
    assert.equal(res?.error?.details?.code, 'PAIRING_REQUIRED');
    assert.equal(address, '198.51.100.44');
  });

  test('X-Forwarded-For, when present, wins over X-Real-IP', async () => {
    const { address } = await pairingRequest({ 'x-forwarded-for': '203.0.113.5', 'x-real-ip': '198.51.100.45' });
    assert.equal(address, '203.0.113.5');
  });
});
