/** PostgreSQL store, domain: bulk loading of approved devices, one transaction per batch. */
import { type BulkDevicesInput, type BulkDevicesResult, bulkAudit, bulkInsertPostgres } from '../bulk-devices.js';
import { duplicateIds, seedBatchProblem } from '../device-page.js';
import type { DeviceSeedStore, SeedDevicesInput, SeedDevicesResult } from '../types.js';
import type { PgDb } from './db.js';

/** `($1,$2,…),($n+1,…)` for `rows` rows of `cols` values each. */
function valuesList(rows: number, cols: number): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) out.push(`(${Array.from({ length: cols }, (_, c) => `$${r * cols + c + 1}`).join(',')})`);
  return out.join(',');
}

export function postgresDeviceSeed(core: PgDb): DeviceSeedStore {
  return {
    async seedPairedDevices(input: SeedDevicesInput): Promise<SeedDevicesResult> {
      const problem = seedBatchProblem(input.devices);
      if (problem) return { ok: false, reason: problem };
      const dup = duplicateIds(input.devices);
      if (dup.length > 0) return { ok: false, reason: 'exists', deviceIds: dup };
      return core.write(async (tx): Promise<SeedDevicesResult> => {
        const ids = input.devices.map((d) => d.deviceId);
        const taken = await tx.all<{ device_id: string }>('SELECT device_id FROM devices WHERE device_id = ANY($1::text[])', [ids]);
        if (taken.length > 0) return { ok: false, reason: 'exists', deviceIds: taken.map((r) => r.device_id) };
        // One multi-row INSERT per table: a batch costs three round trips, not one per row.
        const devs = input.devices.flatMap((d) => [d.deviceId, d.publicKey, JSON.stringify(d.meta), d.label ?? null, d.createdAtMs]);
        await tx.run(`INSERT INTO devices (device_id, public_key, meta_json, label, created_at_ms) VALUES ${valuesList(input.devices.length, 5)}`, devs);
        const grants = input.devices.flatMap((d) => d.grants.map((g) => [d.deviceId, g.role, JSON.stringify(g.scopes), 1, g.approvedAtMs, g.approvedVia]));
        if (grants.length > 0) {
          await tx.run(
            `INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via) VALUES ${valuesList(grants.length, 6)}`,
            grants.flat(),
          );
        }
        const tokens = input.devices.flatMap((d) =>
          d.tokens.map((t) => [t.tokenId, d.deviceId, t.role, t.secretHash, t.createdAtMs, t.rotatedAtMs ?? null, t.lastUsedAtMs ?? null]),
        );
        if (tokens.length > 0) {
          await tx.run(
            `INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms) VALUES ${valuesList(tokens.length, 7)}`,
            tokens.flat(),
          );
        }
        await core.appendAuditTx(tx, input.audit);
        return { ok: true, inserted: input.devices.length };
      });
    },
    async importDevicesBulk(input: BulkDevicesInput): Promise<BulkDevicesResult> {
      return core.write(async (tx) => {
        const out = await bulkInsertPostgres(tx, input);
        if (out.ok) await core.appendAuditTx(tx, bulkAudit(input));
        return out;
      });
    },
  };
}
