/**
 * @clawgate/client in Node against a real gateway (real sockets, the real SQLite store, the
 * file credential store on disk): the applicable scenarios of windows-companion §6.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  applySetupCode,
  ClientError,
  type ClientState,
  type CredentialStore,
  ensureRecord,
  FileCredentialStore,
  GatewayCallError,
  GatewayClient,
  type GatewayClientOptions,
  type GatewayRecord,
  MemoryCredentialStore,
  nodePlatform,
  nodeTransport,
  normalizeGatewayUrl,
  pairWithSetupCode,
  resolveCredential,
  type SocketHandlers,
  setSharedToken,
  type Transport,
} from '@clawgate/client';
import { encodeSetupCode } from '@clawgate/protocol/setup-code';
import { WebSocketServer } from 'ws';
import { connectGateway } from '../src/client/connection.js';
import type { TlsMaterial } from '../src/core/config.js';
import { ManualClock } from '../src/core/env.js';
import { certFacts, ensureSelfSignedCert } from '../src/server/tls.js';
import { mintCode, ownerCall, pairedDevices, reach, tempDir } from './helpers/client.js';
import { asOwner, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { waitFor } from './helpers/wait.js';

const platform = nodePlatform();
const fast = { backoff: { baseMs: 40, maxMs: 400 } };
const cleanup: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

async function gateway(config: Parameters<typeof startTestGateway>[0] = {}): Promise<TestGateway> {
  const tg = await startTestGateway(config);
  cleanup.push(() => removeDir(tg.stateDir));
  return track(tg);
}

/** Stop every incarnation of a test gateway at the end, however often it was restarted. */
function track(tg: TestGateway): TestGateway {
  cleanup.push(() => tg.stop());
  const restart = tg.restart.bind(tg);
  tg.restart = async () => track(await restart());
  return tg;
}

function fileStore(): FileCredentialStore {
  const dir = tempDir();
  cleanup.push(() => removeDir(dir));
  return new FileCredentialStore(dir);
}

function client(opts: Partial<GatewayClientOptions> & { url: string; store: CredentialStore }): GatewayClient {
  const c = new GatewayClient({ platform, ...fast, ...opts });
  cleanup.push(() => c.close());
  return c;
}

/** A store over `inner` whose writes labelled `label` fail ("disk full") until `heal()`. */
function failingWrites(inner: CredentialStore, label: string): { store: CredentialStore; heal(): void } {
  let failing = true;
  return {
    store: {
      load: (k) => inner.load(k),
      list: () => inner.list(),
      update: (k, m, o) => (failing && o?.label === label ? Promise.reject(new Error('disk full')) : inner.update(k, m, o)),
    },
    heal: () => {
      failing = false;
    },
  };
}

async function only(store: CredentialStore): Promise<GatewayRecord> {
  const all = await store.list();
  assert.equal(all.length, 1, 'exactly one gateway record');
  return all[0]!;
}

describe('URL normalisation and credential precedence', () => {
  test('loopback aliases, http(s) schemes and default ports name one gateway; paths are kept', () => {
    const a = normalizeGatewayUrl('ws://localhost:18789');
    for (const u of ['ws://127.0.0.1:18789', 'http://[::1]:18789/', 'ws://LOCALHOST.:18789/#frag']) assert.equal(normalizeGatewayUrl(u).key, a.key, u);
    assert.equal(normalizeGatewayUrl('https://gw.example/').url, 'wss://gw.example');
    assert.equal(normalizeGatewayUrl('https://gw.example').key, normalizeGatewayUrl('wss://gw.example:443').key);
    assert.equal(normalizeGatewayUrl('http://gw.example:80/x').key, normalizeGatewayUrl('ws://gw.example/x/').key);
    assert.equal(normalizeGatewayUrl('https://gw.example/claw/?a=1').url, 'wss://gw.example/claw/?a=1');
    assert.notEqual(normalizeGatewayUrl('ws://gw.example/a').key, normalizeGatewayUrl('ws://gw.example/b').key);
    assert.notEqual(normalizeGatewayUrl('ws://localhost:1').key, normalizeGatewayUrl('wss://localhost:1').key);
    for (const bad of ['ftp://x', 'localhost:18789', 'ws://user:pw@host', '']) {
      assert.throws(
        () => normalizeGatewayUrl(bad),
        (e: unknown) => e instanceof ClientError && e.code === 'INVALID_GATEWAY_URL',
        bad,
      );
    }
  });

  test('device token beats shared token beats bootstrap token, per role; a forced bootstrap wins once', () => {
    const rec: GatewayRecord = {
      version: 1,
      key: 'k',
      url: 'ws://x',
      deviceId: 'd',
      identity: null,
      createdAtMs: 0,
      sharedToken: 'shared',
      bootstrap: { token: 'boot', setAtMs: 0 },
      tokens: { operator: { token: 'op', scopes: ['operator.read'], storedAtMs: 0 } },
    };
    assert.deepEqual(resolveCredential(rec, 'operator')?.auth, { deviceToken: 'op' });
    assert.deepEqual(resolveCredential(rec, 'operator')?.scopes, ['operator.read']);
    assert.deepEqual(resolveCredential(rec, 'node')?.auth, { token: 'shared' });
    assert.deepEqual(resolveCredential(rec, 'node')?.scopes, []);
    assert.deepEqual(resolveCredential(rec, 'operator', { forceBootstrap: true })?.auth, { bootstrapToken: 'boot' });
    assert.deepEqual(resolveCredential({ ...rec, sharedToken: '  ' }, 'node')?.auth, { bootstrapToken: 'boot' });
    assert.equal(resolveCredential({ ...rec, sharedToken: undefined, bootstrap: undefined }, 'node'), null);
  });
});

