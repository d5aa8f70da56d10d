/**
 * Wire-level handshake tests: a raw `ws` client (test/helpers/raw.ts, not the SDK) against a
 * real gateway on a real socket with SQLite. One test per bad input; each asserts the response
 * frame's error.code and details.code, the close code and the close reason against the
 * catalogue (packages/protocol/src/errors.ts), and then proves the gateway still admits a valid client.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CATALOGUE, closeReason, type DetailCode } from '@clawgate/protocol/errors';
import { WRITE } from '@clawgate/protocol/scopes';
import { signaturePayloadV2, signaturePayloadV3 } from '@clawgate/protocol/signature';
import WebSocket from 'ws';
import { CREDENTIALS_FILE, loadOrCreateCredentials, readCredentials } from '../src/cli/state.js';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { systemRandom } from '../src/core/env.js';
import { SessionPrincipal } from '../src/core/principal.js';
import { ownerAuth, removeDir, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { type CloseInfo, type ConnectResult, deviceParams, type Frame, plainParams, RawClient, rawConnect, sha256Hex } from './helpers/raw.js';
import { waitFor } from './helpers/wait.js';

const DEVICE_TOKEN_RE = /^cgd1_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/;

interface Expected {
  /** details.code; error.code, the close code and the close reason follow from the catalogue. */
  detail: DetailCode;
  /** The close code as a literal, so the test reads without the catalogue at hand. */
  close: number;
  message?: string | RegExp;
}

/** Assert a rejected connect: error frame (id echoed), details.code, close code and reason. */
function assertRejected(r: ConnectResult, want: Expected, id = 'c1'): NonNullable<Frame['error']> {
  const entry = CATALOGUE[want.detail];
  assert.ok(r.res, `expected a response frame for ${want.detail}`);
  assert.equal(r.res.type, 'res');
  assert.equal(r.res.id, id);
  assert.equal(r.res.ok, false);
  const err = r.res.error;
  assert.ok(err, 'error shape present');
  assert.equal(err.code, entry.code, `error.code of ${want.detail}`);
  assert.equal(err.details?.code, want.detail);
  assert.equal(err.details?.nextStep, entry.next);
  if (entry.recommended && err.details?.recommendedNextStep !== 'retry_with_device_token') {
    assert.equal(err.details?.recommendedNextStep, entry.recommended);
  }
  if (typeof want.message === 'string') assert.equal(err.message, want.message);
  else if (want.message) assert.match(err.message, want.message);
  else assert.equal(err.message, entry.message);
  assert.equal(entry.close, want.close, 'catalogue close code');
  assert.deepEqual(r.close, { code: want.close, reason: closeReason(err.message) });
  return err;
}

/** The hello-ok payload of an accepted connect; fails with the error frame otherwise. */
function helloOf<T>(r: ConnectResult): T {
  assert.ok(r.res?.ok, JSON.stringify(r.res?.error));
  return r.res.payload as T;
}

/** Assert a first frame the gateway cannot answer: no response frame, just the close. */
async function assertClosedWithoutResponse(client: RawClient, close: CloseInfo): Promise<void> {
  const got = await client.closed;
  assert.deepEqual(got, close);
  assert.deepEqual(
    client.frames.filter((f) => f.type !== 'event'),
    [],
    'no response frame',
  );
  assert.deepEqual(client.junk, []);
}

/** A valid client still gets in: the process survived the bad input. */
async function assertStillServing(url: string): Promise<void> {
  const conn = await connectGateway({ url, auth: { token: TEST_TOKEN }, scopes: ['operator.read'], client: { id: 'cli', mode: 'cli' }, timeoutMs: 5000 });
  const health = await conn.request<{ ok: boolean }>('health');
  assert.equal(health.ok, true);
  await conn.close();
}

const INVALID_FRAME_CLOSE = { code: 1008, reason: 'invalid request frame' };

let tg: TestGateway;
before(async () => {
  tg = await startTestGateway();
});
after(async () => {
  await tg.stop();
  removeDir(tg.stateDir);
});

