/**
 * Time-bound grants with two gateway processes on one PostgreSQL database: approved with a ttl
 * on A, the device lives on B; at the expiry the withdrawal reaches B's socket (narrowed by the
 * cluster bus topic, or closed when nothing is left), and an extension made on A is announced
 * on B.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connectGateway, type DeviceIdentity, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { asClusterOwner, CLUSTER_TOKEN, type Instance, removeStateDir, startInstancesAB } from './helpers/instance.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { waitFor } from './helpers/wait.js';

let cluster: PgCluster;
let a: Instance;
let b: Instance;
const dirs: string[] = [];

before(async () => {
  cluster = await startPgCluster();
  [a, b] = await startInstancesAB(await cluster.createDatabase(), dirs);
});

after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await cluster?.stop();
  for (const d of dirs) removeStateDir(d);
});

type Ev = { event: string; payload: Record<string, unknown> };

function ownerOn(inst: Instance): Promise<GatewayConnection> {
  return connectGateway({ url: inst.url, ...asClusterOwner, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] });
}

function deviceOn(inst: Instance, identity: DeviceIdentity, scopes: string[], events: Ev[], auth: { token?: string; deviceToken?: string }) {
  return connectGateway({
    url: inst.url,
    identity,
    auth,
    scopes,
    caps: ['device-pairing-wait'],
    client: { id: 'test', mode: 'test' },
    timeoutMs: 30_000,
    onEvent: (event, payload) => events.push({ event, payload: payload as Record<string, unknown> }),
  });
}

async function pendingFor(owner: GatewayConnection, deviceId: string): Promise<string> {
  return waitFor(async () => {
    const list = await owner.request<{ pending: Array<{ requestId: string; deviceId: string }> }>('device.pair.list', {});
    return list.pending.find((p) => p.deviceId === deviceId)?.requestId;
  }, 'the request');
}

describe('time-bound grants across two instances', () => {
  test('approved with a ttl on A, the device on B is closed GRANT_EXPIRED when it ends', async () => {
    const owner = await ownerOn(a);
    try {
      const identity = generateIdentity();
      const device = deviceOn(b, identity, ['operator.read'], [], { token: CLUSTER_TOKEN });
      await owner.request('device.pair.approve', { requestId: await pendingFor(owner, identity.deviceId), ttl: '3s' });
      const c = await device;
      assert.equal(typeof (c.hello.auth as { expiresAtMs?: number }).expiresAtMs, 'number');
      const closed = await c.closed;
      assert.equal(closed.code, 4001);
      assert.match(closed.reason, /time-bound grant expired/);
      // Exactly one instance ended it.
      const audit = await owner.request<{ entries: Array<{ action: string; subject?: string }> }>('audit.list', { limit: 10_000 });
      assert.equal(audit.entries.filter((e) => e.action === 'grant.expired' && e.subject === identity.deviceId).length, 1);
    } finally {
      await owner.close();
    }
  });

  test('a time-bound upgrade approved on A: B hears the extension and, at the end, narrows its live session', async () => {
    const owner = await ownerOn(a);
    const events: Ev[] = [];
    try {
      const identity = generateIdentity();
      const first = deviceOn(b, identity, ['operator.read'], [], { token: CLUSTER_TOKEN });
      await owner.request('device.pair.approve', { requestId: await pendingFor(owner, identity.deviceId) });
      const token = (await first).hello.auth.deviceToken as string;
      await (await first).close();
      const c = await connectGateway({
        url: b.url,
        identity,
        auth: { deviceToken: token },
        scopes: ['operator.read', 'operator.write'],
        client: { id: 'test', mode: 'test' },
        onEvent: (event, payload) => events.push({ event, payload: payload as Record<string, unknown> }),
      });
      try {
        await owner.request('device.pair.approve', { requestId: await pendingFor(owner, identity.deviceId), ttl: '1h' });
        await waitFor(() => events.find((e) => e.event === 'auth.updated' && e.payload.reason === 'scope-upgrade-approved'), 'the widening on B');
        // Shorten it from A: B's session is told the new end.
        const ext = await owner.request<{ expiresAtMs: number }>('device.grant.extend', { deviceId: identity.deviceId, role: 'operator', ttl: '3s' });
        const told = await waitFor(() => events.find((e) => e.event === 'auth.updated' && e.payload.reason === 'grant-extended'), 'the extension on B');
        assert.equal(told.payload.expiresAtMs, ext.expiresAtMs);
        const narrowed = await waitFor(() => events.find((e) => e.event === 'auth.updated' && e.payload.reason === 'grant-expired'), 'the withdrawal on B', {
          timeoutMs: 90_000,
        });
        assert.deepEqual(narrowed.payload.scopes, ['operator.read']);
        await assert.rejects(c.request('sessions.create', { key: 'after-expiry' }), /missing scope: operator\.write/);
      } finally {
        await c.close();
      }
    } finally {
      await owner.close();
    }
  });
});
