/**
 * The rotation grace (PROTOCOL.md §11.1) and imported device tokens, over real sockets: a device
 * that proved its key with a token on a live socket, whose token an operator then rotated (pushed
 * live), may come back once within the grace with that old token and gets the successor in
 * hello-ok; nothing else about the old token changes. Tokens imported from OpenClaw are verified
 * by their derived id and hash.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { ConnectError, connectGateway, type DeviceIdentity, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import type { Clock } from '../src/core/env.js';
import { ROTATION_GRACE_MS } from '../src/core/rotation-grace.js';
import { hashImportedToken, importedTokenId } from '../src/core/secrets.js';
import { asOwner, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

class ManualClock implements Clock {
  ms = Date.now();
  now(): number {
    return this.ms;
  }
}

const clock = new ManualClock();
let tg: TestGateway;
before(async () => {
  tg = await startTestGateway({ clock });
});
after(async () => {
  await tg.stop();
  removeDir(tg.stateDir);
});

const nodeOpts = (identity: DeviceIdentity) => ({ url: tg.url, identity, role: 'node' as const, client: { id: 'node-host', mode: 'node' } });

async function refused(p: Promise<GatewayConnection>): Promise<string | undefined> {
  try {
    const c = await p;
    await c.close();
    return 'admitted';
  } catch (err) {
    assert.ok(err instanceof ConnectError, String(err));
    return err.detailCode;
  }
}

/** Pair a node, reconnect it with its device token, rotate that token by the owner while it is connected. */
async function rotatedWhileConnected(identity: DeviceIdentity): Promise<{ old: string; pushed: string }> {
  const first = await connectGateway({ ...nodeOpts(identity), auth: { token: TEST_TOKEN } });
  const old = first.hello.auth.deviceToken as string;
  await first.close();
  const live = await connectGateway({ ...nodeOpts(identity), auth: { deviceToken: old } });
  const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
  const res = await owner.request<{ tokenDelivery: string }>('device.token.rotate', { deviceId: identity.deviceId, role: 'node' });
  await owner.close();
  assert.equal(res.tokenDelivery, 'pushed-live');
  assert.equal((await live.closed).code, 4001);
  const ev = live.events.find((e) => e.event === 'device.token.rotated')?.payload as { deviceToken: string };
  return { old, pushed: ev.deviceToken };
}