describe('first frame', () => {
  test('the challenge is the first frame: {nonce, ts}, no seq', async () => {
    const c = await RawClient.open(tg.url);
    const ch = await c.challenge();
    assert.equal(c.frames.length, 1);
    assert.equal(c.frames[0]?.seq, undefined);
    assert.match(ch.nonce, /^[0-9a-f-]{36}$/);
    assert.ok(Number.isInteger(ch.ts) && Math.abs(Date.now() - ch.ts) < 5000);
    await c.close();
  });

  test('non-JSON text → no response, close 1008 "invalid request frame"', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    c.send('this is {not json');
    await assertClosedWithoutResponse(c, INVALID_FRAME_CLOSE);
    await assertStillServing(tg.url);
  });

  test('binary frame → no response, close 1008 "invalid request frame"', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    c.send(Buffer.from(JSON.stringify({ type: 'req', id: 'c1', method: 'connect', params: plainParams({ auth: { token: TEST_TOKEN } }) })));
    await assertClosedWithoutResponse(c, INVALID_FRAME_CLOSE);
    await assertStillServing(tg.url);
  });

  test('JSON array → no response, close 1008 "invalid request frame"', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    c.send('[{"type":"req","id":"c1","method":"connect"}]');
    await assertClosedWithoutResponse(c, INVALID_FRAME_CLOSE);
    await assertStillServing(tg.url);
  });

  test('an event frame first → no response, close 1008 "invalid request frame"', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    c.send({ type: 'event', event: 'connect.challenge', payload: { nonce: 'x', ts: 1 } });
    await assertClosedWithoutResponse(c, INVALID_FRAME_CLOSE);
    await assertStillServing(tg.url);
  });

  test('a request frame with an unknown property is not a request (closed schema)', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    c.send({ type: 'req', id: 'c1', method: 'connect', params: plainParams({ auth: { token: TEST_TOKEN } }), extra: true });
    await assertClosedWithoutResponse(c, INVALID_FRAME_CLOSE);
    await assertStillServing(tg.url);
  });

  test('a req other than connect first → HANDSHAKE_NOT_CONNECT with the id echoed, close 1008', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    const res = await c.request('first-health-7', 'health');
    const err = assertRejected(
      { client: c, challenge: { nonce: '', ts: 0 }, res, close: await c.closed },
      { detail: 'HANDSHAKE_NOT_CONNECT', close: 1008 },
      'first-health-7',
    );
    assert.equal(err.message, 'invalid handshake: first request must be connect');
    await assertStillServing(tg.url);
  });

  test('a first frame over 64 KiB → close 1009 (empty reason), no response', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    const params = { ...plainParams({ auth: { token: TEST_TOKEN } }), userAgent: 'x'.repeat(70 * 1024) };
    c.send({ type: 'req', id: 'c1', method: 'connect', params });
    // ws enforces the cap before the gateway sees the frame; the reason is empty, as in the reference.
    await assertClosedWithoutResponse(c, { code: 1009, reason: '' });
    assert.equal(CATALOGUE.PREAUTH_FRAME_TOO_LARGE.close, 1009);
    await assertStillServing(tg.url);
  });

  // The exact 64 KiB boundary (accepted at 65536 bytes, refused at 65537) is in transport.test.ts.
  test('a first frame with a long (1 KB) user agent is read and admitted', async () => {
    const r = await rawConnect(tg.url, () => ({ ...plainParams({ auth: { token: TEST_TOKEN } }), userAgent: 'x'.repeat(1000) }));
    assert.equal(r.res?.ok, true);
    await r.client.close();
  });

  test('hello-ok is exactly the text JSON.stringify writes for it (one key each, nothing left out)', async () => {
    const ws = new WebSocket(tg.url);
    const texts: string[] = [];
    ws.on('message', (data) => {
      texts.push(data.toString());
      if (texts.length === 1) ws.send(JSON.stringify({ type: 'req', id: 'c"1', method: 'connect', params: plainParams({ auth: { token: TEST_TOKEN } }) }));
    });
    await waitFor(() => texts.length === 2, 'hello-ok');
    ws.close();
    const hello = texts[1] as string;
    assert.equal(JSON.stringify(JSON.parse(hello)), hello);
    const frame = JSON.parse(hello);
    assert.equal(frame.id, 'c"1');
    assert.deepEqual(Object.keys(frame.payload), ['type', 'protocol', 'server', 'features', 'snapshot', 'auth', 'policy']);
    assert.ok(frame.payload.features.methods.includes('health'));
  });

  test('no connect before the handshake timeout → close 1008 "handshake timeout", no response', async () => {
    const short = await startTestGateway({ config: { handshakeTimeoutMs: 300 } });
    try {
      const c = await RawClient.open(short.url);
      await c.challenge();
      await assertClosedWithoutResponse(c, { code: 1008, reason: CATALOGUE.HANDSHAKE_TIMEOUT.message });
      assert.equal(CATALOGUE.HANDSHAKE_TIMEOUT.close, 1008);
      await assertStillServing(short.url);
    } finally {
      await short.stop();
      removeDir(short.stateDir);
    }
  });
  test('a text frame that is not UTF-8 → close 1007 from the WebSocket layer (empty reason)', async () => {
    const c = await RawClient.open(tg.url);
    await c.challenge();
    c.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
    await assertClosedWithoutResponse(c, { code: 1007, reason: '' });
    await assertStillServing(tg.url);
  });
});

describe('connect params', () => {
  test('missing client → INVALID_CONNECT_PARAMS naming /client, close 1008', async () => {
    const r = await rawConnect(tg.url, () => {
      const p = plainParams({ auth: { token: TEST_TOKEN } });
      delete p.client;
      return p;
    });
    assertRejected(r, { detail: 'INVALID_CONNECT_PARAMS', close: 1008, message: /^invalid connect params: at \/client: / });
    await assertStillServing(tg.url);
  });

  test('unknown client.id → INVALID_CONNECT_PARAMS naming /client/id', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, client: { id: 'my-own-client' } }));
    assertRejected(r, { detail: 'INVALID_CONNECT_PARAMS', close: 1008, message: /^invalid connect params: at \/client\/id: / });
    await assertStillServing(tg.url);
  });

  test('unknown client.mode → INVALID_CONNECT_PARAMS naming /client/mode', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, client: { mode: 'operator' } }));
    assertRejected(r, { detail: 'INVALID_CONNECT_PARAMS', close: 1008, message: /^invalid connect params: at \/client\/mode: / });
    await assertStillServing(tg.url);
  });

  test('an extra property in params → INVALID_CONNECT_PARAMS (closed schema)', async () => {
    const r = await rawConnect(tg.url, () => ({ ...plainParams({ auth: { token: TEST_TOKEN } }), sudo: true }));
    assertRejected(r, { detail: 'INVALID_CONNECT_PARAMS', close: 1008, message: /^invalid connect params: at \/sudo: / });
    await assertStillServing(tg.url);
  });

  test('an extra property in auth → INVALID_CONNECT_PARAMS', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN, secret: 'x' } }));
    assertRejected(r, { detail: 'INVALID_CONNECT_PARAMS', close: 1008, message: /^invalid connect params: at \/auth\/secret: / });
    await assertStillServing(tg.url);
  });

  test('a device block without nonce → INVALID_CONNECT_PARAMS (schema, not a proof failure)', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => {
      const p = deviceParams({ identity: id, challenge: ch, auth: { token: TEST_TOKEN } });
      delete (p.device as Record<string, unknown>).nonce;
      return p;
    });
    assertRejected(r, { detail: 'INVALID_CONNECT_PARAMS', close: 1008, message: /^invalid connect params: at \/device\/nonce: / });
    await assertStillServing(tg.url);
  });

  test('client.id is lower-cased before matching the enum', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, client: { id: 'CLI' } }));
    assert.equal(r.res?.ok, true);
    await r.client.close();
  });

  test('invalid role → INVALID_ROLE, close 1008 "invalid role"', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, role: 'admin' }));
    assertRejected(r, { detail: 'INVALID_ROLE', close: 1008 });
    await assertStillServing(tg.url);
  });
});

