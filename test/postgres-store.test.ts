/**
 * The Store contract against PostgreSQL (a throwaway cluster started by the test), then the
 * PostgreSQL-only guarantees: migrations run once when several instances start at once, a newer
 * schema is refused, and two stores (two instances) on one database serialize their writers.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { POSTGRES_MIGRATIONS, PostgresStore } from '../src/store/postgres.js';
import { verifyAuditChain } from '../src/store/shared.js';
import type { ApproveInput, AuditInput, UpsertRequestInput } from '../src/store/types.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { runStoreContract } from './store-contract.js';

let cluster: PgCluster;
before(async () => {
  cluster = await startPgCluster();
});
after(async () => {
  await cluster?.stop();
});

runStoreContract('postgres', async () => {
  const store = await PostgresStore.open(await cluster.createDatabase());
  return { store, cleanup: () => store.close() };
});

const T0 = 1_700_000_000_000;
const audit = (action: string, subject?: string): AuditInput => ({ atMs: T0, actor: 'owner', action, subject });
const hash = (s: string) => createHash('sha256').update(s).digest();

function approveInput(deviceId: string, over: Partial<ApproveInput> = {}): ApproveInput {
  return {
    device: { deviceId, publicKey: `pk-${deviceId}`, meta: { displayName: deviceId }, address: '192.0.2.1' },
    role: 'operator',
    scopes: ['operator.read'],
    via: 'manual',
    token: { tokenId: `tok-${deviceId}`, secretHash: hash(deviceId) },
    atMs: T0,
    audit: audit('pairing.approved', deviceId),
    ...over,
  };
}
function requestInput(deviceId: string, requestId: string, scopes: string[] = ['operator.read']): UpsertRequestInput {
  return {
    requestId,
    deviceId,
    publicKey: `pk-${deviceId}`,
    role: 'operator',
    scopes,
    kind: 'new-device',
    meta: {},
    address: '192.0.2.1',
    isRepair: false,
    atMs: T0,
    audit: audit('pairing.requested', deviceId),
  };
}

describe('PostgresStore specifics', () => {
  test('eight instances starting at once on an empty database migrate exactly once', async () => {
    const url = await cluster.createDatabase();
    const stores = await Promise.all(Array.from({ length: 8 }, () => PostgresStore.open(url, { maxConnections: 2 })));
    try {
      for (const s of stores) assert.equal(await s.schemaVersion(), POSTGRES_MIGRATIONS.length);
      const raw = new pg.Client({ connectionString: url });
      await raw.connect();
      try {
        const r = await raw.query('SELECT version FROM schema_migrations ORDER BY version');
        assert.deepEqual(
          r.rows.map((x) => x.version),
          POSTGRES_MIGRATIONS.map((_, i) => i + 1),
        );
      } finally {
        await raw.end();
      }
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('a database from a newer clawgate is refused with a clear message', async () => {
    const url = await cluster.createDatabase();
    await (await PostgresStore.open(url)).close();
    const raw = new pg.Client({ connectionString: url });
    await raw.connect();
    await raw.query('INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, 0)', [POSTGRES_MIGRATIONS.length + 1]);
    await raw.end();
    await assert.rejects(PostgresStore.open(url), (err: Error) => {
      assert.match(err.message, new RegExp(`schema ${POSTGRES_MIGRATIONS.length + 1}`));
      assert.match(err.message, /newer than this clawgate/);
      return true;
    });
  });

  test('two instances on one database serialize: one request per (device, role), no lost epochs, one audit chain', async () => {
    const url = await cluster.createDatabase();
    const a = await PostgresStore.open(url);
    const b = await PostgresStore.open(url);
    try {
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? a : b).upsertPairingRequest(requestInput('d1', `r${i}`, i % 4 === 0 ? ['operator.write'] : ['operator.read'])),
        ),
      );
      assert.equal((await a.listPairingRequests('d1')).length, 1);
      assert.equal(new Set(results.map((r) => r.request.requestId)).size, 1);
      assert.equal(results.filter((r) => r.created).length, 1);

      const grants = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).approve(approveInput('d2', { token: null, atMs: T0 + i }))));
      assert.deepEqual(
        grants.map((g) => g.epoch).sort((x, y) => x - y),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      const log = await b.listAudit();
      assert.deepEqual(
        log.map((e) => e.seq),
        log.map((_, i) => i + 1),
      );
      assert.equal(verifyAuditChain(log), null);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('only the secret hash is at rest, and tampering with the audit table is detected', async () => {
    const url = await cluster.createDatabase();
    const s = await PostgresStore.open(url);
    try {
      await s.approve(approveInput('d1', { token: { tokenId: 'tok-1', secretHash: hash('the-secret') } }));
      await s.renameDevice('d1', 'desk', audit('device.renamed', 'd1'));
      const cols = await s.pool.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'tokens' AND column_name LIKE '%secret%'");
      assert.deepEqual(
        cols.rows.map((r) => r.column_name),
        ['secret_hash'],
      );
      await s.pool.query("UPDATE audit SET subject = 'someone-else' WHERE seq = 2");
      assert.equal(verifyAuditChain(await s.listAudit()), 2);
    } finally {
      await s.close();
    }
  });
});
