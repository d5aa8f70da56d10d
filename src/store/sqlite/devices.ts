/** SQLite store, domain: paired devices, their grants and tokens, and pending pairing requests. */
import type { Role } from '@clawgate/protocol/frames';
import type {
  ApproveInput,
  AuditInput,
  DevicePageQuery,
  DevicePageResult,
  DeviceStore,
  GrantExpiry,
  GrantRecord,
  NewToken,
  PairingRequest,
  UpsertRequestInput,
  UpsertRequestResult,
} from '../../core/store.js';
import { checkDevicePageQuery, pageOf, prefixUpperBound } from '../device-page.js';
import { approvedGrant, type DeviceRow, type GrantRow, grantAfterExpiry, mergePairingRequest, type TokenRow, toDevice, toGrant, toToken } from '../shared.js';
import { SQLITE_DEVICE_DISPLAY_NAME, SQLITE_DEVICE_LABEL, type SqliteDb } from './db.js';

export function liveTokenSync(core: SqliteDb, deviceId: string, role: Role): TokenRow | undefined {
  return core.stmt('SELECT * FROM tokens WHERE device_id = ? AND role = ? AND revoked_at_ms IS NULL').get(deviceId, role) as TokenRow | undefined;
}

export function putTokenSync(core: SqliteDb, deviceId: string, role: Role, token: NewToken, atMs: number, createdAtMs?: number) {
  core.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(deviceId, role);
  core.db
    .prepare('INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms) VALUES (?,?,?,?,?,?)')
    .run(token.tokenId, deviceId, role, token.secretHash, createdAtMs ?? atMs, createdAtMs === undefined ? null : atMs);
}

/** Create or refresh a device row at approval: presented meta replaces the old; label and creation time stay. */
export function upsertDeviceSync(core: SqliteDb, device: ApproveInput['device'], atMs: number): void {
  core
    .stmt(
      `INSERT INTO devices (device_id, public_key, meta_json, created_at_ms, last_seen_at_ms, last_seen_address) VALUES (?,?,?,?,?,?)
     ON CONFLICT(device_id) DO UPDATE SET public_key = excluded.public_key, meta_json = excluded.meta_json,
       last_seen_at_ms = excluded.last_seen_at_ms, last_seen_address = COALESCE(excluded.last_seen_address, devices.last_seen_address)`,
    )
    .run(device.deviceId, device.publicKey, JSON.stringify(device.meta), atMs, atMs, device.address ?? null);
}

