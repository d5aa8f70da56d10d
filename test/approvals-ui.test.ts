/**
 * The Control UI's approval ttl in headless Chromium: a pending device approved "for 1 hour"
 * from its card gets a time-bound grant (the device sees `expiresAtMs` in hello-ok), and the
 * device card shows until when.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium } from 'playwright-core';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { removeDir, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { missingFile, skipUnlessPresent } from './helpers/strict.js';
import { waitFor } from './helpers/wait.js';

const CHROMIUM = process.env.CLAWGATE_CHROMIUM ?? '/usr/bin/chromium';

describe('Control UI: approving with a ttl', { skip: skipUnlessPresent(missingFile(CHROMIUM, 'scripts/system-deps.sh installs chromium')) }, () => {
  let tg: TestGateway;
  let browser: Browser;

  before(async () => {
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'] } });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('the approve dialog offers a ttl; the grant it makes is time-bound and the device card says until when', async (t) => {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${tg.server.port}/`);
    await page.fill('#credential', TEST_OWNER);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#conn-state[data-state="connected"]');

    const identity = generateIdentity();
    const waiting = connectGateway({
      url: tg.url,
      identity,
      auth: { token: TEST_TOKEN },
      scopes: ['operator.read'],
      caps: ['device-pairing-wait'],
      client: { id: 'test', mode: 'test', displayName: 'Guest phone' },
      // From "elsewhere" (through the trusted loopback proxy), so it is not paired silently.
      headers: { 'x-forwarded-for': '198.51.100.41' },
      timeoutMs: 30_000,
    });
    const requestId = await waitFor(async () => (await tg.store.listPairingRequests(identity.deviceId))[0]?.requestId, 'the request');
    const card = page.locator(`article.request[data-request-id="${requestId}"]`);
    await card.waitFor();
    await card.locator('select[data-field="ttl"]').selectOption('1h');
    const before = Date.now();
    await card.locator('button[data-action="approve"]').click();
    const device = await waiting;
    try {
      const expiresAtMs = (device.hello.auth as { expiresAtMs?: number }).expiresAtMs;
      assert.ok(
        typeof expiresAtMs === 'number' && expiresAtMs >= before + 3600_000 - 5_000 && expiresAtMs <= Date.now() + 3600_000,
        `about an hour: ${expiresAtMs}`,
      );
      const grant = await tg.store.getGrant(identity.deviceId, 'operator');
      assert.equal(grant?.expiresAtMs, expiresAtMs);
      assert.match(grant?.approvedBy ?? '', /^device:[0-9a-f]{64}$/, 'approved by the signed-in browser');
      const shown = page.locator(`.grant[data-role="operator"] .expiry[data-expires-at="${expiresAtMs}"]`);
      await page.click('#tab-devices');
      await shown.waitFor();
      assert.match((await shown.textContent()) ?? '', /expires/);
    } finally {
      await device.close();
    }
  });
});
