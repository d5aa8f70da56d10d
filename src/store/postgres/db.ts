/**
 * PostgreSQL store: several gateway instances share one database. Same contract as SQLite
 * (test/store-contract.ts), same columns (so `clawgate migrate --to postgres` copies rows 1:1).
 *
 * Concurrency: every trust-changing action appends to ONE hash-chained audit log, so writers are
 * inherently serial (SQLite gets this from its single writer). Each write transaction therefore
 * starts by taking a transaction-scoped advisory lock; reads never take it. Migrations take a
 * session-level advisory lock of their own, so instances starting at once migrate exactly once.
 *
 * This file is the shared core (pool, schema, write transactions, audit chain). Adding a domain:
 * append a migration to POSTGRES_MIGRATIONS and a file next to this one whose methods call
 * `core.q` (reads) or `core.write(tx => ...)` with the same SQL as SQLite, `?` written as `$n`,
 * then spread it into PostgresStore (store.ts).
 */
import pg from 'pg';
import type { AuditEntry, AuditInput } from '../../core/store.js';
import { type AuditRow, chainAudit, toAudit } from '../shared.js';

/** The searchable names of a device, its label and the name it presented (ASCII letters lowercased, byte order). */
export const PG_DEVICE_LABEL = `lower(label COLLATE "C")`;
export const PG_DEVICE_DISPLAY_NAME = `lower((meta_json::jsonb ->> 'displayName') COLLATE "C")`;

/** Advisory lock keys (arbitrary constants, namespaced by the first 32 bits: "claw"). */
export const PG_LOCK = { migrate: [0x636c6177, 1], write: [0x636c6177, 2] } as const;