describe('protocol negotiation', () => {
  for (const [lo, hi] of [
    [5, 5],
    [2, 3],
    [3, 3],
    [5, 4],
  ] as const) {
    test(`operator ${lo}..${hi} → PROTOCOL_MISMATCH with details, close 1002`, async () => {
      const r = await rawConnect(tg.url, () => ({ ...plainParams({ auth: { token: TEST_TOKEN } }), minProtocol: lo, maxProtocol: hi }));
      const err = assertRejected(r, { detail: 'PROTOCOL_MISMATCH', close: 1002 });
      assert.deepEqual(err.details, {
        code: 'PROTOCOL_MISMATCH',
        clientMinProtocol: lo,
        clientMaxProtocol: hi,
        expectedProtocol: 4,
        minimumProbeProtocol: 3,
        nextStep: CATALOGUE.PROTOCOL_MISMATCH.next,
      });
      await assertStillServing(tg.url);
    });
  }

  test('a range containing 4 negotiates 4', async () => {
    const r = await rawConnect(tg.url, () => ({ ...plainParams({ auth: { token: TEST_TOKEN } }), minProtocol: 1, maxProtocol: 9 }));
    assert.equal(helloOf<{ protocol: number }>(r).protocol, 4);
    await r.client.close();
  });

  test('a probe may speak 3 (N-1 window)', async () => {
    const r = await rawConnect(tg.url, () => ({
      ...plainParams({ auth: { token: TEST_TOKEN }, client: { id: 'openclaw-probe', mode: 'probe' } }),
      minProtocol: 3,
      maxProtocol: 3,
    }));
    assert.equal(r.res?.ok, true);
    assert.equal(helloOf<{ protocol: number }>(r).protocol, 3);
    await r.client.close();
  });

  test('a node may speak 3 (N-1 window), but not 2', async () => {
    const id = generateIdentity();
    const node = { client: { id: 'node-host', mode: 'node' }, role: 'node', scopes: [] as string[], auth: { token: TEST_TOKEN } };
    const ok = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, ...node, minProtocol: 3, maxProtocol: 3 }));
    assert.equal(ok.res?.ok, true, JSON.stringify(ok.res?.error));
    const hello = ok.res?.payload as { protocol: number; auth: { role: string; scopes: string[] } };
    assert.equal(hello.protocol, 3);
    assert.equal(hello.auth.role, 'node');
    assert.deepEqual(hello.auth.scopes, []);
    await ok.client.close();
    const old = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, ...node, minProtocol: 2, maxProtocol: 2 }));
    assertRejected(old, { detail: 'PROTOCOL_MISMATCH', close: 1002 });
    await assertStillServing(tg.url);
  });
});

describe('shared secrets', () => {
  test('no auth and no device → DEVICE_IDENTITY_REQUIRED (NOT_PAIRED), close 1008', async () => {
    const r = await rawConnect(tg.url, () => plainParams());
    assertRejected(r, { detail: 'DEVICE_IDENTITY_REQUIRED', close: 1008 });
    await assertStillServing(tg.url);
  });

  test('a device-less node → DEVICE_IDENTITY_REQUIRED even with the shared token', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, role: 'node', client: { id: 'node-host', mode: 'node' }, scopes: [] }));
    assertRejected(r, { detail: 'DEVICE_IDENTITY_REQUIRED', close: 1008 });
    await assertStillServing(tg.url);
  });

  test('a signed device with no auth → AUTH_TOKEN_MISSING', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch }));
    const err = assertRejected(r, { detail: 'AUTH_TOKEN_MISSING', close: 1008 });
    assert.equal(err.details?.authReason, 'token_missing');
    assert.equal(err.details?.canRetryWithDeviceToken, false);
    await assertStillServing(tg.url);
  });

  test('wrong shared token, no device → AUTH_TOKEN_MISMATCH, canRetryWithDeviceToken false', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: 'not-the-token' } }));
    const err = assertRejected(r, { detail: 'AUTH_TOKEN_MISMATCH', close: 1008 });
    assert.equal(err.details?.authReason, 'token_mismatch');
    assert.equal(err.details?.canRetryWithDeviceToken, false);
    assert.equal(err.details?.recommendedNextStep, 'update_auth_credentials');
    await assertStillServing(tg.url);
  });

  test('wrong shared token, signed device → AUTH_TOKEN_MISMATCH, canRetryWithDeviceToken false (a retry with the device token next to it is refused too)', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, auth: { token: 'not-the-token' } }));
    const err = assertRejected(r, { detail: 'AUTH_TOKEN_MISMATCH', close: 1008 });
    assert.equal(err.details?.authReason, 'token_mismatch');
    assert.equal(err.details?.canRetryWithDeviceToken, false);
    assert.equal(err.details?.recommendedNextStep, 'update_auth_credentials');
    await assertStillServing(tg.url);
  });

  test('a password on a gateway without one → AUTH_PASSWORD_NOT_CONFIGURED', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { password: 'hunter2' } }));
    const err = assertRejected(r, { detail: 'AUTH_PASSWORD_NOT_CONFIGURED', close: 1008 });
    assert.equal(err.details?.authReason, 'password_missing_config');
    await assertStillServing(tg.url);
  });

  test('wrong password → AUTH_PASSWORD_MISMATCH; the right one is admitted as method "password"', async () => {
    const pw = await startTestGateway({ config: { password: 'correct horse' } });
    try {
      const bad = await rawConnect(pw.url, () => plainParams({ auth: { password: 'battery staple' } }));
      const err = assertRejected(bad, { detail: 'AUTH_PASSWORD_MISMATCH', close: 1008 });
      assert.equal(err.details?.authReason, 'password_mismatch');
      const good = await rawConnect(pw.url, () => plainParams({ auth: { password: 'correct horse' } }));
      assert.equal(good.res?.ok, true);
      assert.equal(helloOf<{ auth: { method: string } }>(good).auth.method, 'password');
      await good.client.close();
      await assertStillServing(pw.url);
    } finally {
      await pw.stop();
      removeDir(pw.stateDir);
    }
  });

  test('the owner credential is admitted device-less with every operator scope', async () => {
    const r = await rawConnect(tg.url, (ch) => plainParams({ auth: ownerAuth(ch, tg.url), client: { id: 'test', mode: 'test' }, scopes: [] }));
    assert.equal(r.res?.ok, true);
    const auth = helloOf<{ auth: { method: string; scopes: string[] } }>(r).auth;
    assert.equal(auth.method, 'owner');
    assert.ok(auth.scopes.includes('operator.admin') && auth.scopes.includes('operator.pairing'));
    await r.client.close();
  });
});

