/** SQLite store, domain: importing another gateway's paired devices in one transaction, read in batches. */
import { batchesOf, type ExistingDevice, IMPORT_BATCH_DEVICES, ImportRefused, ImportTally, planDeviceImport } from '../import-shared.js';
import { type DeviceRow, type GrantRow, type TokenRow, toDevice, toGrant, toToken } from '../shared.js';
import type { DeviceImportReport, DeviceImportStore, ImportDevicesInput, ImportDevicesResult, NodeSurfaceRecord } from '../types.js';
import type { SqliteDb } from './db.js';
import { body } from './db.js';

export function sqliteImport(core: SqliteDb): DeviceImportStore {
  return {
    async importDevices(input: ImportDevicesInput): Promise<ImportDevicesResult> {
      const total = () => (core.stmt('SELECT COUNT(*) AS n FROM devices').get() as { n: number }).n;
      try {
        return core.tx((): ImportDevicesResult => {
          const tally = new ImportTally(total());
          const reports: DeviceImportReport[] = [];
          for (const batch of batchesOf(input.devices, IMPORT_BATCH_DEVICES)) {
            const existing = new Map<string, ExistingDevice>();
            for (const d of batch) {
              const dev = core.stmt('SELECT * FROM devices WHERE device_id = ?').get(d.deviceId) as DeviceRow | undefined;
              const surface = core.stmt('SELECT body_json FROM node_surfaces WHERE device_id = ?').get(d.deviceId) as { body_json: string } | undefined;
              existing.set(d.deviceId, {
                device: dev ? toDevice(dev) : null,
                grants: (core.stmt('SELECT * FROM grants WHERE device_id = ?').all(d.deviceId) as GrantRow[]).map(toGrant),
                tokens: (core.stmt('SELECT * FROM tokens WHERE device_id = ?').all(d.deviceId) as TokenRow[]).map(toToken),
                surface: surface ? (JSON.parse(surface.body_json) as NodeSurfaceRecord) : null,
              });
            }
            tally.add(batch, existing);
            const plans = batch.map((d) => ({ d, plan: planDeviceImport(existing.get(d.deviceId) as ExistingDevice, d, input) }));
            for (const p of plans) reports.push(p.plan.report);
            if (input.dryRun) continue;
            for (const { d, plan } of plans) {
              if (plan.newDevice) {
                core
                  .stmt('INSERT INTO devices (device_id, public_key, meta_json, label, created_at_ms, last_seen_at_ms) VALUES (?,?,?,?,?,?)')
                  .run(d.deviceId, d.publicKey, body(d.meta), d.label ?? null, d.createdAtMs, d.lastSeenAtMs ?? null);
              }
              for (const g of plan.grants) {
                core
                  .stmt('INSERT INTO grants (device_id, role, scopes_json, epoch, approved_at_ms, approved_via) VALUES (?,?,?,?,?,?)')
                  .run(g.deviceId, g.role, JSON.stringify(g.scopes), g.epoch, g.approvedAtMs, g.approvedVia);
              }
              for (const t of plan.tokens) {
                core.stmt('DELETE FROM tokens WHERE device_id = ? AND role = ?').run(d.deviceId, t.role);
                core
                  .stmt('INSERT INTO tokens (token_id, device_id, role, secret_hash, created_at_ms, rotated_at_ms, last_used_at_ms) VALUES (?,?,?,?,?,?,?)')
                  .run(t.tokenId, d.deviceId, t.role, t.secretHash, t.createdAtMs, t.rotatedAtMs ?? null, t.lastUsedAtMs ?? null);
              }
              if (plan.surface) {
                core
                  .stmt('INSERT INTO node_surfaces (device_id, body_json, approved_at_ms) VALUES (?,?,?)')
                  .run(d.deviceId, body(plan.surface), plan.surface.approvedAtMs);
              }
              if (plan.audit) core.appendAuditSync(plan.audit);
            }
          }
          // Known only once every device was read: a refused import rolls back what it wrote.
          if (!input.merge && tally.otherDevices > 0) throw new ImportRefused(tally.otherDevices);
          return { ok: true, devices: reports, applied: !input.dryRun };
        });
      } catch (err) {
        if (err instanceof ImportRefused) return { ok: false, reason: 'not-empty', otherDevices: err.otherDevices };
        throw err;
      }
    },
  };
}
