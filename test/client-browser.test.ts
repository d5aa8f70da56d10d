/**
 * @clawgate/client in headless Chromium: the browser build (plain ESM from packages/client/dist/, served as-is, no bundler)
 * pairs with a real gateway through a setup code, keeps a non-extractable WebCrypto key in
 * IndexedDB, makes a call, and after a page reload reconnects with its stored device token.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, normalize } from 'node:path';
import { after, before, test } from 'node:test';
import { type Browser, chromium } from 'playwright-core';
import { WebSocketServer } from 'ws';
import { gatewayIdentityFromPem, generateGatewayKeyPem } from '../src/core/gateway-identity.js';
import { mintCode, ownerCall, pairedDevices } from './helpers/client.js';
import { removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

const CHROMIUM = process.env.CLAWGATE_CHROMIUM ?? '/usr/bin/chromium';
// The SDK's own build output, as its package ships it (the protocol modules vendored into it).
const DIST = join(process.cwd(), 'packages', 'client', 'dist');

let tg: TestGateway;
let server: Server;
let pageBase: string;
let browser: Browser;

/** Serves the SDK's browser modules (only JavaScript under the SDK's dist/) plus an empty page. */
function serveDist(): Promise<Server> {
  const s = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>clawgate sdk</title>');
      return;
    }
    const file = normalize(join(DIST, path));
    if (!file.startsWith(`${DIST}/`) || !file.endsWith('.js') || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(file));
  });
  s.on('error', () => undefined);
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

before(async () => {
  server = await serveDist();
  pageBase = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  // The test page is served from its own origin: the gateway must list it (Control UI Origin check).
  tg = await startTestGateway({ config: { allowedOrigins: [pageBase] } });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
  await tg?.stop();
  if (tg) removeDir(tg.stateDir);
});

