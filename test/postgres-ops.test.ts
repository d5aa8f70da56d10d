/**
 * PostgreSQL operations: the event bus between instances (inline and table-backed payloads,
 * reconnect), `clawgate migrate --to postgres` copying a real SQLite state dir, and the
 * `--store` flags of `clawgate gateway run`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { copySqliteToPostgres } from '../src/cli/postgres.js';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import type { ClusterEvent } from '../src/core/cluster.js';
import { silentLogger } from '../src/core/logger.js';
import type { Store } from '../src/core/store.js';
import { readGatewayKeyFingerprint } from '../src/server/gateway-key.js';
import { PgClusterBus } from '../src/store/postgres/bus.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { verifyAuditChain } from '../src/store/shared.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { asOwner, startTestGateway } from './helpers/gateway.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';
import { waitFor } from './helpers/wait.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'clawgate.js');

let cluster: PgCluster;
const dirs: string[] = [];
before(async () => {
  cluster = await startPgCluster();
});
after(async () => {
  await cluster?.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function cliRun(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function nextOf(received: ClusterEvent[], n: number, timeoutMs = 5_000): Promise<void> {
  await waitFor(() => received.length >= n, `${n} events`, { timeoutMs, intervalMs: 5, detail: () => `only ${received.length} arrived` });
}

/** Two instances' stores and event buses on one fresh database. */
async function twoInstances() {
  const url = await cluster.createDatabase();
  const sa = await PostgresStore.open(url);
  const sb = await PostgresStore.open(url);
  const busA = await PgClusterBus.start(sa.pool, url, 'instance-a', silentLogger);
  const busB = await PgClusterBus.start(sb.pool, url, 'instance-b', silentLogger);
  const close = async () => {
    await busA.close();
    await busB.close();
    await sa.close();
    await sb.close();
  };
  return { sa, sb, busA, busB, close };
}

describe('cluster event bus (LISTEN/NOTIFY)', () => {
  test('events reach the other instance, not the sender; large ones travel through the table', async () => {
    const { sa, busA, busB, close } = await twoInstances();
    try {
      const atA: ClusterEvent[] = [];
      const atB: ClusterEvent[] = [];
      busA.subscribe((e) => atA.push(e));
      busB.subscribe((e) => atB.push(e));
      const small: ClusterEvent = { type: 'close-device', deviceId: 'dev-1', role: 'operator', why: 'TOKEN_REVOKED' };
      // Far above NOTIFY's 8000-byte payload limit.
      const large: ClusterEvent = { type: 'broadcast', event: 'device.pair.requested', payload: { blob: 'x'.repeat(50_000) } };
      await busA.publish(small);
      await busA.publish(large);
      await nextOf(atB, 2);
      assert.deepEqual(atB, [small, large]);
      const rows = await sa.pool.query('SELECT COUNT(*)::int AS n FROM cluster_events');
      assert.equal(rows.rows[0].n, 1, 'only the large event was written to the table');
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(atA, [], 'the sender does not hear itself');
    } finally {
      await close();
    }
  });

  test('a listener whose connection is killed reconnects and asks its owner to resync', async () => {
    const { sa, busA, busB, close } = await twoInstances();
    try {
      const atB: ClusterEvent[] = [];
      let resyncs = 0;
      busB.subscribe(
        (e) => atB.push(e),
        () => resyncs++,
      );
      // Kill B's listening backend from the server side, as a failover or restart would.
      await sa.pool.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
      );
      await waitFor(() => resyncs >= 1, 'a resync request after the reconnect', { timeoutMs: 10_000 });
      const e: ClusterEvent = { type: 'resolve-waiters', requestId: 'r1', decision: 'approved' };
      await busA.publish(e);
      await nextOf(atB, 1);
      assert.deepEqual(atB.at(-1), e);
    } finally {
      await close();
    }
  });
});