describe('setup-code pairing', () => {
  test('operator code: connected with operator.write, tokens durable (0600), bootstrap cleared, a fresh client reconnects by device token', async () => {
    const tg = await gateway();
    const store = fileStore();
    const code = await mintCode(tg, { profile: 'operator' });
    const c = await pairWithSetupCode(store, platform, code.setupCode, { displayName: 'sdk-test', ...fast });
    cleanup.push(() => c.close());
    const s = c.state;
    assert.equal(s.status, 'connected');
    if (s.status !== 'connected') return;
    assert.equal(s.credential, 'bootstrap-token');
    assert.ok(s.scopes.includes('operator.write'), `scopes ${s.scopes}`);
    assert.equal(((await c.request('health')) as { ok: boolean }).ok, true);
    // A call that needs operator.write works …
    await c.request('sessions.create', { key: 'sdk-write-check' });
    // … and really needs it: a read-only device is refused.
    const reader = await pairWithSetupCode(new MemoryCredentialStore(), platform, (await mintCode(tg, { scopes: ['operator.read'] })).setupCode, fast);
    await assert.rejects(
      reader.request('sessions.create', { key: 'sdk-write-denied' }),
      (e: unknown) => e instanceof GatewayCallError && e.code === 'MISSING_SCOPE',
    );
    reader.close();
    const rec = await only(store);
    assert.ok(rec.tokens.operator?.token.startsWith('cgd1_'));
    assert.equal(rec.bootstrap, undefined, 'bootstrap cleared once the role token was durable');
    for (const f of readdirSync(store.gatewaysDir)) assert.equal(statSync(`${store.gatewaysDir}/${f}`).mode & 0o777, 0o600, f);
    c.close();

    const again = client({ url: tg.url, store });
    const s2 = await again.connect();
    assert.equal(s2.credential, 'device-token');
    assert.equal(s2.deviceId, rec.deviceId);
    assert.ok(s2.scopes.includes('operator.write'));
  });

  test('operator+node code: one identity, both role tokens stored; the node connects with its own token', async () => {
    const tg = await gateway();
    const store = fileStore();
    const code = await mintCode(tg, { profile: 'operator+node' });
    const op = await pairWithSetupCode(store, platform, code.link, fast);
    cleanup.push(() => op.close());
    const rec = await only(store);
    assert.ok(rec.tokens.operator && rec.tokens.node, 'both role tokens are stored');
    assert.equal(rec.bootstrap, undefined);
    const node = client({ url: tg.url, store, role: 'node' });
    const ns = await node.connect();
    assert.equal(ns.role, 'node');
    assert.equal(ns.credential, 'device-token');
    assert.equal(ns.deviceId, rec.deviceId);
    const dev = (await pairedDevices(tg)).find((d) => d.deviceId === rec.deviceId);
    assert.deepEqual([...(dev?.roles ?? [])].sort(), ['node', 'operator']);
  });

  test('invalid, expired and used codes fail with a clear error and change nothing', async () => {
    const tg = await gateway();
    const store = fileStore();
    await assert.rejects(applySetupCode(store, platform, 'not a code!'), (e: unknown) => e instanceof ClientError && e.code === 'INVALID_SETUP_CODE');
    const code = await mintCode(tg);
    await assert.rejects(
      applySetupCode(store, platform, code.setupCode, { nowMs: code.expiresAtMs + 1 }),
      (e: unknown) => e instanceof ClientError && e.code === 'INVALID_SETUP_CODE' && /expired/.test(e.message) && /clawgate qr/.test(e.nextStep ?? ''),
    );
    assert.deepEqual(await store.list(), [], 'nothing stored for a refused code');

    const first = await pairWithSetupCode(fileStore(), platform, code.setupCode, fast);
    first.close();
    await assert.rejects(pairWithSetupCode(store, platform, code.setupCode, fast), (e: unknown) => {
      assert.ok(e instanceof ClientError && e.code === 'CLIENT_PAUSED', String(e));
      assert.equal(e.gatewayCode, 'AUTH_BOOTSTRAP_TOKEN_USED');
      assert.match(e.nextStep ?? '', /clawgate qr/);
      return true;
    });

    // Expired by the gateway's clock even though this device's clock says it is still valid.
    const clock = new ManualClock(Date.now());
    const slowGw = await gateway({ clock });
    const soon = await mintCode(slowGw, { ttlMs: 10_000 });
    clock.advance(11_000);
    await assert.rejects(
      pairWithSetupCode(fileStore(), platform, soon.setupCode, { ...fast, nowMs: soon.expiresAtMs - 5_000 }),
      (e: unknown) => e instanceof ClientError && e.gatewayCode === 'AUTH_BOOTSTRAP_TOKEN_EXPIRED' && (e.nextStep ?? '').length > 0,
    );

    const revoked = await mintCode(tg);
    await ownerCall(tg, 'device.pair.setupRevoke', { setupId: revoked.setupId });
    await assert.rejects(
      pairWithSetupCode(fileStore(), platform, revoked.setupCode, fast),
      (e: unknown) => e instanceof ClientError && e.gatewayCode === 'AUTH_BOOTSTRAP_TOKEN_REVOKED',
    );
  });

  test('URL variants of one gateway share one record and one identity', async () => {
    const tg = await gateway();
    const store = fileStore();
    const code = await mintCode(tg);
    const c = await pairWithSetupCode(store, platform, code.setupCode, fast);
    c.close();
    const port = new URL(tg.url).port;
    for (const url of [`http://localhost:${port}/`, `ws://LOCALHOST:${port}/`, `ws://127.0.0.1:${port}`]) {
      const v = client({ url, store });
      const s = await v.connect();
      assert.equal(s.credential, 'device-token', url);
      v.close();
    }
    // Re-applying a code under an alias updates the same record and keeps its tokens.
    const before = await only(store);
    const second = await mintCode(tg);
    await applySetupCode(store, platform, second.setupCode, { url: `http://localhost:${port}` });
    const afterApply = await only(store);
    assert.equal(afterApply.deviceId, before.deviceId);
    assert.equal(afterApply.tokens.operator?.token, before.tokens.operator?.token);
    assert.ok(afterApply.bootstrap);
  });
});

describe('re-pairing', () => {
  test('the same code applied twice by the same device succeeds both times with working tokens', async () => {
    const tg = await gateway();
    const store = fileStore();
    const code = await mintCode(tg);
    const one = await pairWithSetupCode(store, platform, code.setupCode, fast);
    one.close();
    const first = (await only(store)).tokens.operator?.token;
    const two = await pairWithSetupCode(store, platform, code.setupCode, fast);
    two.close();
    const rec = await only(store);
    assert.ok(rec.tokens.operator?.token && rec.tokens.operator.token !== first, 'fresh tokens from the repeat');
    assert.equal(rec.bootstrap, undefined);
    const c = client({ url: tg.url, store });
    assert.equal((await c.connect()).credential, 'device-token');
  });

  test('a used code applied to a paired device fails clearly and leaves the pairing working', async () => {
    const tg = await gateway();
    const store = fileStore();
    const c = await pairWithSetupCode(store, platform, (await mintCode(tg)).setupCode, fast);
    c.close();
    const before = await only(store);
    const spent = await mintCode(tg);
    (await pairWithSetupCode(fileStore(), platform, spent.setupCode, fast)).close();
    await assert.rejects(
      pairWithSetupCode(store, platform, spent.setupCode, fast),
      (e: unknown) => e instanceof ClientError && e.gatewayCode === 'AUTH_BOOTSTRAP_TOKEN_USED',
    );
    const afterFail = await only(store);
    assert.deepEqual(afterFail.tokens, before.tokens, 'device tokens untouched');
    assert.equal(afterFail.bootstrap, undefined, 'the dead code is not kept');
    const d = client({ url: tg.url, store });
    assert.equal((await d.connect()).credential, 'device-token');
  });
});

