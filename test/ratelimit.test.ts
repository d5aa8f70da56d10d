/**
 * The in-memory failed-authentication limiter over real sockets, on the gateway's own injected
 * clock with the DEFAULT policy, written as literal numbers (10 failures within 60 s lock the
 * address for 5 min): the window slides, a lockout is not extended by attempts made while
 * locked, and a setup-code success never clears the bootstrap counter (where a shared-token
 * success clears its own). Each test speaks from its own address (each in a /16 of its own, so
 * no coarser bucketing of addresses could join them) through the trusted proxy
 * (X-Forwarded-For), so no test touches another's counter.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { type ConnectError, connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { ManualClock } from '../src/core/env.js';
import { asOwner, expectRefused, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

const MAX_FAILURES = 10;
const WINDOW_MS = 60_000;
const LOCKOUT_MS = 5 * 60_000;

describe('failed-authentication limiter (default policy, injected clock)', () => {
  const clock = new ManualClock(Date.now());
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ store: 'memory', clock, config: { trustedProxies: ['127.0.0.1'] } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  const from = (address: string) => ({ 'x-forwarded-for': address });
  const withToken = (token: string, address: string): Promise<GatewayConnection> =>
    connectGateway({ url: tg.url, auth: { token }, client: { id: 'cli', mode: 'cli' }, headers: from(address) });
  const wrong = (address: string) => expectRefused(withToken('cgs_wrong-guess', address), 'AUTH_TOKEN_MISMATCH');
  const limited = async (p: Promise<unknown>): Promise<number> => {
    const err: ConnectError = await expectRefused(p, 'AUTH_RATE_LIMITED');
    return err.error?.retryAfterMs ?? -1;
  };
  const admitted = async (address: string) => (await withToken(TEST_TOKEN, address)).close();

  test('the window slides: 9 failures, 60 s later 9 more do not lock; the 10th within 60 s locks for exactly 5 min', async () => {
    const here = '198.51.100.10';
    for (let i = 0; i < MAX_FAILURES - 1; i++) await wrong(here);
    // Just past the window the first nine no longer count.
    clock.advance(WINDOW_MS + 1);
    for (let i = 0; i < MAX_FAILURES - 1; i++) await wrong(here);
    // Ten within one window: the tenth is still answered as a mismatch, and it locks.
    await wrong(here);
    assert.equal(await limited(withToken(TEST_TOKEN, here)), LOCKOUT_MS, 'even the right token is refused; retry after exactly 5 min');
    // Another address is not affected.
    await admitted('203.0.113.11');
  });

  test('attempts while locked do not extend the lockout', async () => {
    const here = '192.0.2.20';
    for (let i = 0; i < MAX_FAILURES; i++) await wrong(here);
    assert.equal(await limited(withToken('cgs_wrong-guess', here)), LOCKOUT_MS);
    clock.advance(4 * 60_000);
    for (let i = 0; i < MAX_FAILURES; i++) {
      assert.equal(await limited(withToken('cgs_wrong-guess', here)), 60_000, 'a locked attempt changes nothing');
    }
    clock.advance(60_000 - 1);
    assert.equal(await limited(withToken(TEST_TOKEN, here)), 1);
    clock.advance(1);
    await admitted(here);
  });

  test('a shared-token success clears the counter; a setup-code success never does', async () => {
    // Shared token: 9 failures, a success, 9 more: never locked (the success reset the count).
    const shared = '198.18.30.1';
    for (let i = 0; i < MAX_FAILURES - 1; i++) await wrong(shared);
    await admitted(shared);
    for (let i = 0; i < MAX_FAILURES - 1; i++) await wrong(shared);
    await admitted(shared);

    // Setup codes: 9 wrong guesses, then a real code redeemed from the same address, then one
    // more guess: the tenth failure locks, because a valid code must not buy more guesses.
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const minted = await owner.request<{ setupCode: string }>('device.pair.setupCode', {});
    await owner.close();
    const decoded = decodeSetupCode(minted.setupCode);
    assert.ok(decoded.ok);
    const guesser = '198.19.31.1';
    const redeem = (bootstrapToken: string) =>
      connectGateway({
        url: tg.url,
        identity: generateIdentity(),
        auth: { bootstrapToken },
        scopes: ['operator.read'],
        client: { id: 'test', mode: 'test' },
        headers: from(guesser),
      });
    const guess = (i: number) => expectRefused(redeem(`cgb1_${String(i).padStart(16, '0')}_${'g'.repeat(43)}`), 'AUTH_BOOTSTRAP_TOKEN_INVALID');
    for (let i = 0; i < MAX_FAILURES - 1; i++) await guess(i);
    await (await redeem(decoded.payload.bootstrapToken)).close();
    await guess(MAX_FAILURES);
    assert.equal(await limited(redeem(`cgb1_${'9'.repeat(16)}_${'g'.repeat(43)}`)), LOCKOUT_MS);
  });
});
