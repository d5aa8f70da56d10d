/**
 * The Store contract against PostgreSQL (a throwaway cluster started by the test), then the
 * PostgreSQL-only guarantees: migrations run once when several instances start at once, a newer
 * schema is refused, and two stores (two instances) on one database serialize their writers.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { openConfiguredStore } from '../src/cli/postgres.js';
import { ManualClock, systemClock, systemRandom } from '../src/core/env.js';
import { silentLogger } from '../src/core/logger.js';
import { DEFAULT_RATE_LIMIT } from '../src/core/ratelimit.js';
import type { AuditInput, Store } from '../src/core/store.js';
import { LISTENER_APP_NAME } from '../src/store/postgres/bus.js';
import { PG_WARM_CONNECTIONS } from '../src/store/postgres/db.js';
import { PgFailureLimiter } from '../src/store/postgres/limiter.js';
import { DELIVERY_LEASE_MS, PG_LOCK, POSTGRES_MIGRATIONS, PostgresStore } from '../src/store/postgres/store.js';
import { verifyAuditChain } from '../src/store/shared.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { approveInput, assertWritersSerialize, audit, hash, T0 } from './helpers/store-fixtures.js';
import { waitFor, withDeadline } from './helpers/wait.js';
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

  test('an up-to-date database opens while another session holds the migration lock (the schema check takes no lock)', async () => {
    const url = await cluster.createDatabase();
    await (await PostgresStore.open(url)).close();
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    let opening: Promise<PostgresStore> | undefined;
    try {
      await holder.query('SELECT pg_advisory_lock($1, $2)', [...PG_LOCK.migrate]);
      opening = PostgresStore.open(url);
      const s = await withDeadline(opening, 'the store to open while the migration lock is held elsewhere');
      assert.equal(await s.schemaVersion(), POSTGRES_MIGRATIONS.length);
    } finally {
      await holder.end();
      // Released with the holder's session: a store that waited for it opens now and is closed.
      await (await opening?.catch(() => undefined))?.close();
    }
  });

  test('an opened store holds its warm connections idle, so the first requests after a start wait for no new backend', async () => {
    const url = await cluster.createDatabase();
    const s = await PostgresStore.open(url);
    try {
      assert.equal(s.pool.totalCount, PG_WARM_CONNECTIONS);
      assert.equal(s.pool.idleCount, PG_WARM_CONNECTIONS);
      // Two reads at once are served by those two connections: the pool opens none for them.
      await Promise.all([s.getMeta('a'), s.getMeta('b')]);
      assert.equal(s.pool.totalCount, PG_WARM_CONNECTIONS);
    } finally {
      await s.close();
    }
  });

  test('a gateway start the store refuses leaves no cluster LISTEN connection behind', async () => {
    const url = await cluster.createDatabase();
    await (await PostgresStore.open(url)).close();
    const raw = new pg.Client({ connectionString: url });
    await raw.connect();
    try {
      await raw.query('INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, 0)', [POSTGRES_MIGRATIONS.length + 1]);
      const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-pg-refused-'));
      try {
        await assert.rejects(
          openConfiguredStore({ kind: 'postgres', url }, stateDir, {
            clock: systemClock,
            random: systemRandom,
            log: silentLogger,
            rateLimit: DEFAULT_RATE_LIMIT,
          }),
          /newer than this clawgate/,
        );
      } finally {
        rmSync(stateDir, { recursive: true, force: true });
      }
      await waitFor(async () => {
        const r = await raw.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1', [
          LISTENER_APP_NAME,
        ]);
        return r.rows[0].n === 0;
      }, 'the LISTEN connection of the refused start to close');
    } finally {
      await raw.end();
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
    await assertWritersSerialize(a, b);
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

// --- automations: PostgreSQL answers exactly as SQLite does, plus delivery leases ---

/** The same script of automations calls, recorded call by call. */
async function automationsScript(store: Store): Promise<unknown[]> {
  const out: unknown[] = [];
  const a = (action: string, subject?: string): AuditInput => ({ atMs: T0, actor: 'owner', action, subject });
  out.push(await store.createChatSession({ sessionId: 's1', key: 'main', label: 'Main', createdBy: 'owner', createdAtMs: T0, audit: a('s') }));
  out.push(await store.createChatSession({ sessionId: 's2', key: 'main', createdBy: 'owner', createdAtMs: T0 + 1, audit: a('s') }));
  out.push(await store.createChatSession({ sessionId: 's3', key: 'child', parentId: 's1', createdBy: 'owner', createdAtMs: T0 + 2, audit: a('s') }));
  for (let i = 0; i < 5; i++) {
    out.push(
      await store.appendChatMessage({
        sessionId: 's1',
        messageId: `m${i}`,
        author: 'owner',
        text: `hello ${i}`,
        idempotencyKey: i === 3 ? 'k1' : undefined,
        atMs: T0 + 10 + i,
        audit: a('chat'),
      }),
    );
  }
  out.push(
    await store.appendChatMessage({ sessionId: 's1', messageId: 'dup', author: 'owner', text: 'again', idempotencyKey: 'k1', atMs: T0 + 30, audit: a('chat') }),
  );
  out.push(await store.appendChatMessage({ sessionId: 'nope', messageId: 'x', author: 'owner', text: 'x', atMs: T0, audit: a('chat') }));
  out.push(await store.getChatSession('main'), await store.getChatSession('s3'), await store.getChatSession('missing'));
  out.push(await store.listChatSessions(), await store.listChatSessions({ parentId: 's1' }), await store.listChatSessions({ limit: 1 }));
  out.push(
    await store.listChatMessages('s1'),
    await store.listChatMessages('s1', { beforeSeq: 4, limit: 2 }),
    await store.listChatMessages('s1', { afterSeq: 3 }),
  );
  // Two API channels under one name (the second is refused), then a config channel updated in place.
  const channel = (channelId: string, name: string, url: string, source: 'api' | 'config', username?: string) =>
    store.putChannel({
      channelId,
      name,
      url,
      ...(username ? { username } : {}),
      source,
      createdBy: source === 'api' ? 'owner' : 'config',
      createdAtMs: T0,
      audit: a('ch'),
    });
  out.push(await channel('c1', 'alerts', 'https://example.net/h', 'api'));
  out.push(await channel('c2', 'alerts', 'https://example.net/x', 'api'));
  out.push(await channel('c3', 'cfg', 'https://example.net/1', 'config'));
  out.push(await channel('c4', 'cfg', 'https://example.net/2', 'config', 'bot'));
  out.push(await store.getChannel('alerts'), await store.getChannel('c3'), await store.listChannels());
  const body = { content: 'hi' };
  for (let i = 0; i < 3; i++) {
    out.push(
      await store.enqueueDelivery({
        deliveryId: `d${i}`,
        channelId: 'c1',
        channelName: 'alerts',
        body,
        idempotencyKey: `ik${i}`,
        actor: 'owner',
        createdAtMs: T0 + i,
        audit: a('send'),
      }),
    );
  }
  out.push(
    await store.enqueueDelivery({
      deliveryId: 'dX',
      channelId: 'c1',
      channelName: 'alerts',
      body,
      idempotencyKey: 'ik1',
      actor: 'owner',
      createdAtMs: T0 + 9,
      audit: a('send'),
    }),
  );
  out.push(await store.nextDeliveryDueAtMs());
  out.push(await store.recordDeliveryAttempt({ deliveryId: 'd0', atMs: T0 + 100, outcome: 'delivered', httpStatus: 204 }));
  out.push(
    await store.recordDeliveryAttempt({ deliveryId: 'd1', atMs: T0 + 100, outcome: 'retry', nextAttemptAtMs: T0 + 5000, error: 'HTTP 500', httpStatus: 500 }),
  );
  out.push(await store.recordDeliveryAttempt({ deliveryId: 'd2', atMs: T0 + 100, outcome: 'dead', error: 'HTTP 404', httpStatus: 404, deadAudit: a('dead') }));
  out.push(await store.recordDeliveryAttempt({ deliveryId: 'd0', atMs: T0 + 200, outcome: 'delivered' }));
  out.push(await store.nextDeliveryDueAtMs(), await store.getDelivery('d1'));
  out.push(await store.listDeliveries(), await store.listDeliveries({ status: 'dead' }), await store.listDeliveries({ channelId: 'c1', limit: 1 }));
  out.push(await store.removeChannel('cfg', a('rm')), await store.removeChannel('cfg', a('rm')));
  const job = (jobId: string, createdAtMs: number) => ({
    jobId,
    name: `job ${jobId}`,
    schedule: { kind: 'every' as const, everyMs: 60_000 },
    action: { kind: 'chat' as const, sessionKey: 'main', text: 'tick' },
    enabled: true,
    createdBy: 'owner',
    createdAtMs,
    nextRunAtMs: createdAtMs + 60_000,
    audit: a('cron'),
  });
  out.push(await store.createCronJob(job('j1', T0)), await store.createCronJob(job('j2', T0 + 1)));
  out.push(await store.updateCronJob('j1', { enabled: false, nextRunAtMs: null }, T0 + 5, a('cron.update')), await store.updateCronJob('zz', {}, T0, a('x')));
  out.push(
    await store.recordCronRun(
      {
        runId: 'r1',
        jobId: 'j2',
        trigger: 'schedule',
        dueAtMs: T0 + 60_001,
        startedAtMs: T0 + 60_002,
        finishedAtMs: T0 + 60_010,
        status: 'ok',
        result: { messageId: 'm' },
      },
      T0 + 120_001,
    ),
  );
  out.push(
    await store.recordCronRun(
      {
        runId: 'r2',
        jobId: 'j2',
        trigger: 'manual',
        dueAtMs: T0 + 70_000,
        startedAtMs: T0 + 70_000,
        finishedAtMs: T0 + 70_001,
        status: 'error',
        error: 'boom',
      },
      T0 + 120_001,
    ),
  );
  out.push(await store.listCronJobs(), await store.getCronJob('j2'), await store.listCronRuns('j2'), await store.listCronRuns('j2', 1));
  out.push(await store.removeCronJob('j1', a('cron.rm')), await store.removeCronJob('j1', a('cron.rm')), await store.listCronJobs());
  out.push((await store.listAudit()).map((e) => [e.seq, e.action, e.hash]));
  return JSON.parse(JSON.stringify(out));
}

