/**
 * The Control UI in a real browser (Debian's Chromium, headless, driven by playwright-core)
 * against a real gateway (real socket, SQLite store). Other devices are real protocol clients;
 * "remote" ones come through a trusted proxy (X-Forwarded-For from loopback), so they are never
 * local and need a person's approval, which the test gives by clicking in the page.
 * Screenshots of every view are saved under test-artifacts/ui/.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { WebSocket } from 'ws';
import { qrMatrix } from '../src/cli/qr.js';
import { ConnectError, type ConnectOptions, connectGateway, type DeviceIdentity, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { CONTROL_UI_CSP, gatewayOrigins, originAllowed } from '../src/server/control-ui.js';
import { ensureSelfSignedCert } from '../src/server/tls.js';
import { encodeQr, qrPath } from '../src/ui/web/qr.js';
import { asOwner, cli, removeDir, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { NGINX_BIN, type RunningNginx, startBehindNginx } from './helpers/nginx.js';
import { deviceParams, RawClient } from './helpers/raw.js';
import { missingFile, skipUnlessPresent } from './helpers/strict.js';

const CHROMIUM = process.env.CLAWGATE_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'ui');
const REMOTE = { 'x-forwarded-for': '198.51.100.40' };

/** The device token the page keeps for this tab (sessionStorage, written by the UI's credential store). */
function tabToken(): string | null {
  for (let i = 0; i < sessionStorage.length; i++) {
    const k = sessionStorage.key(i);
    if (k?.startsWith('clawgate.tokens.')) return (JSON.parse(sessionStorage.getItem(k) ?? '{}') as { operator?: { token: string } }).operator?.token ?? null;
  }
  return null;
}

async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

function remoteDevice(tg: TestGateway, extra: Partial<ConnectOptions>): Promise<GatewayConnection> {
  return connectGateway({
    url: tg.url,
    client: { id: 'test', mode: 'test', displayName: 'Remote laptop', platform: 'linux' },
    auth: { token: TEST_TOKEN },
    headers: REMOTE,
    timeoutMs: 30_000,
    ...extra,
  });
}

