/**
 * The `device.presence` event over real sockets and the real SQLite store: a device connecting and
 * disconnecting is announced to operators holding operator.read (never to others, never with a
 * credential), coalesced into one event per window. The coalescer's bound is checked directly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { PRESENCE_MAX_CHANGES, type PresenceChange, PresenceCoalescer, type PresenceEvent } from '../src/core/presence.js';
import { asOwner, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { waitFor } from './helpers/wait.js';

type Change = PresenceEvent['changes'][number];

/** Every `device.presence` change `conn` receives, in order. */
function collect(conn: GatewayConnection): Change[] {
  const seen: Change[] = [];
  conn.onEvent((event, payload) => {
    if (event === 'device.presence') seen.push(...(payload as PresenceEvent).changes);
  });
  return seen;
}

function presenceOf(conn: GatewayConnection, deviceId: string, state: Change['state']): Promise<PresenceEvent> {
  return conn.waitForEvent<PresenceEvent>('device.presence', 5000, (p) => p.changes.some((c) => c.deviceId === deviceId && c.state === state));
}

describe('presence event', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: { presenceWindowMs: 50 } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('a device connecting and disconnecting reaches operator.read holders only, without secrets', async () => {
    const watcher = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const reader = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.read'] });
    // A device the owner paired with operator.pairing alone (the gateway token cannot grant it).
    const pairingIdentity = generateIdentity();
    const pairingOnly = await connectGateway({
      url: tg.url,
      identity: pairingIdentity,
      ...asOwner(tg),
      client: { id: 'cli', mode: 'cli' },
      scopes: ['operator.pairing'],
    });
    assert.deepEqual(pairingOnly.hello.auth.scopes, ['operator.pairing']);
    const raw: string[] = [];
    watcher.onEvent((event, payload) => {
      if (event === 'device.presence') raw.push(JSON.stringify(payload));
    });
    const readerSeen = collect(reader);
    const pairingSeen = collect(pairingOnly);

    const identity = generateIdentity();
    const joined = presenceOf(watcher, identity.deviceId, 'connected');
    const device = await connectGateway({
      url: tg.url,
      identity,
      auth: { token: TEST_TOKEN },
      client: { id: 'cli', mode: 'cli', displayName: 'presence-device' },
      scopes: ['operator.read'],
    });
    const token = device.hello.auth.deviceToken;
    assert.ok(token, 'the device got a token (which presence must never carry)');
    const up = (await joined).changes.find((c) => c.deviceId === identity.deviceId && c.state === 'connected');
    assert.deepEqual(
      { ...up, connId: '', atMs: 0 },
      { connId: '', deviceId: identity.deviceId, role: 'operator', clientId: 'cli', clientMode: 'cli', state: 'connected', atMs: 0, deviceConnected: true },
    );
    assert.equal(up?.connId, device.hello.server.connId);

    const left = presenceOf(watcher, identity.deviceId, 'disconnected');
    await device.close();
    const down = (await left).changes.find((c) => c.deviceId === identity.deviceId && c.state === 'disconnected');
    assert.equal(down?.deviceConnected, false);
    assert.equal(down?.connId, up?.connId);

    // The reader got the same; the pairing-only session (no operator.read) got nothing.
    const readerStates = () => readerSeen.filter((c) => c.deviceId === identity.deviceId).map((c) => c.state);
    await waitFor(() => readerStates().length >= 2, "the reader's two presence changes", { timeoutMs: 5000 });
    assert.deepEqual(readerStates(), ['connected', 'disconnected']);
    // The broadcast that reached the reader is already written to every socket it was for: a
    // reply on the pairing-only socket comes after any event sent to it before.
    await pairingOnly.request('device.pair.list', {});
    assert.deepEqual(pairingSeen, []);
    for (const text of raw) assert.equal(text.includes(token), false, 'no credential in a presence event');
    // Device-less sessions (the watcher and the reader themselves) are not presence changes.
    assert.equal(
      readerSeen.every((c) => c.deviceId === identity.deviceId || c.deviceId === pairingIdentity.deviceId),
      true,
    );
    await Promise.all([watcher.close(), reader.close(), pairingOnly.close()]);
  });

  test('a device with two sessions stays connected when one of them leaves', async () => {
    const watcher = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const identity = generateIdentity();
    const opts = { url: tg.url, identity, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.read'] };
    const first = await connectGateway(opts);
    const second = await connectGateway({ ...opts, auth: { deviceToken: first.hello.auth.deviceToken as string } });
    const left = presenceOf(watcher, identity.deviceId, 'disconnected');
    await first.close();
    const change = (await left).changes.find((c) => c.state === 'disconnected' && c.deviceId === identity.deviceId);
    assert.equal(change?.connId, first.hello.server.connId);
    assert.equal(change?.deviceConnected, true, 'the second session still holds the device online');
    await second.close();
    await watcher.close();
  });
});

describe('presence coalescing', () => {
  test('changes noted within a window go out as one event; a burst past the bound sends only its count', async () => {
    const sent: Array<{ changes: PresenceChange[]; count: number }> = [];
    const co = new PresenceCoalescer(20, async (changes, count) => {
      sent.push({ changes, count });
    });
    const change = (i: number): PresenceChange => ({
      connId: `c${i}`,
      deviceId: `d${i}`,
      role: 'operator',
      clientId: 'cli',
      clientMode: 'cli',
      state: 'connected',
      atMs: i,
    });
    for (let i = 0; i < PRESENCE_MAX_CHANGES; i++) co.note(change(i));
    await waitFor(() => sent.length >= 1, 'the first window');
    assert.equal(sent.length, 1, 'one event for the whole window');
    assert.equal(sent[0]?.count, PRESENCE_MAX_CHANGES);
    assert.deepEqual(
      sent[0]?.changes.map((c) => c.connId),
      Array.from({ length: PRESENCE_MAX_CHANGES }, (_, i) => `c${i}`),
      'all of them, in order',
    );
    for (let i = 0; i <= PRESENCE_MAX_CHANGES; i++) co.note(change(100 + i));
    await waitFor(() => sent.length >= 2, 'the storm window');
    assert.deepEqual([sent[1]?.changes.length, sent[1]?.count], [0, PRESENCE_MAX_CHANGES + 1], 'a storm: the count only');
    co.note(change(999));
    await waitFor(() => sent.length >= 3, 'the next window');
    assert.deepEqual(
      sent.slice(2).map((s) => [s.changes.map((c) => c.connId), s.count]),
      [[['c999'], 1]],
      'the next window starts afresh',
    );
    co.stop();
    co.note(change(1000));
    // A negative: nothing can be waited for, so give a would-be window four times its length.
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(sent.length, 3, 'nothing after stop');
  });
});
