/**
 * `importDevicesBulk` (a store of a million devices is seeded and imported in batches): on SQLite
 * and PostgreSQL it writes the devices, their grants and token hashes in one transaction with
 * one audit entry for the batch (the chain stays valid), and refuses a batch naming a device the
 * store already holds, or naming one twice, writing nothing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BulkDevicesInput } from '../src/store/bulk-devices.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { verifyAuditChain } from '../src/store/shared.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import type { ImportedDevice, Store } from '../src/store/types.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';

const AT = 1_700_000_000_000;

function device(i: number): ImportedDevice {
  return {
    deviceId: `bulk-${i}`,
    publicKey: `pk-${i}`,
    meta: { displayName: `device ${i}`, platform: 'linux' },
    createdAtMs: AT,
    grants: [{ role: 'operator', scopes: ['operator.read'], approvedAtMs: AT, approvedVia: 'manual' }],
    tokens: [{ role: 'operator', tokenId: `tok-${i}`, secretHash: Buffer.alloc(32, i), createdAtMs: AT }],
  };
}

const batch = (devices: ImportedDevice[]): BulkDevicesInput => ({ source: 'test', devices, atMs: AT, actor: 'owner' });

function contract(name: string, open: () => Promise<Store>): void {
  describe(`importDevicesBulk on ${name}`, () => {
    test('writes devices, grants and token hashes with one audit entry per batch', async () => {
      const store = await open();
      try {
        assert.deepEqual(await store.importDevicesBulk?.(batch([device(1), device(2), device(3)])), { ok: true, inserted: 3 });
        assert.deepEqual(await store.importDevicesBulk?.(batch([device(4)])), { ok: true, inserted: 1 });
        const d2 = await store.getDevice('bulk-2');
        assert.equal(d2?.publicKey, 'pk-2');
        assert.equal(d2?.displayName, 'device 2');
        assert.deepEqual(
          (await store.listGrants('bulk-3')).map((g) => [g.role, g.scopes, g.epoch, g.approvedVia]),
          [['operator', ['operator.read'], 1, 'manual']],
        );
        const tok = await store.getToken('tok-4');
        assert.equal(tok?.deviceId, 'bulk-4');
        assert.deepEqual(tok?.secretHash, Buffer.alloc(32, 4));
        assert.equal((await store.listDevices()).length, 4);
        const entries = await store.listAudit();
        assert.deepEqual(
          entries.map((e) => [e.action, e.data?.count]),
          [
            ['devices.imported-bulk', 3],
            ['devices.imported-bulk', 1],
          ],
        );
        assert.equal(verifyAuditChain(entries), null);
      } finally {
        await store.close();
      }
    });

    test('a batch naming a device already held, or one device twice, is refused whole', async () => {
      const store = await open();
      try {
        await store.importDevicesBulk?.(batch([device(1)]));
        assert.deepEqual(await store.importDevicesBulk?.(batch([device(7), device(1)])), { ok: false, reason: 'exists', deviceIds: ['bulk-1'] });
        assert.deepEqual(await store.importDevicesBulk?.(batch([device(8), device(8)])), { ok: false, reason: 'exists', deviceIds: ['bulk-8'] });
        assert.deepEqual(
          (await store.listDevices()).map((d) => d.deviceId),
          ['bulk-1'],
        );
        assert.equal(await store.getToken('tok-7'), null);
        assert.equal((await store.listAudit()).length, 1);
      } finally {
        await store.close();
      }
    });
  });
}

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

contract('SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-bulk-'));
  dirs.push(dir);
  return new SqliteStore(join(dir, 'clawgate.sqlite'));
});

let cluster: PgCluster;
before(async () => {
  cluster = await startPgCluster();
});
after(async () => {
  await cluster?.stop();
});
contract('PostgreSQL', async () => PostgresStore.open(await cluster.createDatabase()));