/**
 * Numbered migrations; `schema_migrations` records which ran. Never edit a shipped one.
 * `ord` columns stand in for SQLite's rowid where listing order is insertion order.
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE devices (
     device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, meta_json TEXT NOT NULL,
     label TEXT, created_at_ms BIGINT NOT NULL, last_seen_at_ms BIGINT, last_seen_address TEXT, ord BIGSERIAL);
   CREATE TABLE grants (
     device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE, role TEXT NOT NULL,
     scopes_json TEXT NOT NULL, epoch INTEGER NOT NULL, approved_at_ms BIGINT NOT NULL, approved_via TEXT NOT NULL,
     ord BIGSERIAL, PRIMARY KEY (device_id, role));
   CREATE TABLE tokens (
     token_id TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
     role TEXT NOT NULL, secret_hash BYTEA NOT NULL, created_at_ms BIGINT NOT NULL,
     rotated_at_ms BIGINT, revoked_at_ms BIGINT, last_used_at_ms BIGINT, ord BIGSERIAL);
   CREATE INDEX tokens_device ON tokens(device_id, role);
   CREATE TABLE pairing_requests (
     request_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, role TEXT NOT NULL, body_json TEXT NOT NULL,
     created_at_ms BIGINT NOT NULL, ord BIGSERIAL, UNIQUE (device_id, role));
   CREATE TABLE audit (
     seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
     subject TEXT, data_json TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
   CREATE TABLE setup_codes (
     setup_id TEXT PRIMARY KEY, secret_hash BYTEA NOT NULL, profile_json TEXT NOT NULL, label TEXT, url TEXT NOT NULL,
     created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL, created_by TEXT NOT NULL,
     failures INTEGER NOT NULL DEFAULT 0, burned_at_ms BIGINT, revoked_at_ms BIGINT,
     redeemed_at_ms BIGINT, redeem_count INTEGER NOT NULL DEFAULT 0, device_id TEXT, public_key TEXT,
     device_name TEXT, redeemed_role TEXT, grant_epochs_json TEXT, ord BIGSERIAL);`,
  // 2: several instances: event payloads too large for NOTIFY, the shared failure
  // budget for wrong credentials (per address and credential kind), instance heartbeats and
  // session presence, and triggers that announce a lost grant or token in the same transaction
  // (the NOTIFY is delivered on commit, even if the instance that made the change dies then).
  `CREATE TABLE cluster_events (id BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, body TEXT NOT NULL);
   CREATE TABLE auth_failures (
     key TEXT PRIMARY KEY, window_start_ms BIGINT NOT NULL, failures INTEGER NOT NULL, locked_until_ms BIGINT NOT NULL);
   CREATE TABLE cluster_instances (instance_id TEXT PRIMARY KEY, seen_at_ms BIGINT NOT NULL);
   CREATE TABLE session_presence (
     conn_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, role TEXT NOT NULL, instance_id TEXT NOT NULL, connected_at_ms BIGINT NOT NULL,
     detail_json TEXT);
   CREATE INDEX session_presence_device ON session_presence(device_id, role);
   CREATE FUNCTION clawgate_authority_changed() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('clawgate_cluster',
       json_build_object('o', 'db', 'e', json_build_object('type', 'authority-changed', 'deviceId', OLD.device_id))::text);
     RETURN NULL;
   END $$;
   CREATE TRIGGER grant_gone AFTER DELETE ON grants FOR EACH ROW EXECUTE FUNCTION clawgate_authority_changed();
   CREATE TRIGGER live_token_gone AFTER DELETE ON tokens FOR EACH ROW WHEN (OLD.revoked_at_ms IS NULL)
     EXECUTE FUNCTION clawgate_authority_changed();
   CREATE TRIGGER token_revoked AFTER UPDATE OF revoked_at_ms ON tokens FOR EACH ROW
     WHEN (OLD.revoked_at_ms IS NULL AND NEW.revoked_at_ms IS NOT NULL) EXECUTE FUNCTION clawgate_authority_changed();`,
  // 3: node command surfaces, as SQLite migration 3. They live with the node role: the
  // trigger drops them whenever a node grant row goes (revoke, role removal, device removal).
  `CREATE TABLE node_surfaces (
     device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
     body_json TEXT NOT NULL, approved_at_ms BIGINT NOT NULL, ord BIGSERIAL);
   CREATE TABLE node_surface_requests (
     request_id TEXT PRIMARY KEY, device_id TEXT NOT NULL UNIQUE REFERENCES devices(device_id) ON DELETE CASCADE,
     body_json TEXT NOT NULL, created_at_ms BIGINT NOT NULL, ord BIGSERIAL);
   CREATE FUNCTION node_grant_gone() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     DELETE FROM node_surfaces WHERE device_id = OLD.device_id;
     DELETE FROM node_surface_requests WHERE device_id = OLD.device_id;
     RETURN OLD;
   END $$;
   CREATE TRIGGER node_grant_gone AFTER DELETE ON grants FOR EACH ROW WHEN (OLD.role = 'node') EXECUTE FUNCTION node_grant_gone();`,
  // 4: automations, as SQLite migration 4. `claimed_until_ms` is PostgreSQL's own: a
  // delivery handed to one instance's worker is not handed to another until the lease ends.
  `CREATE TABLE chat_sessions (
     session_id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, label TEXT, parent_id TEXT, created_by TEXT NOT NULL,
     created_at_ms BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL, message_count INTEGER NOT NULL DEFAULT 0);
   CREATE INDEX chat_sessions_parent ON chat_sessions(parent_id);
   CREATE TABLE chat_messages (
     session_id TEXT NOT NULL REFERENCES chat_sessions(session_id) ON DELETE CASCADE, seq INTEGER NOT NULL,
     message_id TEXT NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL, idempotency_key TEXT, at_ms BIGINT NOT NULL,
     PRIMARY KEY (session_id, seq), UNIQUE (session_id, idempotency_key));
   CREATE TABLE channels (
     channel_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, url TEXT NOT NULL, username TEXT, source TEXT NOT NULL,
     created_by TEXT NOT NULL, created_at_ms BIGINT NOT NULL);
   CREATE TABLE deliveries (
     delivery_id TEXT PRIMARY KEY, channel_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, status TEXT NOT NULL,
     next_attempt_at_ms BIGINT NOT NULL, body_json TEXT NOT NULL, claimed_until_ms BIGINT, ord BIGSERIAL,
     UNIQUE (channel_id, idempotency_key));
   CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at_ms);
   CREATE TABLE cron_jobs (job_id TEXT PRIMARY KEY, created_at_ms BIGINT NOT NULL, body_json TEXT NOT NULL, ord BIGSERIAL);
   CREATE TABLE cron_runs (
     run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES cron_jobs(job_id) ON DELETE CASCADE, body_json TEXT NOT NULL, ord BIGSERIAL);
   CREATE INDEX cron_runs_job ON cron_runs(job_id);`,
  // who approved a grant, and time-bound grants (what the role keeps after the expiry)
  `ALTER TABLE grants ADD COLUMN approved_by TEXT;
   ALTER TABLE grants ADD COLUMN expires_at_ms BIGINT;
   ALTER TABLE grants ADD COLUMN scopes_after_expiry_json TEXT;
   CREATE INDEX grants_expiry ON grants(expires_at_ms) WHERE expires_at_ms IS NOT NULL;`,
  // 6: device pages, as SQLite migration 6. Ids and names compare in byte order (COLLATE "C"),
  // as SQLite does, so both stores page in the same order and a prefix is an index range.
  `CREATE INDEX devices_page ON devices (created_at_ms, device_id COLLATE "C");
   CREATE INDEX devices_id_prefix ON devices ((device_id COLLATE "C"));
   CREATE INDEX devices_label ON devices ((${PG_DEVICE_LABEL}));
   CREATE INDEX devices_display_name ON devices ((${PG_DEVICE_DISPLAY_NAME}));
   CREATE INDEX grants_role ON grants (role, device_id COLLATE "C");`,
  // 7: a pairing request that leaves the table (approved, rejected, expired, its device removed)
  // is announced by the database in the deleting transaction, so the instance holding a connect
  // waiting on it hears of it at the commit, not one NOTIFY round trip later, and even when the
  // instance that decided dies before telling anyone. The event says only which request went;
  // the listener reads the grant to learn the outcome (Approvals.settleFromStore).
  `CREATE FUNCTION clawgate_pairing_request_gone() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     PERFORM pg_notify('clawgate_cluster',
       json_build_object('o', 'db', 'e', json_build_object('type', 'pairing-request-gone', 'requestId', OLD.request_id))::text);
     RETURN NULL;
   END $$;
   CREATE TRIGGER pairing_request_gone AFTER DELETE ON pairing_requests FOR EACH ROW EXECUTE FUNCTION clawgate_pairing_request_gone();`,
];

/** How long a delivery handed to a worker stays its own (longer than any webhook attempt). */
export const DELIVERY_LEASE_MS = 120_000;