describe('PostgresStore automations', () => {
  test('every automations method answers exactly as the SQLite store does', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-pgdiff-'));
    const sqlite = new SqliteStore(join(dir, 'state.sqlite'));
    const pgs = await PostgresStore.open(await cluster.createDatabase());
    try {
      const expected = await automationsScript(sqlite);
      const actual = await automationsScript(pgs);
      for (let i = 0; i < expected.length; i++) assert.deepEqual(actual[i], expected[i], `call #${i}`);
      assert.equal(actual.length, expected.length);
    } finally {
      await sqlite.close();
      await pgs.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a due delivery is handed to one worker only, across instances, until its attempt is recorded', async () => {
    const url = await cluster.createDatabase();
    const a = await PostgresStore.open(url);
    const b = await PostgresStore.open(url);
    try {
      const au = audit('send');
      for (let i = 0; i < 40; i++) {
        await a.enqueueDelivery({
          deliveryId: `d${i}`,
          channelId: 'c',
          channelName: 'c',
          body: {},
          idempotencyKey: `k${i}`,
          actor: 'owner',
          createdAtMs: T0,
          audit: au,
        });
      }
      // Workers on both instances poll at once, repeatedly.
      const batches = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).dueDeliveries(T0 + 10, 8)));
      const handed = batches.flat().map((d) => d.deliveryId);
      assert.equal(handed.length, 40, 'every due delivery was handed out');
      assert.equal(new Set(handed).size, 40, 'none was handed out twice');
      assert.deepEqual(await a.dueDeliveries(T0 + 20, 100), [], 'leased ones are not due again');
      // A leased delivery is next due when its lease ends, not in a tight loop.
      assert.equal(await b.nextDeliveryDueAtMs(), T0 + 10 + DELIVERY_LEASE_MS);
      // Recording the attempt ends the lease: a retry is due at its own time.
      await a.recordDeliveryAttempt({ deliveryId: 'd0', atMs: T0 + 30, outcome: 'retry', nextAttemptAtMs: T0 + 1_000 });
      assert.equal(await b.nextDeliveryDueAtMs(), T0 + 1_000);
      assert.deepEqual(
        (await b.dueDeliveries(T0 + 1_000, 10)).map((d) => d.deliveryId),
        ['d0'],
      );
      // A worker that died: its leases expire and another worker takes the deliveries.
      const later = await a.dueDeliveries(T0 + 10 + DELIVERY_LEASE_MS, 100);
      assert.equal(later.length, 39);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('PgFailureLimiter (the shared wrong-credential budget)', () => {
  test('same policy as the in-memory limiter: budget per window, lockout, success clears, two instances share it', async () => {
    const url = await cluster.createDatabase();
    const s1 = await PostgresStore.open(url);
    const s2 = await PostgresStore.open(url);
    const clock = new ManualClock(T0);
    const policy = { maxFailures: 3, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 10_000 };
    const a = new PgFailureLimiter(s1, clock, policy);
    const b = new PgFailureLimiter(s2, clock, policy);
    try {
      assert.equal(await a.fail('192.0.2.1', 'shared'), 0);
      clock.advance(61_000);
      // The window is over: the count starts again.
      assert.equal(await b.fail('192.0.2.1', 'shared'), 0);
      assert.equal(await a.fail('192.0.2.1', 'shared'), 0);
      assert.equal(await b.retryAfterMs('192.0.2.1', 'shared'), 0);
      assert.equal(await b.fail('192.0.2.1', 'shared'), 300_000, 'the third failure in one window locks, whichever instance saw it');
      assert.equal(await a.retryAfterMs('192.0.2.1', 'shared'), 300_000);
      assert.equal(await a.retryAfterMs('192.0.2.1', 'password'), 0, 'per credential kind');
      assert.equal(await a.retryAfterMs('192.0.2.2', 'shared'), 0, 'per address');
      clock.advance(100_000);
      assert.equal(await b.retryAfterMs('192.0.2.1', 'shared'), 200_000);
      await a.succeed('192.0.2.1', 'shared');
      assert.equal(await b.retryAfterMs('192.0.2.1', 'shared'), 200_000, 'a success elsewhere does not lift the lock');
      // A success clears a key that is still counting.
      assert.equal(await a.fail('192.0.2.3', 'shared'), 0);
      assert.equal(await b.fail('192.0.2.3', 'shared'), 0);
      await a.succeed('192.0.2.3', 'shared');
      assert.equal(await b.fail('192.0.2.3', 'shared'), 0, 'the count started over');
      assert.equal(await b.fail('192.0.2.3', 'shared'), 0);
      assert.equal(await b.fail('192.0.2.3', 'shared'), 300_000);
    } finally {
      await s1.close();
      await s2.close();
    }
  });

  test('a success takes effect at its own check: it clears what the check found, not a failure counted after it', async () => {
    const url = await cluster.createDatabase();
    const s1 = await PostgresStore.open(url);
    const s2 = await PostgresStore.open(url);
    const clock = new ManualClock(T0);
    const policy = { maxFailures: 3, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 10_000 };
    const a = new PgFailureLimiter(s1, clock, policy);
    const b = new PgFailureLimiter(s2, clock, policy);
    try {
      // A connect on instance a checks its key (nothing counted), another instance counts a
      // wrong guess while a verifies, then a's connect succeeds: the guess stays counted.
      assert.equal(await a.retryAfterMs('192.0.2.7', 'device-token'), 0);
      assert.equal(await b.fail('192.0.2.7', 'device-token'), 0);
      await a.succeed('192.0.2.7', 'device-token');
      assert.equal(await b.fail('192.0.2.7', 'device-token'), 0);
      assert.equal(await b.fail('192.0.2.7', 'device-token'), 300_000, 'three guesses in one window lock, the success between them notwithstanding');

      // A check that finds the key counting: the success clears it.
      assert.equal(await b.fail('192.0.2.8', 'device-token'), 0);
      assert.equal(await b.fail('192.0.2.8', 'device-token'), 0);
      assert.equal(await a.retryAfterMs('192.0.2.8', 'device-token'), 0);
      await a.succeed('192.0.2.8', 'device-token');
      assert.equal(await b.fail('192.0.2.8', 'device-token'), 0, 'the count started over');
      assert.equal(await b.fail('192.0.2.8', 'device-token'), 0);

      // A failure on a's own instance after its check: the next success there clears again.
      assert.equal(await a.retryAfterMs('192.0.2.9', 'device-token'), 0);
      assert.equal(await a.fail('192.0.2.9', 'device-token'), 0);
      assert.equal(await a.fail('192.0.2.9', 'device-token'), 0);
      await a.succeed('192.0.2.9', 'device-token');
      assert.equal(await b.fail('192.0.2.9', 'device-token'), 0, 'cleared: the count started over');
      assert.equal(await b.fail('192.0.2.9', 'device-token'), 0);
    } finally {
      await s1.close();
      await s2.close();
    }
  });

  test('the same address buckets as the in-memory limiter: loopback is one, IPv6 counts per /64; a lock outlives a success elsewhere', async () => {
    const url = await cluster.createDatabase();
    const s1 = await PostgresStore.open(url);
    const s2 = await PostgresStore.open(url);
    const clock = new ManualClock(T0);
    const policy = { maxFailures: 3, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 10_000 };
    const a = new PgFailureLimiter(s1, clock, policy);
    const b = new PgFailureLimiter(s2, clock, policy);
    try {
      assert.equal(await a.fail('127.0.0.2', 'password'), 0);
      assert.equal(await b.fail('::1', 'password'), 0);
      assert.equal(await a.fail('::ffff:127.0.0.40', 'password'), 300_000, 'three loopback spellings, one budget');
      assert.equal(await b.retryAfterMs('127.0.0.1', 'password'), 300_000);
      await b.succeed('127.0.0.9', 'password');
      assert.equal(await a.retryAfterMs('127.0.0.1', 'password'), 300_000, 'a success does not lift a lock');

      assert.equal(await a.fail('2001:db8:5:6::1', 'shared'), 0);
      assert.equal(await b.fail('2001:db8:5:6:a:b:c:d', 'shared'), 0);
      assert.equal(await a.fail('2001:db8:5:6::ffff', 'shared'), 300_000, 'one /64, one budget');
      assert.equal(await b.retryAfterMs('2001:db8:5:6::1234', 'shared'), 300_000);
      assert.equal(await b.retryAfterMs('2001:db8:5:7::1', 'shared'), 0, 'the next /64 is another client');
    } finally {
      await s1.close();
      await s2.close();
    }
  });
});