describe('device proof failures', () => {
  const auth = { token: TEST_TOKEN };

  test('one flipped signature byte → DEVICE_AUTH_SIGNATURE_INVALID', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => {
      const p = deviceParams({ identity: id, challenge: ch, auth });
      const device = p.device as { signature: string };
      const sig = Buffer.from(device.signature, 'base64url');
      sig[10] = (sig[10] ?? 0) ^ 0x01;
      device.signature = sig.toString('base64url');
      return p;
    });
    const err = assertRejected(r, { detail: 'DEVICE_AUTH_SIGNATURE_INVALID', close: 1008 });
    assert.equal(err.details?.reason, 'device-signature');
    await assertStillServing(tg.url);
  });

  test('a signature that is not 64 bytes → DEVICE_AUTH_SIGNATURE_INVALID', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, auth, device: { signature: 'AAAA' } }));
    assertRejected(r, { detail: 'DEVICE_AUTH_SIGNATURE_INVALID', close: 1008 });
    await assertStillServing(tg.url);
  });

  test('a nonce that is not this connection’s challenge → DEVICE_AUTH_NONCE_MISMATCH', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: { ...ch, nonce: '00000000-0000-4000-8000-000000000000' }, auth }));
    const err = assertRejected(r, { detail: 'DEVICE_AUTH_NONCE_MISMATCH', close: 1008 });
    assert.equal(err.details?.reason, 'device-nonce-mismatch');
    await assertStillServing(tg.url);
  });

  test('a blank nonce → DEVICE_AUTH_NONCE_REQUIRED', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: { ...ch, nonce: '  ' }, auth }));
    const err = assertRejected(r, { detail: 'DEVICE_AUTH_NONCE_REQUIRED', close: 1008 });
    assert.equal(err.details?.reason, 'device-nonce-missing');
    await assertStillServing(tg.url);
  });

  for (const [label, skew] of [
    ['−10 min', -600_000],
    ['+10 min', 600_000],
    ['−125 s', -125_000],
    ['+125 s', 125_000],
  ] as const) {
    test(`signedAt ${label} → DEVICE_AUTH_SIGNATURE_EXPIRED`, async () => {
      const id = generateIdentity();
      const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, auth, signedAt: ch.ts + skew }));
      const err = assertRejected(r, { detail: 'DEVICE_AUTH_SIGNATURE_EXPIRED', close: 1008 });
      assert.equal(err.details?.reason, 'device-signature-stale');
      await assertStillServing(tg.url);
    });
  }

  test('device.id not derived from the key → DEVICE_AUTH_DEVICE_ID_MISMATCH', async () => {
    const id = generateIdentity();
    const other = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: { ...id, deviceId: other.deviceId }, challenge: ch, auth }));
    const err = assertRejected(r, { detail: 'DEVICE_AUTH_DEVICE_ID_MISMATCH', close: 1008 });
    assert.equal(err.details?.reason, 'device-id-mismatch');
    await assertStillServing(tg.url);
  });

  test('an upper-case device.id → DEVICE_AUTH_DEVICE_ID_MISMATCH (lowercase hex only)', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, auth, device: { id: id.deviceId.toUpperCase() } }));
    assertRejected(r, { detail: 'DEVICE_AUTH_DEVICE_ID_MISMATCH', close: 1008 });
    await assertStillServing(tg.url);
  });

  for (const [label, publicKey] of [
    ['not base64url', '!!! not a key !!!'],
    ['31 bytes', Buffer.alloc(31, 7).toString('base64url')],
    ['a PEM that is not Ed25519', '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n'],
  ] as const) {
    test(`garbage publicKey (${label}) → DEVICE_AUTH_DEVICE_ID_MISMATCH`, async () => {
      const id = generateIdentity();
      const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, auth, device: { publicKey, id: sha256Hex(publicKey) } }));
      const err = assertRejected(r, { detail: 'DEVICE_AUTH_DEVICE_ID_MISMATCH', close: 1008 });
      assert.equal(err.details?.reason, 'device-id-mismatch');
      await assertStillServing(tg.url);
    });
  }
});

