/**
 * The shared core of the SQLite store: the connection (better-sqlite3, WAL), the schema and its
 * migrations, prepared statements, IMMEDIATE transactions and the audit chain. The domains
 * (one file each, next to this one) run their actions through it.
 */
import { closeSync, existsSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { AuditEntry, AuditInput } from '../../core/store.js';
import { type AuditRow, chainAudit, toAudit } from '../shared.js';

/** The searchable names of a device, its label and the name it presented (ASCII letters lowercased). */
export const SQLITE_DEVICE_LABEL = 'lower(label)';
export const SQLITE_DEVICE_DISPLAY_NAME = "lower(json_extract(meta_json, '$.displayName'))";

/** Numbered migrations; `user_version` records how many ran. Never edit a shipped one. */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE devices (
     device_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, meta_json TEXT NOT NULL,
     label TEXT, created_at_ms INTEGER NOT NULL, last_seen_at_ms INTEGER, last_seen_address TEXT);
   CREATE TABLE grants (
     device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE, role TEXT NOT NULL,
     scopes_json TEXT NOT NULL, epoch INTEGER NOT NULL, approved_at_ms INTEGER NOT NULL, approved_via TEXT NOT NULL,
     PRIMARY KEY (device_id, role));
   CREATE TABLE tokens (
     token_id TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
     role TEXT NOT NULL, secret_hash BLOB NOT NULL, created_at_ms INTEGER NOT NULL,
     rotated_at_ms INTEGER, revoked_at_ms INTEGER, last_used_at_ms INTEGER);
   CREATE INDEX tokens_device ON tokens(device_id, role);
   CREATE TABLE pairing_requests (
     request_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, role TEXT NOT NULL, body_json TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL, UNIQUE (device_id, role));
   CREATE TABLE audit (
     seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
     subject TEXT, data_json TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);`,
  // 2: setup codes. Not tied to devices: the outcome outlives a removed device.
  `CREATE TABLE setup_codes (
     setup_id TEXT PRIMARY KEY, secret_hash BLOB NOT NULL, profile_json TEXT NOT NULL, label TEXT, url TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL, created_by TEXT NOT NULL,
     failures INTEGER NOT NULL DEFAULT 0, burned_at_ms INTEGER, revoked_at_ms INTEGER,
     redeemed_at_ms INTEGER, redeem_count INTEGER NOT NULL DEFAULT 0, device_id TEXT, public_key TEXT,
     device_name TEXT, redeemed_role TEXT, grant_epochs_json TEXT);`,
  // 3: node command surfaces. They live with the node role: the trigger drops them
  // whenever a node grant row goes (revoke, role removal, device removal by cascade).
  `CREATE TABLE node_surfaces (
     device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
     body_json TEXT NOT NULL, approved_at_ms INTEGER NOT NULL);
   CREATE TABLE node_surface_requests (
     request_id TEXT PRIMARY KEY, device_id TEXT NOT NULL UNIQUE REFERENCES devices(device_id) ON DELETE CASCADE,
     body_json TEXT NOT NULL, created_at_ms INTEGER NOT NULL);
   CREATE TRIGGER node_grant_gone AFTER DELETE ON grants WHEN OLD.role = 'node' BEGIN
     DELETE FROM node_surfaces WHERE device_id = OLD.device_id;
     DELETE FROM node_surface_requests WHERE device_id = OLD.device_id;
   END;`,
  // 4: automations: chat sessions and messages, webhook channels, the delivery outbox, cron.
  `CREATE TABLE chat_sessions (
     session_id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, label TEXT, parent_id TEXT, created_by TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, message_count INTEGER NOT NULL DEFAULT 0);
   CREATE INDEX chat_sessions_parent ON chat_sessions(parent_id);
   CREATE TABLE chat_messages (
     session_id TEXT NOT NULL REFERENCES chat_sessions(session_id) ON DELETE CASCADE, seq INTEGER NOT NULL,
     message_id TEXT NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL, idempotency_key TEXT, at_ms INTEGER NOT NULL,
     PRIMARY KEY (session_id, seq), UNIQUE (session_id, idempotency_key));
   CREATE TABLE channels (
     channel_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, url TEXT NOT NULL, username TEXT, source TEXT NOT NULL,
     created_by TEXT NOT NULL, created_at_ms INTEGER NOT NULL);
   CREATE TABLE deliveries (
     delivery_id TEXT PRIMARY KEY, channel_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, status TEXT NOT NULL,
     next_attempt_at_ms INTEGER NOT NULL, body_json TEXT NOT NULL, UNIQUE (channel_id, idempotency_key));
   CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at_ms);
   CREATE TABLE cron_jobs (job_id TEXT PRIMARY KEY, created_at_ms INTEGER NOT NULL, body_json TEXT NOT NULL);
   CREATE TABLE cron_runs (
     run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES cron_jobs(job_id) ON DELETE CASCADE, body_json TEXT NOT NULL);
   CREATE INDEX cron_runs_job ON cron_runs(job_id);`,
  // 5: who approved a grant, and time-bound grants (what the role keeps after the expiry).
  `ALTER TABLE grants ADD COLUMN approved_by TEXT;
   ALTER TABLE grants ADD COLUMN expires_at_ms INTEGER;
   ALTER TABLE grants ADD COLUMN scopes_after_expiry_json TEXT;
   CREATE INDEX grants_expiry ON grants(expires_at_ms) WHERE expires_at_ms IS NOT NULL;`,
  // 6: device pages. Keyset order (creation time, id) and the name prefix search are served by
  // indexes, so a page costs the same on ten devices and on a million; so is the list of the
  // grants of one role (the nodes among a million operator devices).
  `CREATE INDEX devices_page ON devices(created_at_ms, device_id);
   CREATE INDEX devices_label ON devices(${SQLITE_DEVICE_LABEL});
   CREATE INDEX devices_display_name ON devices(${SQLITE_DEVICE_DISPLAY_NAME});
   CREATE INDEX grants_role ON grants(role, device_id);`,
];

/** JSON bodies drop undefined fields, so a record read back equals the one written. */
export const body = (v: unknown) => JSON.stringify(v);

/** The connection, schema, transactions and audit chain that every domain of the store shares. */
export class SqliteDb {
  readonly db: Database.Database;

  constructor(path: string) {
    // The database holds token hashes and the audit log: readable by the owner only.
    if (path !== ':memory:' && !existsSync(path)) closeSync(openSync(path, 'a', 0o600));
    this.db = new Database(path);
    try {
      this.db.pragma('journal_mode = WAL');
      // NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the last commit.
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('busy_timeout = 5000');
      this.migrate();
    } catch (err) {
      // A refused (e.g. newer-schema) database must not stay open behind the thrown error.
      this.db.close();
      throw err;
    }
  }

  private readonly statements = new Map<string, Database.Statement>();

  /** Prepared statements are compiled once and reused (preparing costs more than a point read). */
  stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > SQLITE_MIGRATIONS.length) {
      throw new Error(`state database is at schema ${current}, newer than this clawgate (${SQLITE_MIGRATIONS.length}); upgrade clawgate`);
    }
    if (current === SQLITE_MIGRATIONS.length) return;
    // The pending migrations run in one transaction (a new state dir runs all of them at its first
    // start): one commit instead of one each, and a failure leaves the schema where it was.
    this.db
      .transaction(() => {
        for (let i = current; i < SQLITE_MIGRATIONS.length; i++) this.db.exec(SQLITE_MIGRATIONS[i] as string);
        this.db.pragma(`user_version = ${SQLITE_MIGRATIONS.length}`);
      })
      .immediate();
  }

  /** Its own statement: plucked, a check (once per connect at most) builds no row object. */
  private dataVersionStmt: Database.Statement | null = null;

  /** Changes whenever ANOTHER connection commits to this database. */
  dataVersion(): number {
    this.dataVersionStmt ??= this.db.prepare('PRAGMA data_version').pluck();
    return this.dataVersionStmt.get() as number;
  }

  get schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  async close(): Promise<void> {
    if (this.db.open) {
      // Fold the WAL back into the main file so the state dir is one clean file at rest.
      this.db.pragma('wal_checkpoint(TRUNCATE)');
      this.db.close();
    }
  }

  private readonly auditListeners: Array<() => void> = [];

  /** Set by an audit append inside the running transaction; the listeners run once it committed. */
  private auditAppended = false;

  onAuditAppended(listener: () => void): void {
    this.auditListeners.push(listener);
  }

  tx<T>(fn: () => T): T {
    this.auditAppended = false;
    let out: T;
    try {
      out = this.db.transaction(fn).immediate();
    } catch (err) {
      this.auditAppended = false;
      throw err;
    }
    if (this.auditAppended) {
      this.auditAppended = false;
      for (const l of this.auditListeners) l();
    }
    return out;
  }

  appendAuditSync(input: AuditInput): AuditEntry {
    const last = this.stmt('SELECT * FROM audit ORDER BY seq DESC LIMIT 1').get() as AuditRow | undefined;
    const e = chainAudit(last ? toAudit(last) : undefined, input);
    this.db
      .prepare('INSERT INTO audit (seq, at_ms, actor, action, subject, data_json, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)')
      .run(e.seq, e.atMs, e.actor, e.action, e.subject ?? null, e.data === undefined ? null : JSON.stringify(e.data), e.prevHash, e.hash);
    this.auditAppended = true;
    return e;
  }
}
