/**
 * The Control UI (headless Chromium) with a quorum and approval notifications configured:
 * quorum progress and expiry on request cards, a second approver finishing a request from the
 * page, a notification's one-time link opening its request only after sign-in and only once,
 * and explain on a device card. Screenshots go to test-artifacts/ui/.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type ConnectOptions, connectGateway, type DeviceIdentity, generateIdentity } from '../src/client/connection.js';
import { asOwner, cli, expectRefused, removeDir, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { waitFor } from './helpers/wait.js';
import { WebhookTarget } from './helpers/webhook.js';

const CHROMIUM = process.env.CLAWGATE_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'ui');
const REMOTE = { 'x-forwarded-for': '198.51.100.61' };
const ADMIN_ASK = ['operator.admin', 'operator.pairing'];

function remote(tg: TestGateway, identity: DeviceIdentity, scopes: string[], displayName: string, extra: Partial<ConnectOptions> = {}) {
  return connectGateway({
    url: tg.url,
    identity,
    client: { id: 'test', mode: 'test', displayName },
    auth: { token: TEST_TOKEN },
    headers: REMOTE,
    scopes,
    ...extra,
  });
}

async function asked(tg: TestGateway, identity: DeviceIdentity, scopes: string[], displayName: string): Promise<string> {
  const refused = await expectRefused(remote(tg, identity, scopes, displayName), 'PAIRING_REQUIRED');
  return (refused.error?.details as { requestId: string } | undefined)?.requestId as string;
}

async function ownerApproves(tg: TestGateway, requestId: string): Promise<unknown> {
  const o = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
  try {
    return await o.request('device.pair.approve', { requestId });
  } finally {
    await o.close();
  }
}

async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

describe('Control UI: quorum, notification links and explain in headless Chromium', () => {
  let tg: TestGateway;
  let hook: WebhookTarget;
  let browser: Browser;
  let base: string;

  before(async () => {
    hook = await WebhookTarget.start();
    tg = await startTestGateway({
      config: {
        trustedProxies: ['127.0.0.1'],
        approvalQuorum: { 'operator.admin': 2 },
        approvalNotify: [{ channel: 'ops' }],
        automations: { channels: [{ name: 'ops', url: hook.url }] },
      },
    });
    base = `http://127.0.0.1:${tg.server.port}/`;
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });

  after(async () => {
    await browser?.close();
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
    await hook?.close();
  });

  async function freshPage(t: TestContext, url = base): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(url);
    await page.waitForSelector('#conn-state[data-state="signed-out"]');
    return page;
  }

  async function signIn(page: Page): Promise<void> {
    await page.fill('#credential', TEST_OWNER);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#conn-state[data-state="connected"]');
  }

  const linkFor = (requestId: string) =>
    waitFor(
      () => hook.received.map((r) => r.body as { link?: string; request?: { requestId: string } }).find((b) => b.request?.requestId === requestId)?.link,
      'the notification',
    );

  test('a request under quorum shows approvals 1/2 and its expiry; approving from the page is the second approval', async (t) => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'Quorum laptop');
    await ownerApproves(tg, requestId);
    const page = await freshPage(t);
    await signIn(page);
    const card = page.locator(`.card.request[data-request-id="${requestId}"]`);
    await card.waitFor();
    assert.equal(await card.locator('.chip.quorum').getAttribute('data-approvals'), '1/2');
    assert.equal((await card.locator('.chip.quorum').textContent())?.trim(), 'approvals 1/2');
    assert.match((await card.locator('.chip.quorum').getAttribute('title')) ?? '', /owner/);
    assert.match((await card.locator('.expiry').textContent()) ?? '', /^expires in \d+[smhd]$/);
    await shot(page, 'quorum-1-of-2');
    // The browser is a device of its own: a second, distinct approver.
    await card.locator('button[data-action=approve]').click();
    await card.waitFor({ state: 'detached' });
    const conn = await remote(tg, device, ADMIN_ASK, 'Quorum laptop');
    assert.ok(conn.hello.auth.scopes.includes('operator.admin'));
    await conn.close();
  });

  test('a notification link opens its request only after sign-in, and only once', async (t) => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'Linked phone');
    const link = await linkFor(requestId);
    assert.ok(link.startsWith(`${base}#request=cga1_`), link);

    const page = await freshPage(t, link);
    assert.equal(page.url(), base, 'the link is stripped from the address bar at once');
    assert.match((await page.locator('#notice').textContent()) ?? '', /Sign in to open the request/);
    assert.equal(await page.locator('[data-focused="true"]').count(), 0, 'nothing opens before sign-in');
    await signIn(page);
    const focused = page.locator('[data-focused="true"]');
    await focused.waitFor();
    assert.equal(await focused.getAttribute('data-request-id'), requestId);
    assert.match((await page.locator('#notice').textContent()) ?? '', new RegExp(`Opened request ${requestId}`));
    await shot(page, 'notification-link-opened');
    // Opening it approved nothing.
    const listed = await cli(tg, 'devices', 'list', '--json');
    const pending = (JSON.parse(listed.stdout) as { pending: Array<{ requestId: string; approvals: { received: number } }> }).pending;
    assert.equal(pending.find((p) => p.requestId === requestId)?.approvals.received, 0);

    const again = await freshPage(t, link);
    await signIn(again);
    await again.locator('#problems').waitFor();
    const problem = (await again.locator('#problems').textContent()) ?? '';
    assert.match(problem, /approval link was used already/);
    assert.match(problem, /APPROVAL_LINK_INVALID/);
    assert.equal(await again.locator('[data-focused="true"]').count(), 0);
  });

  test('explain on a device card: holdings, the pending request with its quorum progress, and a refused method with its fix', async (t) => {
    const device = generateIdentity();
    await ownerApproves(tg, await asked(tg, device, ['operator.read'], 'Explained tablet'));
    // It now asks for admin on top: a pending upgrade under quorum.
    await remote(tg, device, ['operator.read', 'operator.admin'], 'Explained tablet').then((c) => c.close());
    const page = await freshPage(t);
    await signIn(page);
    await page.click('#tab-devices');
    const card = page.locator(`.card.device[data-device-id="${device.deviceId}"]`);
    await card.waitFor();
    await card.locator(`#explain-method-${device.deviceId}`).fill('audit.list');
    await card.locator('button[data-action=explain]').click();
    await card.locator('.explain-call').waitFor();
    assert.match((await card.locator('.explain-role[data-role=operator]').textContent()) ?? '', /operator\.read/);
    assert.equal(await card.locator('.explain-pending .chip.quorum').getAttribute('data-approvals'), '0/2');
    assert.equal(await card.locator('.explain-call').getAttribute('data-allowed'), 'false');
    const call = (await card.locator('.explain-call').textContent()) ?? '';
    assert.match(call, /audit\.list: refused \(MISSING_SCOPE\)/);
    assert.match(call, /fix: clawgate devices approve /, 'the pending request that asks for admin is the fix');
    await shot(page, 'explain-device-card');
  });
});