/** A fresh page on the empty document, collecting uncaught page errors. */
async function openPage() {
  const page = await browser.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${pageBase}/`);
  return { page, pageErrors };
}

test('the SDK pairs from a browser, signs with a non-extractable key kept in IndexedDB, calls, and reconnects after a reload', async () => {
  const code = await mintCode(tg, { profile: 'operator' });
  const { page, pageErrors } = await openPage();
  const paired = await page.evaluate(async (setupCode: string) => {
    const sdk = await import('/browser.js' as string);
    const store = new sdk.IndexedDbCredentialStore('clawgate-test');
    const states: string[] = [];
    const client = await sdk.pairWithSetupCode(store, sdk.browserPlatform(), setupCode, { client: { id: 'openclaw-control-ui', mode: 'ui' } });
    client.onState((s: { status: string }) => states.push(s.status));
    const health = await client.request('health');
    const [rec] = await store.list();
    const result = {
      state: client.state,
      healthOk: health.ok,
      records: (await store.list()).length,
      hasOperatorToken: typeof rec.tokens.operator?.token === 'string',
      bootstrapLeft: rec.bootstrap !== undefined,
      keyIsCryptoKey: rec.identity.privateKey instanceof CryptoKey,
      keyExtractable: rec.identity.privateKey.extractable,
      deviceId: rec.deviceId,
      gatewayKey: rec.gatewayKey,
    };
    client.close();
    return result;
  }, code.setupCode);
  assert.deepEqual(pageErrors, []);
  assert.equal(paired.state.status, 'connected');
  assert.equal(paired.state.credential, 'bootstrap-token');
  assert.ok(paired.state.scopes.includes('operator.write'));
  assert.equal(paired.healthOk, true);
  assert.equal(paired.records, 1);
  assert.equal(paired.hasOperatorToken, true);
  assert.equal(paired.bootstrapLeft, false);
  assert.equal(paired.keyIsCryptoKey, true);
  assert.equal(paired.keyExtractable, false, 'the private key cannot be exported by script');
  // The code named the gateway key and WebCrypto verified the challenge signature before the code was sent.
  assert.equal(paired.gatewayKey, tg.gateway.identity?.fingerprint);

  // A reload is a restart of the page: everything comes back from IndexedDB.
  await page.reload();
  const again = await page.evaluate(
    async (url: string) => {
      const sdk = await import('/browser.js' as string);
      const client = new sdk.GatewayClient({ url, store: new sdk.IndexedDbCredentialStore('clawgate-test'), platform: sdk.browserPlatform() });
      const s = await client.connect({ timeoutMs: 10_000 });
      const status = await client.request('status');
      client.close();
      return { s, version: status.version };
    },
    tg.url.replace('127.0.0.1', 'localhost'),
  );
  assert.equal(again.s.credential, 'device-token');
  assert.equal(again.s.deviceId, paired.deviceId);
  assert.equal(typeof again.version, 'string');
  const dev = (await pairedDevices(tg)).find((d) => d.deviceId === paired.deviceId) as { roles: string[]; platform?: string } | undefined;
  assert.ok(dev, 'the gateway lists the browser device');
  assert.deepEqual(dev.roles, ['operator']);
  await page.close();
});

test('in the browser, a shared-token device waits live for approval and becomes connected without a reload', async () => {
  const gated = await startTestGateway({ config: { autoApproveLocal: false, allowedOrigins: [pageBase] } });
  try {
    const page = await browser.newPage();
    await page.goto(`${pageBase}/`);
    const waiting = await page.evaluate(
      async ({ url, token }: { url: string; token: string }) => {
        const sdk = await import('/browser.js' as string);
        const store = new sdk.IndexedDbCredentialStore('clawgate-approval');
        const platform = sdk.browserPlatform();
        await sdk.setSharedToken(store, platform, url, token);
        const client = new sdk.GatewayClient({ url, store, platform, client: { id: 'openclaw-control-ui', mode: 'ui' }, scopes: ['operator.read'] });
        (globalThis as unknown as { client: unknown }).client = client;
        client.start();
        return client.waitFor((s: { status: string }) => s.status === 'awaiting-approval', 10_000);
      },
      { url: gated.url, token: TEST_TOKEN },
    );
    assert.equal(waiting.status, 'awaiting-approval');
    assert.ok(waiting.requestId);
    await ownerCall(gated, 'device.pair.approve', { requestId: waiting.requestId });
    const connected = await page.evaluate(async () => {
      const client = (
        globalThis as unknown as {
          client: { waitFor(p: (s: { status: string }) => boolean, t: number): Promise<unknown>; request(m: string): Promise<unknown> };
        }
      ).client;
      const s = await client.waitFor((x) => x.status === 'connected', 10_000);
      return { s, health: await client.request('health') };
    });
    assert.equal((connected.s as { status: string }).status, 'connected');
    assert.equal((connected.health as { ok: boolean }).ok, true);
    await page.close();
  } finally {
    await gated.stop();
    removeDir(gated.stateDir);
  }
});

test('in the browser, an operator’s rotation is adopted: the pushed token lands in IndexedDB and the page reconnects with it', async () => {
  const code = await mintCode(tg, { profile: 'operator' });
  const { page, pageErrors } = await openPage();
  const before = await page.evaluate(async (setupCode: string) => {
    const sdk = await import('/browser.js' as string);
    const store = new sdk.IndexedDbCredentialStore('clawgate-rotation');
    const client = await sdk.pairWithSetupCode(store, sdk.browserPlatform(), setupCode, { backoff: { baseMs: 40, maxMs: 400 } });
    const g = globalThis as unknown as { client: unknown; store: unknown; left: boolean; states: string[] };
    g.client = client;
    g.store = store;
    g.left = false;
    g.states = [];
    client.onState((s: { status: string }) => {
      g.states.push(s.status);
      if (s.status !== 'connected') g.left = true;
    });
    const [rec] = await store.list();
    return { deviceId: rec.deviceId as string, token: rec.tokens.operator.token as string };
  }, code.setupCode);
  const res = await ownerCall<{ tokenDelivery: string }>(tg, 'device.token.rotate', { deviceId: before.deviceId, role: 'operator' });
  assert.equal(res.tokenDelivery, 'pushed-live');
  const after = await page.evaluate(async () => {
    const g = globalThis as unknown as {
      client: {
        waitFor(p: (s: { status: string }) => boolean, t: number): Promise<{ status: string; credential: string }>;
        request(m: string): Promise<{ ok: boolean }>;
        close(): void;
      };
      store: { list(): Promise<Array<{ tokens: { operator: { token: string } } }>> };
      left: boolean;
      states: string[];
    };
    const s = await g.client.waitFor((x) => g.left && x.status === 'connected', 10_000);
    const health = await g.client.request('health');
    const [rec] = await g.store.list();
    g.client.close();
    return { s, healthOk: health.ok, token: rec!.tokens.operator.token, states: g.states };
  });
  assert.deepEqual(pageErrors, []);
  assert.equal(after.s.credential, 'device-token');
  assert.ok(!after.states.includes('paused'), after.states.join(' → '));
  assert.equal(after.healthOk, true);
  assert.notEqual(after.token, before.token, 'IndexedDB holds the new token');
  // After a reload only IndexedDB is left: it must carry the live token.
  await page.reload();
  const reloaded = await page.evaluate(async (url: string) => {
    const sdk = await import('/browser.js' as string);
    const client = new sdk.GatewayClient({ url, store: new sdk.IndexedDbCredentialStore('clawgate-rotation'), platform: sdk.browserPlatform() });
    const s = await client.connect({ timeoutMs: 10_000 });
    client.close();
    return s;
  }, tg.url);
  assert.equal(reloaded.credential, 'device-token');
  assert.equal(reloaded.deviceId, before.deviceId);
  await page.close();
});

test('in the browser, a setup code pointing at a squatter pauses with gateway-key-mismatch and sends it nothing (WebCrypto Ed25519 verify)', async () => {
  // The genuine gateway mints the code (its key inside) for an address where something else answers.
  const frames: string[] = [];
  const squatters = [];
  for (const mode of ['other-key', 'copied-key'] as const) {
    const impostor = gatewayIdentityFromPem(generateGatewayKeyPem());
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
    wss.on('connection', (ws) => {
      ws.on('message', (d) => {
        frames.push(d.toString());
        // A leaking client is stopped for good (it pauses on this), so a regression fails instead of looping.
        const error = { code: 'INVALID_REQUEST', message: 'squatter', details: { code: 'PROTOCOL_MISMATCH' } };
        ws.send(JSON.stringify({ type: 'res', id: (JSON.parse(d.toString()) as { id?: string }).id, ok: false, error }));
        ws.close(1008, 'squatter');
      });
      const nonce = `squat-${mode}`;
      const ts = Date.now();
      const proof = impostor.proveChallenge(nonce, ts);
      const gateway = mode === 'other-key' ? proof : { ...proof, publicKey: tg.gateway.identity?.publicKey };
      ws.send(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: { nonce, ts, gateway } }));
    });
    squatters.push({ mode, wss, url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}` });
  }
  try {
    for (const sq of squatters) {
      const code = await mintCode(tg, { profile: 'operator', publicUrl: sq.url });
      const { page, pageErrors } = await openPage();
      const outcome = await page.evaluate(
        async ({ setupCode, db }: { setupCode: string; db: string }) => {
          const sdk = await import('/browser.js' as string);
          const store = new sdk.IndexedDbCredentialStore(db);
          try {
            const client = await sdk.pairWithSetupCode(store, sdk.browserPlatform(), setupCode, { backoff: { baseMs: 40, maxMs: 400 } });
            client.close();
            return { paired: true };
          } catch (e) {
            const err = e as { code: string; gatewayCode?: string; message: string };
            const [rec] = await store.list();
            return { paired: false, code: err.code, gatewayCode: err.gatewayCode, message: err.message, pinned: rec?.gatewayKey };
          }
        },
        { setupCode: code.setupCode, db: `clawgate-squat-${sq.mode}` },
      );
      await page.close();
      assert.deepEqual(pageErrors, []);
      assert.equal(outcome.paired, false, `${sq.mode}: paired with a squatter`);
      assert.equal(outcome.gatewayCode, 'GATEWAY_KEY_MISMATCH', `${sq.mode}: ${outcome.message}`);
      assert.equal(outcome.pinned, tg.gateway.identity?.fingerprint);
    }
    assert.deepEqual(frames, [], 'not one frame (let alone the bootstrap token) reached a squatter');
  } finally {
    for (const sq of squatters) {
      for (const c of sq.wss.clients) c.terminate();
      await new Promise((r) => sq.wss.close(r));
    }
  }
});
