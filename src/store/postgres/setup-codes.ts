/** PostgreSQL store, domain: setup codes (mint, redeem in one transaction, count failures, revoke). */
import type { Role } from '@clawgate/protocol/frames';
import { checkRedemption, failureBurns, redeemedGrantScopes, redeemedRoles } from '../setup-shared.js';
import { type GrantRow, type SetupRow, toGrant, toSetup } from '../shared.js';
import type { AuditInput, GrantRecord, NewSetupCode, NewToken, RedeemSetupInput, RedeemSetupResult, SetupCodeRecord, SetupCodeStore } from '../types.js';
import type { PgDb, PgQuery } from './db.js';
import { putGrantTx, putTokenTx, upsertDeviceTx } from './devices.js';

export async function setupTx(tx: PgQuery, setupId: string, forUpdate = false): Promise<SetupCodeRecord | null> {
  const r = await tx.one<SetupRow>(`SELECT * FROM setup_codes WHERE setup_id = $1${forUpdate ? ' FOR UPDATE' : ''}`, [setupId]);
  return r ? toSetup(r) : null;
}

export function postgresSetupCodes(core: PgDb): SetupCodeStore {
  return {
    async createSetupCode(input: NewSetupCode): Promise<SetupCodeRecord> {
      return core.write(async (tx) => {
        await tx.run(
          `INSERT INTO setup_codes (setup_id, secret_hash, profile_json, label, url, created_at_ms, expires_at_ms, created_by)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
          [
            input.setupId,
            input.secretHash,
            JSON.stringify(input.profile),
            input.label ?? null,
            input.url,
            input.createdAtMs,
            input.expiresAtMs,
            input.createdBy,
          ],
        );
        await core.appendAuditTx(tx, input.audit);
        return (await setupTx(tx, input.setupId)) as SetupCodeRecord;
      });
    },
    async getSetupCode(setupId: string) {
      return setupTx(core.q, setupId);
    },
    async listSetupCodes() {
      return (await core.q.all<SetupRow>('SELECT * FROM setup_codes ORDER BY created_at_ms, ord')).map(toSetup);
    },
    async redeemSetupCode(input: RedeemSetupInput): Promise<RedeemSetupResult> {
      return core.write(async (tx): Promise<RedeemSetupResult> => {
        const { device, atMs } = input;
        // The row lock makes the code's state the one every other redemption sees after us, even
        // for a writer that (in some later version) skipped the writers' lock.
        const code = await setupTx(tx, input.setupId, true);
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
          await upsertDeviceTx(tx, device, atMs);
          const epochs: Partial<Record<Role, number>> = {};
          for (const r of roles) {
            const prev = await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [device.deviceId, r]);
            const scopes = redeemedGrantScopes(c.profile, r, prev ? (JSON.parse(prev.scopes_json) as string[]) : undefined);
            const epoch = (prev?.epoch ?? 0) + 1;
            await putGrantTx(tx, { deviceId: device.deviceId, role: r, scopes, epoch, approvedAtMs: atMs, approvedVia: 'bootstrap' });
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
        for (const r of roles) await putTokenTx(tx, device.deviceId, r, input.tokens[r] as NewToken, atMs);
        await core.appendAuditTx(tx, check.repeat ? input.repeatAudit : input.audit);
        const grants: GrantRecord[] = [];
        for (const r of roles)
          grants.push(toGrant((await tx.one<GrantRow>('SELECT * FROM grants WHERE device_id = $1 AND role = $2', [device.deviceId, r])) as GrantRow));
        return { ok: true, repeat: check.repeat, code: (await setupTx(tx, c.setupId)) as SetupCodeRecord, grants, resolvedRequestIds: resolved };
      });
    },
    async recordSetupFailure(setupId: string, atMs: number, budget: number, burnAudit: AuditInput) {
      return core.write(async (tx) => {
        const c = await setupTx(tx, setupId, true);
        if (!c) return null;
        const burns = failureBurns(c, budget);
        await tx.run('UPDATE setup_codes SET failures = failures + 1, burned_at_ms = COALESCE(burned_at_ms, $1) WHERE setup_id = $2', [
          burns ? atMs : null,
          setupId,
        ]);
        if (burns) await core.appendAuditTx(tx, burnAudit);
        return { failures: c.failures + 1, burned: burns };
      });
    },
    async revokeSetupCode(setupId: string, atMs: number, audit: AuditInput) {
      return core.write(async (tx) => {
        const c = await setupTx(tx, setupId, true);
        if (!c) return null;
        if (c.revokedAtMs !== undefined || c.burnedAtMs !== undefined) return { code: c, changed: false };
        await tx.run('UPDATE setup_codes SET revoked_at_ms = $1 WHERE setup_id = $2', [atMs, setupId]);
        await core.appendAuditTx(tx, audit);
        return { code: (await setupTx(tx, setupId)) as SetupCodeRecord, changed: true };
      });
    },
  };
}