describe('signature variants', () => {
  const auth = { token: TEST_TOKEN };

  async function accepted(build: Parameters<typeof rawConnect>[1]): Promise<void> {
    const r = await rawConnect(tg.url, build);
    assert.equal(r.res?.ok, true, JSON.stringify(r.res?.error));
    const hello = r.res?.payload as { auth: { method: string; deviceToken?: string } };
    assert.equal(hello.auth.method, 'token');
    assert.match(hello.auth.deviceToken ?? '', DEVICE_TOKEN_RE);
    assert.equal(r.client.open, true);
    await r.client.close();
  }

  test('accepted: canonical v3', () => accepted((ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth })));
  test('accepted: v2 payload', () => accepted((ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth, payload: signaturePayloadV2 })));
  test('accepted: padded standard base64 signature', () =>
    accepted((ch) => {
      const p = deviceParams({ identity: generateIdentity(), challenge: ch, auth, signatureEncoding: 'base64' });
      assert.ok((p.device as { signature: string }).signature.endsWith('=='));
      return p;
    }));
  test('accepted: PEM SPKI public key', () =>
    accepted((ch) => {
      const id = generateIdentity();
      const pem = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(id.publicKey, 'base64url')]).toString('base64');
      return deviceParams({ identity: id, challenge: ch, auth, device: { publicKey: `-----BEGIN PUBLIC KEY-----\n${pem}\n-----END PUBLIC KEY-----\n` } });
    }));
  test('accepted: signedAt = challenge ts + 5 s', () =>
    accepted((ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth, signedAt: ch.ts + 5000 })));
  test('accepted: signedAt = challenge ts − 115 s', () =>
    accepted((ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth, signedAt: ch.ts - 115_000 })));
  test('accepted: absent deviceFamily (empty last field)', () =>
    accepted((ch) => {
      const p = deviceParams({ identity: generateIdentity(), challenge: ch, auth, client: { deviceFamily: undefined } });
      assert.equal('deviceFamily' in JSON.parse(JSON.stringify(p.client)), false);
      return p;
    }));
  test('accepted: mixed-case platform signed lower-cased', () =>
    accepted((ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth, client: { platform: ' Linux ', deviceFamily: 'iPhone' } })));

  async function rejected(build: Parameters<typeof rawConnect>[1]): Promise<void> {
    const r = await rawConnect(tg.url, build);
    const err = assertRejected(r, { detail: 'DEVICE_AUTH_SIGNATURE_INVALID', close: 1008 });
    assert.equal(err.details?.reason, 'device-signature');
    await assertStillServing(tg.url);
  }

  test('rejected: platform not lower-cased in the payload', () =>
    rejected((ch) =>
      deviceParams({
        identity: generateIdentity(),
        challenge: ch,
        auth,
        client: { platform: 'Linux', deviceFamily: 'Linux' },
        payload: (f) => [signaturePayloadV2({ ...f }).replace(/^v2/, 'v3'), 'Linux', 'linux'].join('|'),
      }),
    ));
  test('rejected: scopes re-ordered', () =>
    rejected((ch) =>
      deviceParams({
        identity: generateIdentity(),
        challenge: ch,
        auth,
        scopes: ['operator.read', 'operator.write'],
        payload: (f) => signaturePayloadV3({ ...f, scopes: ['operator.write', 'operator.read'] }),
      }),
    ));
  test('rejected: scopes joined with ", "', () =>
    rejected((ch) =>
      deviceParams({
        identity: generateIdentity(),
        challenge: ch,
        auth,
        scopes: ['operator.read', 'operator.write'],
        payload: (f) => signaturePayloadV3({ ...f, scopes: ['operator.read, operator.write'] }),
      }),
    ));
  test('rejected: empty token slot while a token is sent', () =>
    rejected((ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth, payload: (f) => signaturePayloadV3({ ...f, token: '' }) })));
  test('rejected: the password in the token slot (a password is never signed)', () =>
    rejected((ch) =>
      deviceParams({ identity: generateIdentity(), challenge: ch, auth: { password: 'pw' }, payload: (f) => signaturePayloadV3({ ...f, token: 'pw' }) }),
    ));
  test('rejected: a different role than the one sent', () =>
    rejected((ch) => deviceParams({ identity: generateIdentity(), challenge: ch, auth, payload: (f) => signaturePayloadV3({ ...f, role: 'node' }) })));
});