describe('clawgate migrate --to postgres', () => {
  test('copies a SQLite state dir row for row, the audit chain intact, and refuses a non-empty target', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-mig-'));
    dirs.push(stateDir);
    // Real state made by a real gateway: a paired device (silently, loopback), a setup code.
    const tg = await startTestGateway({ stateDir });
    const identity = generateIdentity();
    const dev = await connectGateway({ url: tg.url, identity, ...asOwner(tg), scopes: ['operator.read'], client: { id: 'test', mode: 'test' } });
    await dev.close();
    const op = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    await op.request('device.pair.setupCode', { profile: 'node', label: 'rack' });
    await op.close();
    await tg.stop();

    const snapshot = async (s: Store) => ({
      devices: await s.listDevices(),
      grants: await s.listGrants(),
      tokens: await s.listTokens(),
      requests: await s.listPairingRequests(),
      setups: await s.listSetupCodes(),
      audit: await s.listAudit(),
      id: await s.getMeta('gateway.id'),
      chat: await s.listChatMessages('s1'),
      sessions: await s.listChatSessions(),
      channels: await s.listChannels(),
      deliveries: await s.listDeliveries(),
      cron: await s.listCronJobs(),
      runs: await s.listCronRuns('j1'),
    });
    const sqlite = new SqliteStore(join(stateDir, 'clawgate.sqlite'));
    // Automations state too (children after parents, whatever their names sort as).
    const au = { atMs: 5, actor: 'owner', action: 'x' };
    await sqlite.createChatSession({ sessionId: 's1', key: 'main', createdBy: 'owner', createdAtMs: 5, audit: au });
    await sqlite.appendChatMessage({ sessionId: 's1', messageId: 'm1', author: 'owner', text: 'hello', atMs: 6, audit: au });
    await sqlite.putChannel({ channelId: 'c1', name: 'alerts', url: 'https://example.net/h', source: 'api', createdBy: 'owner', createdAtMs: 5, audit: au });
    await sqlite.enqueueDelivery({
      deliveryId: 'd1',
      channelId: 'c1',
      channelName: 'alerts',
      body: { content: 'x' },
      idempotencyKey: 'k',
      actor: 'owner',
      createdAtMs: 7,
      audit: au,
    });
    await sqlite.createCronJob({
      jobId: 'j1',
      name: 'tick',
      schedule: { kind: 'every', everyMs: 60_000 },
      action: { kind: 'chat', sessionKey: 'main', text: 't' },
      enabled: true,
      createdBy: 'owner',
      createdAtMs: 8,
      nextRunAtMs: 60_008,
      audit: au,
    });
    await sqlite.recordCronRun({ runId: 'r1', jobId: 'j1', trigger: 'manual', dueAtMs: 9, startedAtMs: 9, finishedAtMs: 10, status: 'ok' }, 60_008);
    const before = await snapshot(sqlite);
    await sqlite.close();
    assert.equal(before.devices.length, 1);
    assert.equal(before.setups.length, 1);

    const url = await cluster.createDatabase();
    const r = await cliRun(['migrate', '--to', 'postgres', '--postgres-url', url, '--state-dir', stateDir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { tables: Record<string, number>; auditEntries: number };
    assert.equal(summary.tables.devices, 1);
    // Each table says on stderr when it is copied; stdout holds only the JSON document.
    assert.match(r.stderr, /^migrate: devices: 1 of 1 rows$/m);
    assert.match(r.stderr, new RegExp(`^migrate: audit: ${before.audit.length} of ${before.audit.length} rows$`, 'm'));
    assert.equal(summary.auditEntries, before.audit.length);

    const pgStore = await PostgresStore.open(url);
    try {
      assert.deepEqual(await snapshot(pgStore), before);
      assert.equal(verifyAuditChain(await pgStore.listAudit()), null);
      // The chain continues in PostgreSQL.
      const next = await pgStore.appendAudit({ atMs: 1, actor: 'owner', action: 'custom' });
      assert.equal(next.prevHash, before.audit.at(-1)?.hash);
      const tok = before.tokens[0];
      assert.ok(tok && (await pgStore.getToken(tok.tokenId))?.secretHash.equals(tok.secretHash));
    } finally {
      await pgStore.close();
    }

    const again = await cliRun(['migrate', '--to', 'postgres', '--postgres-url', url, '--state-dir', stateDir]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /not empty/);
  });

  test('streams tables larger than one batch: every row, in order, and an audit log longer than one verification page', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-mig-'));
    dirs.push(stateDir);
    const file = join(stateDir, 'clawgate.sqlite');
    const sqlite = new SqliteStore(file);
    // 23 devices with 2 grants and 2 tokens each: no table is a whole number of 5-row batches.
    const seeded = Array.from({ length: 23 }, (_, i) => {
      const id = `mig-${String(i).padStart(2, '0')}`;
      const hash = createHash('sha256').update(id).digest();
      return {
        deviceId: id,
        publicKey: `pk-${id}`,
        meta: { displayName: `Device ${i}` },
        createdAtMs: 1_000 + (i % 5),
        grants: (['operator', 'node'] as const).map((role) => ({
          role,
          scopes: role === 'node' ? [] : ['operator.read'],
          approvedAtMs: 1_000,
          approvedVia: 'manual' as const,
        })),
        tokens: (['operator', 'node'] as const).map((role) => ({ role, tokenId: `${id}-${role}`, secretHash: hash, createdAtMs: 1_000 })),
      };
    });
    for (let i = 0; i < seeded.length; i += 10) {
      const r = await sqlite.seedPairedDevices({ devices: seeded.slice(i, i + 10), audit: { atMs: 1, actor: 'owner', action: 'devices.seeded' } });
      assert.ok(r.ok);
    }
    for (let i = 0; i < 1_001; i++) await sqlite.appendAudit({ atMs: 2 + i, actor: 'owner', action: 'custom', subject: String(i) });
    const snapshot = async (s: Store) => ({
      devices: await s.listDevices(),
      grants: await s.listGrants(),
      tokens: await s.listTokens(),
      audit: await s.listAudit(),
      page: await s.listDevicesPage({ limit: 500 }),
    });
    const before = await snapshot(sqlite);
    await sqlite.close();
    assert.equal(before.audit.length, 1_004);

    const url = await cluster.createDatabase();
    const progress: string[] = [];
    const summary = await copySqliteToPostgres(file, url, {
      batchRows: 5,
      progressEveryRows: 10,
      onProgress: (p) => progress.push(`${p.table} ${p.copiedRows}/${p.totalRows}`),
    });
    // A report once a batch crosses each 10 rows, and one when the table is done.
    assert.deepEqual(
      progress.filter((p) => p.startsWith('devices ') || p.startsWith('grants ')),
      ['devices 10/23', 'devices 20/23', 'devices 23/23', 'grants 10/46', 'grants 20/46', 'grants 30/46', 'grants 40/46', 'grants 46/46'],
    );
    assert.equal(summary.tables.devices, 23);
    assert.equal(summary.tables.grants, 46);
    assert.equal(summary.tables.tokens, 46);
    assert.equal(summary.auditEntries, 1_004);
    const pgStore = await PostgresStore.open(url);
    try {
      assert.deepEqual(await snapshot(pgStore), before);
    } finally {
      await pgStore.close();
    }
  });

  test('usage errors: no URL, a non-postgres URL, no state to copy', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'clawgate-mig-'));
    dirs.push(empty);
    const noUrl = await cliRun(['migrate', '--to', 'postgres', '--state-dir', empty], { CLAWGATE_POSTGRES_URL: '' });
    assert.equal(noUrl.code, 2);
    assert.match(noUrl.stderr, /--postgres-url/);
    const badUrl = await cliRun(['migrate', '--to', 'postgres', '--postgres-url', 'mysql://x/y', '--state-dir', empty]);
    assert.equal(badUrl.code, 2);
    const nothing = await cliRun(['migrate', '--to', 'postgres', '--postgres-url', cluster.adminUrl, '--state-dir', empty]);
    assert.equal(nothing.code, 1);
    assert.match(nothing.stderr, /no SQLite state/);
    const run1 = await cliRun(['gateway', 'run', '--store', 'postgres', '--state-dir', empty, '--port', '0'], { CLAWGATE_POSTGRES_URL: '' });
    assert.equal(run1.code, 2);
    assert.match(run1.stderr, /--store postgres needs --postgres-url/);
    const run2 = await cliRun(['gateway', 'run', '--store', 'mysql', '--state-dir', empty, '--port', '0']);
    assert.equal(run2.code, 2);
    // A service unit keeps the store choice, and never a database URL (it carries a password).
    const unit = await cliRun(['gateway', 'install-service', '--print', '--store', 'postgres', '--state-dir', empty]);
    assert.equal(unit.code, 0, unit.stderr);
    assert.match(unit.stdout, /^ExecStart=.* --store postgres/m);
    const leaky = await cliRun(['gateway', 'install-service', '--print', '--postgres-url', 'postgres://u:secret@h/db', '--state-dir', empty]);
    assert.equal(leaky.code, 2);
    assert.match(leaky.stderr, /gateway\.postgres\.url/);
  });

  test('a gateway configured by its config file alone runs on PostgreSQL and serves the devices already in it', async () => {
    const url = await cluster.createDatabase();
    const seed = await PostgresStore.open(url);
    const hash = createHash('sha256').update('x').digest();
    await seed.approve({
      device: { deviceId: 'dev-x', publicKey: 'pk-x', meta: {} },
      role: 'operator',
      scopes: ['operator.read'],
      via: 'owner',
      token: { tokenId: 'tok-x', secretHash: hash },
      atMs: 1,
      audit: { atMs: 1, actor: 'owner', action: 'pairing.approved', subject: 'dev-x' },
    });
    await seed.close();
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-cfg-'));
    dirs.push(stateDir);
    writeFileSync(join(stateDir, 'config.json'), JSON.stringify({ gateway: { store: 'postgres', postgres: { url } } }));
    let proc: Pick<GatewayProcess, 'kill'> | undefined;
    let gw: GatewayProcess | undefined;
    try {
      gw = await spawnGateway(['--state-dir', stateDir, '--config', join(stateDir, 'config.json')], { onSpawn: (p) => (proc = p) });
      const gwUrl = gw.url;
      const out = gw.out();
      assert.match(out, /listening on ws:\/\/\S+ .*store: postgres/);
      assert.doesNotMatch(out, /postgres:\/\/[^ ]*:[^*@ ]+@/, 'no password in the banner');
      const op = await connectGateway({
        url: gwUrl,
        owner: JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')).owner,
        gatewayKey: readGatewayKeyFingerprint(stateDir),
      });
      try {
        const list = await op.request<{ paired: Array<{ deviceId: string }> }>('device.pair.list');
        assert.deepEqual(
          list.paired.map((d) => d.deviceId),
          ['dev-x'],
        );
      } finally {
        await op.close();
      }
    } finally {
      // A graceful stop once started (it closes its pool); a kill if it never got that far.
      if (gw) await gw.stop();
      else await proc?.kill();
    }
  });
});
