/**
 * One-time owner sign-in links (`clawgate dashboard`, `dashboard.link`) over real sockets and
 * the real SQLite store, with a hand-moved clock for expiry.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connectGateway, type GatewayConnection, GatewayRequestError, generateIdentity } from '../src/client/connection.js';
import { ManualClock } from '../src/core/env.js';
import { asOwner, expectRefused, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

describe('dashboard sign-in links', () => {
  let tg: TestGateway;
  let owner: GatewayConnection;
  const clock = new ManualClock(Date.now());

  before(async () => {
    tg = await startTestGateway({ clock });
    owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
  });
  after(async () => {
    await owner.close();
    await tg.stop();
    removeDir(tg.stateDir);
  });

  const mint = (ttlMs?: number) =>
    owner.request<{ linkId: string; token: string; expiresAtMs: number; fragment: string }>('dashboard.link', ttlMs ? { ttlMs } : {});
  const browser = (token: string, identity = generateIdentity()) =>
    connectGateway({ url: tg.url, identity, auth: { token }, client: { id: 'openclaw-control-ui', mode: 'ui' }, scopes: ['operator.admin'] });

  test('a link signs a device in as the owner exactly once; only its hash is stored', async () => {
    const link = await mint();
    assert.match(link.token, /^cgl1_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    assert.equal(link.fragment, `#login=${link.token}`);
    assert.equal(link.expiresAtMs, clock.now() + 120_000);
    const stored = await tg.store.getMeta(`dashboard.link.${link.linkId}`);
    // The secret is the last 43 characters (base64url, which may itself contain '_').
    assert.ok(stored && !stored.includes(link.token.slice(-43)), 'the secret is not stored');

    const id = generateIdentity();
    const conn = await browser(link.token, id);
    assert.equal(conn.hello.auth.method, 'owner');
    assert.ok(conn.hello.auth.deviceToken, 'the browser is paired and gets its device token');
    assert.equal((await tg.store.getGrant(id.deviceId, 'operator'))?.approvedVia, 'owner');
    await conn.close();

    const again = await expectRefused(browser(link.token), 'AUTH_DASHBOARD_LINK_INVALID');
    assert.equal(again.closeCode, 1008);
    assert.match(String((again.error?.details as { nextStep?: string } | undefined)?.nextStep), /clawgate dashboard/);
    const actions = (await tg.store.listAudit()).map((e) => e.action);
    assert.ok(actions.includes('dashboard.link.created') && actions.includes('dashboard.link.used'));
  });

  test('two racing sign-ins with one link: exactly one wins', async () => {
    const link = await mint();
    const results = await Promise.allSettled([browser(link.token), browser(link.token), browser(link.token)]);
    const won = results.filter((r) => r.status === 'fulfilled');
    assert.equal(won.length, 1);
    for (const r of won) await (r as PromiseFulfilledResult<GatewayConnection>).value.close();
  });

  test('an expired link is refused', async () => {
    const link = await mint(10_000);
    clock.advance(10_001);
    await expectRefused(browser(link.token), 'AUTH_DASHBOARD_LINK_INVALID');
  });

  test('a link without a device key is not consumed (and proves nothing)', async () => {
    const link = await mint();
    await expectRefused(connectGateway({ url: tg.url, auth: { token: link.token }, client: { id: 'cli', mode: 'cli' } }), 'AUTH_TOKEN_MISMATCH');
    const conn = await browser(link.token);
    await conn.close();
  });

  test('a made-up link is refused', async () => {
    await expectRefused(browser(`cgl1_0123456789abcdef_${'A'.repeat(43)}`), 'AUTH_DASHBOARD_LINK_INVALID');
  });

  test('only the owner credential may mint a link', async () => {
    // The shared token alone does not even reach admin; with the opt-in that makes it admin on
    // the host, it is still not the owner.
    const optedIn = await startTestGateway({ config: { sharedSecretIsAdminOnHost: true } });
    try {
      for (const [gw, refusal] of [
        [tg, 'MISSING_SCOPE'],
        [optedIn, 'MANAGEMENT_DENIED'],
      ] as const) {
        const shared = await connectGateway({ url: gw.url, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] });
        try {
          await assert.rejects(shared.request('dashboard.link', {}), (err: unknown) => {
            assert.ok(err instanceof GatewayRequestError);
            assert.equal(err.detailCode, refusal);
            return true;
          });
        } finally {
          await shared.close();
        }
      }
    } finally {
      await optedIn.stop();
      removeDir(optedIn.stateDir);
    }
  });
});
