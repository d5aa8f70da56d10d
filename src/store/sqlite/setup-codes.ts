/** SQLite store, domain: setup codes (mint, redeem in one transaction, count failures, revoke). */
import type { Role } from '@clawgate/protocol/frames';
import { checkRedemption, failureBurns, redeemedGrantScopes, redeemedRoles } from '../setup-shared.js';
import { type GrantRow, type SetupRow, toGrant, toSetup } from '../shared.js';
import type { AuditInput, NewSetupCode, NewToken, RedeemSetupInput, RedeemSetupResult, SetupCodeRecord, SetupCodeStore } from '../types.js';
import type { SqliteDb } from './db.js';
import { putTokenSync, upsertDeviceSync } from './devices.js';

export function setupSync(core: SqliteDb, setupId: string): SetupCodeRecord | null {
  const r = core.stmt('SELECT * FROM setup_codes WHERE setup_id = ?').get(setupId) as SetupRow | undefined;
  return r ? toSetup(r) : null;
}

export function sqliteSetupCodes(core: SqliteDb): SetupCodeStore {
  return {
    async createSetupCode(input: NewSetupCode): Promise<SetupCodeRecord> {
      return core.tx(() => {
        core.db
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
        core.appendAuditSync(input.audit);
        return setupSync(core, input.setupId) as SetupCodeRecord;
      });
    },
    async getSetupCode(setupId: string) {
      return setupSync(core, setupId);
    },
    async listSetupCodes() {
      return (core.stmt('SELECT * FROM setup_codes ORDER BY created_at_ms, rowid').all() as SetupRow[]).map(toSetup);
    },
    async redeemSetupCode(input: RedeemSetupInput): Promise<RedeemSetupResult> {
      return core.tx((): RedeemSetupResult => {
        const { device, atMs } = input;
        const code = setupSync(core, input.setupId);
        const epochOf = (r: Role) =>
          (core.stmt('SELECT epoch FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, r) as { epoch: number } | undefined)?.epoch;
        const check = checkRedemption(code, device, atMs, input.graceMs, epochOf);
        if (!check.ok) return check;
        const c = code as SetupCodeRecord;
        const roles = redeemedRoles(c, input.tokens);
        const resolved: string[] = [];
        if (check.repeat) {
          core.stmt('UPDATE setup_codes SET redeem_count = redeem_count + 1 WHERE setup_id = ?').run(c.setupId);
        } else {
          upsertDeviceSync(core, device, atMs);
          const epochs: Partial<Record<Role, number>> = {};
          for (const r of roles) {
            const prev = core.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, r) as GrantRow | undefined;
            const scopes = redeemedGrantScopes(c.profile, r, prev ? (JSON.parse(prev.scopes_json) as string[]) : undefined);
            const epoch = (prev?.epoch ?? 0) + 1;
            core.db
              .prepare(
                `INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via) VALUES (?,?,?,?,?,?)
                 ON CONFLICT(device_id, role) DO UPDATE SET scopes_json = excluded.scopes_json, epoch = excluded.epoch,
                   approved_at_ms = excluded.approved_at_ms, approved_via = excluded.approved_via, approved_by = NULL,
                   expires_at_ms = NULL, scopes_after_expiry_json = NULL`,
              )
              .run(device.deviceId, r, JSON.stringify(scopes), epoch, atMs, 'bootstrap');
            epochs[r] = epoch;
            const reqs = core.stmt('SELECT request_id FROM pairing_requests WHERE device_id = ? AND role = ?').all(device.deviceId, r) as Array<{
              request_id: string;
            }>;
            for (const q of reqs) resolved.push(q.request_id);
            core.stmt('DELETE FROM pairing_requests WHERE device_id = ? AND role = ?').run(device.deviceId, r);
          }
          core.db
            .prepare(
              `UPDATE setup_codes SET redeemed_at_ms = ?, redeem_count = 1, device_id = ?, public_key = ?, device_name = ?,
                 redeemed_role = ?, grant_epochs_json = ? WHERE setup_id = ?`,
            )
            .run(atMs, device.deviceId, device.publicKey, device.meta.displayName ?? null, input.role, JSON.stringify(epochs), c.setupId);
        }
        for (const r of roles) putTokenSync(core, device.deviceId, r, input.tokens[r] as NewToken, atMs);
        core.appendAuditSync(check.repeat ? input.repeatAudit : input.audit);
        const grants = roles.map((r) => toGrant(core.stmt('SELECT * FROM grants WHERE device_id = ? AND role = ?').get(device.deviceId, r) as GrantRow));
        return { ok: true, repeat: check.repeat, code: setupSync(core, c.setupId) as SetupCodeRecord, grants, resolvedRequestIds: resolved };
      });
    },
    async recordSetupFailure(setupId: string, atMs: number, budget: number, burnAudit: AuditInput) {
      return core.tx(() => {
        const c = setupSync(core, setupId);
        if (!c) return null;
        const burns = failureBurns(c, budget);
        core.db
          .prepare('UPDATE setup_codes SET failures = failures + 1, burned_at_ms = COALESCE(burned_at_ms, ?) WHERE setup_id = ?')
          .run(burns ? atMs : null, setupId);
        if (burns) core.appendAuditSync(burnAudit);
        return { failures: c.failures + 1, burned: burns };
      });
    },
    async revokeSetupCode(setupId: string, atMs: number, audit: AuditInput) {
      return core.tx(() => {
        const c = setupSync(core, setupId);
        if (!c) return null;
        if (c.revokedAtMs !== undefined || c.burnedAtMs !== undefined) return { code: c, changed: false };
        core.stmt('UPDATE setup_codes SET revoked_at_ms = ? WHERE setup_id = ?').run(atMs, setupId);
        core.appendAuditSync(audit);
        return { code: setupSync(core, setupId) as SetupCodeRecord, changed: true };
      });
    },
  };
}
