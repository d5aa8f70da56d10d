/**
 * The Control UI's devices view on more devices than one page: it pages with Next / Previous and
 * searches by name or id prefix through device.pair.list (headless Chromium, real gateway, real
 * SQLite store seeded through the store API).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import type { SeedDevice } from '../src/store/types.js';
import { removeDir, startTestGateway, TEST_OWNER, type TestGateway } from './helpers/gateway.js';
import { missingFile, skipUnlessPresent } from './helpers/strict.js';

const CHROMIUM = process.env.CLAWGATE_CHROMIUM ?? '/usr/bin/chromium';
const T0 = 1_700_000_000_000;
/** 120 devices (the view shows 50 per page); every tenth is a "Kitchen" device. */
const DEVICES: SeedDevice[] = Array.from({ length: 120 }, (_, i) => ({
  deviceId: createHash('sha256').update(`ui-device-${i}`).digest('hex'),
  publicKey: `pk-${i}`,
  meta: { displayName: i % 10 === 0 ? `Kitchen ${i}` : `Laptop ${i}` },
  createdAtMs: T0 + i,
  grants: [{ role: 'operator', scopes: ['operator.read'], approvedAtMs: T0 + i, approvedVia: 'manual' }],
  tokens: [],
}));
const ids = (from: number, to: number) => DEVICES.slice(from, to).map((d) => d.deviceId);

describe('Control UI device pages in headless Chromium', { skip: skipUnlessPresent(missingFile(CHROMIUM, 'scripts/system-deps.sh')) }, () => {
  let tg: TestGateway;
  let browser: Browser;
  before(async () => {
    tg = await startTestGateway();
    for (let i = 0; i < DEVICES.length; i += 60) {
      const r = await tg.store.seedPairedDevices({ devices: DEVICES.slice(i, i + 60), audit: { atMs: T0, actor: 'owner', action: 'devices.seeded' } });
      assert.ok(r.ok);
    }
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
  });

  /** The device ids the view shows, in order, once it shows `expectFirst` first (the page changed). */
  async function shown(page: Page, expectFirst: string): Promise<string[]> {
    await page.waitForSelector(`#panel-devices article.device:first-of-type[data-device-id="${expectFirst}"]`);
    return page.$$eval('#panel-devices article.device', (els) => els.map((e) => e.getAttribute('data-device-id') ?? ''));
  }

  test('Next and Previous walk the pages; a search shows only matching devices, from its first page', async (t) => {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    t.after(() => context.close());
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(String(e)));
    await page.goto(`http://127.0.0.1:${tg.server.port}/`);
    await page.waitForSelector('#conn-state[data-state="signed-out"]');
    await page.fill('#credential', TEST_OWNER);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#conn-state[data-state="connected"]');
    await page.click('#tab-devices');

    assert.deepEqual(await shown(page, ids(0, 1)[0] as string), ids(0, 50));
    assert.equal(await page.isDisabled('#devices-prev'), true);
    assert.match((await page.textContent('#devices-page')) ?? '', /page 1/);
    await page.click('#devices-next');
    assert.deepEqual(await shown(page, ids(50, 51)[0] as string), ids(50, 100));
    await page.click('#devices-next');
    // The browser's own device (signed in with the owner credential) is the newest: last page.
    const last = await shown(page, ids(100, 101)[0] as string);
    assert.deepEqual(last.slice(0, 20), ids(100, 120));
    assert.equal(await page.isDisabled('#devices-next'), true, 'the last page has no next');
    await page.click('#devices-prev');
    assert.deepEqual(await shown(page, ids(50, 51)[0] as string), ids(50, 100));

    await page.fill('#device-search', 'kitchen');
    const kitchen = DEVICES.filter((d) => d.meta.displayName?.startsWith('Kitchen')).map((d) => d.deviceId);
    assert.deepEqual(await shown(page, kitchen[0] as string), kitchen);
    assert.equal(await page.$('#devices-next'), null, 'one page of results: no pager');
    await page.fill('#device-search', DEVICES[7]?.deviceId.slice(0, 12) as string);
    assert.deepEqual(await shown(page, DEVICES[7]?.deviceId as string), [DEVICES[7]?.deviceId]);
    await page.fill('#device-search', 'no such device');
    await page.waitForSelector('#panel-devices p.empty');
    assert.match((await page.textContent('#panel-devices p.empty')) ?? '', /No device matches this search/);
    assert.deepEqual(problems, []);
  });
});