describe('approval, revocation, restarts', () => {
  test('approval while waiting: awaiting-approval(requestId) moves to connected on the same socket', async () => {
    const tg = await gateway({ config: { autoApproveLocal: false } });
    const store = fileStore();
    await setSharedToken(store, platform, tg.url, TEST_TOKEN, { validate: false });
    const c = client({ url: tg.url, store, scopes: ['operator.read', 'operator.write'] });
    c.start();
    const waiting = await reach(c, 'awaiting-approval');
    assert.ok(waiting.requestId, 'the request id is exposed');
    assert.equal(waiting.live, true);
    const gen = c.currentGeneration;
    await ownerCall(tg, 'device.pair.approve', { requestId: waiting.requestId });
    const s = await reach(c, 'connected');
    assert.equal(c.currentGeneration, gen, 'no reconnect was needed');
    assert.ok(s.scopes.includes('operator.write'));
    assert.ok((await only(store)).tokens.operator, 'the minted token was stored');
  });

  test('rejection while waiting pauses with a next step instead of reconnecting', async () => {
    const tg = await gateway({ config: { autoApproveLocal: false } });
    const store = fileStore();
    await setSharedToken(store, platform, tg.url, TEST_TOKEN, { validate: false });
    const c = client({ url: tg.url, store });
    c.start();
    const waiting = await reach(c, 'awaiting-approval');
    await ownerCall(tg, 'device.pair.reject', { requestId: waiting.requestId });
    const p = await reach(c, 'paused');
    assert.equal(p.reason, 'pairing-rejected');
  });

  test('revoked token without a fallback: paused with guidance, no retry loop', async () => {
    const tg = await gateway();
    const store = fileStore();
    const code = await mintCode(tg);
    const c = await pairWithSetupCode(store, platform, code.setupCode, fast);
    cleanup.push(() => c.close());
    let connects = 0;
    c.onState((s) => {
      if (s.status === 'connecting' && s.credential !== null && s.retryAtMs === undefined) connects++;
    });
    const rec = await only(store);
    await ownerCall(tg, 'device.token.revoke', { deviceId: rec.deviceId, role: 'operator' });
    const p = await reach(c, 'paused');
    assert.equal(p.reason, 'device-token-rejected');
    assert.equal(p.code, 'AUTH_DEVICE_TOKEN_MISMATCH');
    assert.match(p.nextStep, /clawgate pair/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(c.state.status, 'paused', 'still paused: no loop');
    assert.equal(connects, 1, 'exactly one connect after the revocation');
    await assert.rejects(c.request('health'), (e: unknown) => e instanceof ClientError && e.code === 'NOT_CONNECTED' && /clawgate pair/.test(e.nextStep ?? ''));
  });

  for (const action of ['device.token.revoke', 'device.pair.remove'] as const) {
    test(`${action} with a shared-token fallback: one bounded recovery, re-paired with a fresh token`, async () => {
      const tg = await gateway();
      const store = fileStore();
      await setSharedToken(store, platform, tg.url, TEST_TOKEN);
      const c = client({ url: tg.url, store, scopes: ['operator.read'] });
      await c.connect();
      const first = await only(store);
      assert.ok(first.tokens.operator);
      await ownerCall(tg, action, action === 'device.token.revoke' ? { deviceId: first.deviceId, role: 'operator' } : { deviceId: first.deviceId });
      await reach(c, 'connecting');
      const s = await reach(c, 'connected');
      assert.equal(s.credential, 'shared-token');
      const fresh = (await only(store)).tokens.operator?.token;
      assert.ok(fresh && fresh !== first.tokens.operator?.token, 'a new token replaced the dead one');
      assert.equal(s.deviceId, first.deviceId, 'same identity');
    });
  }

  test('no fallback over an untrusted transport: a refused device token pauses even with a shared token stored', async () => {
    const tg = await gateway();
    const store = fileStore();
    await setSharedToken(store, platform, tg.url, TEST_TOKEN);
    const c = client({ url: tg.url, store, recoverySafe: () => false });
    await c.connect();
    await ownerCall(tg, 'device.token.revoke', { deviceId: (await only(store)).deviceId, role: 'operator' });
    const p = await reach(c, 'paused');
    assert.equal(p.reason, 'device-token-rejected');
    assert.match(p.message, /not safe/);
    assert.ok((await only(store)).tokens.operator, 'nothing was cleared');
  });

  test('shared-token flow: operator and node of one device both get their own token', async () => {
    const tg = await gateway();
    const store = fileStore();
    await setSharedToken(store, platform, tg.url, TEST_TOKEN);
    const op = client({ url: tg.url, store });
    const node = client({ url: tg.url, store, role: 'node', commands: ['system.which'] });
    const [a, b] = await Promise.all([op.connect(), node.connect()]);
    assert.equal(a.role, 'operator');
    assert.equal(b.role, 'node');
    assert.equal(a.deviceId, b.deviceId);
    const rec = await only(store);
    assert.ok(rec.tokens.operator && rec.tokens.node, 'concurrent hand-offs of both roles both landed in the one record');
    assert.notEqual(rec.tokens.operator.token, rec.tokens.node.token);
  });

  test('gateway restart: the client leaves connected and comes back by itself', async () => {
    let tg = await gateway();
    const store = fileStore();
    const c = await pairWithSetupCode(store, platform, (await mintCode(tg)).setupCode, fast);
    cleanup.push(() => c.close());
    const events: string[] = [];
    c.on('shutdown', (e) => events.push(e));
    for (let i = 0; i < 2; i++) {
      const left = reach(c, 'connecting');
      tg = await tg.restart();
      await left;
      const s = await reach(c, 'connected');
      assert.equal(s.credential, 'device-token');
      assert.equal(((await c.request('health')) as { ok: boolean }).ok, true);
    }
    assert.ok(events.length >= 1, 'the shutdown event reached the subscriber');
  });

  test('shared-token replacement: a wrong token changes nothing, the right one is stored and keeps the device tokens', async () => {
    let tg = await gateway();
    const store = fileStore();
    await setSharedToken(store, platform, tg.url, TEST_TOKEN);
    const code = await mintCode(tg);
    const c = await pairWithSetupCode(store, platform, code.setupCode, fast);
    c.close();
    const before = await only(store);
    assert.ok(before.tokens.operator);
    // The gateway's token is replaced.
    await tg.stop();
    tg = track(await startTestGateway({ stateDir: tg.stateDir, port: Number(new URL(tg.url).port), config: { token: 'cgs_replaced-token' } }));
    await assert.rejects(
      setSharedToken(store, platform, tg.url, 'cgs_wrong'),
      (e: unknown) => e instanceof ClientError && e.gatewayCode === 'AUTH_TOKEN_MISMATCH',
    );
    assert.deepEqual(await only(store), before, 'a refused token leaves the record as it was');
    await setSharedToken(store, platform, tg.url, 'cgs_replaced-token');
    const afterSet = await only(store);
    assert.equal(afterSet.sharedToken, 'cgs_replaced-token');
    assert.equal(afterSet.tokens.operator?.token, before.tokens.operator?.token);
    assert.equal(afterSet.bootstrap, undefined);
  });
});

/** Wraps a transport so a test can hold back one socket's callbacks and deliver them late. */
function gatedTransport(inner: Transport) {
  const sockets: Array<{ handlers: SocketHandlers; held: boolean; queue: Array<() => void> }> = [];
  const transport: Transport = (url, h) => {
    const entry = { handlers: h, held: false, queue: [] as Array<() => void> };
    sockets.push(entry);
    const wrap =
      <A extends unknown[]>(fn: (...a: A) => void) =>
      (...a: A) => {
        if (entry.held) entry.queue.push(() => fn(...a));
        else fn(...a);
      };
    return inner(url, { onOpen: wrap(h.onOpen), onMessage: wrap(h.onMessage), onClose: wrap(h.onClose), onError: wrap(h.onError) });
  };
  return { transport, sockets };
}

/**
 * A client paired by setup code whose first socket is then replaced by reconnect() while held
 * open: `old` receives nothing until the test replays it (late frames of a replaced connection).
 */
async function replacedSocket(tg: TestGateway) {
  const store = fileStore();
  const gate = gatedTransport(nodeTransport);
  await applySetupCode(store, platform, (await mintCode(tg)).setupCode);
  const c = new GatewayClient({ url: tg.url, store, platform: { ...platform, transport: gate.transport }, forceBootstrap: true, ...fast });
  cleanup.push(() => c.close());
  await c.connect();
  const old = gate.sockets[0]!;
  old.held = true;
  c.reconnect();
  const s = await reach(c, 'connected');
  return { store, c, old, s, gen: c.currentGeneration };
}

describe('generations', () => {
  test('callbacks of a replaced socket (late close, late hello-ok) never change the current state', async () => {
    const { c, old, s, gen } = await replacedSocket(await gateway());
    // Now the old socket's close arrives, plus a forged late hello-ok for the old connect id.
    old.handlers.onMessage(JSON.stringify({ type: 'res', id: 'connect-1', ok: true, payload: { type: 'hello-ok', auth: { role: 'node', scopes: [] } } }));
    old.handlers.onMessage(JSON.stringify({ type: 'event', event: 'auth.updated', payload: { scopes: [] } }));
    for (const f of old.queue) f();
    old.handlers.onClose(1006, 'late');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(c.state.status, 'connected');
    assert.equal(c.currentGeneration, gen);
    assert.deepEqual(c.state, s);
    assert.equal(((await c.request('health')) as { ok: boolean }).ok, true);
  });
});

describe('rapid reconnects', () => {
  test('after five reconnects in a row only the last socket lives and drives the state', async () => {
    const tg = await gateway();
    const store = fileStore();
    const c = await pairWithSetupCode(store, platform, (await mintCode(tg)).setupCode, fast);
    cleanup.push(() => c.close());
    for (let i = 0; i < 5; i++) c.reconnect();
    const s = await reach(c, 'connected');
    const gen = c.currentGeneration;
    // The superseded sockets close on their own schedule: wait until the gateway holds one.
    await waitFor(() => tg.gateway.deviceSessions(s.deviceId).length === 1, 'the gateway to hold exactly one session of this device', {
      detail: () => `sessions: ${tg.gateway.deviceSessions(s.deviceId).length}`,
    });
    assert.equal(c.currentGeneration, gen, 'settled: no further attempts');
    assert.equal(c.state.status, 'connected');
    assert.equal(((await c.request('health')) as { ok: boolean }).ok, true);
  });
});

describe('hand-off durability', () => {
  test('a failed token write keeps the bootstrap token; the next connect redeems again and finishes the hand-off', async () => {
    const tg = await gateway();
    const inner = fileStore();
    const { store: flaky, heal } = failingWrites(inner, 'tokens');
    const code = await mintCode(tg);
    const c = await pairWithSetupCode(flaky, platform, code.setupCode, fast);
    assert.equal(c.state.status, 'connected');
    assert.match((c.state as { warning?: string }).warning ?? '', /disk full/);
    let rec = await only(inner);
    assert.ok(rec.bootstrap, 'bootstrap kept: it is the only way back in');
    assert.equal(rec.tokens.operator, undefined);
    c.close();
    heal();
    const again = client({ url: tg.url, store: flaky });
    const s = await again.connect();
    assert.equal(s.credential, 'bootstrap-token', 'the same key redeems the code again');
    rec = await only(inner);
    assert.ok(rec.tokens.operator);
    assert.equal(rec.bootstrap, undefined);
  });

  test('a socket lost while hello-ok is being stored never surfaces as connected', async () => {
    const tg = await gateway();
    const inner = fileStore();
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    let reachedTokens: () => void = () => undefined;
    const atTokens = new Promise<void>((r) => (reachedTokens = r));
    const slow: CredentialStore = {
      load: (k) => inner.load(k),
      list: () => inner.list(),
      update: async (k, m, o) => {
        if (o?.label === 'tokens') {
          reachedTokens();
          await held;
        }
        return inner.update(k, m, o);
      },
    };
    const code = await mintCode(tg);
    await applySetupCode(slow, platform, code.setupCode);
    const c = client({ url: tg.url, store: slow, forceBootstrap: true, backoff: { baseMs: 5_000 } });
    const seen: string[] = [];
    c.onState((st) => seen.push(st.status));
    c.start();
    await atTokens;
    await tg.stop(); // the session dies while its tokens are being written
    await c.waitFor((st) => st.status === 'connecting' && st.retryAtMs !== undefined, 5000);
    release();
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(!seen.includes('connected'), `states: ${seen.join(' → ')}`);
    assert.equal(c.state.status, 'connecting');
    assert.ok((await only(inner)).tokens.operator, 'the tokens still landed (they are valid)');
  });

  test('a store that fails mid-recovery ends the attempt as a retry, never as an unhandled rejection', async () => {
    const tg = await gateway();
    const inner = fileStore();
    const broken = failingWrites(inner, 'token-clear').store;
    await setSharedToken(broken, platform, tg.url, TEST_TOKEN);
    const c = client({ url: tg.url, store: broken, backoff: { baseMs: 50, maxMs: 200 } });
    await c.connect();
    await ownerCall(tg, 'device.token.revoke', { deviceId: (await only(inner)).deviceId, role: 'operator' });
    const s = await c.waitFor((x) => x.status === 'connecting' && x.lastError?.code === 'CLIENT_INTERNAL', 5000);
    assert.match(s.status === 'connecting' ? (s.lastError?.message ?? '') : '', /disk full/);
  });

  test('an unreadable record pauses the client and is never replaced', async () => {
    const tg = await gateway();
    const store = fileStore();
    const c = await pairWithSetupCode(store, platform, (await mintCode(tg)).setupCode, fast);
    c.close();
    const file = store.fileFor(normalizeGatewayUrl(tg.url).key);
    writeFileSync(file, '{"version":1,"key":', { mode: 0o600 });
    const d = client({ url: tg.url, store });
    await assert.rejects(d.connect(), (e: unknown) => e instanceof ClientError && e.gatewayCode === 'identity-unreadable');
    assert.equal(readFileSync(file, 'utf8'), '{"version":1,"key":');
    await assert.rejects(
      applySetupCode(store, platform, (await mintCode(tg)).setupCode),
      (e: unknown) => e instanceof ClientError && e.code === 'CREDENTIAL_STORE_UNREADABLE',
    );
  });

  test('typed request errors carry the catalogue code and the next step', async () => {
    const tg = await gateway();
    const store = new MemoryCredentialStore();
    const c = await pairWithSetupCode(store, platform, (await mintCode(tg)).setupCode, fast);
    cleanup.push(() => c.close());
    await assert.rejects(c.request('audit.list', {}), (e: unknown) => {
      assert.ok(e instanceof GatewayCallError, String(e));
      assert.equal(e.code, 'MISSING_SCOPE');
      assert.ok(e.nextStep);
      return true;
    });
    await assert.rejects(c.request('no.such.method'), (e: unknown) => e instanceof GatewayCallError && e.code === 'UNKNOWN_METHOD');
  });
});

describe('stores and retry policy', () => {
  test('the file store serialises writers in different processes (no lost update)', async () => {
    const dir = tempDir();
    cleanup.push(() => removeDir(dir));
    const mod = import.meta.resolve('@clawgate/client');
    const script = `
      const { FileCredentialStore } = await import(${JSON.stringify(mod)});
      const s = new FileCredentialStore(process.argv[1]);
      const base = { version: 1, key: 'k', url: 'ws://x', deviceId: 'd', identity: null, tokens: {}, createdAtMs: 0 };
      for (let i = 0; i < 30; i++) await s.update('k', (r) => ({ ...(r ?? base), displayName: String(Number(r?.displayName ?? 0) + 1) }));`;
    const runs = [0, 1, 2].map(
      () =>
        new Promise<number | null>((resolve) => {
          const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: 'inherit' });
          child.on('exit', resolve);
        }),
    );
    assert.deepEqual(await Promise.all(runs), [0, 0, 0]);
    const rec = await new FileCredentialStore(dir).load('k');
    assert.equal(rec?.displayName, '90');
    assert.deepEqual(
      readdirSync(join(dir, 'gateways')).filter((f) => !f.endsWith('.json')),
      [],
      'no lock or temp file left behind',
    );
  });

  /** A transport that plays a gateway from a script: challenge, then `reply` answers the connect. */
  function scripted(reply: (params: Record<string, unknown>) => { error?: Record<string, unknown>; closeCode?: number }, opened = true): Transport {
    return (_url, h) => {
      let closed = false;
      const close = (code: number, reason: string) => {
        if (closed) return;
        closed = true;
        setImmediate(() => h.onClose(code, reason));
      };
      setImmediate(() => {
        if (!opened) return close(1006, '');
        h.onOpen();
        h.onMessage(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: { nonce: 'n', ts: 1 } }));
      });
      return {
        send: (text) => {
          const f = JSON.parse(text);
          if (f.method !== 'connect') return;
          const r = reply(f.params);
          if (r.error) h.onMessage(JSON.stringify({ type: 'res', id: f.id, ok: false, error: r.error }));
          close(r.closeCode ?? 1008, '');
        },
        close: (code) => close(code ?? 1000, ''),
      };
    };
  }

  async function scriptedClient(transport: Transport, extra: Partial<GatewayClientOptions> = {}): Promise<GatewayClient> {
    const store = new MemoryCredentialStore();
    await setSharedToken(store, platform, 'ws://gw.test:1', 'cgs_x', { validate: false });
    return client({ url: 'ws://gw.test:1', store, platform: { ...platform, transport }, now: () => 1_000_000, random: () => 0.5, ...extra });
  }

  test('backoff doubles per failure up to the ceiling (jitter centred by the injected random)', async () => {
    const c = await scriptedClient(
      scripted(() => ({}), false),
      { backoff: { baseMs: 20, maxMs: 80, jitter: 0.2 } },
    );
    const delays: number[] = [];
    c.onState((s) => {
      if (s.status === 'connecting' && s.retryAtMs !== undefined) delays.push(s.retryAtMs - 1_000_000);
    });
    c.start();
    await c.waitFor(() => delays.length >= 5, 5000);
    c.close();
    assert.deepEqual(delays.slice(0, 5), [20, 40, 80, 80, 80]);
  });

  test('AUTH_RATE_LIMITED waits at least retryAfterMs; an unknown refusal pauses instead of looping', async () => {
    const limited = await scriptedClient(
      scripted(() => ({
        error: { code: 'INVALID_REQUEST', message: 'slow down', retryable: true, retryAfterMs: 7000, details: { code: 'AUTH_RATE_LIMITED' } },
      })),
      { backoff: { baseMs: 10 } },
    );
    limited.start();
    const s = await limited.waitFor((x) => x.status === 'connecting' && x.retryAtMs !== undefined, 5000);
    assert.equal(s.status === 'connecting' && s.retryAtMs! - 1_000_000, 7000);
    limited.close();

    let connects = 0;
    const odd = await scriptedClient(
      scripted(() => {
        connects++;
        return { error: { code: 'INVALID_REQUEST', message: 'something new', details: { code: 'SOMETHING_NEW' } } };
      }),
      { backoff: { baseMs: 10 } },
    );
    await assert.rejects(odd.connect(), (e: unknown) => e instanceof ClientError && e.code === 'CLIENT_PAUSED' && e.gatewayCode === 'SOMETHING_NEW');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(connects, 1);

    const hinted = await scriptedClient(
      scripted(() => ({
        error: { code: 'UNAVAILABLE', message: 'not now', details: { code: 'SOME_HOLD', pauseReconnect: true, nextStep: 'Ask the admin.' } },
      })),
      { backoff: { baseMs: 10 } },
    );
    await assert.rejects(hinted.connect(), (e: unknown) => e instanceof ClientError && e.gatewayCode === 'SOME_HOLD' && e.nextStep === 'Ask the admin.');
  });
});

