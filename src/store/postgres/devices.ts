/** PostgreSQL store, domain: paired devices, their grants and tokens, and pending pairing requests. */
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
import { PG_DEVICE_DISPLAY_NAME, PG_DEVICE_LABEL, type PgDb, type PgQuery } from './db.js';

export function liveTokenTx(tx: PgQuery, deviceId: string, role: Role) {
  return tx.one<TokenRow>('SELECT * FROM tokens WHERE device_id = $1 AND role = $2 AND revoked_at_ms IS NULL', [deviceId, role]);
}

const TOKEN_COLUMNS = 'token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms';

/** The role's previous token rows go and the new token comes in, in one statement (one round trip). */
export async function putTokenTx(tx: PgQuery, deviceId: string, role: Role, token: NewToken, atMs: number, createdAtMs?: number) {
  await tx.run(
    `WITH gone AS (DELETE FROM tokens WHERE device_id = $2 AND role = $3)
     INSERT INTO tokens (${TOKEN_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6)`,
    [token.tokenId, deviceId, role, token.secretHash, createdAtMs ?? atMs, createdAtMs === undefined ? null : atMs],
  );
}

/** Create or update a device row: $1 id, $2 public key, $3 meta JSON, $4 time (created / last seen), $5 address. */
const UPSERT_DEVICE_SQL = `INSERT INTO devices (device_id, public_key, meta_json, created_at_ms, last_seen_at_ms, last_seen_address) VALUES ($1,$2,$3,$4,$4,$5)
     ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key, meta_json = excluded.meta_json,
       last_seen_at_ms = excluded.last_seen_at_ms, last_seen_address = COALESCE(excluded.last_seen_address, devices.last_seen_address)`;

export async function upsertDeviceTx(tx: PgQuery, device: ApproveInput['device'], atMs: number) {
  await tx.run(UPSERT_DEVICE_SQL, [device.deviceId, device.publicKey, JSON.stringify(device.meta), atMs, device.address ?? null]);
}

const GRANT_COLUMNS = 'device_id, role, scopes_json, epoch, approved_at_ms, approved_via, approved_by, expires_at_ms, scopes_after_expiry_json';
/** What a grant upsert replaces besides the epoch (which the caller sets: given, or one past the old). */
const GRANT_UPDATE_BUT_EPOCH = `scopes_json = excluded.scopes_json, approved_at_ms = excluded.approved_at_ms, approved_via = excluded.approved_via,
       approved_by = excluded.approved_by, expires_at_ms = excluded.expires_at_ms, scopes_after_expiry_json = excluded.scopes_after_expiry_json`;