describe('dispatch after hello-ok', () => {
  test('device + shared token from loopback: hello-ok.auth.scopes is what dispatch enforces', async () => {
    if (!tg.gateway.methods.has('test.needs-write')) {
      tg.gateway.methods.add({ name: 'test.needs-write', role: 'operator', scope: WRITE, advertised: false, handler: async () => ({ wrote: true }) });
    }
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, auth: { token: TEST_TOKEN }, scopes: ['operator.read'] }));
    assert.equal(r.res?.ok, true, JSON.stringify(r.res?.error));
    const hello = r.res?.payload as {
      type: string;
      protocol: number;
      server: { version: string; connId: string; bootId: string };
      features: { methods: string[]; events: string[]; scopes: string[] };
      auth: { method: string; role: string; scopes: string[]; deviceToken?: string; issuedAtMs?: number };
      policy: { maxPayload: number; maxBufferedBytes: number; tickIntervalMs: number };
      snapshot: Record<string, unknown>;
    };
    assert.equal(hello.type, 'hello-ok');
    assert.equal(hello.protocol, 4);
    assert.deepEqual(hello.auth.scopes, ['operator.read']);
    assert.equal(hello.auth.role, 'operator');
    assert.equal(hello.auth.method, 'token');
    assert.match(hello.auth.deviceToken ?? '', DEVICE_TOKEN_RE);
    assert.equal(typeof hello.auth.issuedAtMs, 'number');
    assert.deepEqual(hello.policy, { maxPayload: 25 * 1024 * 1024, maxBufferedBytes: 50 * 1024 * 1024, tickIntervalMs: tg.gateway.config.tickIntervalMs });
    assert.ok(hello.features.methods.includes('health'));
    assert.ok(!hello.features.methods.includes('test.needs-write'), 'unadvertised methods are hidden');
    assert.ok(hello.features.scopes.includes('operator.admin'));
    assert.ok(hello.features.events.includes('tick'));

    const c = r.client;
    const health = await c.request('h1', 'health');
    assert.equal(health?.ok, true);
    const denied = await c.request('w1', 'test.needs-write');
    assert.equal(denied?.ok, false);
    assert.equal(denied?.error?.code, 'FORBIDDEN');
    assert.equal(denied?.error?.message, 'missing scope: operator.write');
    assert.equal(denied?.error?.details?.code, 'MISSING_SCOPE');
    assert.equal(denied?.error?.details?.missingScope, 'operator.write');
    assert.deepEqual(denied?.error?.details?.requiredScopes, ['operator.write']);
    assert.equal(c.open, true, 'the socket stays open after MISSING_SCOPE');
    assert.equal((await c.request('h2', 'health'))?.ok, true);
    await c.close();

    // Reconnecting with the issued device token: the token is echoed, the scopes are the grant's.
    const again = await rawConnect(tg.url, (ch) =>
      deviceParams({ identity: id, challenge: ch, auth: { deviceToken: hello.auth.deviceToken ?? '' }, scopes: ['operator.read'] }),
    );
    assert.equal(again.res?.ok, true, JSON.stringify(again.res?.error));
    const auth2 = helloOf<{ auth: { method: string; deviceToken?: string; scopes: string[] } }>(again).auth;
    assert.equal(auth2.method, 'device-token');
    assert.equal(auth2.deviceToken, hello.auth.deviceToken);
    assert.deepEqual(auth2.scopes, ['operator.read']);
    await again.client.close();

    // Shared token again: the device already holds a live token, which cannot be shown twice.
    const third = await rawConnect(tg.url, (ch) => deviceParams({ identity: id, challenge: ch, auth: { token: TEST_TOKEN }, scopes: ['operator.read'] }));
    assert.equal(third.res?.ok, true);
    assert.equal(helloOf<{ auth: { deviceToken?: string } }>(third).auth.deviceToken, undefined);
    await third.client.close();
  });

  test('device-less test/test: self-declared scopes are cleared to [] → health is MISSING_SCOPE operator.read', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, client: { id: 'test', mode: 'test' }, scopes: ['operator.admin'] }));
    assert.equal(r.res?.ok, true);
    const auth = helloOf<{ auth: { method: string; scopes: string[]; deviceToken?: string } }>(r).auth;
    assert.deepEqual(auth.scopes, []);
    assert.equal(auth.deviceToken, undefined);
    const res = await r.client.request('h1', 'health');
    assert.equal(res?.error?.code, 'FORBIDDEN');
    assert.equal(res?.error?.details?.code, 'MISSING_SCOPE');
    assert.equal(res?.error?.details?.missingScope, 'operator.read');
    assert.equal(res?.error?.details?.nextStep, CATALOGUE.MISSING_SCOPE.next);
    assert.equal(r.client.open, true);
    await r.client.close();
  });

  test('device-less cli/cli from loopback keeps its scopes (local helper), up to what the shared secret is worth', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN }, scopes: ['operator.write', 'operator.pairing'] }));
    assert.deepEqual(helloOf<{ auth: { scopes: string[] } }>(r).auth.scopes, ['operator.read', 'operator.write']);
    await r.client.close();
  });

  test('unknown method → INVALID_REQUEST/UNKNOWN_METHOD, socket stays open', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN } }));
    const res = await r.client.request('u1', 'no.such.method');
    assert.equal(res?.ok, false);
    assert.equal(res?.error?.code, 'INVALID_REQUEST');
    assert.equal(res?.error?.message, 'unknown method: no.such.method');
    assert.equal(res?.error?.details?.code, 'UNKNOWN_METHOD');
    assert.equal(r.client.open, true);
    // A second `connect` after hello-ok is just an unknown method here.
    const again = await r.client.request('c2', 'connect', plainParams({ auth: { token: TEST_TOKEN } }));
    assert.equal(again?.error?.details?.code, 'UNKNOWN_METHOD');
    assert.equal((await r.client.request('h1', 'health'))?.ok, true);
    await r.client.close();
  });

  test('a node calling an operator method → FORBIDDEN/ROLE_NOT_ALLOWED, socket stays open', async () => {
    const id = generateIdentity();
    const r = await rawConnect(tg.url, (ch) =>
      deviceParams({ identity: id, challenge: ch, role: 'node', scopes: [], client: { id: 'node-host', mode: 'node' }, auth: { token: TEST_TOKEN } }),
    );
    assert.equal(r.res?.ok, true, JSON.stringify(r.res?.error));
    const res = await r.client.request('h1', 'health');
    assert.equal(res?.error?.code, 'FORBIDDEN');
    assert.equal(res?.error?.details?.code, 'ROLE_NOT_ALLOWED');
    assert.equal(r.client.open, true);
    await r.client.close();
  });

  test('bad frames after hello-ok are answered, not fatal; the frame cap is raised past 64 KiB', async () => {
    const r = await rawConnect(tg.url, () => plainParams({ auth: { token: TEST_TOKEN } }));
    const c = r.client;
    c.send('not json');
    const junk = await c.next((f) => f.type === 'res' && f.id === '');
    assert.equal(junk?.error?.details?.code, 'INVALID_FRAME');
    c.send({ type: 'req', id: 'x1', method: 'health', bogus: 1 });
    const bad = await c.response('x1');
    assert.equal(bad?.error?.details?.code, 'INVALID_FRAME');
    const big = await c.request('big', 'health', { probe: 'x'.repeat(100 * 1024) });
    assert.equal(big?.error?.code, 'INVALID_REQUEST');
    assert.equal(big?.error?.details?.code, 'INVALID_PARAMS');
    assert.equal(c.open, true);
    assert.equal((await c.request('h1', 'health'))?.ok, true);
    await c.close();
  });
});

