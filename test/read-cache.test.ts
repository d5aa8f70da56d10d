/**
 * The connect path's cached token and grant reads never outlive a change of authority: over real
 * sockets, against a real `clawgate gateway run` (SQLite, where the reads are cached) and a
 * two-instance PostgreSQL cluster, a revoked or rotated device token is refused on the very next
 * connect, including when the revocation is committed by another connection to the same SQLite
 * file (another process on the state dir).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConnectError, connectGateway, type DeviceIdentity, generateIdentity } from '../src/client/connection.js';
import { readGatewayKeyFingerprint } from '../src/server/gateway-key.js';
import { readCacheStats, VERSION_READ_INTERVAL_MS, withReadCache } from '../src/store/read-cache.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { asClusterOwner, CLUSTER_TOKEN, removeStateDir, startInstancesAB } from './helpers/instance.js';
import { startPgCluster } from './helpers/pg-cluster.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';

const dirs: string[] = [];
const procs: Array<Pick<GatewayProcess, 'kill'>> = [];
after(async () => {
  for (const p of procs) await p.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const CLIENT = { id: 'test', mode: 'test' } as const;

/** Pair a device with the shared token (silent on loopback) and return its device token. */
async function pair(url: string, identity: DeviceIdentity, token: string): Promise<string> {
  const c = await connectGateway({ url, identity, auth: { token }, scopes: ['operator.read'], client: CLIENT });
  const deviceToken = c.hello.auth.deviceToken;
  await c.close();
  assert.equal(typeof deviceToken, 'string');
  return deviceToken as string;
}

async function connectWithDeviceToken(url: string, identity: DeviceIdentity, deviceToken: string) {
  return connectGateway({ url, identity, auth: { deviceToken }, scopes: ['operator.read'], client: CLIENT, timeoutMs: 10_000 });
}

/** A device-token connect that must succeed (closed again at once). */
async function admitted(url: string, identity: DeviceIdentity, deviceToken: string): Promise<void> {
  const c = await connectWithDeviceToken(url, identity, deviceToken);
  await c.close();
}

/** A device-token connect that must be refused; resolves with the refusal's detail code. */
async function refused(url: string, identity: DeviceIdentity, deviceToken: string): Promise<string | undefined> {
  try {
    const c = await connectWithDeviceToken(url, identity, deviceToken);
    await c.close();
  } catch (err) {
    assert.ok(err instanceof ConnectError, String(err));
    return err.detailCode;
  }
  assert.fail('the old device token was accepted');
}

describe('clawgate gateway run on SQLite (cached token and grant reads)', () => {
  let gw: GatewayProcess;
  let stateDir: string;
  let token: string;
  let owner: { owner: string; gatewayKey: string };

  test('start', async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'clawgate-cache-'));
    dirs.push(stateDir);
    gw = await spawnGateway(['--state-dir', stateDir], { onSpawn: (p) => procs.push(p) });
    const creds = JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')) as { token: string; owner: string };
    token = creds.token;
    owner = { owner: creds.owner, gatewayKey: readGatewayKeyFingerprint(stateDir) as string };
  });

  test('a revoked device token is refused on the next connect after cached connects', async () => {
    const id = generateIdentity();
    const deviceToken = await pair(gw.url, id, token);
    for (let i = 0; i < 3; i++) await admitted(gw.url, id, deviceToken);
    const op = await connectGateway({ url: gw.url, ...owner, scopes: ['operator.admin'], client: { id: 'cli', mode: 'cli' } });
    await op.request('device.token.revoke', { deviceId: id.deviceId, role: 'operator' });
    await op.close();
    assert.equal(await refused(gw.url, id, deviceToken), 'AUTH_DEVICE_TOKEN_MISMATCH');
  });

  test('a rotated device token is refused on the next connect after cached connects', async () => {
    const id = generateIdentity();
    const deviceToken = await pair(gw.url, id, token);
    for (let i = 0; i < 3; i++) await admitted(gw.url, id, deviceToken);
    const op = await connectGateway({ url: gw.url, ...owner, scopes: ['operator.admin'], client: { id: 'cli', mode: 'cli' } });
    await op.request('device.token.rotate', { deviceId: id.deviceId, role: 'operator' });
    await op.close();
    assert.equal(await refused(gw.url, id, deviceToken), 'AUTH_DEVICE_TOKEN_MISMATCH');
  });

  test('a revocation committed by another connection to the same database is seen at once', async () => {
    const id = generateIdentity();
    const deviceToken = await pair(gw.url, id, token);
    for (let i = 0; i < 3; i++) await admitted(gw.url, id, deviceToken);
    // Another process on the state dir (here: another connection from this one) revokes the token.
    const other = new SqliteStore(join(stateDir, 'clawgate.sqlite'));
    try {
      const now = Date.now();
      const rec = await other.revokeToken(id.deviceId, 'operator', now, { atMs: now, actor: 'owner', action: 'device.token.revoked', subject: id.deviceId });
      assert.ok(rec, 'the token was live');
    } finally {
      await other.close();
    }
    assert.equal(await refused(gw.url, id, deviceToken), 'AUTH_DEVICE_TOKEN_MISMATCH');
  });

  test('stop', async () => {
    assert.equal(await gw.stop(), 0);
  });
});