/** BIGINT columns hold milliseconds (< 2^53): read them as numbers, not strings. */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === 20 && format !== 'binary') return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format as 'text');
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/** One connection inside a transaction (or the pool for single reads). */
export class PgQuery {
  /** Set when this transaction appended to the audit log (the listeners run after its COMMIT). */
  auditAppended = false;
  /**
   * The newest audit entry as this transaction sees it, read in the round trip that began it
   * (null: the log is empty; undefined: not read yet). Every writer holds the write lock, so it
   * cannot change under the transaction except by the transaction's own appends.
   */
  auditHead: AuditEntry | null | undefined = undefined;
  constructor(private readonly c: pg.Pool | pg.PoolClient) {}
  async one<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.c.query(sql, params)).rows[0] as T | undefined;
  }
  async all<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.c.query(sql, params)).rows as T[];
  }
  /** Run a statement; returns the number of rows it touched. */
  async run(sql: string, params: unknown[] = []): Promise<number> {
    return (await this.c.query(sql, params)).rowCount ?? 0;
  }
}

const AUDIT_HEAD_SQL = 'SELECT * FROM audit ORDER BY seq DESC LIMIT 1';
/** The opening of every write transaction, as one multi-statement simple query (no parameters: the lock key is a constant). */
const BEGIN_WRITE = `BEGIN; SELECT pg_advisory_xact_lock(${PG_LOCK.write[0]}, ${PG_LOCK.write[1]}); ${AUDIT_HEAD_SQL}`;