describe('slow consumers', () => {
  test('a dropped best-effort event still consumes a seq; an unscoped event closes 1008 "slow consumer"', () => {
    let buffered = 0;
    const sent: Array<{ event: string; seq: number }> = [];
    const closes: CloseInfo[] = [];
    const transport = {
      send: (text: string) => sent.push(JSON.parse(text) as { event: string; seq: number }),
      close: (code: number, reason: string) => closes.push({ code, reason }),
      bufferedBytes: () => buffered,
    };
    const client = { id: 'test', mode: 'test', version: '1', platform: 'linux' };
    const s = new SessionPrincipal('slow-1', 'shared', 'operator', ['operator.pairing'], transport, client, '127.0.0.1', Date.now());
    tg.gateway.sessions.set(s.connId, s);
    try {
      tg.gateway.broadcast('device.pair.changed', { deviceId: 'd1', change: 'renamed' });
      buffered = 51 * 1024 * 1024;
      tg.gateway.broadcast('device.pair.changed', { deviceId: 'd2', change: 'renamed' });
      buffered = 0;
      tg.gateway.broadcast('device.pair.changed', { deviceId: 'd3', change: 'renamed' });
      assert.deepEqual(
        sent.map((f) => [f.event, f.seq]),
        [
          ['device.pair.changed', 1],
          ['device.pair.changed', 3],
        ],
        'seq 2 was consumed by the dropped event',
      );
      assert.deepEqual(closes, []);
      buffered = 51 * 1024 * 1024;
      tg.gateway.broadcast('tick', { ts: Date.now() });
      assert.deepEqual(closes, [{ code: CATALOGUE.SLOW_CONSUMER.close, reason: CATALOGUE.SLOW_CONSUMER.message }]);
      assert.deepEqual(closes[0], { code: 1008, reason: 'slow consumer' });
    } finally {
      tg.gateway.disconnect(s);
    }
  });
});

describe('rate limiting', () => {
  test('3 wrong tokens lock the shared-token kind for the address; a device token still works', async () => {
    const rl = await startTestGateway({ config: { rateLimit: { maxFailures: 3, windowMs: 60_000, lockoutMs: 60_000, maxKeys: 1000 } } });
    try {
      // Pair a device first (a success clears nothing that matters: no failures yet).
      const id = generateIdentity();
      const paired = await rawConnect(rl.url, (ch) => deviceParams({ identity: id, challenge: ch, auth: { token: TEST_TOKEN } }));
      const deviceToken = helloOf<{ auth: { deviceToken?: string } }>(paired).auth.deviceToken;
      assert.match(deviceToken ?? '', DEVICE_TOKEN_RE);
      await paired.client.close();

      for (let i = 0; i < 3; i++) {
        const bad = await rawConnect(rl.url, () => plainParams({ auth: { token: `wrong-${i}` } }));
        assertRejected(bad, { detail: 'AUTH_TOKEN_MISMATCH', close: 1008 });
      }
      const locked = await rawConnect(rl.url, () => plainParams({ auth: { token: TEST_TOKEN } }));
      const err = assertRejected(locked, { detail: 'AUTH_RATE_LIMITED', close: 1008 });
      assert.equal(err.retryable, true);
      assert.ok(typeof err.retryAfterMs === 'number' && err.retryAfterMs > 0 && err.retryAfterMs <= 60_000, `retryAfterMs ${err.retryAfterMs}`);
      assert.equal(err.details?.retryAfterMs, err.retryAfterMs);
      assert.equal(err.details?.authReason, 'rate_limited');
      assert.equal(err.details?.recommendedNextStep, 'wait_then_retry');
      // The owner credential sent as a bearer token is in the same slot: locked too (and refused anyway).
      const owner = await rawConnect(rl.url, () => plainParams({ auth: { token: TEST_OWNER } }));
      assertRejected(owner, { detail: 'AUTH_RATE_LIMITED', close: 1008 });

      // Another credential kind from the same address is not blocked.
      const byDevice = await rawConnect(rl.url, (ch) => deviceParams({ identity: id, challenge: ch, auth: { deviceToken: deviceToken ?? '' } }));
      assert.equal(byDevice.res?.ok, true, JSON.stringify(byDevice.res?.error));
      assert.equal(helloOf<{ auth: { method: string } }>(byDevice).auth.method, 'device-token');
      assert.equal((await byDevice.client.request('h1', 'health'))?.ok, true);
      await byDevice.client.close();
    } finally {
      await rl.stop();
      removeDir(rl.stateDir);
    }
  });
});

