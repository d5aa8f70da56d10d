/**
 * Quorum across instances: two clawgate processes (A and B) on one throwaway PostgreSQL
 * database. Votes live in the store, so an approval on A and one on B add up, and two approvers
 * racing on both instances approve the request exactly once.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConnectError, connectGateway, type DeviceIdentity, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { asClusterOwner, CLUSTER_TOKEN, type Instance, removeStateDir, startInstance, startInstancesAB } from './helpers/instance.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { waitFor } from './helpers/wait.js';

const ADMIN_ASK = ['operator.admin', 'operator.pairing'];

let cluster: PgCluster;
let url: string;
let a: Instance;
let b: Instance;
const dirs: string[] = [];
const admin = generateIdentity();

function owner(inst: Instance): Promise<GatewayConnection> {
  return connectGateway({ url: inst.url, ...asClusterOwner, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] });
}

function device(inst: Instance, identity: DeviceIdentity, scopes: string[]): Promise<GatewayConnection> {
  return connectGateway({
    url: inst.url,
    identity,
    auth: { token: CLUSTER_TOKEN },
    scopes,
    client: { id: 'test', mode: 'test', displayName: 'cluster device' },
  });
}

async function asks(inst: Instance, identity: DeviceIdentity): Promise<string> {
  try {
    await device(inst, identity, ADMIN_ASK);
  } catch (err) {
    assert.ok(err instanceof ConnectError && err.detailCode === 'PAIRING_REQUIRED', String(err));
    return (err.error?.details as { requestId: string } | undefined)?.requestId as string;
  }
  assert.fail('expected PAIRING_REQUIRED');
}

before(async () => {
  cluster = await startPgCluster();
  url = await cluster.createDatabase();
  [a, b] = await startInstancesAB(url, dirs);
  // The administrator device is paired by the owner before any quorum is configured.
  const paired = await connectGateway({ url: a.url, ...asClusterOwner, identity: admin, scopes: ADMIN_ASK, client: { id: 'test', mode: 'test' } });
  assert.ok(paired.hello.auth.scopes.includes('operator.admin'));
  await paired.close();
  await Promise.all([a.stop(), b.stop()]);
  for (const dir of [a.stateDir, b.stateDir]) {
    const path = join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(path, 'utf8')) as { gateway: Record<string, unknown> };
    cfg.gateway.approvals = { quorum: { 'operator.admin': 2 } };
    writeFileSync(path, JSON.stringify(cfg));
  }
  [a, b] = await Promise.all([startInstance('A', url, a.stateDir), startInstance('B', url, b.stateDir)]);
});

after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await cluster?.stop();
  for (const d of dirs) removeStateDir(d);
});

describe('quorum on a PostgreSQL cluster', () => {
  test('an approval on instance A and one on instance B add up; progress is the same on both', async () => {
    const x = generateIdentity();
    const requestId = await asks(a, x);
    const o = await owner(a);
    const first = await o.request<{ awaiting: Array<{ approvals: unknown }> }>('device.pair.approve', { requestId });
    assert.deepEqual(first.awaiting[0]?.approvals, { received: 1, required: 2, approvers: ['owner'] });
    await o.close();

    const d = await device(b, admin, ADMIN_ASK);
    try {
      const listed = await d.request<{ pending: Array<{ requestId: string; approvals: unknown }> }>('device.pair.list', {});
      assert.deepEqual(listed.pending.find((p) => p.requestId === requestId)?.approvals, { received: 1, required: 2, approvers: ['owner'] });
      const done = await d.request<{ approved: unknown[] }>('device.pair.approve', { requestId });
      assert.equal(done.approved.length, 1);
    } finally {
      await d.close();
    }
    const conn = await device(a, x, ADMIN_ASK);
    assert.ok(conn.hello.auth.scopes.includes('operator.admin'));
    await conn.close();
  });

  test('two approvers racing on both instances approve the request exactly once', async () => {
    const y = generateIdentity();
    const requestId = await asks(b, y);
    const o = await owner(a);
    const d = await device(b, admin, ADMIN_ASK);
    try {
      const [viaA, viaB] = await Promise.all([
        o.request<{ approved: unknown[]; awaiting?: unknown[] }>('device.pair.approve', { requestId }),
        d.request<{ approved: unknown[]; awaiting?: unknown[] }>('device.pair.approve', { requestId }),
      ]);
      assert.equal(viaA.approved.length + viaB.approved.length, 1, `A ${JSON.stringify(viaA)} B ${JSON.stringify(viaB)}`);
      assert.equal((viaA.awaiting ?? []).length + (viaB.awaiting ?? []).length, 1);
    } finally {
      await o.close();
      await d.close();
    }
    const store = await PostgresStore.open(url);
    try {
      const audit = await store.listAudit({ limit: 100_000 });
      const approvals = audit.filter((e) => e.action === 'pairing.approved' && e.data?.requestId === requestId);
      assert.equal(approvals.length, 1);
      const votes = audit.filter((e) => e.action === 'pairing.approval.recorded' && e.data?.requestId === requestId);
      assert.deepEqual(votes.map((v) => v.actor).sort(), [`device:${admin.deviceId}`, 'owner']);
    } finally {
      await store.close();
    }
    await waitFor(async () => {
      const c = await device(a, y, ADMIN_ASK).catch(() => null);
      if (!c) return false;
      await c.close();
      return c.hello.auth.scopes.includes('operator.admin');
    }, 'the approved device admitted with admin');
  });
  test('a quorum reached on an instance that died before approving is carried out by exactly one instance', async () => {
    const z = generateIdentity();
    const requestId = await asks(a, z);
    const o = await owner(a);
    await o.request('device.pair.approve', { requestId });
    await o.close();
    await Promise.all([a.stop(), b.stop()]);
    // The completing vote as a dying instance leaves it: recorded and claimed, never carried out.
    const store = await PostgresStore.open(url);
    const key = `approval.votes.${requestId}`;
    try {
      const rec = JSON.parse((await store.getMeta(key)) as string) as { subject: string[]; votes: Array<Record<string, unknown>> };
      rec.votes.push({ approver: `device:${admin.deviceId}`, atMs: Date.now() });
      await store.setMeta(key, JSON.stringify({ ...rec, claim: { by: 'instance-that-died', atMs: Date.now() } }));
    } finally {
      await store.close();
    }
    // Both instances start at once and both look.
    [a, b] = await Promise.all([startInstance('A', url, a.stateDir), startInstance('B', url, b.stateDir)]);
    await waitFor(async () => {
      const c = await device(b, z, ADMIN_ASK).catch(() => null);
      if (!c) return false;
      await c.close();
      return c.hello.auth.scopes.includes('operator.admin');
    }, 'the device admitted after both instances restarted');
    const check = await PostgresStore.open(url);
    try {
      const audit = await check.listAudit({ limit: 100_000 });
      assert.equal(audit.filter((e) => e.action === 'pairing.approved' && e.data?.requestId === requestId).length, 1);
    } finally {
      await check.close();
    }
  });
});