/** Default bound on one query's answer (client side); long enough for a busy write lock. */
export const PG_QUERY_TIMEOUT_MS = 15_000;
/** Default bound on opening a connection or waiting for a free one in the pool. */
export const PG_CONNECT_TIMEOUT_MS = 5_000;

/** The bound on opening a connection: the URL's `connect_timeout` (s), else PG_CONNECT_TIMEOUT_MS. */
export function connectTimeoutMs(url: string): number {
  try {
    const s = Number(new URL(url).searchParams.get('connect_timeout'));
    if (Number.isFinite(s) && s > 0) return s * 1000;
  } catch {
    // not a URL the WHATWG parser takes (node-postgres still may): use the default
  }
  return PG_CONNECT_TIMEOUT_MS;
}

/** Connections the pool opens at once when the store opens, and keeps open while idle. */
export const PG_WARM_CONNECTIONS = 2;

/** PostgreSQL's "undefined_table": the database has no schema yet. */
const UNDEFINED_TABLE = '42P01';

/** The highest migration recorded, or null when the database has no migrations table yet. */
async function appliedVersion(c: pg.PoolClient): Promise<number | null> {
  try {
    const r = await c.query('SELECT COALESCE(MAX(version), 0)::int AS v FROM schema_migrations');
    return Number(r.rows[0].v);
  } catch (err) {
    if ((err as { code?: unknown }).code === UNDEFINED_TABLE) return null;
    throw err;
  }
}

function refuseNewer(version: number): void {
  if (version > POSTGRES_MIGRATIONS.length) {
    throw new Error(`state database is at schema ${version}, newer than this clawgate (${POSTGRES_MIGRATIONS.length}); upgrade clawgate`);
  }
}

/** Check out `n` pool clients at once; on a failure the ones already connected go back. */
async function connectAll(pool: pg.Pool, n: number): Promise<pg.PoolClient[]> {
  const settled = await Promise.allSettled(Array.from({ length: n }, () => pool.connect()));
  const clients = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    for (const c of clients) c.release();
    throw failed.reason;
  }
  return clients;
}

export interface PostgresStoreOptions {
  /** Pool size per instance (default 10). */
  maxConnections?: number;
}

/** The connection, schema, transactions and audit chain that every domain of the store shares. */
export class PgDb {
  readonly pool: pg.Pool;

  readonly q: PgQuery;

  private closed = false;

  private constructor(
    readonly url: string,
    opts: PostgresStoreOptions,
  ) {
    this.pool = new pg.Pool({
      connectionString: url,
      max: opts.maxConnections ?? 10,
      types: TYPES,
      // A database that stops answering (paused, partitioned, overloaded) fails requests with
      // STORE_UNAVAILABLE after these bounds instead of holding them forever. The URL's
      // `query_timeout` (ms) overrides the query bound; `connect_timeout` (s) the connect bound.
      connectionTimeoutMillis: connectTimeoutMs(url),
      // The warm connections stay open while idle (pg-pool closes idle ones above `min` after
      // 10 s): a connect after a quiet spell does not wait for the server to start a backend.
      min: Math.min(PG_WARM_CONNECTIONS, opts.maxConnections ?? 10),
      query_timeout: PG_QUERY_TIMEOUT_MS,
      keepAlive: true,
    });
    // An idle client losing its server connection must not crash the process; the pool replaces it.
    this.pool.on('error', () => {});
    // Nor may a checked-out one (a write transaction between two statements when the server
    // restarts or its backend is terminated): the pool listens only to idle clients, and an
    // unheard 'error' event kills the process. The failure still reaches the caller, as the
    // next statement on that client rejecting, and the client is then released as broken.
    this.pool.on('connect', (client) => client.on('error', () => {}));
    this.q = new PgQuery(this.pool);
  }