describe('the read cache over a real SQLite store', () => {
  test('serves repeated token and grant reads from memory, and forgets them on a write through it or another connection', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-cache-unit-'));
    dirs.push(dir);
    const file = join(dir, 'clawgate.sqlite');
    const store = withReadCache(new SqliteStore(file));
    const other = new SqliteStore(file);
    try {
      const atMs = 1_700_000_000_000;
      const audit = { atMs, actor: 'owner', action: 'device.approved' };
      await store.approve({
        device: { deviceId: 'dev-1', publicKey: 'pk-1', meta: {} },
        role: 'operator',
        scopes: ['operator.read'],
        via: 'manual',
        token: { tokenId: 'tok-1', secretHash: Buffer.alloc(32, 1) },
        atMs,
        audit,
      });
      const stats = readCacheStats(store);
      assert.ok(stats);
      assert.equal((await store.getToken('tok-1'))?.deviceId, 'dev-1');
      assert.equal((await store.getToken('tok-1'))?.revokedAtMs, undefined);
      assert.deepEqual(
        (await store.listGrants('dev-1')).map((g) => g.scopes),
        [['operator.read']],
      );
      assert.deepEqual(
        (await store.listGrants('dev-1')).map((g) => g.scopes),
        [['operator.read']],
      );
      assert.equal(stats.hits, 2);
      // A copy: changing what a caller got does not change what the next caller gets.
      (await store.listGrants('dev-1'))[0]?.scopes.push('operator.admin');
      assert.deepEqual((await store.getGrant('dev-1', 'operator'))?.scopes, ['operator.read']);
      // A write through the cached store.
      await store.rotateToken('dev-1', 'operator', null, ['operator.read', 'operator.write'], atMs + 1, { ...audit, action: 'device.token.rotated' });
      assert.deepEqual((await store.getGrant('dev-1', 'operator'))?.scopes, ['operator.read', 'operator.write']);
      const retired = await store.getToken('tok-1');
      assert.ok(retired === null || retired.revokedAtMs !== undefined, 'the retired token is no longer live');
      // A write by another connection.
      await other.removeDevice('dev-1', { ...audit, action: 'device.removed' });
      // Seen once the version is read again (at most VERSION_READ_INTERVAL_MS after the last read).
      const readAt = performance.now();
      while (performance.now() - readAt <= VERSION_READ_INTERVAL_MS) await new Promise((r) => setImmediate(r));
      assert.deepEqual(await store.listGrants('dev-1'), []);
      assert.equal(await store.getToken('tok-1'), null);
    } finally {
      await other.close();
      await store.close();
    }
  });
});

describe('two instances on PostgreSQL', () => {
  test('a device token revoked or rotated on A is refused on B at once', async (t) => {
    const cluster = await startPgCluster();
    const dirsAB: string[] = [];
    t.after(async () => {
      await cluster.stop();
      for (const d of dirsAB) removeStateDir(d);
    });
    const url = await cluster.createDatabase();
    const [a, b] = await startInstancesAB(url, dirsAB);
    t.after(async () => {
      await Promise.all([a.stop(), b.stop()]);
    });
    const opA = await connectGateway({ url: a.url, ...asClusterOwner, scopes: ['operator.admin'], client: { id: 'cli', mode: 'cli' } });
    t.after(() => opA.close());
    for (const method of ['device.token.revoke', 'device.token.rotate']) {
      const id = generateIdentity();
      // The owner credential pairs silently (the cluster's instances pair nothing else silently).
      const first = await connectGateway({ url: b.url, identity: id, ...asClusterOwner, scopes: ['operator.read'], client: CLIENT });
      const deviceToken = first.hello.auth.deviceToken as string;
      await first.close();
      assert.equal(typeof deviceToken, 'string');
      for (let i = 0; i < 3; i++) await admitted(b.url, id, deviceToken);
      await opA.request(method, { deviceId: id.deviceId, role: 'operator' });
      assert.equal(await refused(b.url, id, deviceToken), 'AUTH_DEVICE_TOKEN_MISMATCH', method);
    }
    assert.ok(CLUSTER_TOKEN);
  });
});
