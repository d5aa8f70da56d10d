/**
 * Runs the Store contract for every adapter, then the SQLite-only guarantees: durability
 * across reopen, numbered migrations, refusing a newer schema, WAL, file mode 0600, and
 * serialization across two connections to the same file.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { verifyAuditChain } from '../src/store/shared.js';
import { SQLITE_MIGRATIONS, SqliteStore } from '../src/store/sqlite/store.js';
import { approveInput, assertWritersSerialize, audit, hash, requestInput, T0 } from './helpers/store-fixtures.js';
import { runStoreContract } from './store-contract.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'clawgate-store-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

runStoreContract('sqlite', async () => {
  const dir = tempDir();
  const store = new SqliteStore(join(dir, 'clawgate.sqlite'));
  return {
    store,
    cleanup: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('SqliteStore specifics', () => {
  test('data survives close and reopen on the same file', async () => {
    const file = join(tempDir(), 'state.sqlite');
    const a = new SqliteStore(file);
    await a.setMeta('instance', 'abc');
    await a.approve(approveInput('d1', { scopes: ['operator.read', 'operator.write'] }));
    await a.approve(approveInput('d1', { role: 'node', scopes: [], token: { tokenId: 'tok-node', secretHash: hash('node') } }));
    await a.renameDevice('d1', 'desk', audit('device.renamed', 'd1'));
    await a.rotateToken('d1', 'operator', { tokenId: 'tok-2', secretHash: hash('two') }, null, T0 + 5, audit('token.rotated', 'd1'));
    await a.revokeToken('d1', 'node', T0 + 6, audit('token.revoked', 'd1'));
    await a.upsertPairingRequest(requestInput('d2', 'req-d2', ['operator.admin']));
    await a.recordSeen([{ deviceId: 'd1', atMs: T0 + 7, address: '198.51.100.1', tokenId: 'tok-2' }]);
    const before = {
      meta: await a.getMeta('instance'),
      devices: await a.listDevices(),
      grants: await a.listGrants(),
      tokens: (await a.listTokens()).sort((x, y) => x.tokenId.localeCompare(y.tokenId)),
      requests: await a.listPairingRequests(),
      audit: await a.listAudit(),
    };
    await a.close();
    assert.ok(!existsSync(`${file}-wal`) || statSync(`${file}-wal`).size === 0, 'the WAL is folded back on close');

    const b = new SqliteStore(file);
    try {
      assert.deepEqual(
        {
          meta: await b.getMeta('instance'),
          devices: await b.listDevices(),
          grants: await b.listGrants(),
          tokens: (await b.listTokens()).sort((x, y) => x.tokenId.localeCompare(y.tokenId)),
          requests: await b.listPairingRequests(),
          audit: await b.listAudit(),
        },
        before,
      );
      assert.equal(before.devices[0]?.label, 'desk');
      assert.equal(before.tokens.find((t) => t.tokenId === 'tok-node')?.revokedAtMs, T0 + 6);
      assert.ok(before.tokens.find((t) => t.tokenId === 'tok-2')?.secretHash.equals(hash('two')));
      // The chain continues across the restart.
      const next = await b.appendAudit(audit('gateway.started'));
      assert.equal(next.seq, before.audit.length + 1);
      assert.equal(next.prevHash, before.audit.at(-1)?.hash);
      assert.equal(verifyAuditChain(await b.listAudit()), null);
      // A retry after the restart still finds the same request id.
      const retry = await b.upsertPairingRequest(requestInput('d2', 'req-other'));
      assert.equal(retry.created, false);
      assert.equal(retry.request.requestId, 'req-d2');
      // And the epoch continues.
      const g = await b.approve(approveInput('d1', { token: null }));
      assert.equal(g.epoch, 3);
    } finally {
      await b.close();
    }
  });

  test('migrations are numbered and user_version equals SQLITE_MIGRATIONS.length', async () => {
    assert.ok(SQLITE_MIGRATIONS.length >= 1);
    const file = join(tempDir(), 'state.sqlite');
    const s = new SqliteStore(file);
    assert.equal(s.schemaVersion, SQLITE_MIGRATIONS.length);
    await s.close();
    const raw = new Database(file);
    try {
      assert.equal(raw.pragma('user_version', { simple: true }), SQLITE_MIGRATIONS.length);
      const tables = (raw.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>).map((r) => r.name).sort();
      for (const t of ['audit', 'devices', 'grants', 'meta', 'pairing_requests', 'tokens']) assert.ok(tables.includes(t), `table ${t}`);
    } finally {
      raw.close();
    }
    // Reopening an up-to-date database runs nothing and keeps the version.
    const again = new SqliteStore(file);
    assert.equal(again.schemaVersion, SQLITE_MIGRATIONS.length);
    await again.close();
  });

  test('pending migrations run in one transaction: one that fails leaves the schema where it was', () => {
    const file = join(tempDir(), 'state.sqlite');
    const pending = 2;
    const from = SQLITE_MIGRATIONS.length - pending;
    const raw = new Database(file);
    try {
      for (const sql of SQLITE_MIGRATIONS.slice(0, from)) raw.exec(sql);
      raw.pragma(`user_version = ${from}`);
      // The last migration creates this index: it fails after the one before it ran.
      raw.exec('CREATE INDEX devices_page ON meta(key)');
    } finally {
      raw.close();
    }
    assert.throws(() => new SqliteStore(file), /devices_page already exists/);
    const check = new Database(file, { readonly: true });
    try {
      assert.equal(check.pragma('user_version', { simple: true }), from);
      // The earlier pending migration's change was rolled back with the failing one.
      const before = SQLITE_MIGRATIONS[from] as string;
      const added = /ALTER TABLE (\w+) ADD COLUMN (\w+)/.exec(before);
      assert.ok(added, 'the earlier pending migration adds a column');
      const columns = (check.prepare(`PRAGMA table_info(${added[1]})`).all() as Array<{ name: string }>).map((c) => c.name);
      assert.ok(!columns.includes(added[2] as string), `${added[1]}.${added[2]} is not there`);
    } finally {
      check.close();
    }
  });

  test('the journal is WAL', async () => {
    const file = join(tempDir(), 'state.sqlite');
    const s = new SqliteStore(file);
    await s.approve(approveInput('d1'));
    const raw = new Database(file, { readonly: true });
    try {
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      raw.close();
      await s.close();
    }
  });

  test('a database from a newer clawgate is refused with a clear message', async () => {
    const file = join(tempDir(), 'state.sqlite');
    await new SqliteStore(file).close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SQLITE_MIGRATIONS.length + 1}`);
    raw.close();
    assert.throws(
      () => new SqliteStore(file),
      (err: Error) => {
        assert.match(err.message, new RegExp(`schema ${SQLITE_MIGRATIONS.length + 1}`));
        assert.match(err.message, /newer than this clawgate/);
        assert.match(err.message, /upgrade clawgate/);
        return true;
      },
    );
    // The refused database is left as it was.
    const check = new Database(file, { readonly: true });
    try {
      assert.equal(check.pragma('user_version', { simple: true }), SQLITE_MIGRATIONS.length + 1);
    } finally {
      check.close();
    }
  });

  test('the database file (and its WAL) has mode 0600', async () => {
    const file = join(tempDir(), 'state.sqlite');
    const s = new SqliteStore(file);
    try {
      await s.approve(approveInput('d1'));
      assert.equal(statSync(file).mode & 0o777, 0o600);
      for (const side of [`${file}-wal`, `${file}-shm`]) {
        if (existsSync(side)) assert.equal(statSync(side).mode & 0o777, 0o600, side);
      }
    } finally {
      await s.close();
    }
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  test('two connections to one file serialize: one request per (device, role), no lost epochs', async () => {
    const file = join(tempDir(), 'state.sqlite');
    const a = new SqliteStore(file);
    const b = new SqliteStore(file);
    await assertWritersSerialize(a, b);
  });

  test('only the secret hash is at rest, and tampering with the audit table is detected', async () => {
    const file = join(tempDir(), 'state.sqlite');
    const s = new SqliteStore(file);
    await s.approve(approveInput('d1', { token: { tokenId: 'tok-1', secretHash: hash('the-secret') } }));
    await s.renameDevice('d1', 'desk', audit('device.renamed', 'd1'));
    await s.appendAudit(audit('custom'));
    await s.close();

    const raw = new Database(file);
    try {
      const cols = (raw.prepare('PRAGMA table_info(tokens)').all() as Array<{ name: string }>).map((c) => c.name);
      assert.deepEqual(
        cols.filter((c) => c.includes('secret')),
        ['secret_hash'],
      );
      const row = raw.prepare('SELECT secret_hash FROM tokens WHERE token_id = ?').get('tok-1') as { secret_hash: Buffer };
      assert.ok(row.secret_hash.equals(hash('the-secret')));
      raw.prepare("UPDATE audit SET subject = 'someone-else' WHERE seq = 2").run();
    } finally {
      raw.close();
    }
    const again = new SqliteStore(file);
    try {
      assert.equal(verifyAuditChain(await again.listAudit()), 2);
    } finally {
      await again.close();
    }
  });
});