  /** Connect and bring the schema up to date (safe when several instances start at once). */
  static async open(url: string, opts: PostgresStoreOptions = {}): Promise<PgDb> {
    const s = new PgDb(url, opts);
    try {
      // The warm connections open at once (the server starts a backend for each, which is most
      // of a connection's cost): the first checks the schema, and the requests that follow the
      // start (readiness, the schedulers' first reads) find an idle one instead of each waiting
      // for a backend to start.
      const clients = await connectAll(s.pool, Math.min(PG_WARM_CONNECTIONS, s.pool.options.max));
      try {
        await s.migrate(clients[0] as pg.PoolClient);
      } finally {
        for (const c of clients) c.release();
      }
    } catch (err) {
      await s.pool.end();
      throw err;
    }
    return s;
  }

  /**
   * Bring the schema up to date. A database already at this version answers that in one
   * statement, without the lock: versions are recorded in the transaction of their migration,
   * so a committed latest version means nothing is left to run (and a migration still running
   * elsewhere can only be one this build does not know, which the version check refuses once it
   * commits). Otherwise under the migration lock, so instances starting at once migrate once.
   */
  private async migrate(c: pg.PoolClient): Promise<void> {
    const current = await appliedVersion(c);
    if (current !== null) {
      refuseNewer(current);
      if (current === POSTGRES_MIGRATIONS.length) return;
    }
    // Session-level lock: a second instance waits here until the first has finished, then
    // finds nothing left to run.
    await c.query('SELECT pg_advisory_lock($1, $2)', [...PG_LOCK.migrate]);
    try {
      await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)');
      const locked = (await appliedVersion(c)) ?? 0;
      refuseNewer(locked);
      for (let i = locked; i < POSTGRES_MIGRATIONS.length; i++) {
        await c.query('BEGIN');
        try {
          await c.query(POSTGRES_MIGRATIONS[i] as string);
          await c.query('INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)', [i + 1, Date.now()]);
          await c.query('COMMIT');
        } catch (err) {
          await c.query('ROLLBACK');
          throw err;
        }
      }
    } finally {
      await c.query('SELECT pg_advisory_unlock($1, $2)', [...PG_LOCK.migrate]);
    }
  }

  async schemaVersion(): Promise<number> {
    const r = await this.q.one<{ v: number }>('SELECT COALESCE(MAX(version), 0)::int AS v FROM schema_migrations');
    return r?.v ?? 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  /**
   * One write transaction, serialized with every other writer of this database. BEGIN, the
   * write lock and the read of the audit log's head travel as one simple query: one round trip
   * instead of three on every trust-changing write (an approval and the admission it unblocks
   * are two of them, in sequence). The statements still run in order, so the head is read under
   * the lock, after every earlier writer committed.
   */
  async write<T>(fn: (tx: PgQuery) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    let broken = false;
    try {
      try {
        const [, , head] = (await c.query(BEGIN_WRITE)) as unknown as pg.QueryResult[];
        const tx = new PgQuery(c);
        const last = head?.rows[0] as AuditRow | undefined;
        tx.auditHead = last ? toAudit(last) : null;
        const out = await fn(tx);
        await c.query('COMMIT');
        if (tx.auditAppended) for (const l of this.auditListeners) l();
        return out;
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw err;
      }
    } finally {
      c.release(broken);
    }
  }

  private readonly auditListeners: Array<() => void> = [];

  onAuditAppended(listener: () => void): void {
    this.auditListeners.push(listener);
  }

  async appendAuditTx(tx: PgQuery, input: AuditInput): Promise<AuditEntry> {
    tx.auditAppended = true;
    let head = tx.auditHead;
    if (head === undefined) {
      const last = await tx.one<AuditRow>(AUDIT_HEAD_SQL);
      head = last ? toAudit(last) : null;
    }
    const e = chainAudit(head ?? undefined, input);
    await tx.run('INSERT INTO audit (seq, at_ms, actor, action, subject, data_json, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)', [
      e.seq,
      e.atMs,
      e.actor,
      e.action,
      e.subject ?? null,
      e.data === undefined ? null : JSON.stringify(e.data),
      e.prevHash,
      e.hash,
    ]);
    tx.auditHead = e;
    return e;
  }
}