describe('TLS pinning (native wss:// with a self-signed certificate)', () => {
  function tls(dir: string): TlsMaterial {
    const made = ensureSelfSignedCert(dir);
    return { certPem: readFileSync(made.certPath, 'utf8'), keyPem: readFileSync(made.keyPath, 'utf8'), certPath: made.certPath, selfSigned: true };
  }

  test('the setup code pins the certificate; a replaced certificate pauses before any credential is sent', async () => {
    const dirA = tempDir();
    const dirB = tempDir();
    const a = tls(dirA);
    const tg = track(await startTestGateway({ stateDir: dirA, config: { tls: a } }));
    const other = track(await startTestGateway({ stateDir: dirB, config: { tls: tls(dirB) } }));
    cleanup.push(() => removeDir(dirA));
    cleanup.push(() => removeDir(dirB));
    const pinA = certFacts(a.certPem).fingerprint;
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), tlsFingerprint: pinA, client: { id: 'cli', mode: 'cli' } });
    const code = await owner.request<{ setupCode: string }>('device.pair.setupCode', {});
    await owner.close();

    const store = fileStore();
    const c = await pairWithSetupCode(store, platform, code.setupCode, fast);
    assert.equal(c.state.status, 'connected', 'self-signed but pinned: accepted');
    c.close();
    const rec = await only(store);
    assert.equal(rec.tlsFingerprint, pinA);

    // The same credentials filed for a server with another certificate (a replaced cert, or an interceptor).
    const otherKey = normalizeGatewayUrl(other.url).key;
    await store.update(otherKey, () => ({ ...rec, url: other.url, key: otherKey }));
    const sent: string[] = [];
    const recording: Transport = (url, h, o) => {
      const sock = nodeTransport(url, h, o);
      return { send: (t) => (sent.push(t), sock.send(t)), close: (code, reason) => sock.close(code, reason) };
    };
    const d = client({ url: other.url, store, platform: { ...platform, transport: recording } });
    const err = await d.connect().then(
      () => assert.fail('connected through a certificate it never pinned'),
      (e: unknown) => e as ClientError,
    );
    assert.equal(err.gatewayCode, 'TLS_PIN_MISMATCH');
    assert.match(err.message, /expected SHA-256 [0-9a-f]{64}, got [0-9a-f]{64}/);
    assert.equal(d.state.status === 'paused' && d.state.reason, 'tls-untrusted');
    assert.deepEqual(sent, [], 'not one frame (let alone a credential) went to the wrong server');

    // A pin with a ws:// URL is refused rather than silently dropping TLS.
    const plain = client({ url: tg.url.replace('wss:', 'ws:'), store });
    await store.update(normalizeGatewayUrl(plain.target.url).key, () => ({ ...rec, key: normalizeGatewayUrl(plain.target.url).key }));
    await assert.rejects(plain.connect(), (e: unknown) => e instanceof ClientError && /not a wss:\/\/ URL/.test(e.message));
  });
});