test('a node that ignores the pushed token comes back once with the old one and gets the successor in hello-ok; the old token is dead afterwards', async () => {
  const id = generateIdentity();
  const { old, pushed } = await rotatedWhileConnected(id);
  const back = await connectGateway({ ...nodeOpts(id), auth: { deviceToken: old } });
  const successor = back.hello.auth.deviceToken as string;
  assert.match(successor, /^cgd1_/);
  assert.notEqual(successor, old);
  assert.notEqual(successor, pushed);
  assert.equal(back.hello.auth.role, 'node');
  await back.close();
  // Once: the old token and the pushed one it never stored are dead; the successor works.
  assert.equal(await refused(connectGateway({ ...nodeOpts(id), auth: { deviceToken: old } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
  assert.equal(await refused(connectGateway({ ...nodeOpts(id), auth: { deviceToken: pushed } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
  const byNew = await connectGateway({ ...nodeOpts(id), auth: { deviceToken: successor } });
  assert.equal(byNew.hello.auth.method, 'device-token');
  await byNew.close();
  const audit = await tg.store.listAudit();
  assert.equal(audit.filter((e) => e.subject === id.deviceId && (e.data as { via?: string } | undefined)?.via === 'rotation-grace').length, 1);
});

test('the grace needs the same key, ends after ROTATION_GRACE_MS, and is void once the pushed token was used or rotated again', async () => {
  // Another key with the old token: refused (and the real device keeps its grace).
  const id = generateIdentity();
  const { old } = await rotatedWhileConnected(id);
  const thief = generateIdentity();
  assert.equal(await refused(connectGateway({ ...nodeOpts(thief), auth: { deviceToken: old } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
  // After the grace: refused.
  clock.ms += ROTATION_GRACE_MS;
  assert.equal(await refused(connectGateway({ ...nodeOpts(id), auth: { deviceToken: old } })), 'AUTH_DEVICE_TOKEN_MISMATCH');

  // A device that picked up the pushed token leaves no way back for the old one.
  const id2 = generateIdentity();
  const r2 = await rotatedWhileConnected(id2);
  const withPushed = await connectGateway({ ...nodeOpts(id2), auth: { deviceToken: r2.pushed } });
  assert.equal(withPushed.hello.auth.deviceToken, r2.pushed);
  await withPushed.close();
  assert.equal(await refused(connectGateway({ ...nodeOpts(id2), auth: { deviceToken: r2.old } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
  // So does a second rotation (offline now), within the first one's window.
  const id3 = generateIdentity();
  const r3 = await rotatedWhileConnected(id3);
  const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
  await owner.request('device.token.rotate', { deviceId: id3.deviceId, role: 'node' });
  await owner.close();
  assert.equal(await refused(connectGateway({ ...nodeOpts(id3), auth: { deviceToken: r3.old } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
});

test('a node paired by a setup code and rotated on that very connection comes back with the token the code gave it and gets the successor', async () => {
  const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
  const minted = await owner.request<{ setupCode: string }>('device.pair.setupCode', { profile: 'node' });
  const decoded = decodeSetupCode(minted.setupCode);
  assert.ok(decoded.ok);
  const id = generateIdentity();
  const paired = await connectGateway({ ...nodeOpts(id), auth: { bootstrapToken: decoded.payload.bootstrapToken } });
  assert.equal(paired.hello.auth.method, 'bootstrap-token');
  const given = paired.hello.auth.deviceToken as string;
  const res = await owner.request<{ tokenDelivery: string }>('device.token.rotate', { deviceId: id.deviceId, role: 'node' });
  await owner.close();
  assert.equal(res.tokenDelivery, 'pushed-live');
  await paired.closed;
  const back = await connectGateway({ ...nodeOpts(id), auth: { deviceToken: given } });
  assert.match(back.hello.auth.deviceToken ?? '', /^cgd1_/);
  assert.notEqual(back.hello.auth.deviceToken, given);
  await back.close();
  assert.equal(await refused(connectGateway({ ...nodeOpts(id), auth: { deviceToken: given } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
});

test('a rotation of an offline device leaves no grace (a copied token dies with it); a token never presented on a live socket has none', async () => {
  const id = generateIdentity();
  const first = await connectGateway({ ...nodeOpts(id), auth: { token: TEST_TOKEN } });
  const old = first.hello.auth.deviceToken as string;
  await first.close();
  await first.closed;
  const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
  const res = await owner.request<{ tokenDelivery: string }>('device.token.rotate', { deviceId: id.deviceId, role: 'node' });
  assert.equal(res.tokenDelivery, 'withheld-cross-device');
  assert.equal(await refused(connectGateway({ ...nodeOpts(id), auth: { deviceToken: old } })), 'AUTH_DEVICE_TOKEN_MISMATCH');

  // Connected with the gateway token (its device token only handed out, never presented): rotated live, no grace.
  const id2 = generateIdentity();
  const live = await connectGateway({ ...nodeOpts(id2), auth: { token: TEST_TOKEN } });
  const handed = live.hello.auth.deviceToken as string;
  const r = await owner.request<{ tokenDelivery: string }>('device.token.rotate', { deviceId: id2.deviceId, role: 'node' });
  assert.equal(r.tokenDelivery, 'pushed-live');
  await live.closed;
  await owner.close();
  assert.equal(await refused(connectGateway({ ...nodeOpts(id2), auth: { deviceToken: handed } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
  // …but a gateway-token reconnect gets a device token again (the pushed one was never picked up), once.
  const shared = await connectGateway({ ...nodeOpts(id2), auth: { token: TEST_TOKEN } });
  const reissued = shared.hello.auth.deviceToken as string;
  assert.match(reissued, /^cgd1_/);
  await shared.close();
  const sharedAgain = await connectGateway({ ...nodeOpts(id2), auth: { token: TEST_TOKEN } });
  assert.equal(sharedAgain.hello.auth.deviceToken, undefined, 'the device holds a live token now: none is minted again');
  await sharedAgain.close();
  const byReissued = await connectGateway({ ...nodeOpts(id2), auth: { deviceToken: reissued } });
  assert.equal(byReissued.hello.auth.method, 'device-token');
  await byReissued.close();
});

test('an imported OpenClaw token opens its device and role by its derived id and hash; a wrong one or another key is refused', async () => {
  const id = generateIdentity();
  const token = randomBytes(32).toString('base64url');
  const { tokenId, secretHash } = hashImportedToken(token);
  assert.equal(tokenId, importedTokenId(token));
  assert.match(tokenId, /^[0-9a-f]{16}$/);
  const res = await tg.store.importDevices({
    source: 'openclaw:test',
    devices: [
      {
        deviceId: id.deviceId,
        publicKey: id.publicKey,
        meta: { clientId: 'node-host', clientMode: 'node' },
        createdAtMs: 1,
        grants: [{ role: 'node', scopes: [], approvedAtMs: 1, approvedVia: 'bootstrap' }],
        tokens: [{ role: 'node', tokenId, secretHash, createdAtMs: 1 }],
      },
    ],
    merge: true,
    dryRun: false,
    atMs: 2,
    actor: 'owner',
  });
  assert.ok(res.ok);
  const conn = await connectGateway({ ...nodeOpts(id), auth: { deviceToken: token } });
  assert.equal(conn.hello.auth.method, 'device-token');
  assert.equal(conn.hello.auth.role, 'node');
  await conn.close();
  // One character off: same shape, no match.
  const wrong = `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`;
  assert.equal(await refused(connectGateway({ ...nodeOpts(id), auth: { deviceToken: wrong } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
  assert.equal(await refused(connectGateway({ ...nodeOpts(generateIdentity()), auth: { deviceToken: token } })), 'AUTH_DEVICE_TOKEN_MISMATCH');
  // Not as an operator: the token is the node role's.
  assert.equal(
    await refused(connectGateway({ url: tg.url, identity: id, role: 'operator', client: { id: 'cli', mode: 'cli' }, auth: { deviceToken: token } })),
    'PAIRING_REQUIRED',
  );
});
