/** SQLite store, domain: bulk loading of approved devices, one transaction per batch. */
import { type BulkDevicesInput, type BulkDevicesResult, bulkAudit, bulkInsertSqlite } from '../bulk-devices.js';
import { duplicateIds, seedBatchProblem } from '../device-page.js';
import type { DeviceSeedStore, SeedDevicesInput, SeedDevicesResult } from '../types.js';
import { body, type SqliteDb } from './db.js';

export function sqliteDeviceSeed(core: SqliteDb): DeviceSeedStore {
  return {
    async seedPairedDevices(input: SeedDevicesInput): Promise<SeedDevicesResult> {
      const problem = seedBatchProblem(input.devices);
      if (problem) return { ok: false, reason: problem };
      const dup = duplicateIds(input.devices);
      if (dup.length > 0) return { ok: false, reason: 'exists', deviceIds: dup };
      const exists = core.stmt('SELECT 1 FROM devices WHERE device_id = ?');
      const dev = core.stmt('INSERT INTO devices (device_id, public_key, meta_json, label, created_at_ms) VALUES (?,?,?,?,?)');
      const grant = core.stmt('INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via) VALUES (?,?,?,1,?,?)');
      const token = core.stmt(
        'INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms) VALUES (?,?,?,?,?,?,?)',
      );
      return core.tx((): SeedDevicesResult => {
        const taken = input.devices.filter((d) => exists.get(d.deviceId) !== undefined).map((d) => d.deviceId);
        if (taken.length > 0) return { ok: false, reason: 'exists', deviceIds: taken };
        for (const d of input.devices) {
          dev.run(d.deviceId, d.publicKey, body(d.meta), d.label ?? null, d.createdAtMs);
          for (const g of d.grants) grant.run(d.deviceId, g.role, JSON.stringify(g.scopes), g.approvedAtMs, g.approvedVia);
          for (const t of d.tokens) token.run(t.tokenId, d.deviceId, t.role, t.secretHash, t.createdAtMs, t.rotatedAtMs ?? null, t.lastUsedAtMs ?? null);
        }
        core.appendAuditSync(input.audit);
        return { ok: true, inserted: input.devices.length };
      });
    },
    async importDevicesBulk(input: BulkDevicesInput): Promise<BulkDevicesResult> {
      return core.tx(() => {
        const out = bulkInsertSqlite(core.db, input);
        if (out.ok) core.appendAuditSync(bulkAudit(input));
        return out;
      });
    },
  };
}