describe('gateway key pinning', () => {
  test('a fresh code with a key replaces the pin, a code without one keeps it; setSharedToken with a wrong key sends nothing and stores nothing', async () => {
    const tg = await gateway();
    const fingerprint = tg.gateway.identity?.fingerprint as string;
    const store = fileStore();
    const base = { url: tg.url, bootstrapToken: `cgb1_0000000000000000_${'x'.repeat(43)}`, expiresAtMs: Date.now() + 60_000 };
    await applySetupCode(store, platform, encodeSetupCode({ ...base, gatewayKey: 'ab'.repeat(32) }));
    assert.equal((await only(store)).gatewayKey, 'ab'.repeat(32));
    await applySetupCode(store, platform, encodeSetupCode(base));
    assert.equal((await only(store)).gatewayKey, 'ab'.repeat(32), 'a code without a key cannot switch the check off');
    await applySetupCode(store, platform, encodeSetupCode({ ...base, gatewayKey: fingerprint }));
    assert.equal((await only(store)).gatewayKey, fingerprint, 'a fresh code re-anchors the pin');

    const shared = fileStore();
    const sent: string[] = [];
    const recording: Transport = (url, h, o) => {
      const sock = nodeTransport(url, h, o);
      return { send: (t) => (sent.push(t), sock.send(t)), close: (code, reason) => sock.close(code, reason) };
    };
    await assert.rejects(
      setSharedToken(shared, { ...platform, transport: recording }, tg.url, TEST_TOKEN, { gatewayKey: 'cd'.repeat(32) }),
      (e: unknown) => e instanceof ClientError && e.gatewayCode === 'GATEWAY_KEY_MISMATCH' && e.message.includes(fingerprint),
    );
    assert.deepEqual(sent, [], 'the probe sent nothing to a gateway with another key');
    assert.equal((await only(shared)).sharedToken, undefined, 'nothing stored');
    const colons = fingerprint.toUpperCase().match(/../g)?.join(':') as string;
    const rec = await setSharedToken(shared, platform, tg.url, TEST_TOKEN, { gatewayKey: colons });
    assert.equal(rec.gatewayKey, fingerprint);
    assert.equal(rec.sharedToken, TEST_TOKEN);
  });
});