describe('lifecycle', () => {
  test('stop: clients get a `shutdown` event, then close 1012 "service restart"', async () => {
    const g = await startTestGateway();
    try {
      const r = await rawConnect(g.url, () => plainParams({ auth: { token: TEST_TOKEN } }));
      assert.equal(r.res?.ok, true);
      const pending = RawClient.open(g.url).then(async (c) => {
        await c.challenge();
        return c;
      });
      const handshaking = await pending;
      await g.stop();
      const shutdown = await r.client.event('shutdown');
      assert.ok(shutdown, 'shutdown event');
      assert.equal((shutdown.payload as { restartExpectedMs: unknown }).restartExpectedMs, null);
      assert.equal(typeof (shutdown.payload as { reason: unknown }).reason, 'string');
      assert.deepEqual(await r.client.closed, { code: 1012, reason: 'service restart' });
      assert.equal(CATALOGUE.SHUTTING_DOWN.close, 1012);
      assert.equal(CATALOGUE.SHUTTING_DOWN.message, 'service restart');
      // A socket still in its handshake is closed the same way (no session, so no event).
      assert.deepEqual(await handshaking.closed, { code: 1012, reason: 'service restart' });
    } finally {
      await g.stop();
      removeDir(g.stateDir);
    }
  });

  test('stop: a connect waiting for approval is closed 1012, not "pairing rejected", and its request survives', async () => {
    const g = await startTestGateway({ config: { autoApproveLocal: false } });
    let g2: TestGateway | null = null;
    try {
      const c = await RawClient.open(g.url);
      const ch = await c.challenge();
      c.send({
        type: 'req',
        id: 'c1',
        method: 'connect',
        params: deviceParams({ identity: generateIdentity(), challenge: ch, auth: { token: TEST_TOKEN }, caps: ['device-pairing-wait'] }),
      });
      const waiting = await c.event('device.pair.waiting');
      assert.ok(waiting, 'device.pair.waiting event');
      const requestId = (waiting.payload as { requestId: string }).requestId;
      g2 = await g.restart();
      assert.deepEqual(await c.closed, { code: 1012, reason: 'service restart' });
      assert.equal(c.frames.filter((f) => f.type === 'res').length, 0);
      const pending = await g2.store.listPairingRequests();
      assert.ok(
        pending.some((r) => r.requestId === requestId),
        'the pending request outlives the restart',
      );
    } finally {
      await g.stop();
      await g2?.stop();
      removeDir(g.stateDir);
    }
  });

  test('restart on the same state dir: paired devices, their tokens and the gateway id survive', async () => {
    const g1 = await startTestGateway();
    let g2: TestGateway | null = null;
    try {
      const id = generateIdentity();
      const first = await rawConnect(g1.url, (ch) => deviceParams({ identity: id, challenge: ch, auth: { token: TEST_TOKEN } }));
      const deviceToken = helloOf<{ auth: { deviceToken?: string } }>(first).auth.deviceToken ?? '';
      assert.match(deviceToken, DEVICE_TOKEN_RE);
      const ident1 = await first.client.request('i1', 'gateway.identity.get');
      await first.client.close();

      g2 = await g1.restart();
      assert.equal(g2.url, g1.url);
      assert.equal(g2.stateDir, g1.stateDir);
      const again = await rawConnect(g2.url, (ch) => deviceParams({ identity: id, challenge: ch, auth: { deviceToken } }));
      assert.equal(again.res?.ok, true, JSON.stringify(again.res?.error));
      const hello = again.res?.payload as { auth: { method: string; deviceToken?: string }; server: { bootId: string } };
      assert.equal(hello.auth.method, 'device-token');
      assert.equal(hello.auth.deviceToken, deviceToken);
      const ident2 = await again.client.request('i2', 'gateway.identity.get');
      const p1 = ident1?.payload as { gatewayId: string; bootId: string };
      const p2 = ident2?.payload as { gatewayId: string; bootId: string };
      assert.equal(p2.gatewayId, p1.gatewayId);
      assert.notEqual(p2.bootId, p1.bootId);
      await again.client.close();
      await assertStillServing(g2.url);
    } finally {
      await g1.stop();
      await g2?.stop();
      removeDir(g1.stateDir);
    }
  });

  test('CLI state: credentials persist across loads and the file is mode 0600', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-state-'));
    try {
      const first = loadOrCreateCredentials(dir, systemRandom, 1000);
      assert.equal(first.created, true);
      assert.match(first.creds.token, /^cgs_[A-Za-z0-9_-]{43}$/);
      assert.match(first.creds.owner, /^cgo_[A-Za-z0-9_-]{43}$/);
      assert.notEqual(first.creds.token, first.creds.owner);
      const second = loadOrCreateCredentials(dir, systemRandom, 2000);
      assert.equal(second.created, false);
      assert.deepEqual(second.creds, first.creds);
      assert.deepEqual(readCredentials(dir), first.creds);
      assert.equal(statSync(join(dir, CREDENTIALS_FILE)).mode & 0o777, 0o600);
    } finally {
      removeDir(dir);
    }
  });
});

describe('HTTP', () => {
  test('/healthz and /readyz', async () => {
    const base = tg.url.replace(/^ws/, 'http');
    const h = await fetch(`${base}/healthz`);
    assert.equal(h.status, 200);
    assert.deepEqual(await h.json(), { ok: true });
    const r = await fetch(`${base}/readyz`);
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ready: true, failing: [], checks: { listening: { ok: true }, store: { ok: true } } });
    const n = await fetch(`${base}/nope`);
    assert.equal(n.status, 404);
  });

  test('forwarded headers without a trusted proxy → HTTP 403 proxy_attribution_required before the upgrade', async () => {
    await assert.rejects(RawClient.open(tg.url, { 'X-Forwarded-For': '203.0.113.7' }), (err: Error & { statusCode?: number; body?: string }) => {
      assert.equal(err.statusCode, 403);
      assert.equal(JSON.parse(err.body ?? '{}').error.type, 'proxy_attribution_required');
      return true;
    });
    await assertStillServing(tg.url);
  });
});
