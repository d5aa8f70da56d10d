/**
 * SQLite store (better-sqlite3, WAL). The embedded default: one file in the state dir.
 * Every domain action runs in one IMMEDIATE transaction together with its audit entry.
 */
import { closeSync, existsSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { Role } from '../protocol/frames.js';
import { type BulkDevicesInput, type BulkDevicesResult, bulkAudit, bulkInsertSqlite } from './bulk-devices.js';
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
];

/** JSON bodies drop undefined fields, so a record read back equals the one written. */
const body = (v: unknown) => JSON.stringify(v);

export class SqliteStore implements Store {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;

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
  private stmt(sql: string): Database.Statement {
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
    for (let i = current; i < SQLITE_MIGRATIONS.length; i++) {
      this.db
        .transaction(() => {
          this.db.exec(SQLITE_MIGRATIONS[i] as string);
          this.db.pragma(`user_version = ${i + 1}`);
        })
        .immediate();
    }
  }

  /** Changes whenever ANOTHER connection commits to this database (the read cache's staleness check). */
  dataVersion(): number {
    return (this.stmt('PRAGMA data_version').get() as { data_version: number }).data_version;
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

  private tx<T>(fn: () => T): T {
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

  private appendAuditSync(input: AuditInput): AuditEntry {
    const last = this.stmt('SELECT * FROM audit ORDER BY seq DESC LIMIT 1').get() as AuditRow | undefined;
    const e = chainAudit(last ? toAudit(last) : undefined, input);
    this.db
      .prepare('INSERT INTO audit (seq, at_ms, actor, action, subject, data_json, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)')
      .run(e.seq, e.atMs, e.actor, e.action, e.subject ?? null, e.data === undefined ? null : JSON.stringify(e.data), e.prevHash, e.hash);
    this.auditAppended = true;
    return e;
  }

  async getMeta(key: string) {
    const r = this.stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return r?.value ?? null;
  }
  async setMeta(key: string, value: string) {
    this.stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }
  async setMetaIf(key: string, expected: string | null, value: string) {
    const res =
      expected === null
        ? this.stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING').run(key, value)
        : this.stmt('UPDATE meta SET value = ? WHERE key = ? AND value = ?').run(value, key, expected);
    return res.changes === 1;
  }

  async getDevice(deviceId: string) {
    const r = this.stmt('SELECT * FROM devices WHERE device_id = ?').get(deviceId) as DeviceRow | undefined;
    return r ? toDevice(r) : null;
  }
  async listDevices() {
    return (this.stmt('SELECT * FROM devices ORDER BY created_at_ms').all() as DeviceRow[]).map(toDevice);
  }
  async listGrants(deviceId?: string) {
    const rows = deviceId
      ? (this.stmt('SELECT * FROM grants WHERE device_id = ?').all(deviceId) as GrantRow[])
      : (this.stmt('SELECT * FROM grants').all() as GrantRow[]);
    return rows.map(toGrant);
  }
  async getGrant(deviceId: string, role: Role) {
    const r = this.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
    return r ? toGrant(r) : null;
  }
  async getToken(tokenId: string) {
    const r = this.stmt('SELECT * FROM tokens WHERE token_id = ?').get(tokenId) as TokenRow | undefined;
    return r ? toToken(r) : null;
  }
  async listTokens(deviceId?: string) {
    const rows = deviceId
      ? (this.stmt('SELECT * FROM tokens WHERE device_id = ?').all(deviceId) as TokenRow[])
      : (this.stmt('SELECT * FROM tokens').all() as TokenRow[]);
    return rows.map(toToken);
  }

  private liveTokenSync(deviceId: string, role: Role): TokenRow | undefined {
    return this.stmt('SELECT * FROM tokens WHERE device_id = ? AND role = ? AND revoked_at_ms IS NULL').get(deviceId, role) as TokenRow | undefined;
  }
  private putTokenSync(deviceId: string, role: Role, token: NewToken, atMs: number, createdAtMs?: number) {
    this.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(deviceId, role);
    this.db
      .prepare('INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms) VALUES (?,?,?,?,?,?)')
      .run(token.tokenId, deviceId, role, token.secretHash, createdAtMs ?? atMs, createdAtMs === undefined ? null : atMs);
  }

  /** Create or refresh a device row at approval: presented meta replaces the old; label and creation time stay. */
  private upsertDeviceSync(device: ApproveInput['device'], atMs: number): void {
    this.stmt(
      `INSERT INTO devices (device_id, public_key, meta_json, created_at_ms, last_seen_at_ms, last_seen_address) VALUES (?,?,?,?,?,?)
       ON CONFLICT(device_id) DO UPDATE SET public_key = excluded.public_key, meta_json = excluded.meta_json,
         last_seen_at_ms = excluded.last_seen_at_ms, last_seen_address = COALESCE(excluded.last_seen_address, devices.last_seen_address)`,
    ).run(device.deviceId, device.publicKey, JSON.stringify(device.meta), atMs, atMs, device.address ?? null);
  }

  async approve(input: ApproveInput): Promise<GrantRecord> {
    return this.tx(() => {
      const { device, role, atMs } = input;
      this.upsertDeviceSync(device, atMs);
      const prev = this.stmt('SELECT epoch FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, role) as { epoch: number } | undefined;
      const grant = approvedGrant(input, prev?.epoch);
      this.db
        .prepare(
          `INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via, approved_by, expires_at_ms, scopes_after_expiry_json)
           VALUES (?,?,?,?,?,?,?,?,?)
           ON CONFLICT(device_id, role) DO UPDATE SET scopes_json = excluded.scopes_json, epoch = excluded.epoch,
             approved_at_ms = excluded.approved_at_ms, approved_via = excluded.approved_via, approved_by = excluded.approved_by,
             expires_at_ms = excluded.expires_at_ms, scopes_after_expiry_json = excluded.scopes_after_expiry_json`,
        )
        .run(
          grant.deviceId,
          role,
          JSON.stringify(grant.scopes),
          grant.epoch,
          atMs,
          input.via,
          grant.approvedBy ?? null,
          grant.expiresAtMs ?? null,
          grant.expiresAtMs != null ? JSON.stringify(grant.scopesAfterExpiry ?? []) : null,
        );
      if (input.token) this.putTokenSync(device.deviceId, role, input.token, atMs, this.liveTokenSync(device.deviceId, role)?.created_at_ms);
      if (input.requestId) this.stmt('DELETE FROM pairing_requests WHERE request_id = ?').run(input.requestId);
      this.appendAuditSync(input.audit);
      return grant;
    });
  }

  async upsertPairingRequest(input: UpsertRequestInput): Promise<UpsertRequestResult> {
    return this.tx(() => {
      const row = this.stmt('SELECT body_json FROM pairing_requests WHERE device_id = ? AND role = ?').get(input.deviceId, input.role) as
        | { body_json: string }
        | undefined;
      const result = mergePairingRequest(row ? (JSON.parse(row.body_json) as PairingRequest) : null, input);
      const r = result.request;
      this.db
        .prepare(
          `INSERT INTO pairing_requests (request_id, device_id, role, body_json, created_at_ms) VALUES (?,?,?,?,?)
           ON CONFLICT(request_id) DO UPDATE SET body_json = excluded.body_json`,
        )
        .run(r.requestId, r.deviceId, r.role, JSON.stringify(r), r.createdAtMs);
      if (result.created || result.widened) this.appendAuditSync(input.audit);
      return result;
    });
  }
  async getPairingRequest(requestId: string) {
    const r = this.stmt('SELECT body_json FROM pairing_requests WHERE request_id = ?').get(requestId) as { body_json: string } | undefined;
    return r ? (JSON.parse(r.body_json) as PairingRequest) : null;
  }
  async listPairingRequests(deviceId?: string) {
    const rows = (
      deviceId
        ? this.stmt('SELECT body_json FROM pairing_requests WHERE device_id = ? ORDER BY created_at_ms').all(deviceId)
        : this.stmt('SELECT body_json FROM pairing_requests ORDER BY created_at_ms').all()
    ) as Array<{ body_json: string }>;
    return rows.map((r) => JSON.parse(r.body_json) as PairingRequest);
  }
  async deletePairingRequest(requestId: string, audit: AuditInput) {
    return this.tx(() => {
      const n = this.stmt('DELETE FROM pairing_requests WHERE request_id = ?').run(requestId).changes;
      if (n > 0) this.appendAuditSync(audit);
      return n > 0;
    });
  }

  async rotateToken(deviceId: string, role: Role, token: NewToken | null, scopes: string[] | null, atMs: number, audit: AuditInput) {
    return this.tx(() => {
      const g = this.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
      if (!g) return null;
      const created = this.liveTokenSync(deviceId, role)?.created_at_ms ?? atMs;
      const next = { ...toGrant(g), epoch: g.epoch + 1, scopes: scopes ? [...scopes] : JSON.parse(g.scopes_json) };
      this.db
        .prepare('UPDATE grants SET epoch = ?, scopes_json = ? WHERE device_id = ? AND role = ?')
        .run(next.epoch, JSON.stringify(next.scopes), deviceId, role);
      if (token) this.putTokenSync(deviceId, role, token, atMs, created);
      else this.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(deviceId, role);
      this.appendAuditSync(audit);
      return next as GrantRecord;
    });
  }
  // --- token rotation pushed to live sessions (issues 5/9) ---
  async issueTokenIfAbsent(deviceId: string, role: Role, token: NewToken, atMs: number, audit: AuditInput) {
    return this.tx(() => {
      const g = this.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
      if (!g || this.liveTokenSync(deviceId, role)) return null;
      this.putTokenSync(deviceId, role, token, atMs);
      this.appendAuditSync(audit);
      return toGrant(g);
    });
  }
  async revokeToken(deviceId: string, role: Role, atMs: number, audit: AuditInput) {
    return this.tx(() => {
      const t = this.liveTokenSync(deviceId, role);
      const n = this.stmt('DELETE FROM grants WHERE device_id = ? AND role = ?').run(deviceId, role).changes;
      if (n === 0) return null;
      if (t) this.stmt('UPDATE tokens SET revoked_at_ms = ? WHERE token_id = ?').run(atMs, t.token_id);
      this.appendAuditSync(audit);
      return t ? toToken({ ...t, revoked_at_ms: atMs }) : null;
    });
  }
  async expireGrant(deviceId: string, role: Role, atMs: number, audit: AuditInput): Promise<GrantExpiry | null> {
    return this.tx(() => {
      const row = this.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
      const g = row ? toGrant(row) : null;
      if (!g || g.expiresAtMs == null || g.expiresAtMs > atMs) return null;
      const next = grantAfterExpiry(g);
      if (next) {
        this.stmt('UPDATE grants SET scopes_json = ?, epoch = ?, expires_at_ms = NULL, scopes_after_expiry_json = NULL WHERE device_id = ? AND role = ?').run(
          JSON.stringify(next.scopes),
          next.epoch,
          deviceId,
          role,
        );
      } else {
        const t = this.liveTokenSync(deviceId, role);
        this.stmt('DELETE FROM grants WHERE device_id = ? AND role = ?').run(deviceId, role);
        if (t) this.stmt('UPDATE tokens SET revoked_at_ms = ? WHERE token_id = ?').run(atMs, t.token_id);
      }
      this.appendAuditSync(audit);
      return next ? { outcome: 'narrowed' as const, grant: next } : { outcome: 'removed' as const, grant: g };
    });
  }
  async extendGrant(deviceId: string, role: Role, expiresAtMs: number, audit: AuditInput) {
    return this.tx(() => {
      const n = this.stmt('UPDATE grants SET expires_at_ms = ? WHERE device_id = ? AND role = ? AND expires_at_ms IS NOT NULL').run(
        expiresAtMs,
        deviceId,
        role,
      ).changes;
      if (n === 0) return null;
      this.appendAuditSync(audit);
      return toGrant(this.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow);
    });
  }
  async removeRole(deviceId: string, role: Role, audit: AuditInput) {
    return this.tx(() => {
      const n = this.stmt('DELETE FROM grants WHERE device_id = ? AND role = ?').run(deviceId, role).changes;
      if (n === 0) return false;
      this.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(deviceId, role);
      this.stmt('DELETE FROM pairing_requests WHERE device_id = ? AND role = ?').run(deviceId, role);
      const left = this.stmt('SELECT COUNT(*) AS n FROM grants WHERE device_id = ?').get(deviceId) as { n: number };
      if (left.n === 0) this.stmt('DELETE FROM devices WHERE device_id = ?').run(deviceId);
      this.appendAuditSync(audit);
      return true;
    });
  }
  async removeDevice(deviceId: string, audit: AuditInput) {
    return this.tx(() => {
      const a = this.stmt('DELETE FROM devices WHERE device_id = ?').run(deviceId).changes;
      const b = this.stmt('DELETE FROM pairing_requests WHERE device_id = ?').run(deviceId).changes;
      if (a + b === 0) return false;
      this.appendAuditSync(audit);
      return true;
    });
  }
  async renameDevice(deviceId: string, label: string, audit: AuditInput) {
    return this.tx(() => {
      const n = this.stmt('UPDATE devices SET label = ? WHERE device_id = ?').run(label, deviceId).changes;
      if (n > 0) this.appendAuditSync(audit);
      return n > 0;
    });
  }
  async recordSeen(entries: Array<{ deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>) {
    if (entries.length === 0) return;
    const dev = this.stmt('UPDATE devices SET last_seen_at_ms = ?, last_seen_address = ? WHERE device_id = ?');
    const tok = this.stmt('UPDATE tokens SET last_used_at_ms = ? WHERE token_id = ?');
    this.tx(() => {
      for (const e of entries) {
        dev.run(e.atMs, e.address, e.deviceId);
        if (e.tokenId) tok.run(e.atMs, e.tokenId);
      }
    });
  }
  // --- setup codes ---------------------------------------------------------------------------

  private setupSync(setupId: string): SetupCodeRecord | null {
    const r = this.stmt('SELECT * FROM setup_codes WHERE setup_id = ?').get(setupId) as SetupRow | undefined;
    return r ? toSetup(r) : null;
  }

  async createSetupCode(input: NewSetupCode): Promise<SetupCodeRecord> {
    return this.tx(() => {
      this.db
        .prepare(
          `INSERT INTO setup_codes (setup_id, secret_hash, profile_json, label, url, created_at_ms, expires_at_ms, created_by)
           VALUES (?,?,?,?,?,?,?,?)`,
        )
        .run(
          input.setupId,
          input.secretHash,
          JSON.stringify(input.profile),
          input.label ?? null,
          input.url,
          input.createdAtMs,
          input.expiresAtMs,
          input.createdBy,
        );
      this.appendAuditSync(input.audit);
      return this.setupSync(input.setupId) as SetupCodeRecord;
    });
  }
  async getSetupCode(setupId: string) {
    return this.setupSync(setupId);
  }
  async listSetupCodes() {
    return (this.stmt('SELECT * FROM setup_codes ORDER BY created_at_ms, rowid').all() as SetupRow[]).map(toSetup);
  }
  async redeemSetupCode(input: RedeemSetupInput): Promise<RedeemSetupResult> {
    return this.tx((): RedeemSetupResult => {
      const { device, atMs } = input;
      const code = this.setupSync(input.setupId);
      const epochOf = (r: Role) =>
        (this.stmt('SELECT epoch FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, r) as { epoch: number } | undefined)?.epoch;
      const check = checkRedemption(code, device, atMs, input.graceMs, epochOf);
      if (!check.ok) return check;
      const c = code as SetupCodeRecord;
      const roles = redeemedRoles(c, input.tokens);
      const resolved: string[] = [];
      if (check.repeat) {
        this.stmt('UPDATE setup_codes SET redeem_count = redeem_count + 1 WHERE setup_id = ?').run(c.setupId);
      } else {
        this.upsertDeviceSync(device, atMs);
        const epochs: Partial<Record<Role, number>> = {};
        for (const r of roles) {
          const prev = this.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, r) as GrantRow | undefined;
          const scopes = redeemedGrantScopes(c.profile, r, prev ? (JSON.parse(prev.scopes_json) as string[]) : undefined);
          const epoch = (prev?.epoch ?? 0) + 1;
          this.db
            .prepare(
              `INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via) VALUES (?,?,?,?,?,?)
               ON CONFLICT(device_id, role) DO UPDATE SET scopes_json = excluded.scopes_json, epoch = excluded.epoch,
                 approved_at_ms = excluded.approved_at_ms, approved_via = excluded.approved_via, approved_by = NULL,
                 expires_at_ms = NULL, scopes_after_expiry_json = NULL`,
            )
            .run(device.deviceId, r, JSON.stringify(scopes), epoch, atMs, 'bootstrap');
          epochs[r] = epoch;
          const reqs = this.stmt('SELECT request_id FROM pairing_requests WHERE device_id = ? AND role = ?').all(device.deviceId, r) as Array<{
            request_id: string;
          }>;
          for (const q of reqs) resolved.push(q.request_id);
          this.stmt('DELETE FROM pairing_requests WHERE device_id = ? AND role = ?').run(device.deviceId, r);
        }
        this.db
          .prepare(
            `UPDATE setup_codes SET redeemed_at_ms = ?, redeem_count = 1, device_id = ?, public_key = ?, device_name = ?,
               redeemed_role = ?, grant_epochs_json = ? WHERE setup_id = ?`,
          )
          .run(atMs, device.deviceId, device.publicKey, device.meta.displayName ?? null, input.role, JSON.stringify(epochs), c.setupId);
      }
      for (const r of roles) this.putTokenSync(device.deviceId, r, input.tokens[r] as NewToken, atMs);
      this.appendAuditSync(check.repeat ? input.repeatAudit : input.audit);
      const grants = roles.map((r) => toGrant(this.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, r) as GrantRow));
      return { ok: true, repeat: check.repeat, code: this.setupSync(c.setupId) as SetupCodeRecord, grants, resolvedRequestIds: resolved };
    });
  }
  async recordSetupFailure(setupId: string, atMs: number, budget: number, burnAudit: AuditInput) {
    return this.tx(() => {
      const c = this.setupSync(setupId);
      if (!c) return null;
      const burns = failureBurns(c, budget);
      this.db
        .prepare('UPDATE setup_codes SET failures = failures + 1, burned_at_ms = COALESCE(burned_at_ms, ?) WHERE setup_id = ?')
        .run(burns ? atMs : null, setupId);
      if (burns) this.appendAuditSync(burnAudit);
      return { failures: c.failures + 1, burned: burns };
    });
  }
  async revokeSetupCode(setupId: string, atMs: number, audit: AuditInput) {
    return this.tx(() => {
      const c = this.setupSync(setupId);
      if (!c) return null;
      if (c.revokedAtMs !== undefined || c.burnedAtMs !== undefined) return { code: c, changed: false };
      this.stmt('UPDATE setup_codes SET revoked_at_ms = ? WHERE setup_id = ?').run(atMs, setupId);
      this.appendAuditSync(audit);
      return { code: this.setupSync(setupId) as SetupCodeRecord, changed: true };
    });
  }

  // --- nodes: command surfaces -----------------------------------------------------
  async getNodeSurface(deviceId: string) {
    const r = this.stmt('SELECT body_json FROM node_surfaces WHERE device_id = ?').get(deviceId) as { body_json: string } | undefined;
    return r ? (JSON.parse(r.body_json) as NodeSurfaceRecord) : null;
  }
  async listNodeSurfaces() {
    return (this.stmt('SELECT body_json FROM node_surfaces ORDER BY approved_at_ms').all() as Array<{ body_json: string }>).map(
      (r) => JSON.parse(r.body_json) as NodeSurfaceRecord,
    );
  }
  private nodeRequestSync(where: 'request_id' | 'device_id', key: string): NodeSurfaceRequest | undefined {
    const r = this.stmt(`SELECT body_json FROM node_surface_requests WHERE ${where} = ?`).get(key) as { body_json: string } | undefined;
    return r ? (JSON.parse(r.body_json) as NodeSurfaceRequest) : undefined;
  }
  async upsertNodeSurfaceRequest(input: UpsertNodeSurfaceInput) {
    return this.tx(() => {
      const res = mergeNodeSurfaceRequest(this.nodeRequestSync('device_id', input.deviceId), input);
      this.stmt('DELETE FROM node_surface_requests WHERE device_id = ?').run(input.deviceId);
      this.stmt('INSERT INTO node_surface_requests (request_id, device_id, body_json, created_at_ms) VALUES (?,?,?,?)').run(
        res.request.requestId,
        input.deviceId,
        JSON.stringify(res.request),
        res.request.createdAtMs,
      );
      if (res.created) this.appendAuditSync(input.audit);
      return res;
    });
  }
  async getNodeSurfaceRequest(requestId: string) {
    return this.nodeRequestSync('request_id', requestId) ?? null;
  }
  async listNodeSurfaceRequests() {
    return (this.stmt('SELECT body_json FROM node_surface_requests ORDER BY created_at_ms, rowid').all() as Array<{ body_json: string }>).map(
      (r) => JSON.parse(r.body_json) as NodeSurfaceRequest,
    );
  }
  async approveNodeSurface(requestId: string, atMs: number, approvedBy: string, audit: AuditInput) {
    return this.tx(() => {
      const r = this.nodeRequestSync('request_id', requestId);
      if (!r) return null;
      const surface: NodeSurfaceRecord = { deviceId: r.deviceId, caps: r.caps, commands: r.commands, requestId, approvedAtMs: atMs, approvedBy };
      this.stmt('DELETE FROM node_surface_requests WHERE request_id = ?').run(requestId);
      this.stmt(
        'INSERT INTO node_surfaces (device_id, body_json, approved_at_ms) VALUES (?,?,?) ON CONFLICT(device_id) DO UPDATE SET body_json = excluded.body_json, approved_at_ms = excluded.approved_at_ms',
      ).run(r.deviceId, JSON.stringify(surface), atMs);
      this.appendAuditSync(audit);
      return surface;
    });
  }
  async deleteNodeSurfaceRequest(requestId: string, audit: AuditInput) {
    return this.tx(() => {
      const n = this.stmt('DELETE FROM node_surface_requests WHERE request_id = ?').run(requestId).changes;
      if (n > 0) this.appendAuditSync(audit);
      return n > 0;
    });
  }

  // --- automations -------------------------------------------------------------------

  private chatSessionSync(idOrKey: string): ChatSession | null {
    const r = this.stmt('SELECT * FROM chat_sessions WHERE session_id = ? OR key = ? ORDER BY session_id = ? DESC LIMIT 1').get(idOrKey, idOrKey, idOrKey) as
      | ChatSessionRow
      | undefined;
    return r ? toChatSession(r) : null;
  }
  async createChatSession(input: NewChatSession) {
    return this.tx(() => {
      if (this.stmt('SELECT 1 FROM chat_sessions WHERE key = ?').get(input.key)) return { ok: false as const, reason: 'key-taken' as const };
      this.stmt(
        `INSERT INTO chat_sessions (session_id, key, label, parent_id, created_by, created_at_ms, updated_at_ms, message_count)
         VALUES (?,?,?,?,?,?,?,0)`,
      ).run(input.sessionId, input.key, input.label ?? null, input.parentId ?? null, input.createdBy, input.createdAtMs, input.createdAtMs);
      this.appendAuditSync(input.audit);
      return { ok: true as const, session: this.chatSessionSync(input.sessionId) as ChatSession };
    });
  }
  async getChatSession(idOrKey: string) {
    return this.chatSessionSync(idOrKey);
  }
  async listChatSessions(opts: { parentId?: string; limit?: number } = {}) {
    const rows = (
      opts.parentId === undefined
        ? this.stmt('SELECT * FROM chat_sessions ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT ?').all(opts.limit ?? -1)
        : this.stmt('SELECT * FROM chat_sessions WHERE parent_id = ? ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT ?').all(
            opts.parentId,
            opts.limit ?? -1,
          )
    ) as ChatSessionRow[];
    return rows.map(toChatSession);
  }
  async appendChatMessage(input: NewChatMessage): Promise<AppendMessageResult> {
    return this.tx((): AppendMessageResult => {
      const s = this.stmt('SELECT * FROM chat_sessions WHERE session_id = ?').get(input.sessionId) as ChatSessionRow | undefined;
      if (!s) return { ok: false, reason: 'unknown-session' };
      if (input.idempotencyKey !== undefined) {
        const prior = this.stmt('SELECT * FROM chat_messages WHERE session_id = ? AND idempotency_key = ?').get(input.sessionId, input.idempotencyKey) as
          | ChatMessageRow
          | undefined;
        if (prior) return { ok: true, message: toChatMessage(prior), duplicate: true };
      }
      const seq = s.message_count + 1;
      this.stmt('INSERT INTO chat_messages (session_id, seq, message_id, author, text, idempotency_key, at_ms) VALUES (?,?,?,?,?,?,?)').run(
        ...chatMessageValues(input, seq),
      );
      this.stmt('UPDATE chat_sessions SET message_count = ?, updated_at_ms = MAX(updated_at_ms, ?) WHERE session_id = ?').run(seq, input.atMs, input.sessionId);
      this.appendAuditSync(input.audit);
      const { audit: _audit, ...rest } = input;
      return { ok: true, message: { ...rest, seq }, duplicate: false };
    });
  }
  async listChatMessages(sessionId: string, opts: { beforeSeq?: number; afterSeq?: number; limit?: number } = {}) {
    const limit = opts.limit ?? CHAT_PAGE_DEFAULT;
    if (opts.afterSeq !== undefined) {
      const rows = this.stmt('SELECT * FROM chat_messages WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?').all(
        sessionId,
        opts.afterSeq,
        limit,
      ) as ChatMessageRow[];
      return rows.map(toChatMessage);
    }
    const rows = this.stmt('SELECT * FROM chat_messages WHERE session_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?').all(
      sessionId,
      opts.beforeSeq ?? Number.MAX_SAFE_INTEGER,
      limit,
    ) as ChatMessageRow[];
    return rows.reverse().map(toChatMessage);
  }

  private channelSync(idOrName: string): WebhookChannel | null {
    const r = this.stmt('SELECT * FROM channels WHERE channel_id = ? OR name = ? ORDER BY channel_id = ? DESC LIMIT 1').get(idOrName, idOrName, idOrName) as
      | ChannelRow
      | undefined;
    return r ? toChannel(r) : null;
  }
  async putChannel(input: NewChannel) {
    return this.tx(() => {
      const existing = this.stmt('SELECT * FROM channels WHERE name = ?').get(input.name) as ChannelRow | undefined;
      if (channelNameTaken(existing, input)) return { ok: false as const, reason: 'name-taken' as const };
      if (existing) {
        this.stmt('UPDATE channels SET url = ?, username = ? WHERE channel_id = ?').run(input.url, input.username ?? null, existing.channel_id);
      } else {
        this.stmt('INSERT INTO channels (channel_id, name, url, username, source, created_by, created_at_ms) VALUES (?,?,?,?,?,?,?)').run(
          ...channelValues(input),
        );
      }
      this.appendAuditSync(input.audit);
      return { ok: true as const, channel: this.channelSync(existing?.channel_id ?? input.channelId) as WebhookChannel, created: !existing };
    });
  }
  async getChannel(idOrName: string) {
    return this.channelSync(idOrName);
  }
  async listChannels() {
    return (this.stmt('SELECT * FROM channels ORDER BY name').all() as ChannelRow[]).map(toChannel);
  }
  async removeChannel(idOrName: string, audit: AuditInput) {
    return this.tx(() => {
      const c = this.channelSync(idOrName);
      if (!c) return false;
      this.stmt('DELETE FROM channels WHERE channel_id = ?').run(c.channelId);
      this.appendAuditSync(audit);
      return true;
    });
  }

  private putDeliverySync(d: Delivery): void {
    this.stmt(
      `INSERT INTO deliveries (delivery_id, channel_id, idempotency_key, status, next_attempt_at_ms, body_json) VALUES (?,?,?,?,?,?)
       ON CONFLICT(delivery_id) DO UPDATE SET status = excluded.status, next_attempt_at_ms = excluded.next_attempt_at_ms, body_json = excluded.body_json`,
    ).run(d.deliveryId, d.channelId, d.idempotencyKey, d.status, d.nextAttemptAtMs, body(d));
  }
  private deliverySync(deliveryId: string): Delivery | null {
    const r = this.stmt('SELECT body_json FROM deliveries WHERE delivery_id = ?').get(deliveryId) as { body_json: string } | undefined;
    return r ? (JSON.parse(r.body_json) as Delivery) : null;
  }
  async enqueueDelivery(input: NewDelivery) {
    return this.tx(() => {
      const prior = this.stmt('SELECT delivery_id FROM deliveries WHERE channel_id = ? AND idempotency_key = ?').get(input.channelId, input.idempotencyKey) as
        | { delivery_id: string }
        | undefined;
      if (prior) return { delivery: this.deliverySync(prior.delivery_id) as Delivery, duplicate: true };
      const { audit, ...rest } = input;
      const d: Delivery = { ...rest, status: 'pending', attempts: 0, nextAttemptAtMs: input.createdAtMs };
      this.putDeliverySync(d);
      this.appendAuditSync(audit);
      return { delivery: this.deliverySync(d.deliveryId) as Delivery, duplicate: false };
    });
  }
  async getDelivery(deliveryId: string) {
    return this.deliverySync(deliveryId);
  }
  async listDeliveries(opts: { status?: DeliveryStatus; channelId?: string; limit?: number } = {}) {
    const rows = this.stmt(
      `SELECT body_json FROM deliveries WHERE (? IS NULL OR status = ?) AND (? IS NULL OR channel_id = ?) ORDER BY rowid DESC LIMIT ?`,
    ).all(opts.status ?? null, opts.status ?? null, opts.channelId ?? null, opts.channelId ?? null, opts.limit ?? -1) as Array<{ body_json: string }>;
    return rows.map((r) => JSON.parse(r.body_json) as Delivery);
  }
  async dueDeliveries(nowMs: number, limit: number) {
    const rows = this.stmt(
      "SELECT body_json FROM deliveries WHERE status = 'pending' AND next_attempt_at_ms <= ? ORDER BY next_attempt_at_ms, rowid LIMIT ?",
    ).all(nowMs, limit) as Array<{ body_json: string }>;
    return rows.map((r) => JSON.parse(r.body_json) as Delivery);
  }
  async nextDeliveryDueAtMs() {
    const r = this.stmt("SELECT MIN(next_attempt_at_ms) AS due FROM deliveries WHERE status = 'pending'").get() as { due: number | null };
    return r.due;
  }
  async recordDeliveryAttempt(a: DeliveryAttempt) {
    return this.tx(() => {
      const d = this.deliverySync(a.deliveryId);
      if (d?.status !== 'pending') return null;
      const next = applyAttempt(d, a);
      this.putDeliverySync(next);
      if (a.outcome === 'dead' && a.deadAudit) this.appendAuditSync(a.deadAudit);
      return this.deliverySync(a.deliveryId);
    });
  }

  private cronJobSync(jobId: string): CronJob | null {
    const r = this.stmt('SELECT body_json FROM cron_jobs WHERE job_id = ?').get(jobId) as { body_json: string } | undefined;
    return r ? (JSON.parse(r.body_json) as CronJob) : null;
  }
  private putCronJobSync(job: CronJob): void {
    this.stmt('INSERT INTO cron_jobs (job_id, created_at_ms, body_json) VALUES (?,?,?) ON CONFLICT(job_id) DO UPDATE SET body_json = excluded.body_json').run(
      job.jobId,
      job.createdAtMs,
      body(job),
    );
  }
  async createCronJob(input: NewCronJob) {
    return this.tx(() => {
      const { audit, ...rest } = input;
      this.putCronJobSync({ ...rest, updatedAtMs: input.createdAtMs });
      this.appendAuditSync(audit);
      return this.cronJobSync(input.jobId) as CronJob;
    });
  }
  async getCronJob(jobId: string) {
    return this.cronJobSync(jobId);
  }
  async listCronJobs() {
    return (this.stmt('SELECT body_json FROM cron_jobs ORDER BY created_at_ms, rowid').all() as Array<{ body_json: string }>).map(
      (r) => JSON.parse(r.body_json) as CronJob,
    );
  }
  async updateCronJob(jobId: string, patch: CronJobPatch, atMs: number, audit: AuditInput) {
    return this.tx(() => {
      const j = this.cronJobSync(jobId);
      if (!j) return null;
      this.putCronJobSync({ ...j, ...patch, updatedAtMs: atMs });
      this.appendAuditSync(audit);
      return this.cronJobSync(jobId);
    });
  }
  async removeCronJob(jobId: string, audit: AuditInput) {
    return this.tx(() => {
      const n = this.stmt('DELETE FROM cron_jobs WHERE job_id = ?').run(jobId).changes;
      if (n > 0) this.appendAuditSync(audit);
      return n > 0;
    });
  }
  async recordCronRun(run: CronRun, nextRunAtMs: number | null) {
    return this.tx(() => {
      const j = this.cronJobSync(run.jobId);
      if (!j) return null;
      this.stmt('INSERT INTO cron_runs (run_id, job_id, body_json) VALUES (?,?,?)').run(run.runId, run.jobId, body(run));
      this.putCronJobSync({ ...j, nextRunAtMs, lastRunAtMs: run.startedAtMs });
      return this.cronJobSync(run.jobId);
    });
  }
  async listCronRuns(jobId: string, limit = 50) {
    const rows = this.stmt('SELECT body_json FROM cron_runs WHERE job_id = ? ORDER BY rowid DESC LIMIT ?').all(jobId, limit) as Array<{ body_json: string }>;
    return rows.map((r) => JSON.parse(r.body_json) as CronRun);
  }

  async importDevicesBulk(input: BulkDevicesInput): Promise<BulkDevicesResult> {
    return this.tx(() => {
      const out = bulkInsertSqlite(this.db, input);
      if (out.ok) this.appendAuditSync(bulkAudit(input));
      return out;
    });
  }

  async importDevices(input: ImportDevicesInput): Promise<ImportDevicesResult> {
    return this.tx((): ImportDevicesResult => {
      const existing = new Map<string, ExistingDevice>();
      for (const d of input.devices) {
        const dev = this.stmt('SELECT * FROM devices WHERE device_id = ?').get(d.deviceId) as DeviceRow | undefined;
        const surface = this.stmt('SELECT body_json FROM node_surfaces WHERE device_id = ?').get(d.deviceId) as { body_json: string } | undefined;
        existing.set(d.deviceId, {
          device: dev ? toDevice(dev) : null,
          grants: (this.stmt('SELECT * FROM grants WHERE device_id = ?').all(d.deviceId) as GrantRow[]).map(toGrant),
          tokens: (this.stmt('SELECT * FROM tokens WHERE device_id = ?').all(d.deviceId) as TokenRow[]).map(toToken),
          surface: surface ? (JSON.parse(surface.body_json) as NodeSurfaceRecord) : null,
        });
      }
      const total = (this.stmt('SELECT COUNT(*) AS n FROM devices').get() as { n: number }).n;
      const others = otherDeviceCount(total, existing, input);
      if (!input.merge && others > 0) return { ok: false, reason: 'not-empty', otherDevices: others };
      const plans = input.devices.map((d) => ({ d, plan: planDeviceImport(existing.get(d.deviceId) as ExistingDevice, d, input) }));
      if (input.dryRun) return { ok: true, devices: plans.map((p) => p.plan.report), applied: false };
      for (const { d, plan } of plans) {
        if (plan.newDevice) {
          this.stmt('INSERT INTO devices (device_id, public_key, meta_json, label, created_at_ms, last_seen_at_ms) VALUES (?,?,?,?,?,?)').run(
            d.deviceId,
            d.publicKey,
            body(d.meta),
            d.label ?? null,
            d.createdAtMs,
            d.lastSeenAtMs ?? null,
          );
        }
        for (const g of plan.grants) {
          this.stmt('INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via) VALUES (?,?,?,?,?,?)').run(
            g.deviceId,
            g.role,
            JSON.stringify(g.scopes),
            g.epoch,
            g.approvedAtMs,
            g.approvedVia,
          );
        }
        for (const t of plan.tokens) {
          this.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(d.deviceId, t.role);
          this.stmt('INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms) VALUES (?,?,?,?,?,?,?)').run(
            t.tokenId,
            d.deviceId,
            t.role,
            t.secretHash,
            t.createdAtMs,
            t.rotatedAtMs ?? null,
            t.lastUsedAtMs ?? null,
          );
        }
        if (plan.surface) {
          this.stmt('INSERT INTO node_surfaces (device_id, body_json, approved_at_ms) VALUES (?,?,?)').run(
            d.deviceId,
            body(plan.surface),
            plan.surface.approvedAtMs,
          );
        }
        if (plan.audit) this.appendAuditSync(plan.audit);
      }
      return { ok: true, devices: plans.map((p) => p.plan.report), applied: true };
    });
  }

  async appendAudit(input: AuditInput) {
    return this.tx(() => this.appendAuditSync(input));
  }
  async listAudit(opts: { afterSeq?: number; limit?: number } = {}) {
    const rows = this.stmt('SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?').all(opts.afterSeq ?? 0, opts.limit ?? -1) as AuditRow[];
    return rows.map(toAudit);
  }

  async pruneRetained(c: RetentionCutoffs): Promise<PruneCounts> {
    return this.tx(() => {
      const out: PruneCounts = { deliveries: 0, cronRuns: 0, signInLinks: 0, setupCodes: 0 };
      if (c.deliveredBeforeMs !== null) {
        out.deliveries = this.stmt("DELETE FROM deliveries WHERE status = 'delivered' AND json_extract(body_json, '$.deliveredAtMs') < ?").run(
          c.deliveredBeforeMs,
        ).changes;
      }
      if (c.cronRunsBeforeMs !== null) {
        out.cronRuns = this.stmt("DELETE FROM cron_runs WHERE json_extract(body_json, '$.finishedAtMs') < ?").run(c.cronRunsBeforeMs).changes;
      }
      if (c.signInLinksBeforeMs !== null) {
        const before = c.signInLinksBeforeMs;
        const rows = this.stmt('SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?').all(
          SIGN_IN_LINK_META_PREFIX.length,
          SIGN_IN_LINK_META_PREFIX,
        ) as Array<{
          key: string;
          value: string;
        }>;
        const del = this.stmt('DELETE FROM meta WHERE key = ?');
        for (const r of rows) if (signInLinkPrunable(r.value, before)) out.signInLinks += del.run(r.key).changes;
      }
      if (c.setupCodesBeforeMs !== null) {
        out.setupCodes = this.stmt('DELETE FROM setup_codes WHERE expires_at_ms < ?').run(c.setupCodesBeforeMs).changes;
      }
      return out;
    });
  }

  async pendingDeliveryCount(): Promise<number> {
    return (this.stmt("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'").get() as { n: number }).n;
  }
}