describe('token rotation (PROTOCOL §11.1)', () => {
  /** Resolve at the first connected state reached after the client left connected (a reconnect). */
  function reconnected(c: GatewayClient, timeoutMs = 10_000) {
    let left = false;
    const states: string[] = [];
    const off = c.onState((s) => {
      states.push(s.status);
      if (s.status !== 'connected') left = true;
    });
    return {
      states,
      done: c.waitFor((s) => left && s.status === 'connected', timeoutMs).finally(off) as Promise<Extract<ClientState, { status: 'connected' }>>,
    };
  }

  /** A client holding only a copy of `rec` (no fallback): proves whether the gateway takes its token. */
  async function refusedWith(tg: TestGateway, rec: GatewayRecord, role: 'operator' | 'node'): Promise<boolean> {
    const store = new MemoryCredentialStore();
    await store.update(rec.key, () => ({ ...rec, sharedToken: undefined, bootstrap: undefined }));
    const probe = client({ url: tg.url, store, role });
    const s = await probe.connect().then(
      () => null,
      (e: unknown) => e,
    );
    probe.close();
    return s instanceof ClientError && s.gatewayCode === 'AUTH_DEVICE_TOKEN_MISMATCH';
  }

  test('an operator rotates an SDK client’s operator token: it is stored, the client reconnects with it, the old one is refused', async () => {
    const tg = await gateway();
    const store = fileStore();
    const c = await pairWithSetupCode(store, platform, (await mintCode(tg)).setupCode, fast);
    cleanup.push(() => c.close());
    const before = await only(store);
    const seen: unknown[] = [];
    c.on('device.token.rotated', (_e, p) => seen.push(p));
    const back = reconnected(c);
    const res = await ownerCall<{ tokenDelivery: string }>(tg, 'device.token.rotate', { deviceId: before.deviceId, role: 'operator' });
    assert.equal(res.tokenDelivery, 'pushed-live');
    const s = await back.done;
    assert.ok(!back.states.includes('paused'), `never paused: ${back.states.join(' → ')}`);
    assert.equal(s.credential, 'device-token');
    assert.equal(s.deviceId, before.deviceId);
    const after = await only(store);
    const fresh = after.tokens.operator?.token;
    assert.ok(fresh?.startsWith('cgd1_') && fresh !== before.tokens.operator?.token, 'the stored record holds the new token');
    assert.deepEqual(after.tokens.operator?.scopes, before.tokens.operator?.scopes);
    assert.equal(((await c.request('health')) as { ok: boolean }).ok, true);
    // Listeners hear of it, without the secret.
    assert.equal(seen.length, 1);
    assert.equal((seen[0] as Record<string, unknown>).deviceToken, undefined);
    assert.equal((seen[0] as Record<string, unknown>).role, 'operator');
    assert.ok(await refusedWith(tg, before, 'operator'), 'the superseded token is refused');
    assert.ok(!(await refusedWith(tg, after, 'operator')), 'the stored token opens a fresh client');
  });

  test('operator+node client: rotating the node token reconnects the node with its new token; the operator session is untouched', async () => {
    const tg = await gateway();
    const store = fileStore();
    const op = await pairWithSetupCode(store, platform, (await mintCode(tg, { profile: 'operator+node' })).link, fast);
    cleanup.push(() => op.close());
    const node = client({ url: tg.url, store, role: 'node' });
    await node.connect();
    const before = await only(store);
    const opGen = op.currentGeneration;
    const opEvents: string[] = [];
    op.on('*', (e) => opEvents.push(e));
    const back = reconnected(node);
    const res = await ownerCall<{ tokenDelivery: string }>(tg, 'device.token.rotate', { deviceId: before.deviceId, role: 'node' });
    assert.equal(res.tokenDelivery, 'pushed-live');
    const s = await back.done;
    assert.ok(!back.states.includes('paused'), back.states.join(' → '));
    assert.equal(s.role, 'node');
    assert.equal(s.credential, 'device-token');
    const after = await only(store);
    assert.ok(after.tokens.node && after.tokens.node.token !== before.tokens.node?.token, 'new node token stored');
    assert.equal(after.tokens.operator?.token, before.tokens.operator?.token, 'the operator token is unchanged');
    assert.equal(op.currentGeneration, opGen, 'the operator connection was not replaced');
    assert.equal(op.state.status, 'connected');
    assert.ok(!opEvents.includes('device.token.rotated'), 'the operator session never sees the node’s token');
    assert.ok(await refusedWith(tg, before, 'node'), 'the superseded node token is refused');
    assert.ok(!(await refusedWith(tg, after, 'node')));
  });

  test('self-rotation through request(): the in-band token is stored and the client comes back with it', async () => {
    const tg = await gateway();
    const store = fileStore();
    // Setup codes never hand out operator.pairing, nor does the gateway token alone: the owner
    // approves the pending scope upgrade its connect filed.
    await setSharedToken(store, platform, tg.url, TEST_TOKEN);
    const c = client({ url: tg.url, store, scopes: ['operator.read', 'operator.pairing'] });
    await c.connect();
    const before = await only(store);
    assert.ok(before.tokens.operator);
    const [upgrade] = await tg.store.listPairingRequests(before.deviceId);
    assert.equal(upgrade?.kind, 'scope-upgrade');
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    await owner.request('device.pair.approve', { requestId: upgrade?.requestId });
    await owner.close();
    const start = Date.now();
    while (
      !(tg.gateway.sessions.size > 0 && [...tg.gateway.sessions.values()].some((x) => x.deviceId === before.deviceId && x.scopes.has('operator.pairing')))
    ) {
      assert.ok(Date.now() - start < 10_000, 'the live session is widened');
      await new Promise((r) => setTimeout(r, 20));
    }
    const back = reconnected(c);
    const scopes = ['operator.pairing', 'operator.read'];
    const res = await c.request<{ tokenDelivery: string; token: string; scopes: string[] }>('device.token.rotate', {
      deviceId: before.deviceId,
      role: 'operator',
      scopes,
    });
    assert.equal(res.tokenDelivery, 'in-band');
    const s = await back.done;
    assert.ok(!back.states.includes('paused'), back.states.join(' → '));
    assert.equal(s.credential, 'device-token');
    assert.equal((await only(store)).tokens.operator?.token, res.token, 'the in-band token is stored (not a shared-token fallback)');
    assert.deepEqual([...((await only(store)).tokens.operator?.scopes ?? [])].sort(), [...res.scopes].sort());
    assert.ok(await refusedWith(tg, before, 'operator'));
  });

  test('a rotated token the store failed to write is used from memory and stored by the next hello-ok', async () => {
    const tg = await gateway();
    const inner = fileStore();
    const { store: flaky, heal } = failingWrites(inner, 'token-rotated');
    const c = await pairWithSetupCode(flaky, platform, (await mintCode(tg)).setupCode, fast);
    cleanup.push(() => c.close());
    const before = await only(inner);
    const back = reconnected(c);
    await ownerCall(tg, 'device.token.rotate', { deviceId: before.deviceId, role: 'operator' });
    const s = await back.done;
    heal();
    assert.equal(s.credential, 'device-token');
    const fresh = (await only(inner)).tokens.operator?.token;
    assert.ok(fresh && fresh !== before.tokens.operator?.token, 'stored after the reconnect');
    assert.ok(!(await refusedWith(tg, await only(inner), 'operator')));
  });

  test('a rotation event on a replaced socket writes nothing and changes nothing', async () => {
    const { store, c, old, s, gen } = await replacedSocket(await gateway());
    const rec = await only(store);
    const forged = { deviceId: rec.deviceId, role: 'operator', scopes: ['operator.admin'], deviceToken: 'cgd1_forged', tokenId: 't', issuedAtMs: 1 };
    old.handlers.onMessage(JSON.stringify({ type: 'event', event: 'device.token.rotated', payload: forged }));
    for (const f of old.queue) f();
    old.handlers.onClose(4001, 'device token rotated');
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(c.currentGeneration, gen);
    assert.deepEqual(c.state, s);
    assert.deepEqual(await only(store), rec, 'the record is untouched');
    // Nor is the forged token kept in memory for the next connect.
    const again = reconnected(c);
    c.reconnect();
    assert.equal((await again.done).credential, 'device-token');
    assert.equal((await only(store)).tokens.operator?.token, rec.tokens.operator?.token);
  });
});