export function sqliteDevices(core: SqliteDb): DeviceStore {
  return {
    async getDevice(deviceId: string) {
      const r = core.stmt('SELECT * FROM devices WHERE device_id = ?').get(deviceId) as DeviceRow | undefined;
      return r ? toDevice(r) : null;
    },
    async listDevices() {
      return (core.stmt('SELECT * FROM devices ORDER BY created_at_ms').all() as DeviceRow[]).map(toDevice);
    },
    async listDevicesPage(query: DevicePageQuery): Promise<DevicePageResult> {
      const q = checkDevicePageQuery(query);
      if (!q.ok) return q;
      const where: string[] = [];
      const args: unknown[] = [];
      if (q.after) {
        where.push('(created_at_ms, device_id) > (?, ?)');
        args.push(q.after.createdAtMs, q.after.deviceId);
      }
      if (q.search) {
        const { typed, folded } = q.search;
        const ranges = ['device_id', 'device_id', SQLITE_DEVICE_LABEL, SQLITE_DEVICE_DISPLAY_NAME].map((x) => `(${x} >= ? AND ${x} < ?)`);
        where.push(`(${ranges.join(' OR ')})`);
        for (const s of [typed, folded, folded, folded]) args.push(s, prefixUpperBound(s));
      }
      const sql = `SELECT * FROM devices ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at_ms, device_id LIMIT ?`;
      const rows = core.stmt(sql).all(...args, q.limit + 1) as DeviceRow[];
      return pageOf(rows.map(toDevice), q.limit);
    },
    async listGrants(deviceId?: string) {
      const rows = deviceId
        ? (core.stmt('SELECT * FROM grants WHERE device_id = ?').all(deviceId) as GrantRow[])
        : (core.stmt('SELECT * FROM grants').all() as GrantRow[]);
      return rows.map(toGrant);
    },
    async getGrant(deviceId: string, role: Role) {
      const r = core.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
      return r ? toGrant(r) : null;
    },
    async listGrantsOfRole(role: Role) {
      return (core.stmt('SELECT * FROM grants WHERE role = ? ORDER BY device_id').all(role) as GrantRow[]).map(toGrant);
    },
    async listTimeBoundGrants() {
      return (core.stmt('SELECT * FROM grants WHERE expires_at_ms IS NOT NULL ORDER BY expires_at_ms, device_id, role').all() as GrantRow[]).map(toGrant);
    },
    async getToken(tokenId: string) {
      const r = core.stmt('SELECT * FROM tokens WHERE token_id = ?').get(tokenId) as TokenRow | undefined;
      return r ? toToken(r) : null;
    },
    async listTokens(deviceId?: string) {
      const rows = deviceId
        ? (core.stmt('SELECT * FROM tokens WHERE device_id = ?').all(deviceId) as TokenRow[])
        : (core.stmt('SELECT * FROM tokens').all() as TokenRow[]);
      return rows.map(toToken);
    },
    async approve(input: ApproveInput): Promise<GrantRecord> {
      return core.tx(() => {
        const { device, role, atMs } = input;
        upsertDeviceSync(core, device, atMs);
        const prev = core.stmt('SELECT epoch FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, role) as { epoch: number } | undefined;
        const grant = approvedGrant(input, prev?.epoch);
        core.db
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
        if (input.token) putTokenSync(core, device.deviceId, role, input.token, atMs, liveTokenSync(core, device.deviceId, role)?.created_at_ms);
        if (input.requestId) core.stmt('DELETE FROM pairing_requests WHERE request_id = ?').run(input.requestId);
        core.appendAuditSync(input.audit);
        return grant;
      });
    },
    async upsertPairingRequest(input: UpsertRequestInput): Promise<UpsertRequestResult> {
      return core.tx(() => {
        const row = core.stmt('SELECT body_json FROM pairing_requests WHERE device_id = ? AND role = ?').get(input.deviceId, input.role) as
          | { body_json: string }
          | undefined;
        const result = mergePairingRequest(row ? (JSON.parse(row.body_json) as PairingRequest) : null, input);
        const r = result.request;
        core.db
          .prepare(
            `INSERT INTO pairing_requests (request_id, device_id, role, body_json, created_at_ms) VALUES (?,?,?,?,?)
             ON CONFLICT(request_id) DO UPDATE SET body_json = excluded.body_json`,
          )
          .run(r.requestId, r.deviceId, r.role, JSON.stringify(r), r.createdAtMs);
        if (result.created || result.widened) core.appendAuditSync(input.audit);
        return result;
      });
    },
    async getPairingRequest(requestId: string) {
      const r = core.stmt('SELECT body_json FROM pairing_requests WHERE request_id = ?').get(requestId) as { body_json: string } | undefined;
      return r ? (JSON.parse(r.body_json) as PairingRequest) : null;
    },
    async listPairingRequests(deviceId?: string) {
      const rows = (
        deviceId
          ? core.stmt('SELECT body_json FROM pairing_requests WHERE device_id = ? ORDER BY created_at_ms').all(deviceId)
          : core.stmt('SELECT body_json FROM pairing_requests ORDER BY created_at_ms').all()
      ) as Array<{ body_json: string }>;
      return rows.map((r) => JSON.parse(r.body_json) as PairingRequest);
    },
    async deletePairingRequest(requestId: string, audit: AuditInput) {
      return core.tx(() => {
        const n = core.stmt('DELETE FROM pairing_requests WHERE request_id = ?').run(requestId).changes;
        if (n > 0) core.appendAuditSync(audit);
        return n > 0;
      });
    },
    async rotateToken(deviceId: string, role: Role, token: NewToken | null, scopes: string[] | null, atMs: number, audit: AuditInput) {
      return core.tx(() => {
        const g = core.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
        if (!g) return null;
        const created = liveTokenSync(core, deviceId, role)?.created_at_ms ?? atMs;
        const next = { ...toGrant(g), epoch: g.epoch + 1, scopes: scopes ? [...scopes] : JSON.parse(g.scopes_json) };
        core.db
          .prepare('UPDATE grants SET epoch = ?, scopes_json = ? WHERE device_id = ? AND role = ?')
          .run(next.epoch, JSON.stringify(next.scopes), deviceId, role);
        if (token) putTokenSync(core, deviceId, role, token, atMs, created);
        else core.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(deviceId, role);
        core.appendAuditSync(audit);
        return next as GrantRecord;
      });
    },
    async issueTokenIfAbsent(deviceId: string, role: Role, token: NewToken, atMs: number, audit: AuditInput) {
      return core.tx(() => {
        const g = core.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
        if (!g || liveTokenSync(core, deviceId, role)) return null;
        putTokenSync(core, deviceId, role, token, atMs);
        core.appendAuditSync(audit);
        return toGrant(g);
      });
    },
    async revokeToken(deviceId: string, role: Role, atMs: number, audit: AuditInput) {
      return core.tx(() => {
        const t = liveTokenSync(core, deviceId, role);
        const n = core.stmt('DELETE FROM grants WHERE device_id = ? AND role = ?').run(deviceId, role).changes;
        if (n === 0) return null;
        if (t) core.stmt('UPDATE tokens SET revoked_at_ms = ? WHERE token_id = ?').run(atMs, t.token_id);
        core.appendAuditSync(audit);
        return t ? toToken({ ...t, revoked_at_ms: atMs }) : null;
      });
    },
    async expireGrant(deviceId: string, role: Role, atMs: number, audit: AuditInput): Promise<GrantExpiry | null> {
      return core.tx(() => {
        const row = core.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow | undefined;
        const g = row ? toGrant(row) : null;
        if (!g || g.expiresAtMs == null || g.expiresAtMs > atMs) return null;
        const next = grantAfterExpiry(g);
        if (next) {
          core
            .stmt('UPDATE grants SET scopes_json = ?, epoch = ?, expires_at_ms = NULL, scopes_after_expiry_json = NULL WHERE device_id = ? AND role = ?')
            .run(JSON.stringify(next.scopes), next.epoch, deviceId, role);
        } else {
          const t = liveTokenSync(core, deviceId, role);
          core.stmt('DELETE FROM grants WHERE device_id = ? AND role = ?').run(deviceId, role);
          if (t) core.stmt('UPDATE tokens SET revoked_at_ms = ? WHERE token_id = ?').run(atMs, t.token_id);
        }
        core.appendAuditSync(audit);
        return next ? { outcome: 'narrowed' as const, grant: next } : { outcome: 'removed' as const, grant: g };
      });
    },
    async extendGrant(deviceId: string, role: Role, expiresAtMs: number, audit: AuditInput) {
      return core.tx(() => {
        const n = core
          .stmt('UPDATE grants SET expires_at_ms = ? WHERE device_id = ? AND role = ? AND expires_at_ms IS NOT NULL')
          .run(expiresAtMs, deviceId, role).changes;
        if (n === 0) return null;
        core.appendAuditSync(audit);
        return toGrant(core.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(deviceId, role) as GrantRow);
      });
    },
    async removeRole(deviceId: string, role: Role, audit: AuditInput) {
      return core.tx(() => {
        const n = core.stmt('DELETE FROM grants WHERE device_id = ? AND role = ?').run(deviceId, role).changes;
        if (n === 0) return false;
        core.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(deviceId, role);
        core.stmt('DELETE FROM pairing_requests WHERE device_id = ? AND role = ?').run(deviceId, role);
        const left = core.stmt('SELECT COUNT(*) AS n FROM grants WHERE device_id = ?').get(deviceId) as { n: number };
        if (left.n === 0) core.stmt('DELETE FROM devices WHERE device_id = ?').run(deviceId);
        core.appendAuditSync(audit);
        return true;
      });
    },
    async removeDevice(deviceId: string, audit: AuditInput) {
      return core.tx(() => {
        const a = core.stmt('DELETE FROM devices WHERE device_id = ?').run(deviceId).changes;
        const b = core.stmt('DELETE FROM pairing_requests WHERE device_id = ?').run(deviceId).changes;
        if (a + b === 0) return false;
        core.appendAuditSync(audit);
        return true;
      });
    },
    async renameDevice(deviceId: string, label: string, audit: AuditInput) {
      return core.tx(() => {
        const n = core.stmt('UPDATE devices SET label = ? WHERE device_id = ?').run(label, deviceId).changes;
        if (n > 0) core.appendAuditSync(audit);
        return n > 0;
      });
    },
    async recordSeen(entries: Array<{ deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>) {
      if (entries.length === 0) return;
      const dev = core.stmt('UPDATE devices SET last_seen_at_ms = ?, last_seen_address = ? WHERE device_id = ?');
      const tok = core.stmt('UPDATE tokens SET last_used_at_ms = ? WHERE token_id = ?');
      core.tx(() => {
        for (const e of entries) {
          dev.run(e.atMs, e.address, e.deviceId);
          if (e.tokenId) tok.run(e.atMs, e.tokenId);
        }
      });
    },
  };
}
