/**
 * PostgreSQL store: several gateway instances share one database. Same contract as SQLite
 * (test/store-contract.ts), same columns (so `clawgate migrate --to postgres` copies rows 1:1).
 *
 * Concurrency: every trust-changing action appends to ONE hash-chained audit log, so writers are
 * inherently serial (SQLite gets this from its single writer). Each write transaction therefore
 * starts by taking a transaction-scoped advisory lock; reads never take it. Migrations take a
 * session-level advisory lock of their own, so instances starting at once migrate exactly once.
 *
 * Adding a domain (nodes, automations): append a migration to POSTGRES_MIGRATIONS and a block of
 * methods that call `this.read(...)` or `this.write(tx => ...)` with the same SQL as SQLite,
 * `?` placeholders written as `$n`.
 */
import pg from 'pg';
import type { Role } from '../protocol/frames.js';
import { type BulkDevicesInput, type BulkDevicesResult, bulkAudit, bulkInsertPostgres } from './bulk-devices.js';
import { type ExistingDevice, otherDeviceCount, planDeviceImport } from './import-shared.js';
import { mergeNodeSurfaceRequest } from './nodes-shared.js';
import { SIGN_IN_LINK_META_PREFIX, signInLinkPrunable } from './retention-shared.js';
import { checkRedemption, failureBurns, redeemedGrantScopes, redeemedRoles } from './setup-shared.js';
import {
  type AuditRow,
  applyAttempt,
  approvedGrant,
  CHAT_PAGE_DEFAULT,
  type ChannelRow,
  type ChatMessageRow,
  type ChatSessionRow,
  chainAudit,
  channelNameTaken,
  channelValues,
  chatMessageValues,
  type DeviceRow,
  type GrantRow,
  grantAfterExpiry,
  mergePairingRequest,
  type SetupRow,
  type TokenRow,
  toAudit,
  toChannel,
  toChatMessage,
  toChatSession,
  toDevice,
  toGrant,
  toSetup,
  toToken,
} from './shared.js';
import type {
  AppendMessageResult,
  ApproveInput,
  AuditEntry,
  AuditInput,
  ChatSession,
  CronJob,
  CronJobPatch,
  CronRun,
  Delivery,
  DeliveryAttempt,
  DeliveryStatus,
  GrantExpiry,
  GrantRecord,
  ImportDevicesInput,
  ImportDevicesResult,
  NewChannel,
  NewChatMessage,
  NewChatSession,
  NewCronJob,
  NewDelivery,
  NewSetupCode,
  NewToken,
  NodeSurfaceRecord,
  NodeSurfaceRequest,
  PairingRequest,
  PruneCounts,
  RedeemSetupInput,
  RedeemSetupResult,
  RetentionCutoffs,
  SetupCodeRecord,
  Store,
  UpsertNodeSurfaceInput,
  UpsertRequestInput,
  UpsertRequestResult,
  WebhookChannel,
} from './types.js';

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

/** Default bound on one query's answer (client side); long enough for a busy write lock. */
export const PG_QUERY_TIMEOUT_MS = 15_000;
/** Default bound on opening a connection or waiting for a free one in the pool. */
export const PG_CONNECT_TIMEOUT_MS = 5_000;

function connectTimeoutMs(url: string): number {
  try {
    const s = Number(new URL(url).searchParams.get('connect_timeout'));
    if (Number.isFinite(s) && s > 0) return s * 1000;
  } catch {
    // not a URL the WHATWG parser takes (node-postgres still may): use the default
  }
  return PG_CONNECT_TIMEOUT_MS;
}