/** A loopback URL nothing listens on (a port that was free a moment ago). */
async function deadUrl(): Promise<string> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return `ws://127.0.0.1:${port}`;
}

/** A server that answers every WebSocket upgrade with an HTTP status and a body, as a refusing proxy does. */
async function refusingUpgrades(status: number, body: string): Promise<{ url: string; upgrades(): number }> {
  let upgrades = 0;
  const srv: Server = createServer((_req, res) => res.writeHead(404).end());
  srv.on('upgrade', (_req, socket) => {
    upgrades++;
    socket.end(`HTTP/1.1 ${status} Refused\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanup.push(() => new Promise<void>((r) => srv.close(() => r())));
  return { url: `ws://127.0.0.1:${(srv.address() as { port: number }).port}`, upgrades: () => upgrades };
}

describe('given secrets, several URLs, refused upgrades', () => {
  test('a given password connects (method password) and earns a stored node token; a wrong one pauses with AUTH_PASSWORD_MISMATCH', async () => {
    const tg = await gateway({ config: { password: 'correct horse' } });
    const store = fileStore();
    await ensureRecord(store, platform, tg.url, Date.now());
    const c = client({ url: tg.url, store, role: 'node', commands: ['system.which'], sharedSecret: { password: 'correct horse' } });
    const s = await c.connect();
    assert.equal(s.credential, 'password');
    assert.equal(s.authMethod, 'password');
    const rec = await only(store);
    assert.ok(rec.tokens.node, 'the node token of the password connect is stored');
    assert.equal(JSON.stringify(rec).includes('correct horse'), false, 'the given password is never stored');

    const fresh = fileStore();
    await ensureRecord(fresh, platform, tg.url, Date.now());
    const wrong = client({ url: tg.url, store: fresh, role: 'node', sharedSecret: { password: 'wrong' } });
    await assert.rejects(wrong.connect(), (e: unknown) => e instanceof ClientError && e.code === 'CLIENT_PAUSED' && e.gatewayCode === 'AUTH_PASSWORD_MISMATCH');
  });

  test('a given token goes before the stored device token; refused, the client moves to the device token at once and keeps it', async () => {
    const tg = await gateway();
    const store = fileStore();
    await setSharedToken(store, platform, tg.url, TEST_TOKEN);
    const first = client({ url: tg.url, store, role: 'node' });
    assert.equal((await first.connect()).credential, 'shared-token');
    first.close();
    assert.ok((await only(store)).tokens.node, 'a node token is stored');

    const given = client({ url: tg.url, store, role: 'node', sharedSecret: { token: TEST_TOKEN } });
    assert.equal((await given.connect()).credential, 'shared-token', 'the given token wins over the stored device token');
    given.close();

    const seen: ClientState[] = [];
    const refused = client({ url: tg.url, store, role: 'node', sharedSecret: { token: 'not-the-gateway-token' } });
    refused.onState((st) => seen.push(st));
    assert.equal((await refused.connect()).credential, 'device-token');
    const note = seen.find((st) => st.status === 'connecting' && st.lastError?.code === 'SHARED_SECRET_REFUSED');
    assert.ok(note && note.status === 'connecting' && /refused the given token/.test(note.lastError!.message), 'the fallback is reported');
    refused.reconnect();
    assert.equal((await reach(refused, 'connected')).credential, 'device-token', 'the refused token is not presented again');

    const unpaired = fileStore();
    await ensureRecord(unpaired, platform, tg.url, Date.now());
    const stuck = client({ url: tg.url, store: unpaired, role: 'node', sharedSecret: { token: 'not-the-gateway-token' } });
    await assert.rejects(stuck.connect(), (e: unknown) => e instanceof ClientError && e.code === 'CLIENT_PAUSED' && e.gatewayCode === 'AUTH_TOKEN_MISMATCH');
  });

  test('several URLs: an unreachable one moves on to the next; the credentials stay filed under the first', async () => {
    const tg = await gateway();
    const store = fileStore();
    const dead = await deadUrl();
    await setSharedToken(store, platform, dead, TEST_TOKEN, { validate: false });
    const c = client({ url: dead, alternateUrls: [tg.url], store, role: 'node' });
    const s = await c.connect({ timeoutMs: 10_000 });
    assert.equal(s.role, 'node');
    assert.equal(c.currentUrl, normalizeGatewayUrl(tg.url).url);
    const rec = await only(store);
    assert.equal(rec.key, normalizeGatewayUrl(dead).key);
    assert.ok(rec.tokens.node, 'the node token is stored in the one record');
  });

  test('an HTTP 4xx on the upgrade pauses with upgrade-refused when asked to; by default, and for 429, it is retried', async () => {
    const proxy = await refusingUpgrades(403, 'proxy_attribution_required');
    const store = fileStore();
    await setSharedToken(store, platform, proxy.url, TEST_TOKEN, { validate: false });
    const c = client({ url: proxy.url, store, role: 'node', upgradeRefusal: 'pause' });
    c.start();
    const p = await reach(c, 'paused');
    assert.equal(p.reason, 'upgrade-refused');
    assert.equal(p.code, 'HTTP_403');
    assert.match(p.message, /proxy_attribution_required/);
    assert.equal(proxy.upgrades(), 1, 'one attempt, no retry loop');

    const retrying = client({ url: proxy.url, store, role: 'node' });
    retrying.start();
    const s = await retrying.waitFor((x) => x.status === 'connecting' && x.lastError?.code === 'HTTP_403', 10_000);
    assert.ok(s.status === 'connecting' && /proxy_attribution_required/.test(s.lastError!.message));
    retrying.close();

    const busy = await refusingUpgrades(429, 'slow down');
    await setSharedToken(store, platform, busy.url, TEST_TOKEN, { validate: false });
    const limited = client({ url: busy.url, store, role: 'node', upgradeRefusal: 'pause' });
    limited.start();
    await waitFor(() => busy.upgrades() >= 2, 'a 429 is retried');
    assert.equal(limited.state.status, 'connecting');
  });
});

/**
 * A server that holds every connect in a pairing wait, as a gateway does for an unapproved
 * device, and then either pings every pingEveryMs or says nothing more.
 */
async function holdingApproval(pingEveryMs: number | null): Promise<{ url: string; connects(): number; pings(): number }> {
  let connects = 0;
  let pings = 0;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const timers: NodeJS.Timeout[] = [];
  wss.on('connection', (ws) => {
    ws.send(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: { nonce: `n${connects}`, ts: Date.now() } }));
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as { method?: string };
      if (f.method !== 'connect') return;
      connects++;
      ws.send(JSON.stringify({ type: 'event', event: 'device.pair.waiting', payload: { requestId: 'req-1', confirmationCode: '123456' } }));
      if (pingEveryMs !== null)
        timers.push(
          setInterval(() => {
            pings++;
            ws.ping();
          }, pingEveryMs),
        );
    });
  });
  cleanup.push(
    () =>
      new Promise<void>((r) => {
        for (const t of timers) clearInterval(t);
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  );
  return { url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, connects: () => connects, pings: () => pings };
}

describe('approval wait liveness', () => {
  test('pings keep an approval wait alive; silence past approvalSilenceMs reconnects, keeping the request', async () => {
    const pinging = await holdingApproval(50);
    const store = fileStore();
    await setSharedToken(store, platform, pinging.url, TEST_TOKEN, { validate: false });
    const alive = client({ url: pinging.url, store, role: 'node', approvalSilenceMs: 300 });
    alive.start();
    assert.equal((await reach(alive, 'awaiting-approval')).requestId, 'req-1');
    const gen = alive.currentGeneration;
    // Twenty pings span several silence windows: only the pings kept the wait alive.
    await waitFor(() => pinging.pings() >= 20, 'twenty pings');
    assert.equal(alive.state.status, 'awaiting-approval');
    assert.equal(alive.currentGeneration, gen, 'never reconnected');
    assert.equal(pinging.connects(), 1);
    alive.close();

    const silent = await holdingApproval(null);
    await setSharedToken(store, platform, silent.url, TEST_TOKEN, { validate: false });
    const stuck = client({ url: silent.url, store, role: 'node', approvalSilenceMs: 300 });
    const seen: ClientState[] = [];
    stuck.onState((st) => seen.push(st));
    stuck.start();
    await waitFor(() => silent.connects() >= 2, 'a reconnect after the silence');
    assert.ok(
      seen.some((st) => st.status === 'connecting' && st.lastError?.code === 'APPROVAL_WAIT_SILENT'),
      'the dead path is reported',
    );
  });
});
