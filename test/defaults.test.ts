/**
 * The documented defaults, as the literal numbers the docs print (docs/configuration.md,
 * PROTOCOL.md, docs/errors.md): a change to a default has to change this file and the docs on
 * purpose. Where a default can be observed on a real gateway without waiting in real time (the
 * pending-request TTL, on the injected clock; the truncated presence event), it is.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { DEFAULTS } from '../src/core/config.js';
import { ManualClock } from '../src/core/env.js';
import { DEFAULT_PRESENCE_WINDOW_MS, PRESENCE_MAX_CHANGES, type PresenceEvent } from '../src/core/presence.js';
import { DEFAULT_RATE_LIMIT } from '../src/core/ratelimit.js';
import { PING_INTERVAL_MS } from '../src/server/server.js';
import { asOwner, expectRefused, removeDir, startTestGateway, TEST_TOKEN } from './helpers/gateway.js';

describe('documented defaults', () => {
  test('pending TTL 7 days, handshake 15 s, presence window 1 s, keep-alive ping 25 s', () => {
    assert.equal(DEFAULTS.pendingTtlMs, 604_800_000);
    assert.equal(DEFAULTS.handshakeTimeoutMs, 15_000);
    assert.equal(DEFAULT_PRESENCE_WINDOW_MS, 1_000);
    assert.equal(DEFAULTS.presenceWindowMs ?? DEFAULT_PRESENCE_WINDOW_MS, 1_000);
    assert.equal(PING_INTERVAL_MS, 25_000);
  });

  test('rate limit: 10 failures within 60 s lock for 5 min', () => {
    assert.equal(DEFAULT_RATE_LIMIT.maxFailures, 10);
    assert.equal(DEFAULT_RATE_LIMIT.windowMs, 60_000);
    assert.equal(DEFAULT_RATE_LIMIT.lockoutMs, 300_000);
    // The gateway's default config uses that policy.
    assert.equal(DEFAULTS.rateLimit.maxFailures, 10);
    assert.equal(DEFAULTS.rateLimit.windowMs, 60_000);
    assert.equal(DEFAULTS.rateLimit.lockoutMs, 300_000);
  });

  test('a default gateway keeps a pending request for exactly 7 days after its last retry', async () => {
    const clock = new ManualClock(Date.now());
    const tg = await startTestGateway({ store: 'memory', clock, config: { trustedProxies: ['127.0.0.1'] } });
    try {
      const identity = generateIdentity();
      const ask = () =>
        expectRefused(
          connectGateway({
            url: tg.url,
            identity,
            auth: { token: TEST_TOKEN },
            client: { id: 'test', mode: 'test' },
            headers: { 'x-forwarded-for': '198.51.100.70' },
          }),
          'PAIRING_REQUIRED',
        );
      await ask();
      clock.advance(604_800_000);
      assert.equal(await tg.gateway.expirePending(), 0, 'still pending at exactly 7 days');
      clock.advance(1);
      assert.equal(await tg.gateway.expirePending(), 1, 'expired one millisecond later');
      assert.deepEqual(await tg.store.listPairingRequests(identity.deviceId), []);
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });

  test('more than 32 presence changes in one window: `truncated: true`, no entries, the count', async () => {
    assert.equal(PRESENCE_MAX_CHANGES, 32);
    // A window long enough that 33 loopback connects surely fall into it.
    const tg = await startTestGateway({ store: 'memory', config: { presenceWindowMs: 5_000 } });
    try {
      const watcher = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
      const storm = watcher.waitForEvent<PresenceEvent>('device.presence', 20_000);
      const devices = await Promise.all(
        Array.from({ length: 33 }, () =>
          connectGateway({
            url: tg.url,
            identity: generateIdentity(),
            auth: { token: TEST_TOKEN },
            client: { id: 'cli', mode: 'cli' },
            scopes: ['operator.read'],
          }),
        ),
      );
      const event = await storm;
      assert.equal(event.truncated, true);
      assert.deepEqual(event.changes, []);
      assert.equal(event.count, 33);
      await Promise.all(devices.map((d) => d.close()));
      await watcher.close();
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});