describe('Control UI in headless Chromium', () => {
  let tg: TestGateway;
  let browser: Browser;
  let base: string;
  const consoleProblems: string[] = [];

  before(async () => {
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'] } });
    base = `http://127.0.0.1:${tg.server.port}/`;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });

  after(async () => {
    await browser?.close();
    await tg.stop();
    removeDir(tg.stateDir);
  });

  // Every test gets its own browser context and page, and makes the devices it needs: none
  // depends on what an earlier test left behind (they share only the gateway and the browser).

  /** A fresh page (its own browser context, closed after the test) at the UI, signed out. */
  async function freshPage(t: TestContext): Promise<Page> {
    const context: BrowserContext = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    t.after(() => context.close());
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') consoleProblems.push(m.text());
    });
    page.on('pageerror', (e) => consoleProblems.push(String(e)));
    await page.goto(base);
    await page.waitForSelector('#conn-state[data-state="signed-out"]');
    return page;
  }

  async function signIn(page: Page): Promise<void> {
    await page.fill('#credential', TEST_OWNER);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#conn-state[data-state="connected"]');
  }

  /** A fresh page signed in with the owner credential. */
  async function signedInPage(t: TestContext): Promise<Page> {
    const page = await freshPage(t);
    await signIn(page);
    return page;
  }

  /** A remote device paired with `scopes` (approved over RPC, not in the UI) and connected now. */
  async function pairedRemote(t: TestContext, scopes = ['operator.read']): Promise<{ identity: DeviceIdentity; conn: GatewayConnection }> {
    const identity = generateIdentity();
    await remoteDevice(tg, { identity, scopes }).catch(() => undefined);
    const requestId = (await tg.store.listPairingRequests(identity.deviceId))[0]?.requestId;
    assert.ok(requestId, 'the device asked to pair');
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    try {
      await owner.request('device.pair.approve', { requestId });
    } finally {
      await owner.close();
    }
    const conn = await remoteDevice(tg, { identity, scopes });
    t.after(() => conn.close());
    return { identity, conn };
  }

  test('the page is served with a strict CSP and no inline script', async () => {
    const res = await fetch(base);
    assert.equal(res.status, 200);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.equal(csp, CONTROL_UI_CSP);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    const html = await res.text();
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'every script is an external file');
    assert.doesNotMatch(html, /\sstyle=/, 'no inline style attributes');
    const js = await fetch(new URL('/ui/src/ui/web/app.js', base));
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type') ?? '', /javascript/);
    assert.equal((await fetch(new URL('/ui/src/ui/web/../../../../package.json', base))).status, 404);
    assert.equal((await fetch(new URL('/dist/src/core/gateway.js', base))).status, 404);
  });

  test('sign in with the owner credential: the browser becomes a paired device with a session-only token', async (t) => {
    const page = await freshPage(t);
    await shot(page, '01-sign-in');
    // Every frame the page sends: the owner credential must not be among them, only its proof.
    const sent: string[] = [];
    const onSocket = (ws: { on(event: 'framesent', fn: (f: { payload: string | Buffer }) => void): void }) =>
      ws.on('framesent', (f) => sent.push(String(f.payload)));
    page.on('websocket', onSocket);
    await signIn(page);
    page.off('websocket', onSocket);
    assert.ok(
      sent.some((f) => f.includes('"ownerProof"')),
      'the sign-in answered with an owner proof',
    );
    assert.ok(!sent.some((f) => f.includes(TEST_OWNER)), 'the owner credential never left the page');
    const stored = await page
      .evaluate(`(${tabToken})()`)
      .then(async (session) => ({ session: session as string | null, local: await page.evaluate(() => localStorage.length) }));
    assert.match(stored.session ?? '', /^cgd1_/, 'device token in sessionStorage');
    assert.equal(stored.local, 0, 'nothing in localStorage');
    assert.equal(await page.inputValue('#credential').catch(() => null), null, 'the sign-in form is gone');
    // The gateway knows this browser as an owner-approved device.
    const token = await tg.store.getToken((stored.session ?? '').split('_')[1] ?? '');
    assert.ok(token, 'the tab token is a token the gateway issued');
    assert.equal((await tg.store.getDevice(token.deviceId))?.clientId, 'openclaw-control-ui');
    const grant = await tg.store.getGrant(token.deviceId, 'operator');
    assert.equal(grant?.approvedVia, 'owner');
    // The key is non-extractable: the page itself cannot export it.
    const exportable = await page.evaluate(
      () =>
        new Promise<string>((resolve) => {
          const open = indexedDB.open('clawgate-control-ui', 1);
          open.onsuccess = () => {
            const req = open.result.transaction('gateways').objectStore('gateways').getAll();
            req.onsuccess = () => {
              const rec = (req.result as Array<{ identity: { privateKey: CryptoKey }; tokens: object; sharedToken?: string }>)[0];
              if (!rec) return resolve('no record');
              if (Object.keys(rec.tokens).length > 0 || rec.sharedToken !== undefined) return resolve('secrets in IndexedDB');
              const key = rec.identity.privateKey;
              crypto.subtle.exportKey('pkcs8', key).then(
                () => resolve('exported'),
                (e: Error) => resolve(`${key.extractable}:${e.name}`),
              );
            };
          };
        }),
    );
    assert.equal(exportable, 'false:InvalidAccessError');
    // A reload resumes with the tab's device token, without the credential.
    await page.reload();
    await page.waitForSelector('#conn-state[data-state="connected"]');
  });

  test('a new remote device appears without reload; Approve admits the waiting device; codes match', async (t) => {
    const page = await signedInPage(t);
    const waitingDevice = generateIdentity();
    let waiting: { requestId: string; confirmationCode: string } | null = null;
    const admitted = remoteDevice(tg, {
      identity: waitingDevice,
      scopes: ['operator.read'],
      caps: ['device-pairing-wait'],
      onEvent: (event, payload) => {
        if (event === 'device.pair.waiting') waiting = payload as typeof waiting;
      },
    });
    const card = page.locator('article.request[data-kind="new-device"]');
    await card.waitFor();
    assert.ok(waiting, 'the device was told it is waiting');
    const w = waiting as { requestId: string; confirmationCode: string };
    assert.match(w.confirmationCode, /^\d{6}$/);
    const mine = page.locator(`article.request[data-request-id="${w.requestId}"]`);
    assert.equal(await mine.locator('.confirm-code').textContent(), w.confirmationCode, 'the page shows the code the device shows');
    const text = (await mine.textContent()) ?? '';
    for (const part of ['Remote laptop', '198.51.100.40', 'linux', 'test / test', 'first seen', 'last seen'])
      assert.ok(text.includes(part), `card shows ${part}`);
    await shot(page, '02-pending-new-device');
    await mine.locator('button[data-action="approve"]').click();
    const liveConn = await admitted;
    t.after(() => liveConn.close());
    assert.equal(liveConn.hello.auth.role, 'operator');
    assert.deepEqual(liveConn.hello.auth.scopes, ['operator.read']);
    await page.locator(`article.request[data-request-id="${w.requestId}"]`).waitFor({ state: 'detached' });
  });

  test('a scope-upgrade request shows exactly the added scopes and is approved from the UI', async (t) => {
    const { identity: waitingDevice } = await pairedRemote(t);
    // The page opens after the device got its token, so its first listing shows it.
    const page = await signedInPage(t);
    const upgrading = await remoteDevice(tg, { identity: waitingDevice, scopes: ['operator.read', 'operator.write'] });
    const requestId = upgrading.hello.auth.pendingRequestId;
    assert.ok(requestId, 'admitted with a pending scope upgrade');
    const card = page.locator(`article.request[data-request-id="${requestId}"]`);
    await card.waitFor();
    assert.equal(await card.getAttribute('data-kind'), 'scope-upgrade');
    assert.deepEqual(await card.locator('.scope.add').allTextContents(), ['operator.write']);
    await shot(page, '03-pending-scope-upgrade');
    const updated = upgrading.waitForEvent<{ scopes: string[] }>('auth.updated', 10_000);
    await card.locator('button[data-action="approve"]').click();
    assert.deepEqual((await updated).scopes, ['operator.read', 'operator.write'], 'the live connection widened in place');
    await upgrading.close();
  });

  test('a node command-surface request shows its commands, host-level ones marked, and is approved from the UI', async (t) => {
    const page = await signedInPage(t);
    const identity = generateIdentity();
    const nodeId = identity.deviceId;
    let node = await RawClient.open(tg.url, REMOTE);
    const challenge = await node.challenge();
    const params = deviceParams({
      identity,
      challenge,
      role: 'node',
      scopes: [],
      client: { id: 'node-host', mode: 'node', displayName: 'build-box' },
      auth: { token: TEST_TOKEN },
    });
    // A remote node needs its role approved first: do that from the UI too.
    const refused = await node.request('c1', 'connect', params);
    assert.equal(refused?.ok, false);
    const roleCard = page.locator(`article.request[data-device-id="${nodeId}"]`);
    await roleCard.waitFor();
    assert.match((await roleCard.textContent()) ?? '', /role node/);
    await roleCard.locator('button[data-action="approve"]').click();
    await roleCard.waitFor({ state: 'detached' });
    node = await RawClient.open(tg.url, REMOTE);
    const surfaceNode = node;
    t.after(() => surfaceNode.close());
    const params2 = deviceParams({
      identity,
      challenge: await node.challenge(),
      role: 'node',
      scopes: [],
      client: { id: 'node-host', mode: 'node', displayName: 'build-box' },
      auth: { token: TEST_TOKEN },
    });
    params2.caps = ['system', 'canvas'];
    params2.commands = ['canvas.present', 'system.run', 'system.which'];
    const hello = await node.request('c1', 'connect', params2);
    assert.equal(hello?.ok, true, JSON.stringify(hello?.error));

    const card = page.locator(`article.request[data-kind="node-surface"][data-node-id="${nodeId}"]`);
    await card.waitFor();
    assert.deepEqual(await card.locator('.command').evaluateAll((els) => els.map((e) => e.getAttribute('data-command'))), [
      'canvas.present',
      'system.run',
      'system.which',
    ]);
    assert.deepEqual(await card.locator('.command.host').evaluateAll((els) => els.map((e) => e.getAttribute('data-command'))), ['system.run', 'system.which']);
    assert.match((await card.textContent()) ?? '', /operator\.admin/);
    await shot(page, '03b-pending-node-surface');
    const resolved = node.event('node.pair.resolved', 10_000);
    await card.locator('button[data-action="approve"]').click();
    const ev = (await resolved)?.payload as { nodeId: string; decision: string } | undefined;
    assert.equal(ev?.decision, 'approved', 'the node learns on its open socket');
    assert.equal(ev?.nodeId, nodeId);
    const nodeCard = page.locator(`article.device[data-device-id="${nodeId}"]`);
    await page.click('#tab-devices');
    await nodeCard.locator('.node-commands .approved .command[data-command="system.run"]').waitFor();
    await page.click('#tab-pending');
  });

  test('devices view: roles, scopes, token ids (never secrets), connected now', async (t) => {
    const { identity: waitingDevice } = await pairedRemote(t, ['operator.read', 'operator.write']);
    // The page opens after the device got its token, so its first listing shows it.
    const page = await signedInPage(t);
    await page.click('#tab-devices');
    const card = page.locator(`article.device[data-device-id="${waitingDevice.deviceId}"]`);
    await card.waitFor();
    await page.locator(`article.device[data-device-id="${waitingDevice.deviceId}"] [data-connected="true"]`).waitFor();
    const text = (await card.textContent()) ?? '';
    assert.match(text, /operator\.write/);
    const tokens = await tg.store.listTokens(waitingDevice.deviceId);
    assert.ok(tokens.length > 0 && text.includes(tokens[0]!.tokenId), 'token id shown');
    assert.doesNotMatch(await page.content(), /cgd1_[0-9a-f]{16}_/, 'no device token secret anywhere in the page');
    await shot(page, '04-devices');
  });

  test('devices view: "connected now" follows the presence event, without a reload or a tick', async (t) => {
    const page = await signedInPage(t);
    await page.click('#tab-devices');
    await page.evaluate(() => {
      (window as unknown as { presenceMarker: number }).presenceMarker = 1;
    });
    const identity = generateIdentity();
    const opts = {
      url: tg.url,
      identity,
      auth: { token: TEST_TOKEN },
      client: { id: 'cli', mode: 'cli', displayName: 'Presence box' },
      scopes: ['operator.read'],
    };
    const chip = (connected: boolean) => page.locator(`article.device[data-device-id="${identity.deviceId}"] [data-connected="${connected}"]`);
    // Well inside the 30 s tick: only the presence event can explain each change.
    const first = await connectGateway(opts);
    await chip(true).waitFor({ timeout: 5_000 });
    await first.close();
    await chip(false).waitFor({ timeout: 5_000 });
    const again = await connectGateway({ ...opts, auth: { deviceToken: first.hello.auth.deviceToken as string } });
    await chip(true).waitFor({ timeout: 5_000 });
    await again.close();
    await chip(false).waitFor({ timeout: 5_000 });
    assert.equal(await page.evaluate(() => (window as unknown as { presenceMarker?: number }).presenceMarker), 1, 'the page was never reloaded');
  });

  test('rename from the UI', async (t) => {
    const { identity: waitingDevice } = await pairedRemote(t);
    // The page opens after the device got its token, so its first listing shows it.
    const page = await signedInPage(t);
    await page.click('#tab-devices');
    const card = page.locator(`article.device[data-device-id="${waitingDevice.deviceId}"]`);
    await card.locator('button[data-action="rename"]').click();
    await page.fill(`#rename-${waitingDevice.deviceId}`, 'Anna laptop');
    await card.locator('form.rename button[type=submit]').click();
    await page.locator(`article.device[data-device-id="${waitingDevice.deviceId}"] header strong`, { hasText: 'Anna laptop' }).waitFor();
    assert.equal((await tg.store.getDevice(waitingDevice.deviceId))?.label, 'Anna laptop');
  });

  test('revoke a device in the UI (with a confirmation step): its live socket closes', async (t) => {
    const { identity: waitingDevice, conn: liveConn } = await pairedRemote(t);
    // The page opens after the device got its token, so its first listing shows it.
    const page = await signedInPage(t);
    await page.click('#tab-devices');
    const key = `revoke:${waitingDevice.deviceId}:operator`;
    await page.click(`[data-action="${key}"]`);
    assert.equal(liveConn.ws.readyState, WebSocket.OPEN, 'nothing happens before the confirmation');
    await page.click(`[data-confirm="${key}"]`);
    const closed = await liveConn.closed;
    assert.equal(closed.code, 4001);
    assert.equal(closed.reason, 'device token revoked');
    await page.locator(`article.device[data-device-id="${waitingDevice.deviceId}"] .grant`).waitFor({ state: 'detached' });
  });

  test('mint a setup code in the UI (QR + link), redeem it from a client, see it marked redeemed', async (t) => {
    const page = await signedInPage(t);
    await page.click('#tab-setup');
    await page.selectOption('#mint-profile', 'operator');
    await page.fill('#mint-label', 'ui-test phone');
    await page.click('#mint');
    await page.waitForSelector('#minted svg.qr path');
    await shot(page, '05-setup-minted');
    const link = await page.inputValue('#minted-link');
    const code = await page.inputValue('#minted-code');
    assert.match(link, /^oc-pair:\/\//);
    // The QR in the page is exactly the encoding of the link.
    assert.equal(await page.getAttribute('#minted svg.qr path', 'd'), qrPath(encodeQr(link)));
    const decoded = decodeSetupCode(code);
    assert.ok(decoded.ok, 'the code decodes');
    const setupId = await page.getAttribute('#minted', 'data-setup-id');
    await page.locator(`tr[data-setup-id="${setupId}"][data-status="active"]`).waitFor();
    const phone = generateIdentity();
    const conn = await remoteDevice(tg, {
      identity: phone,
      client: { id: 'test', mode: 'test', displayName: 'Phone' },
      auth: { bootstrapToken: decoded.payload.bootstrapToken },
      scopes: ['operator.read'],
    });
    assert.equal(conn.hello.auth.method, 'bootstrap-token');
    await conn.close();
    const row = page.locator(`tr[data-setup-id="${setupId}"][data-status="redeemed"]`);
    await row.waitFor();
    assert.match((await row.textContent()) ?? '', /Phone/);
    await shot(page, '06-setup-redeemed');
  });

  test('revoke an unused setup code from the UI', async (t) => {
    const page = await signedInPage(t);
    await page.click('#tab-setup');
    await page.click('#mint');
    await page.locator('#minted[data-setup-id]').waitFor();
    const setupId = await page.getAttribute('#minted', 'data-setup-id');
    await page.locator(`tr[data-setup-id="${setupId}"][data-status="active"]`).waitFor();
    await page.click(`[data-action="setup-revoke:${setupId}"]`);
    await page.click(`[data-confirm="setup-revoke:${setupId}"]`);
    await page.locator(`tr[data-setup-id="${setupId}"][data-status="revoked"]`).waitFor();
  });

  test('audit log view with filters', async (t) => {
    // This test's own history: a device paired, renamed and revoked.
    const { identity: waitingDevice } = await pairedRemote(t);
    assert.equal((await cli(tg, 'devices', 'rename', waitingDevice.deviceId, 'audited')).code, 0);
    assert.equal((await cli(tg, 'devices', 'revoke', '--device', waitingDevice.deviceId, '--role', 'operator')).code, 0);
    const page = await signedInPage(t);
    await page.click('#tab-audit');
    await page.locator('#audit-table tr[data-action="pairing.approved"]').first().waitFor();
    await page.selectOption('#audit-action', 'token.revoked');
    await page.fill('#audit-subject', waitingDevice.deviceId.slice(0, 10));
    const rows = page.locator('#audit-table tbody tr');
    assert.equal(await rows.count(), 1);
    assert.equal(await rows.first().getAttribute('data-action'), 'token.revoked');
    await page.selectOption('#audit-action', '');
    const actions = await page.locator('#audit-table tbody tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-action')));
    assert.ok(actions.length > 0 && actions.includes('device.renamed') && !actions.includes('setup.revoked'));
    await page.fill('#audit-subject', '');
    await shot(page, '07-audit');
  });

  test('errors show the gateway message and the next step', async (t) => {
    const page = await signedInPage(t);
    // Approving a request that was already resolved elsewhere.
    const id = generateIdentity();
    await remoteDevice(tg, { identity: id, scopes: ['operator.read'] }).catch(() => undefined);
    await page.click('#tab-pending');
    const card = page.locator(`article.request[data-device-id="${id.deviceId}"]`);
    await card.waitFor();
    const requestId = await card.getAttribute('data-request-id');
    await tg.store.deletePairingRequest(requestId!, { atMs: Date.now(), actor: 'test', action: 'pairing.rejected', subject: id.deviceId });
    await card.locator('button[data-action="approve"]').click();
    const problem = page.locator('#problems .problem').first();
    await problem.waitFor();
    const text = (await problem.textContent()) ?? '';
    assert.match(text, /unknown/i);
    assert.match(text, /Next step: /);
    await shot(page, '08-error');
  });

  test('Reject from the UI refuses the waiting device; Remove (with a confirmation step) forgets a paired one', async (t) => {
    const { identity: waitingDevice } = await pairedRemote(t);
    // The page opens after the device got its token, so its first listing shows it.
    const page = await signedInPage(t);
    const id = generateIdentity();
    const outcome = remoteDevice(tg, { identity: id, scopes: ['operator.read'], caps: ['device-pairing-wait'] }).then(
      (conn) => conn,
      (err: unknown) => err,
    );
    await page.click('#tab-pending');
    const card = page.locator(`article.request[data-device-id="${id.deviceId}"]`);
    await card.waitFor();
    await card.locator('button[data-action="reject"]').click();
    const refused = await outcome;
    assert.ok(refused instanceof ConnectError, `the waiting device is refused, not admitted (${String(refused)})`);
    assert.ok(refused.error !== null || refused.closeCode !== null, `the gateway refused it, not a timeout (${refused.message})`);
    await card.waitFor({ state: 'detached' });
    assert.equal(await tg.store.getDevice(id.deviceId), null, 'a rejected device is not paired');

    assert.ok(await tg.store.getDevice(waitingDevice.deviceId), 'the device to remove is paired');
    await page.click('#tab-devices');
    const key = `remove:${waitingDevice.deviceId}`;
    await page.click(`[data-action="${key}"]`);
    assert.ok(await tg.store.getDevice(waitingDevice.deviceId), 'nothing happens before the confirmation');
    await page.click(`[data-confirm="${key}"]`);
    await page.locator(`article.device[data-device-id="${waitingDevice.deviceId}"]`).waitFor({ state: 'detached' });
    assert.equal(await tg.store.getDevice(waitingDevice.deviceId), null);
  });

  test('rotate a token from the UI (with a confirmation step): the device shows a new token id', async (t) => {
    const { identity } = await pairedRemote(t);
    // The page opens after the device got its token, so its first listing shows it.
    const page = await signedInPage(t);
    await page.click('#tab-devices');
    const key = `rotate:${identity.deviceId}:operator`;
    const tokenSel = `article.device[data-device-id="${identity.deviceId}"] .grant[data-role="operator"] .token`;
    await page.locator(tokenSel).waitFor();
    const token = page.locator(tokenSel);
    const before = await token.textContent();
    assert.match(before ?? '', /^token \S+$/);
    await page.click(`[data-action="${key}"]`);
    assert.equal(await token.textContent(), before, 'nothing happens before the confirmation');
    await page.click(`[data-confirm="${key}"]`);
    await page.waitForFunction(
      ([sel, old]) => {
        const t = document.querySelector(sel as string)?.textContent ?? '';
        return t.startsWith('token ') && t !== old;
      },
      [tokenSel, before],
    );
  });

  test('a page from another origin cannot open a WebSocket to the gateway', async (t) => {
    const page = await freshPage(t);
    const other: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><title>elsewhere</title>');
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    try {
      const port = (other.address() as AddressInfo).port;
      const evil = await page.context().newPage();
      await evil.goto(`http://127.0.0.1:${port}/`);
      const probe = (url: string) =>
        new Promise<string>((resolve) => {
          const ws = new WebSocket(url);
          ws.onmessage = (e) => resolve(`message:${String(e.data).slice(0, 60)}`);
          ws.onerror = () => resolve('error');
        });
      const wsUrl = tg.url;
      assert.equal(await evil.evaluate(probe, wsUrl), 'error', 'cross-origin page refused at the upgrade');
      // The gateway's own page (same origin) gets the challenge.
      assert.match(await page.evaluate(probe, wsUrl), /^message:.*connect\.challenge/);
      await evil.close();
    } finally {
      other.close();
    }
    // And at the HTTP level: 403 for a foreign Origin, 101 for none (CLI, nodes).
    const status = (origin?: string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(tg.url, origin ? { origin } : {});
        ws.on('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.on('open', () => {
          resolve(101);
          ws.close();
        });
        ws.on('error', () => undefined);
      });
    assert.equal(await status('http://evil.example'), 403);
    assert.equal(await status('null'), 403);
    assert.equal(await status(), 101);
    assert.equal(await status(`http://127.0.0.1:${tg.server.port}`), 101);
  });

  test('a one-time owner link from `clawgate dashboard` signs in once and leaves no secret in the URL', async () => {
    const r = await cli(tg, 'dashboard', '--json');
    assert.equal(r.code, 0, r.stderr);
    const { url } = JSON.parse(r.stdout) as { url: string };
    assert.ok(url.startsWith(base) && url.includes('#login=cgl1_'), url);
    const ctx = await browser.newContext();
    const p = await ctx.newPage();
    await p.goto(url);
    await p.waitForSelector('#conn-state[data-state="connected"]');
    assert.equal(p.url(), base, 'the link token is stripped from the address');
    await ctx.close();
    // Used: a second browser gets the catalogue error and its next step.
    const ctx2 = await browser.newContext();
    const p2 = await ctx2.newPage();
    await p2.goto(url);
    await p2.waitForSelector('#conn-state[data-state="signed-out"]');
    const problem = (await p2.locator('#problems').textContent()) ?? '';
    assert.match(problem, /AUTH_DASHBOARD_LINK_INVALID/);
    assert.match(problem, /clawgate dashboard/);
    await ctx2.close();
  });

  test('log out clears the session; the token stops working', async (t) => {
    const page = await signedInPage(t);
    await page.click('#tab-pending');
    const token = (await page.evaluate(`(${tabToken})()`)) as string | null;
    assert.ok(token);
    await page.click('#logout');
    await page.waitForSelector('#conn-state[data-state="signed-out"]');
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.reload();
    await page.waitForSelector('#conn-state[data-state="signed-out"]');
    const tokens = await tg.store.listTokens();
    const id = token.split('_')[1];
    assert.ok(tokens.find((t) => t.tokenId === id)?.revokedAtMs !== undefined, 'the device token was revoked at logout');
    // Signing in again with the owner credential works and yields a fresh token.
    await page.fill('#credential', TEST_OWNER);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#conn-state[data-state="connected"]');
    assert.notEqual((await page.evaluate(`(${tabToken})()`)) as string | null, token);
  });

  test('a second tab of the same browser signs in without signing the first out', async (t) => {
    const page = await signedInPage(t);
    const second = await page.context().newPage();
    await second.goto(base);
    await second.fill('#credential', TEST_OWNER);
    await second.click('#signin-form button[type=submit]');
    await second.waitForSelector('#conn-state[data-state="connected"]');
    await second.waitForSelector('#notice');
    assert.equal((await second.evaluate(`(${tabToken})()`)) as string | null, null, 'the other tab keeps the token');
    assert.equal(await page.getAttribute('#conn-state', 'data-state'), 'connected', 'the first tab is still signed in');
    await second.close();
  });

  test('a returning browser whose tab token is gone gets a fresh one (self rotation) and survives a reload', async (t) => {
    const page = await signedInPage(t);
    const before = (await page.evaluate(`(${tabToken})()`)) as string | null;
    await page.evaluate(() => sessionStorage.clear());
    await page.reload();
    await page.waitForSelector('#conn-state[data-state="signed-out"]');
    await page.fill('#credential', TEST_OWNER);
    await page.click('#signin-form button[type=submit]');
    // (polled from here: the page's CSP forbids the string evaluation waitForFunction would need)
    for (let i = 0; ; i++) {
      const t = (await page.evaluate(`(${tabToken})()`)) as string | null;
      if (t !== null && t !== before && (await page.getAttribute('#conn-state', 'data-state')) === 'connected') break;
      assert.ok(i < 200, 'a fresh tab token within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    await page.reload();
    await page.waitForSelector('#conn-state[data-state="connected"]');
  });

  // Runs last on purpose: it reads what every page above reported.
  test('no CSP violations or script errors in any page above', () => {
    const csp = consoleProblems.filter((m) => /Content Security Policy|Refused to/i.test(m));
    assert.deepEqual(csp, []);
    const errors = consoleProblems.filter((m) => !/WebSocket connection|Failed to load resource/i.test(m));
    assert.deepEqual(errors, []);
  });
});