export async function putGrantTx(tx: PgQuery, g: GrantRecord) {
  await tx.run(
    `INSERT INTO grants (${GRANT_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
     ON CONFLICT (device_id, role) DO UPDATE SET epoch = excluded.epoch, ${GRANT_UPDATE_BUT_EPOCH}`,
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

/**
 * An approval's writes in one statement (one round trip): the device row (created or updated),
 * the pending request's removal and the grant, created at epoch 1 or replaced at the next epoch.
 * The sub-statements share one snapshot; the grant's reference to a device row inserted beside
 * it is checked at the end of the statement, when that row exists.
 */
const APPROVE_SQL = `WITH dev AS (${UPSERT_DEVICE_SQL}),
  req AS (DELETE FROM pairing_requests WHERE request_id = $6)
  INSERT INTO grants (${GRANT_COLUMNS}) VALUES ($1,$7,$8,1,$4,$9,$10,$11,$12)
  ON CONFLICT (device_id, role) DO UPDATE SET epoch = grants.epoch + 1, ${GRANT_UPDATE_BUT_EPOCH}
  RETURNING epoch`;

export function postgresDevices(core: PgDb): DeviceStore {
  return {
    async getDevice(deviceId: string) {
      const r = await core.q.one<DeviceRow>('SELECT * FROM devices WHERE device_id = $1', [deviceId]);
      return r ? toDevice(r) : null;
    },
    async listDevices() {
      return (await core.q.all<DeviceRow>('SELECT * FROM devices ORDER BY created_at_ms, ord')).map(toDevice);
    },
    async listDevicesPage(query: DevicePageQuery): Promise<DevicePageResult> {
      const q = checkDevicePageQuery(query);
      if (!q.ok) return q;
      const where: string[] = [];
      const args: unknown[] = [];
      if (q.after) {
        args.push(q.after.createdAtMs, q.after.deviceId);
        where.push(`(created_at_ms, device_id COLLATE "C") > ($${args.length - 1}, $${args.length})`);
      }
      if (q.search) {
        const { typed, folded } = q.search;
        const ranges = (
          [
            ['device_id COLLATE "C"', typed],
            ['device_id COLLATE "C"', folded],
            [PG_DEVICE_LABEL, folded],
            [PG_DEVICE_DISPLAY_NAME, folded],
          ] as const
        ).map(([x, s]) => {
          args.push(s, prefixUpperBound(s));
          return `(${x} >= $${args.length - 1} AND ${x} < $${args.length})`;
        });
        where.push(`(${ranges.join(' OR ')})`);
      }
      args.push(q.limit + 1);
      const sql = `SELECT * FROM devices ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at_ms, device_id COLLATE "C" LIMIT $${args.length}`;
      const rows = await core.q.all<DeviceRow>(sql, args);
      return pageOf(rows.map(toDevice), q.limit);
    },
    async listGrants(deviceId?: string) {
      const rows = deviceId
        ? await core.q.all<GrantRow>('SELECT * FROM grants WHERE device_id = $1 ORDER BY ord', [deviceId])
        : await core.q.all<GrantRow>('SELECT * FROM grants ORDER BY ord');
      return rows.map(toGrant);
    },
    async getGrant(deviceId: string, role: Role) {
      const r = await core.q.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
      return r ? toGrant(r) : null;
    },
    async listGrantsOfRole(role: Role) {
      return (await core.q.all<GrantRow>('SELECT * FROM grants WHERE role = $1 ORDER BY device_id COLLATE "C"', [role])).map(toGrant);
    },
    async listTimeBoundGrants() {
      return (await core.q.all<GrantRow>('SELECT * FROM grants WHERE expires_at_ms IS NOT NULL ORDER BY expires_at_ms, device_id COLLATE "C", role')).map(
        toGrant,
      );
    },
    async getToken(tokenId: string) {
      const r = await core.q.one<TokenRow>('SELECT * FROM tokens WHERE token_id = $1', [tokenId]);
      return r ? toToken(r) : null;
    },
    async listTokens(deviceId?: string) {
      const rows = deviceId
        ? await core.q.all<TokenRow>('SELECT * FROM tokens WHERE device_id = $1 ORDER BY ord', [deviceId])
        : await core.q.all<TokenRow>('SELECT * FROM tokens ORDER BY ord');
      return rows.map(toToken);
    },
    async approve(input: ApproveInput): Promise<GrantRecord> {
      return core.write(async (tx) => {
        const { device, role, atMs } = input;
        // The fields of the grant; its epoch (one past the previous grant's) is the statement's.
        const fields = approvedGrant(input, undefined);
        const row = await tx.one<{ epoch: number }>(APPROVE_SQL, [
          device.deviceId,
          device.publicKey,
          JSON.stringify(device.meta),
          atMs,
          device.address ?? null,
          input.requestId ?? null,
          role,
          JSON.stringify(fields.scopes),
          fields.approvedVia,
          fields.approvedBy ?? null,
          fields.expiresAtMs ?? null,
          fields.expiresAtMs != null ? JSON.stringify(fields.scopesAfterExpiry ?? []) : null,
        ]);
        const grant = approvedGrant(input, (row?.epoch ?? 1) - 1);
        if (input.token) await putTokenTx(tx, device.deviceId, role, input.token, atMs, (await liveTokenTx(tx, device.deviceId, role))?.created_at_ms);
        await core.appendAuditTx(tx, input.audit);
        return grant;
      });
    },
    async upsertPairingRequest(input: UpsertRequestInput): Promise<UpsertRequestResult> {
      return core.write(async (tx) => {
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
        if (result.created || result.widened) await core.appendAuditTx(tx, input.audit);
        return result;
      });
    },
    async getPairingRequest(requestId: string) {
      const r = await core.q.one<{ body_json: string }>('SELECT body_json FROM pairing_requests WHERE request_id = $1', [requestId]);
      return r ? (JSON.parse(r.body_json) as PairingRequest) : null;
    },
    async listPairingRequests(deviceId?: string) {
      const rows = deviceId
        ? await core.q.all<{ body_json: string }>('SELECT body_json FROM pairing_requests WHERE device_id = $1 ORDER BY created_at_ms, ord', [deviceId])
        : await core.q.all<{ body_json: string }>('SELECT body_json FROM pairing_requests ORDER BY created_at_ms, ord');
      return rows.map((r) => JSON.parse(r.body_json) as PairingRequest);
    },
    async deletePairingRequest(requestId: string, audit: AuditInput) {
      return core.write(async (tx) => {
        const n = await tx.run('DELETE FROM pairing_requests WHERE request_id = $1', [requestId]);
        if (n > 0) await core.appendAuditTx(tx, audit);
        return n > 0;
      });
    },
    async rotateToken(deviceId: string, role: Role, token: NewToken | null, scopes: string[] | null, atMs: number, audit: AuditInput) {
      return core.write(async (tx) => {
        // The grant and when its live token (if any) was first issued, in one round trip.
        const g = await tx.one<GrantRow & { live_created_at_ms: number | null }>(
          `SELECT g.*, (SELECT t.created_at_ms FROM tokens t WHERE t.device_id = g.device_id AND t.role = g.role AND t.revoked_at_ms IS NULL LIMIT 1)
             AS live_created_at_ms
           FROM grants g WHERE g.device_id = $1 AND g.role = $2`,
          [deviceId, role],
        );
        if (!g) return null;
        const created = g.live_created_at_ms ?? atMs;
        const next: GrantRecord = { ...toGrant(g), epoch: g.epoch + 1, scopes: scopes ? [...scopes] : JSON.parse(g.scopes_json) };
        // The new epoch and the role's token rows replaced (or dropped) in one statement.
        const bumped = `WITH up AS (UPDATE grants SET epoch = $3, scopes_json = $4 WHERE device_id = $1 AND role = $2)`;
        if (token)
          await tx.run(
            `${bumped}, gone AS (DELETE FROM tokens WHERE device_id = $1 AND role = $2)
             INSERT INTO tokens (${TOKEN_COLUMNS}) VALUES ($5,$1,$2,$6,$7,$8)`,
            [deviceId, role, next.epoch, JSON.stringify(next.scopes), token.tokenId, token.secretHash, created, atMs],
          );
        else await tx.run(`${bumped} DELETE FROM tokens WHERE device_id = $1 AND role = $2`, [deviceId, role, next.epoch, JSON.stringify(next.scopes)]);
        await core.appendAuditTx(tx, audit);
        return next;
      });
    },
    async issueTokenIfAbsent(deviceId: string, role: Role, token: NewToken, atMs: number, audit: AuditInput) {
      return core.write(async (tx) => {
        // Writes hold the store's write lock, so the check and the insert see no concurrent issuance.
        const g = await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
        if (!g || (await liveTokenTx(tx, deviceId, role))) return null;
        await putTokenTx(tx, deviceId, role, token, atMs);
        await core.appendAuditTx(tx, audit);
        return toGrant(g);
      });
    },
    async revokeToken(deviceId: string, role: Role, atMs: number, audit: AuditInput) {
      return core.write(async (tx) => {
        const t = await liveTokenTx(tx, deviceId, role);
        const n = await tx.run('DELETE FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
        if (n === 0) return null;
        if (t) await tx.run('UPDATE tokens SET revoked_at_ms = $1 WHERE token_id = $2', [atMs, t.token_id]);
        await core.appendAuditTx(tx, audit);
        return t ? toToken({ ...t, revoked_at_ms: atMs }) : null;
      });
    },
    async expireGrant(deviceId: string, role: Role, atMs: number, audit: AuditInput): Promise<GrantExpiry | null> {
      return core.write(async (tx) => {
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
          const t = await liveTokenTx(tx, deviceId, role);
          await tx.run('DELETE FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
          if (t) await tx.run('UPDATE tokens SET revoked_at_ms = $1 WHERE token_id = $2', [atMs, t.token_id]);
        }
        await core.appendAuditTx(tx, audit);
        return next ? { outcome: 'narrowed' as const, grant: next } : { outcome: 'removed' as const, grant: g };
      });
    },
    async extendGrant(deviceId: string, role: Role, expiresAtMs: number, audit: AuditInput) {
      return core.write(async (tx) => {
        const n = await tx.run('UPDATE grants SET expires_at_ms = $1 WHERE device_id = $2 AND role = $3 AND expires_at_ms IS NOT NULL', [
          expiresAtMs,
          deviceId,
          role,
        ]);
        if (n === 0) return null;
        await core.appendAuditTx(tx, audit);
        return toGrant((await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role])) as GrantRow);
      });
    },
    async removeRole(deviceId: string, role: Role, audit: AuditInput) {
      return core.write(async (tx) => {
        const n = await tx.run('DELETE FROM grants WHERE device_id = $1 AND role = $2', [deviceId, role]);
        if (n === 0) return false;
        await tx.run('DELETE FROM tokens WHERE device_id = $1 AND role = $2', [deviceId, role]);
        await tx.run('DELETE FROM pairing_requests WHERE device_id = $1 AND role = $2', [deviceId, role]);
        const left = await tx.one<{ n: number }>('SELECT COUNT(*)::int AS n FROM grants WHERE device_id = $1', [deviceId]);
        if (left?.n === 0) await tx.run('DELETE FROM devices WHERE device_id = $1', [deviceId]);
        await core.appendAuditTx(tx, audit);
        return true;
      });
    },
    async removeDevice(deviceId: string, audit: AuditInput) {
      return core.write(async (tx) => {
        const a = await tx.run('DELETE FROM devices WHERE device_id = $1', [deviceId]);
        const b = await tx.run('DELETE FROM pairing_requests WHERE device_id = $1', [deviceId]);
        if (a + b === 0) return false;
        await core.appendAuditTx(tx, audit);
        return true;
      });
    },
    async renameDevice(deviceId: string, label: string, audit: AuditInput) {
      return core.write(async (tx) => {
        const n = await tx.run('UPDATE devices SET label = $1 WHERE device_id = $2', [label, deviceId]);
        if (n > 0) await core.appendAuditTx(tx, audit);
        return n > 0;
      });
    },
    async recordSeen(entries: Array<{ deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>) {
      if (entries.length === 0) return;
      // Best-effort metadata with no audit entry: it does not take the writers' lock.
      const c = await core.pool.connect();
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
    },
  };
}