export interface PostgresStoreOptions {
  /** Pool size per instance (default 10). */
  maxConnections?: number;
}

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly pool: pg.Pool;
  private readonly q: PgQuery;
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
  static async open(url: string, opts: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const s = new PostgresStore(url, opts);
    try {
      await s.migrate();
    } catch (err) {
      await s.pool.end();
      throw err;
    }
    return s;
  }

  private async migrate(): Promise<void> {
    const c = await this.pool.connect();
    try {
      // Session-level lock: a second instance waits here until the first has finished, then
      // finds nothing left to run.
      await c.query('SELECT pg_advisory_lock($1, $2)', [...PG_LOCK.migrate]);
      try {
        await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms BIGINT NOT NULL)');
        const r = await c.query('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations');
        const current = Number(r.rows[0].v);
        if (current > POSTGRES_MIGRATIONS.length) {
          throw new Error(`state database is at schema ${current}, newer than this clawgate (${POSTGRES_MIGRATIONS.length}); upgrade clawgate`);
        }
        for (let i = current; i < POSTGRES_MIGRATIONS.length; i++) {
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
    } finally {
      c.release();
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

  /** One write transaction, serialized with every other writer of this database. */
  async write<T>(fn: (tx: PgQuery) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    let broken = false;
    try {
      await c.query('BEGIN');
      try {
        await c.query('SELECT pg_advisory_xact_lock($1, $2)', [...PG_LOCK.write]);
        const tx = new PgQuery(c);
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

  private async appendAuditTx(tx: PgQuery, input: AuditInput): Promise<AuditEntry> {
    tx.auditAppended = true;
    const last = await tx.one<AuditRow>('SELECT * FROM audit ORDER BY seq DESC LIMIT 1');
    const e = chainAudit(last ? toAudit(last) : undefined, input);
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
    return e;
  }

  async getMeta(key: string) {
    return (await this.q.one<{ value: string }>('SELECT value FROM meta WHERE key = $1', [key]))?.value ?? null;
  }
  async setMeta(key: string, value: string) {
    await this.q.run('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value', [key, value]);
  }
  async setMetaIf(key: string, expected: string | null, value: string) {
    const n =
      expected === null
        ? await this.q.run('INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value])
        : await this.q.run('UPDATE meta SET value = $1 WHERE key = $2 AND value = $3', [value, key, expected]);
    return n === 1;
  }

  async getDevice(deviceId: string) {
    const r = await this.q.one<DeviceRow>('SELECT * FROM devices WHERE device_id = $1', [deviceId]);
    return r ? toDevice(r) : null;
  }
  async listDevices() {
    return (await this.q.all<DeviceRow>('SELECT * FROM devices ORDER BY created_at_ms, ord')).map(toDevice);
  }
  async listGrants(deviceId?: string) {
    const rows = deviceId
      ? await this.q.all<GrantRow>('SELECT * FROM grants WHERE device_id = $1 ORDER BY ord', [deviceId])
      : await this.q.all<GrantRow>('SELECT * FROM grants ORDER BY ord');
    return rows.map(toGrant);
  }
  async getGrant(deviceId: string, role: Role) {
    const r = await this.q.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
    return r ? toGrant(r) : null;
  }
  async getToken(tokenId: string) {
    const r = await this.q.one<TokenRow>('SELECT * FROM tokens WHERE token_id = $1', [tokenId]);
    return r ? toToken(r) : null;
  }
  async listTokens(deviceId?: string) {
    const rows = deviceId
      ? await this.q.all<TokenRow>('SELECT * FROM tokens WHERE device_id = $1 ORDER BY ord', [deviceId])
      : await this.q.all<TokenRow>('SELECT * FROM tokens ORDER BY ord');
    return rows.map(toToken);
  }

  private liveTokenTx(tx: PgQuery, deviceId: string, role: Role) {
    return tx.one<TokenRow>('SELECT * FROM tokens WHERE device_id = $1 AND role = $2 AND revoked_at_ms IS NULL', [deviceId, role]);
  }
  private async putTokenTx(tx: PgQuery, deviceId: string, role: Role, token: NewToken, atMs: number, createdAtMs?: number) {
    await tx.run('DELETE FROM tokens WHERE device_id = $1 AND role = $2', [deviceId, role]);
    await tx.run('INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms) VALUES ($1,$2,$3,$4,$5,$6)', [
      token.tokenId,
      deviceId,
      role,
      token.secretHash,
      createdAtMs ?? atMs,
      createdAtMs === undefined ? null : atMs,
    ]);
  }
  private async upsertDeviceTx(tx: PgQuery, device: ApproveInput['device'], atMs: number) {
    await tx.run(
      `INSERT INTO devices (device_id, public_key, meta_json, created_at_ms, last_seen_at_ms, last_seen_address) VALUES ($1,$2,$3,$4,$5,$6)
       ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key, meta_json = excluded.meta_json,
         last_seen_at_ms = excluded.last_seen_at_ms, last_seen_address = COALESCE(excluded.last_seen_address, devices.last_seen_address)`,
      [device.deviceId, device.publicKey, JSON.stringify(device.meta), atMs, atMs, device.address ?? null],
    );
  }
  private async putGrantTx(tx: PgQuery, g: GrantRecord) {
    await tx.run(
      `INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via, approved_by, expires_at_ms, scopes_after_expiry_json)
       VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
       ON CONFLICT (device_id, role) DO UPDATE SET scopes_json = excluded.scopes_json, epoch = excluded.epoch,
         approved_at_ms = excluded.approved_at_ms, approved_via = excluded.approved_via, approved_by = excluded.approved_by,
         expires_at_ms = excluded.expires_at_ms, scopes_after_expiry_json = excluded.scopes_after_expiry_json`,
      [
        g.deviceId,
        g.role,
        JSON.stringify(g.scopes),
        g.epoch,
        g.approvedAtMs,
        g.approvedVia,
        g.approvedBy ?? null,
        g.expiresAtMs ?? null,
        g.expiresAtMs != null ? JSON.stringify(g.scopesAfterExpiry ?? []) : null,
      ],
    );
  }

  async approve(input: ApproveInput): Promise<GrantRecord> {
    return this.write(async (tx) => {
      const { device, role, atMs } = input;
      await this.upsertDeviceTx(tx, device, atMs);
      const prev = await tx.one<{ epoch: number }>('SELECT epoch FROM grants WHERE device_id = $1 AND role = $2', [device.deviceId, role]);
      const grant = approvedGrant(input, prev?.epoch);
      await this.putGrantTx(tx, grant);
      if (input.token) await this.putTokenTx(tx, device.deviceId, role, input.token, atMs, (await this.liveTokenTx(tx, device.deviceId, role))?.created_at_ms);
      if (input.requestId) await tx.run('DELETE FROM pairing_requests WHERE request_id = $1', [input.requestId]);
      await this.appendAuditTx(tx, input.audit);
      return grant;
    });
  }

  async upsertPairingRequest(input: UpsertRequestInput): Promise<UpsertRequestResult> {
    return this.write(async (tx) => {
      const row = await tx.one<{ body_json: string }>('SELECT body_json FROM pairing_requests WHERE device_id = $1 AND role = $2', [
        input.deviceId,
        input.role,
      ]);
      const result = mergePairingRequest(row ? (JSON.parse(row.body_json) as PairingRequest) : null, input);
      const r = result.request;
      await tx.run(
        `INSERT INTO pairing_requests (request_id, device_id, role, body_json, created_at_ms) VALUES ($1,$2,$3,$4,$5)
         ON CONFLICT (request_id) DO UPDATE SET body_json = excluded.body_json`,
        [r.requestId, r.deviceId, r.role, JSON.stringify(r), r.createdAtMs],
      );
      if (result.created || result.widened) await this.appendAuditTx(tx, input.audit);
      return result;
    });
  }
  async getPairingRequest(requestId: string) {
    const r = await this.q.one<{ body_json: string }>('SELECT body_json FROM pairing_requests WHERE request_id = $1', [requestId]);
    return r ? (JSON.parse(r.body_json) as PairingRequest) : null;
  }
  async listPairingRequests(deviceId?: string) {
    const rows = deviceId
      ? await this.q.all<{ body_json: string }>('SELECT body_json FROM pairing_requests WHERE device_id = $1 ORDER BY created_at_ms, ord', [deviceId])
      : await this.q.all<{ body_json: string }>('SELECT body_json FROM pairing_requests ORDER BY created_at_ms, ord');
    return rows.map((r) => JSON.parse(r.body_json) as PairingRequest);
  }
  async deletePairingRequest(requestId: string, audit: AuditInput) {
    return this.write(async (tx) => {
      const n = await tx.run('DELETE FROM pairing_requests WHERE request_id = $1', [requestId]);
      if (n > 0) await this.appendAuditTx(tx, audit);
      return n > 0;
    });
  }

  async rotateToken(deviceId: string, role: Role, token: NewToken | null, scopes: string[] | null, atMs: number, audit: AuditInput) {
    return this.write(async (tx) => {
      const g = await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
      if (!g) return null;
      const created = (await this.liveTokenTx(tx, deviceId, role))?.created_at_ms ?? atMs;
      const next: GrantRecord = { ...toGrant(g), epoch: g.epoch + 1, scopes: scopes ? [...scopes] : JSON.parse(g.scopes_json) };
      await tx.run('UPDATE grants SET epoch = $1, scopes_json = $2 WHERE device_id = $3 AND role = $4', [
        next.epoch,
        JSON.stringify(next.scopes),
        deviceId,
        role,
      ]);
      if (token) await this.putTokenTx(tx, deviceId, role, token, atMs, created);
      else await tx.run('DELETE FROM tokens WHERE device_id = $1 AND role = $2', [deviceId, role]);
      await this.appendAuditTx(tx, audit);
      return next;
    });
  }
  // --- token rotation pushed to live sessions (issues 5/9) ---
  async issueTokenIfAbsent(deviceId: string, role: Role, token: NewToken, atMs: number, audit: AuditInput) {
    return this.write(async (tx) => {
      // Writes hold the store's write lock, so the check and the insert see no concurrent issuance.
      const g = await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
      if (!g || (await this.liveTokenTx(tx, deviceId, role))) return null;
      await this.putTokenTx(tx, deviceId, role, token, atMs);
      await this.appendAuditTx(tx, audit);
      return toGrant(g);
    });
  }
  async revokeToken(deviceId: string, role: Role, atMs: number, audit: AuditInput) {
    return this.write(async (tx) => {
      const t = await this.liveTokenTx(tx, deviceId, role);
      const n = await tx.run('DELETE FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
      if (n === 0) return null;
      if (t) await tx.run('UPDATE tokens SET revoked_at_ms = $1 WHERE token_id = $2', [atMs, t.token_id]);
      await this.appendAuditTx(tx, audit);
      return t ? toToken({ ...t, revoked_at_ms: atMs }) : null;
    });
  }
  async expireGrant(deviceId: string, role: Role, atMs: number, audit: AuditInput): Promise<GrantExpiry | null> {
    return this.write(async (tx) => {
      const row = await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
      const g = row ? toGrant(row) : null;
      // Every instance's scheduler may try: the write lock and this check let exactly one succeed.
      if (!g || g.expiresAtMs == null || g.expiresAtMs > atMs) return null;
      const next = grantAfterExpiry(g);
      if (next) {
        await tx.run(
          'UPDATE grants SET scopes_json = $1, epoch = $2, expires_at_ms = NULL, scopes_after_expiry_json = NULL WHERE device_id = $3 AND role = $4',
          [JSON.stringify(next.scopes), next.epoch, deviceId, role],
        );
      } else {
        const t = await this.liveTokenTx(tx, deviceId, role);
        await tx.run('DELETE FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
        if (t) await tx.run('UPDATE tokens SET revoked_at_ms = $1 WHERE token_id = $2', [atMs, t.token_id]);
      }
      await this.appendAuditTx(tx, audit);
      return next ? { outcome: 'narrowed' as const, grant: next } : { outcome: 'removed' as const, grant: g };
    });
  }
  async extendGrant(deviceId: string, role: Role, expiresAtMs: number, audit: AuditInput) {
    return this.write(async (tx) => {
      const n = await tx.run('UPDATE grants SET expires_at_ms = $1 WHERE device_id = $2 AND role = $3 AND expires_at_ms IS NOT NULL', [
        expiresAtMs,
        deviceId,
        role,
      ]);
      if (n === 0) return null;
      await this.appendAuditTx(tx, audit);
      return toGrant((await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role])) as GrantRow);
    });
  }
  async removeRole(deviceId: string, role: Role, audit: AuditInput) {
    return this.write(async (tx) => {
      const n = await tx.run('DELETE FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
      if (n === 0) return false;
      await tx.run('DELETE FROM tokens WHERE device_id = $1 AND role = $2', [deviceId, role]);
      await tx.run('DELETE FROM pairing_requests WHERE device_id = $1 AND role = $2', [deviceId, role]);
      const left = await tx.one<{ n: number }>('SELECT COUNT(*)::int AS n FROM grants WHERE device_id = $1', [deviceId]);
      if (left?.n === 0) await tx.run('DELETE FROM devices WHERE device_id = $1', [deviceId]);
      await this.appendAuditTx(tx, audit);
      return true;
    });
  }
  async removeDevice(deviceId: string, audit: AuditInput) {
    return this.write(async (tx) => {
      const a = await tx.run('DELETE FROM devices WHERE device_id = $1', [deviceId]);
      const b = await tx.run('DELETE FROM pairing_requests WHERE device_id = $1', [deviceId]);
      if (a + b === 0) return false;
      await this.appendAuditTx(tx, audit);
      return true;
    });
  }
  async renameDevice(deviceId: string, label: string, audit: AuditInput) {
    return this.write(async (tx) => {
      const n = await tx.run('UPDATE devices SET label = $1 WHERE device_id = $2', [label, deviceId]);
      if (n > 0) await this.appendAuditTx(tx, audit);
      return n > 0;
    });
  }
  async recordSeen(entries: Array<{ deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>) {
    if (entries.length === 0) return;
    // Best-effort metadata with no audit entry: it does not take the writers' lock.
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      for (const e of entries) {
        await c.query('UPDATE devices SET last_seen_at_ms = $1, last_seen_address = $2 WHERE device_id = $3', [e.atMs, e.address, e.deviceId]);
        if (e.tokenId) await c.query('UPDATE tokens SET last_used_at_ms = $1 WHERE token_id = $2', [e.atMs, e.tokenId]);
      }
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }

  // --- setup codes ---------------------------------------------------------------------------

  private async setupTx(tx: PgQuery, setupId: string, forUpdate = false): Promise<SetupCodeRecord | null> {
    const r = await tx.one<SetupRow>(`SELECT * FROM setup_codes WHERE setup_id = $1${forUpdate ? ' FOR UPDATE' : ''}`, [setupId]);
    return r ? toSetup(r) : null;
  }

  async createSetupCode(input: NewSetupCode): Promise<SetupCodeRecord> {
    return this.write(async (tx) => {
      await tx.run(
        `INSERT INTO setup_codes (setup_id, secret_hash, profile_json, label, url, created_at_ms, expires_at_ms, created_by)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
        [input.setupId, input.secretHash, JSON.stringify(input.profile), input.label ?? null, input.url, input.createdAtMs, input.expiresAtMs, input.createdBy],
      );
      await this.appendAuditTx(tx, input.audit);
      return (await this.setupTx(tx, input.setupId)) as SetupCodeRecord;
    });
  }
  async getSetupCode(setupId: string) {
    return this.setupTx(this.q, setupId);
  }
  async listSetupCodes() {
    return (await this.q.all<SetupRow>('SELECT * FROM setup_codes ORDER BY created_at_ms, ord')).map(toSetup);
  }
  async redeemSetupCode(input: RedeemSetupInput): Promise<RedeemSetupResult> {
    return this.write(async (tx): Promise<RedeemSetupResult> => {
      const { device, atMs } = input;
      // The row lock makes the code's state the one every other redemption sees after us, even
      // for a writer that (in some later version) skipped the writers' lock.
      const code = await this.setupTx(tx, input.setupId, true);
      const epochs0 = new Map<Role, number>();
      for (const g of await tx.all<GrantRow>('SELECT * FROM grants WHERE device_id = $1', [device.deviceId])) epochs0.set(g.role, g.epoch);
      const check = checkRedemption(code, device, atMs, input.graceMs, (r) => epochs0.get(r));
      if (!check.ok) return check;
      const c = code as SetupCodeRecord;
      const roles = redeemedRoles(c, input.tokens);
      const resolved: string[] = [];
      if (check.repeat) {
        await tx.run('UPDATE setup_codes SET redeem_count = redeem_count + 1 WHERE setup_id = $1', [c.setupId]);
      } else {
        await this.upsertDeviceTx(tx, device, atMs);
        const epochs: Partial<Record<Role, number>> = {};
        for (const r of roles) {
          const prev = await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [device.deviceId, r]);
          const scopes = redeemedGrantScopes(c.profile, r, prev ? (JSON.parse(prev.scopes_json) as string[]) : undefined);
          const epoch = (prev?.epoch ?? 0) + 1;
          await this.putGrantTx(tx, { deviceId: device.deviceId, role: r, scopes, epoch, approvedAtMs: atMs, approvedVia: 'bootstrap' });
          epochs[r] = epoch;
          const reqs = await tx.all<{ request_id: string }>('DELETE FROM pairing_requests WHERE device_id = $1 AND role = $2 RETURNING request_id', [
            device.deviceId,
            r,
          ]);
          for (const q of reqs) resolved.push(q.request_id);
        }
        await tx.run(
          `UPDATE setup_codes SET redeemed_at_ms = $1, redeem_count = 1, device_id = $2, public_key = $3, device_name = $4,
             redeemed_role = $5, grant_epochs_json = $6 WHERE setup_id = $7`,
          [atMs, device.deviceId, device.publicKey, device.meta.displayName ?? null, input.role, JSON.stringify(epochs), c.setupId],
        );
      }
      for (const r of roles) await this.putTokenTx(tx, device.deviceId, r, input.tokens[r] as NewToken, atMs);
      await this.appendAuditTx(tx, check.repeat ? input.repeatAudit : input.audit);
      const grants: GrantRecord[] = [];
      for (const r of roles)
        grants.push(toGrant((await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [device.deviceId, r])) as GrantRow));
      return { ok: true, repeat: check.repeat, code: (await this.setupTx(tx, c.setupId)) as SetupCodeRecord, grants, resolvedRequestIds: resolved };
    });
  }
  async recordSetupFailure(setupId: string, atMs: number, budget: number, burnAudit: AuditInput) {
    return this.write(async (tx) => {
      const c = await this.setupTx(tx, setupId, true);
      if (!c) return null;
      const burns = failureBurns(c, budget);
      await tx.run('UPDATE setup_codes SET failures = failures + 1, burned_at_ms = COALESCE(burned_at_ms, $1) WHERE setup_id = $2', [
        burns ? atMs : null,
        setupId,
      ]);
      if (burns) await this.appendAuditTx(tx, burnAudit);
      return { failures: c.failures + 1, burned: burns };
    });
  }
  async revokeSetupCode(setupId: string, atMs: number, audit: AuditInput) {
    return this.write(async (tx) => {
      const c = await this.setupTx(tx, setupId, true);
      if (!c) return null;
      if (c.revokedAtMs !== undefined || c.burnedAtMs !== undefined) return { code: c, changed: false };
      await tx.run('UPDATE setup_codes SET revoked_at_ms = $1 WHERE setup_id = $2', [atMs, setupId]);
      await this.appendAuditTx(tx, audit);
      return { code: (await this.setupTx(tx, setupId)) as SetupCodeRecord, changed: true };
    });
  }

  // --- nodes: command surfaces -----------------------------------------------------
  async getNodeSurface(deviceId: string) {
    const r = await this.q.one<{ body_json: string }>('SELECT body_json FROM node_surfaces WHERE device_id = $1', [deviceId]);
    return r ? (JSON.parse(r.body_json) as NodeSurfaceRecord) : null;
  }
  async listNodeSurfaces() {
    return (await this.q.all<{ body_json: string }>('SELECT body_json FROM node_surfaces ORDER BY approved_at_ms, ord')).map(
      (r) => JSON.parse(r.body_json) as NodeSurfaceRecord,
    );
  }
  private async nodeRequestTx(tx: PgQuery, where: 'request_id' | 'device_id', key: string): Promise<NodeSurfaceRequest | undefined> {
    const r = await tx.one<{ body_json: string }>(`SELECT body_json FROM node_surface_requests WHERE ${where} = $1`, [key]);
    return r ? (JSON.parse(r.body_json) as NodeSurfaceRequest) : undefined;
  }
  async upsertNodeSurfaceRequest(input: UpsertNodeSurfaceInput) {
    return this.write(async (tx) => {
      const res = mergeNodeSurfaceRequest(await this.nodeRequestTx(tx, 'device_id', input.deviceId), input);
      await tx.run('DELETE FROM node_surface_requests WHERE device_id = $1', [input.deviceId]);
      await tx.run('INSERT INTO node_surface_requests (request_id, device_id, body_json, created_at_ms) VALUES ($1,$2,$3,$4)', [
        res.request.requestId,
        input.deviceId,
        JSON.stringify(res.request),
        res.request.createdAtMs,
      ]);
      if (res.created) await this.appendAuditTx(tx, input.audit);
      return res;
    });
  }
  async getNodeSurfaceRequest(requestId: string) {
    return (await this.nodeRequestTx(this.q, 'request_id', requestId)) ?? null;
  }
  async listNodeSurfaceRequests() {
    return (await this.q.all<{ body_json: string }>('SELECT body_json FROM node_surface_requests ORDER BY created_at_ms, ord')).map(
      (r) => JSON.parse(r.body_json) as NodeSurfaceRequest,
    );
  }
  async approveNodeSurface(requestId: string, atMs: number, approvedBy: string, audit: AuditInput) {
    return this.write(async (tx) => {
      const r = await this.nodeRequestTx(tx, 'request_id', requestId);
      if (!r) return null;
      const surface: NodeSurfaceRecord = { deviceId: r.deviceId, caps: r.caps, commands: r.commands, requestId, approvedAtMs: atMs, approvedBy };
      await tx.run('DELETE FROM node_surface_requests WHERE request_id = $1', [requestId]);
      await tx.run(
        'INSERT INTO node_surfaces (device_id, body_json, approved_at_ms) VALUES ($1,$2,$3) ON CONFLICT (device_id) DO UPDATE SET body_json = excluded.body_json, approved_at_ms = excluded.approved_at_ms',
        [r.deviceId, JSON.stringify(surface), atMs],
      );
      await this.appendAuditTx(tx, audit);
      return surface;
    });
  }
  async deleteNodeSurfaceRequest(requestId: string, audit: AuditInput) {
    return this.write(async (tx) => {
      const n = await tx.run('DELETE FROM node_surface_requests WHERE request_id = $1', [requestId]);
      if (n > 0) await this.appendAuditTx(tx, audit);
      return n > 0;
    });
  }

  // --- automations -----------------------------------------------------------------

  private async chatSessionTx(tx: PgQuery, idOrKey: string): Promise<ChatSession | null> {
    const r = await tx.one<ChatSessionRow>('SELECT * FROM chat_sessions WHERE session_id = $1 OR key = $1 ORDER BY (session_id = $1) DESC LIMIT 1', [idOrKey]);
    return r ? toChatSession(r) : null;
  }
  async createChatSession(input: NewChatSession) {
    return this.write(async (tx) => {
      if (await tx.one('SELECT 1 FROM chat_sessions WHERE key = $1', [input.key])) return { ok: false as const, reason: 'key-taken' as const };
      await tx.run(
        `INSERT INTO chat_sessions (session_id, key, label, parent_id, created_by, created_at_ms, updated_at_ms, message_count)
         VALUES ($1,$2,$3,$4,$5,$6,$7,0)`,
        [input.sessionId, input.key, input.label ?? null, input.parentId ?? null, input.createdBy, input.createdAtMs, input.createdAtMs],
      );
      await this.appendAuditTx(tx, input.audit);
      return { ok: true as const, session: (await this.chatSessionTx(tx, input.sessionId)) as ChatSession };
    });
  }
  async getChatSession(idOrKey: string) {
    return this.chatSessionTx(this.q, idOrKey);
  }
  async listChatSessions(opts: { parentId?: string; limit?: number } = {}) {
    const rows =
      opts.parentId === undefined
        ? await this.q.all<ChatSessionRow>('SELECT * FROM chat_sessions ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT $1', [opts.limit ?? null])
        : await this.q.all<ChatSessionRow>('SELECT * FROM chat_sessions WHERE parent_id = $1 ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT $2', [
            opts.parentId,
            opts.limit ?? null,
          ]);
    return rows.map(toChatSession);
  }
  async appendChatMessage(input: NewChatMessage): Promise<AppendMessageResult> {
    return this.write(async (tx): Promise<AppendMessageResult> => {
      const s = await tx.one<ChatSessionRow>('SELECT * FROM chat_sessions WHERE session_id = $1', [input.sessionId]);
      if (!s) return { ok: false, reason: 'unknown-session' };
      if (input.idempotencyKey !== undefined) {
        const prior = await tx.one<ChatMessageRow>('SELECT * FROM chat_messages WHERE session_id = $1 AND idempotency_key = $2', [
          input.sessionId,
          input.idempotencyKey,
        ]);
        if (prior) return { ok: true, message: toChatMessage(prior), duplicate: true };
      }
      const seq = s.message_count + 1;
      await tx.run(
        'INSERT INTO chat_messages (session_id, seq, message_id, author, text, idempotency_key, at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7)',
        chatMessageValues(input, seq),
      );
      await tx.run('UPDATE chat_sessions SET message_count = $1, updated_at_ms = GREATEST(updated_at_ms, $2) WHERE session_id = $3', [
        seq,
        input.atMs,
        input.sessionId,
      ]);
      await this.appendAuditTx(tx, input.audit);
      const { audit: _audit, ...rest } = input;
      return { ok: true, message: { ...rest, seq }, duplicate: false };
    });
  }
  async listChatMessages(sessionId: string, opts: { beforeSeq?: number; afterSeq?: number; limit?: number } = {}) {
    const limit = opts.limit ?? CHAT_PAGE_DEFAULT;
    if (opts.afterSeq !== undefined) {
      const rows = await this.q.all<ChatMessageRow>('SELECT * FROM chat_messages WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [
        sessionId,
        opts.afterSeq,
        limit,
      ]);
      return rows.map(toChatMessage);
    }
    const rows = await this.q.all<ChatMessageRow>('SELECT * FROM chat_messages WHERE session_id = $1 AND seq < $2::bigint ORDER BY seq DESC LIMIT $3', [
      sessionId,
      opts.beforeSeq ?? Number.MAX_SAFE_INTEGER,
      limit,
    ]);
    return rows.reverse().map(toChatMessage);
  }

  private async channelTx(tx: PgQuery, idOrName: string): Promise<WebhookChannel | null> {
    const r = await tx.one<ChannelRow>('SELECT * FROM channels WHERE channel_id = $1 OR name = $1 ORDER BY (channel_id = $1) DESC LIMIT 1', [idOrName]);
    return r ? toChannel(r) : null;
  }
  async putChannel(input: NewChannel) {
    return this.write(async (tx) => {
      const existing = await tx.one<ChannelRow>('SELECT * FROM channels WHERE name = $1', [input.name]);
      if (channelNameTaken(existing, input)) return { ok: false as const, reason: 'name-taken' as const };
      if (existing) {
        await tx.run('UPDATE channels SET url = $1, username = $2 WHERE channel_id = $3', [input.url, input.username ?? null, existing.channel_id]);
      } else {
        await tx.run(
          'INSERT INTO channels (channel_id, name, url, username, source, created_by, created_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7)',
          channelValues(input),
        );
      }
      await this.appendAuditTx(tx, input.audit);
      return { ok: true as const, channel: (await this.channelTx(tx, existing?.channel_id ?? input.channelId)) as WebhookChannel, created: !existing };
    });
  }
  async getChannel(idOrName: string) {
    return this.channelTx(this.q, idOrName);
  }
  async listChannels() {
    return (await this.q.all<ChannelRow>('SELECT * FROM channels ORDER BY name')).map(toChannel);
  }
  async removeChannel(idOrName: string, audit: AuditInput) {
    return this.write(async (tx) => {
      const c = await this.channelTx(tx, idOrName);
      if (!c) return false;
      await tx.run('DELETE FROM channels WHERE channel_id = $1', [c.channelId]);
      await this.appendAuditTx(tx, audit);
      return true;
    });
  }

  /** Write a delivery's state; a lease on it ends (its attempt is recorded). */
  private async putDeliveryTx(tx: PgQuery, d: Delivery): Promise<void> {
    await tx.run(
      `INSERT INTO deliveries (delivery_id, channel_id, idempotency_key, status, next_attempt_at_ms, body_json) VALUES ($1,$2,$3,$4,$5,$6)
       ON CONFLICT (delivery_id) DO UPDATE SET status = excluded.status, next_attempt_at_ms = excluded.next_attempt_at_ms,
         body_json = excluded.body_json, claimed_until_ms = NULL`,
      [d.deliveryId, d.channelId, d.idempotencyKey, d.status, d.nextAttemptAtMs, JSON.stringify(d)],
    );
  }
  private async deliveryTx(tx: PgQuery, deliveryId: string): Promise<Delivery | null> {
    const r = await tx.one<{ body_json: string }>('SELECT body_json FROM deliveries WHERE delivery_id = $1', [deliveryId]);
    return r ? (JSON.parse(r.body_json) as Delivery) : null;
  }
  async enqueueDelivery(input: NewDelivery) {
    return this.write(async (tx) => {
      const prior = await tx.one<{ delivery_id: string }>('SELECT delivery_id FROM deliveries WHERE channel_id = $1 AND idempotency_key = $2', [
        input.channelId,
        input.idempotencyKey,
      ]);
      if (prior) return { delivery: (await this.deliveryTx(tx, prior.delivery_id)) as Delivery, duplicate: true };
      const { audit, ...rest } = input;
      const d: Delivery = { ...rest, status: 'pending', attempts: 0, nextAttemptAtMs: input.createdAtMs };
      await this.putDeliveryTx(tx, d);
      await this.appendAuditTx(tx, audit);
      return { delivery: (await this.deliveryTx(tx, d.deliveryId)) as Delivery, duplicate: false };
    });
  }
  async getDelivery(deliveryId: string) {
    return this.deliveryTx(this.q, deliveryId);
  }
  async listDeliveries(opts: { status?: DeliveryStatus; channelId?: string; limit?: number } = {}) {
    const rows = await this.q.all<{ body_json: string }>(
      'SELECT body_json FROM deliveries WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR channel_id = $2) ORDER BY ord DESC LIMIT $3',
      [opts.status ?? null, opts.channelId ?? null, opts.limit ?? null],
    );
    return rows.map((r) => JSON.parse(r.body_json) as Delivery);
  }
  /**
   * Due deliveries, each handed out once: every instance runs a delivery worker, and a row
   * returned here is leased to the caller (SKIP LOCKED; the lease ends when the attempt is
   * recorded, or after DELIVERY_LEASE_MS if the worker died), so no two workers attempt the
   * same delivery at once.
   */
  async dueDeliveries(nowMs: number, limit: number) {
    const rows = await this.q.all<{ body_json: string }>(
      `UPDATE deliveries SET claimed_until_ms = $1::bigint + $3::bigint WHERE delivery_id IN (
         SELECT delivery_id FROM deliveries
         WHERE status = 'pending' AND next_attempt_at_ms <= $1::bigint AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1::bigint)
         ORDER BY next_attempt_at_ms, ord LIMIT $2 FOR UPDATE SKIP LOCKED)
       RETURNING body_json`,
      [nowMs, limit, DELIVERY_LEASE_MS],
    );
    return rows.map((r) => JSON.parse(r.body_json) as Delivery).sort((a, b) => a.nextAttemptAtMs - b.nextAttemptAtMs);
  }
  async nextDeliveryDueAtMs() {
    // A leased delivery is due again only when its lease ends (until then it is another worker's).
    const r = await this.q.one<{ due: number | null }>(
      "SELECT MIN(GREATEST(next_attempt_at_ms, COALESCE(claimed_until_ms, 0))) AS due FROM deliveries WHERE status = 'pending'",
    );
    return r?.due ?? null;
  }
  async recordDeliveryAttempt(a: DeliveryAttempt) {
    return this.write(async (tx) => {
      const d = await this.deliveryTx(tx, a.deliveryId);
      if (d?.status !== 'pending') return null;
      const next = applyAttempt(d, a);
      await this.putDeliveryTx(tx, next);
      if (a.outcome === 'dead' && a.deadAudit) await this.appendAuditTx(tx, a.deadAudit);
      return this.deliveryTx(tx, a.deliveryId);
    });
  }

  private async cronJobTx(tx: PgQuery, jobId: string): Promise<CronJob | null> {
    const r = await tx.one<{ body_json: string }>('SELECT body_json FROM cron_jobs WHERE job_id = $1', [jobId]);
    return r ? (JSON.parse(r.body_json) as CronJob) : null;
  }
  private async putCronJobTx(tx: PgQuery, job: CronJob): Promise<void> {
    await tx.run(
      'INSERT INTO cron_jobs (job_id, created_at_ms, body_json) VALUES ($1,$2,$3) ON CONFLICT (job_id) DO UPDATE SET body_json = excluded.body_json',
      [job.jobId, job.createdAtMs, JSON.stringify(job)],
    );
  }
  async createCronJob(input: NewCronJob) {
    return this.write(async (tx) => {
      const { audit, ...rest } = input;
      await this.putCronJobTx(tx, { ...rest, updatedAtMs: input.createdAtMs });
      await this.appendAuditTx(tx, audit);
      return (await this.cronJobTx(tx, input.jobId)) as CronJob;
    });
  }
  async getCronJob(jobId: string) {
    return this.cronJobTx(this.q, jobId);
  }
  async listCronJobs() {
    return (await this.q.all<{ body_json: string }>('SELECT body_json FROM cron_jobs ORDER BY created_at_ms, ord')).map(
      (r) => JSON.parse(r.body_json) as CronJob,
    );
  }
  async updateCronJob(jobId: string, patch: CronJobPatch, atMs: number, audit: AuditInput) {
    return this.write(async (tx) => {
      const j = await this.cronJobTx(tx, jobId);
      if (!j) return null;
      await this.putCronJobTx(tx, { ...j, ...patch, updatedAtMs: atMs });
      await this.appendAuditTx(tx, audit);
      return this.cronJobTx(tx, jobId);
    });
  }
  async removeCronJob(jobId: string, audit: AuditInput) {
    return this.write(async (tx) => {
      const n = await tx.run('DELETE FROM cron_jobs WHERE job_id = $1', [jobId]);
      if (n > 0) await this.appendAuditTx(tx, audit);
      return n > 0;
    });
  }
  async recordCronRun(run: CronRun, nextRunAtMs: number | null) {
    return this.write(async (tx) => {
      const j = await this.cronJobTx(tx, run.jobId);
      if (!j) return null;
      await tx.run('INSERT INTO cron_runs (run_id, job_id, body_json) VALUES ($1,$2,$3)', [run.runId, run.jobId, JSON.stringify(run)]);
      await this.putCronJobTx(tx, { ...j, nextRunAtMs, lastRunAtMs: run.startedAtMs });
      return this.cronJobTx(tx, run.jobId);
    });
  }
  async listCronRuns(jobId: string, limit = 50) {
    const rows = await this.q.all<{ body_json: string }>('SELECT body_json FROM cron_runs WHERE job_id = $1 ORDER BY ord DESC LIMIT $2', [jobId, limit]);
    return rows.map((r) => JSON.parse(r.body_json) as CronRun);
  }

  async importDevicesBulk(input: BulkDevicesInput): Promise<BulkDevicesResult> {
    return this.write(async (tx) => {
      const out = await bulkInsertPostgres(tx, input);
      if (out.ok) await this.appendAuditTx(tx, bulkAudit(input));
      return out;
    });
  }

  async importDevices(input: ImportDevicesInput): Promise<ImportDevicesResult> {
    const run = async (tx: PgQuery): Promise<ImportDevicesResult> => {
      const existing = new Map<string, ExistingDevice>();
      for (const d of input.devices) {
        const dev = await tx.one<DeviceRow>('SELECT * FROM devices WHERE device_id = $1', [d.deviceId]);
        const surface = await tx.one<{ body_json: string }>('SELECT body_json FROM node_surfaces WHERE device_id = $1', [d.deviceId]);
        existing.set(d.deviceId, {
          device: dev ? toDevice(dev) : null,
          grants: (await tx.all<GrantRow>('SELECT * FROM grants WHERE device_id = $1', [d.deviceId])).map(toGrant),
          tokens: (await tx.all<TokenRow>('SELECT * FROM tokens WHERE device_id = $1', [d.deviceId])).map(toToken),
          surface: surface ? (JSON.parse(surface.body_json) as NodeSurfaceRecord) : null,
        });
      }
      const total = (await tx.one<{ n: number }>('SELECT COUNT(*)::int AS n FROM devices'))?.n ?? 0;
      const others = otherDeviceCount(total, existing, input);
      if (!input.merge && others > 0) return { ok: false, reason: 'not-empty', otherDevices: others };
      const plans = input.devices.map((d) => ({ d, plan: planDeviceImport(existing.get(d.deviceId) as ExistingDevice, d, input) }));
      if (input.dryRun) return { ok: true, devices: plans.map((p) => p.plan.report), applied: false };
      for (const { d, plan } of plans) {
        if (plan.newDevice) {
          await tx.run('INSERT INTO devices (device_id, public_key, meta_json, label, created_at_ms, last_seen_at_ms) VALUES ($1,$2,$3,$4,$5,$6)', [
            d.deviceId,
            d.publicKey,
            JSON.stringify(d.meta),
            d.label ?? null,
            d.createdAtMs,
            d.lastSeenAtMs ?? null,
          ]);
        }
        for (const g of plan.grants) await this.putGrantTx(tx, g);
        for (const t of plan.tokens) {
          await tx.run('DELETE FROM tokens WHERE device_id = $1 AND role = $2', [d.deviceId, t.role]);
          await tx.run(
            'INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7)',
            [t.tokenId, d.deviceId, t.role, t.secretHash, t.createdAtMs, t.rotatedAtMs ?? null, t.lastUsedAtMs ?? null],
          );
        }
        if (plan.surface) {
          await tx.run('INSERT INTO node_surfaces (device_id, body_json, approved_at_ms) VALUES ($1,$2,$3)', [
            d.deviceId,
            JSON.stringify(plan.surface),
            plan.surface.approvedAtMs,
          ]);
        }
        if (plan.audit) await this.appendAuditTx(tx, plan.audit);
      }
      return { ok: true, devices: plans.map((p) => p.plan.report), applied: true };
    };
    // A dry run reads inside the same serialized transaction as a real one, so both report alike.
    return this.write(run);
  }

  async appendAudit(input: AuditInput) {
    return this.write((tx) => this.appendAuditTx(tx, input));
  }
  async listAudit(opts: { afterSeq?: number; limit?: number } = {}) {
    const rows = await this.q.all<AuditRow>('SELECT * FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2', [opts.afterSeq ?? 0, opts.limit ?? null]);
    return rows.map(toAudit);
  }

  async pruneRetained(c: RetentionCutoffs): Promise<PruneCounts> {
    return this.write(async (tx) => {
      const out: PruneCounts = { deliveries: 0, cronRuns: 0, signInLinks: 0, setupCodes: 0 };
      if (c.deliveredBeforeMs !== null) {
        out.deliveries = await tx.run("DELETE FROM deliveries WHERE status = 'delivered' AND (body_json::jsonb->>'deliveredAtMs')::bigint < $1", [
          c.deliveredBeforeMs,
        ]);
      }
      if (c.cronRunsBeforeMs !== null) {
        out.cronRuns = await tx.run("DELETE FROM cron_runs WHERE (body_json::jsonb->>'finishedAtMs')::bigint < $1", [c.cronRunsBeforeMs]);
      }
      if (c.signInLinksBeforeMs !== null) {
        const rows = await tx.all<{ key: string; value: string }>('SELECT key, value FROM meta WHERE left(key, $1) = $2', [
          SIGN_IN_LINK_META_PREFIX.length,
          SIGN_IN_LINK_META_PREFIX,
        ]);
        for (const r of rows) {
          if (signInLinkPrunable(r.value, c.signInLinksBeforeMs)) out.signInLinks += await tx.run('DELETE FROM meta WHERE key = $1', [r.key]);
        }
      }
      if (c.setupCodesBeforeMs !== null) {
        out.setupCodes = await tx.run('DELETE FROM setup_codes WHERE expires_at_ms < $1', [c.setupCodesBeforeMs]);
      }
      return out;
    });
  }

  async pendingDeliveryCount(): Promise<number> {
    return (await this.q.one<{ n: number }>("SELECT COUNT(*)::int AS n FROM deliveries WHERE status = 'pending'"))?.n ?? 0;
  }
}