describe('Control UI signing in with the gateway token where a person must approve', () => {
  let tg: TestGateway;
  let browser: Browser;
  before(async () => {
    tg = await startTestGateway({ config: { autoApproveLocal: false } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('the browser waits, shows its confirmation code, and is admitted when the operator approves the same code', async () => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${tg.server.port}/`);
    await page.fill('#credential', TEST_TOKEN);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#conn-state[data-state="waiting"]');
    const shown = (await page.textContent('#own-code'))?.trim();
    assert.match(shown ?? '', /^\d{6}$/);
    await shot(page, '00-waiting-for-approval');
    const listed = await cli(tg, 'devices', 'list', '--json');
    const pending = (JSON.parse(listed.stdout) as { pending: Array<{ requestId: string; clientId: string; confirmationCode: string }> }).pending;
    const mine = pending.find((p) => p.clientId === 'openclaw-control-ui');
    assert.ok(mine, 'the browser filed a pairing request');
    assert.equal(mine.confirmationCode, shown, 'the CLI shows the code the browser shows');
    const approved = await cli(tg, 'devices', 'approve', mine.requestId);
    assert.equal(approved.code, 0, approved.stderr);
    await page.waitForSelector('#conn-state[data-state="connected"]');
    assert.match(((await page.evaluate(`(${tabToken})()`)) as string | null) ?? '', /^cgd1_/);
    await page.close();
  });
});

describe('Control UI behind a real nginx (TLS, context path)', { skip: skipUnlessPresent(missingFile(NGINX_BIN, 'scripts/system-deps.sh')) }, () => {
  const PROXY = '127.0.0.2';
  let tg: TestGateway;
  let nginx: RunningNginx;
  let dir: string;
  let browser: Browser;
  let pageUrl: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'clawgate-ui-nginx-'));
    const cert = ensureSelfSignedCert(dir);
    const started = await startBehindNginx(
      (port) => startTestGateway({ config: { trustedProxies: [PROXY], contextPath: '/clawgate', publicUrl: `wss://127.0.0.1:${port}/clawgate` } }),
      async (g) => {
        await g.stop();
        removeDir(g.stateDir);
      },
      (port, g) => ({
        dir,
        port,
        certPath: cert.certPath,
        keyPath: cert.keyPath,
        upstream: `http://127.0.0.1:${g.server.port}`,
        location: '/clawgate',
        proxyBind: PROXY,
      }),
      '/clawgate/healthz',
    );
    tg = started.gateway;
    nginx = started.nginx;
    pageUrl = `https://127.0.0.1:${started.port}/clawgate`;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await nginx?.stop();
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
    removeDir(dir);
  });

  test('the page loads under the context path over https, signs in over wss through the proxy, and is never local', async () => {
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await ctx.newPage();
    await page.goto(pageUrl);
    assert.equal(page.url(), `${pageUrl}/`, 'redirected to the directory form');
    await page.fill('#credential', TEST_OWNER);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#conn-state[data-state="connected"]');
    await page.click('#tab-devices');
    const card = page.locator('article.device', { hasText: 'this browser' });
    await card.waitFor();
    // Attributed from X-Forwarded-For (nginx connects from 127.0.0.2), so the approval came from
    // the owner credential, not from being on this host.
    const devices = (await tg.store.listDevices()).filter((d) => d.clientId === 'openclaw-control-ui');
    assert.equal(devices.length, 1);
    assert.equal((await tg.store.getGrant(devices[0]!.deviceId, 'operator'))?.approvedVia, 'owner');
    await shot(page, '09-behind-nginx');
    // A page of another site cannot reach the gateway through the proxy either; the UI's own can.
    await ctx.route('https://evil.test/**', (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<p>elsewhere</p>' }));
    const evil = await ctx.newPage();
    await evil.goto('https://evil.test/');
    const probe = (url: string) =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(url);
        ws.onmessage = (e) => resolve(`message:${String(e.data).slice(0, 60)}`);
        ws.onerror = () => resolve('error');
      });
    const wssUrl = `${pageUrl.replace(/^https/, 'wss')}/`;
    assert.equal(await evil.evaluate(probe, wssUrl), 'error');
    assert.match(await page.evaluate(probe, wssUrl), /connect\.challenge/);
    await ctx.close();
  });
});

describe('Origin check (unit)', () => {
  const base = { ownOrigins: [] as string[], viaTrustedProxy: false };
  test('clients without Origin are judged by credentials alone', () => assert.ok(originAllowed(undefined, '127.0.0.1:1', base)));
  test('same origin by IP or localhost', () => {
    assert.ok(originAllowed('http://127.0.0.1:18789', '127.0.0.1:18789', base));
    assert.ok(originAllowed('http://localhost:18789', 'localhost:18789', base));
    assert.ok(originAllowed('http://[::1]:18789', '[::1]:18789', base));
  });
  test('another port, scheme-less or opaque origins are refused', () => {
    assert.ok(!originAllowed('http://127.0.0.1:9999', '127.0.0.1:18789', base));
    assert.ok(!originAllowed('null', '127.0.0.1:18789', base));
    assert.ok(!originAllowed('file://', '127.0.0.1:18789', base));
  });
  test('a DNS name matching Host is refused unless configured (DNS rebinding); behind a trusted proxy only configured origins count', () => {
    assert.ok(!originAllowed('http://evil.example:18789', 'evil.example:18789', base));
    assert.ok(originAllowed('http://gw.lan:18789', 'gw.lan:18789', { ...base, ownOrigins: ['http://gw.lan:18789'] }));
    const proxied = { ownOrigins: gatewayOrigins({ allowedOrigins: [], publicUrl: 'wss://gw.example.com/clawgate' }), viaTrustedProxy: true };
    assert.deepEqual(proxied.ownOrigins, ['https://gw.example.com']);
    assert.ok(originAllowed('https://gw.example.com', 'gw.example.com', proxied));
    assert.ok(!originAllowed('https://gw.example.com:8443', 'gw.example.com', proxied));
    assert.ok(!originAllowed('https://evil.example', 'evil.example', proxied), 'a rebound name forwarded as Host is not the gateway');
    assert.ok(!originAllowed('http://127.0.0.1:18789', '127.0.0.1:18789', { ownOrigins: [], viaTrustedProxy: true }), 'no Host counts behind a proxy');
  });
  test('the own origins come from configuration: allowedOrigins, publicUrl, a specific listening address', () => {
    assert.deepEqual(
      gatewayOrigins({
        allowedOrigins: ['https://Admin.Example.com/'],
        publicUrl: 'ws://10.0.0.5:8080/cg',
        listen: { host: '127.0.0.1', port: 18789, tls: false },
      }),
      ['https://admin.example.com', 'http://10.0.0.5:8080', 'http://127.0.0.1:18789', 'http://localhost:18789'],
    );
    assert.deepEqual(gatewayOrigins({ allowedOrigins: [], listen: { host: '::1', port: 443, tls: true } }), ['https://[::1]', 'https://localhost']);
    assert.deepEqual(gatewayOrigins({ allowedOrigins: [], listen: { host: '0.0.0.0', port: 18789, tls: false } }), [], 'a wildcard listener names no origin');
  });
});

describe('QR encoder', () => {
  test('matches an independent encoder module for module (same version and mask)', () => {
    for (const text of ['hello', 'https://example.com/a?b=c', `oc-pair://${'x'.repeat(300)}`, 'A'.repeat(900)]) {
      const ref = qrMatrix(text);
      const version = (ref.length - 17) / 4;
      const same = [0, 1, 2, 3, 4, 5, 6, 7].some((mask) => {
        const q = encodeQr(text, { mask, minVersion: version });
        return q.size === ref.length && q.modules.every((row, y) => row.every((v, x) => v === ref[y]![x]));
      });
      assert.ok(same, `QR of ${text.length} chars matches the reference encoder under one mask`);
      assert.equal(encodeQr(text).size, ref.length, 'same (smallest) version');
    }
  });
});
