/** PostgreSQL store, domain: importing another gateway's paired devices in one transaction, read in batches. */
import { batchesOf, type ExistingDevice, IMPORT_BATCH_DEVICES, ImportRefused, ImportTally, planDeviceImport } from '../import-shared.js';
import { type DeviceRow, type GrantRow, type TokenRow, toDevice, toGrant, toToken } from '../shared.js';
import type { DeviceImportReport, DeviceImportStore, ImportDevicesInput, ImportDevicesResult, NodeSurfaceRecord } from '../types.js';
import type { PgDb, PgQuery } from './db.js';
import { putGrantTx } from './devices.js';

export function postgresImport(core: PgDb): DeviceImportStore {
  return {
    async importDevices(input: ImportDevicesInput): Promise<ImportDevicesResult> {
      const run = async (tx: PgQuery): Promise<ImportDevicesResult> => {
        const tally = new ImportTally((await tx.one<{ n: number }>('SELECT COUNT(*)::int AS n FROM devices'))?.n ?? 0);
        const reports: DeviceImportReport[] = [];
        for (const batch of batchesOf(input.devices, IMPORT_BATCH_DEVICES)) {
          const existing = new Map<string, ExistingDevice>();
          for (const d of batch) {
            const dev = await tx.one<DeviceRow>('SELECT * FROM devices WHERE device_id = $1', [d.deviceId]);
            const surface = await tx.one<{ body_json: string }>('SELECT body_json FROM node_surfaces WHERE device_id = $1', [d.deviceId]);
            existing.set(d.deviceId, {
              device: dev ? toDevice(dev) : null,
              grants: (await tx.all<GrantRow>('SELECT * FROM grants WHERE device_id = $1', [d.deviceId])).map(toGrant),
              tokens: (await tx.all<TokenRow>('SELECT * FROM tokens WHERE device_id = $1', [d.deviceId])).map(toToken),
              surface: surface ? (JSON.parse(surface.body_json) as NodeSurfaceRecord) : null,
            });
          }
          tally.add(batch, existing);
          const plans = batch.map((d) => ({ d, plan: planDeviceImport(existing.get(d.deviceId) as ExistingDevice, d, input) }));
          for (const p of plans) reports.push(p.plan.report);
          if (input.dryRun) continue;
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
            for (const g of plan.grants) await putGrantTx(tx, g);
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
            if (plan.audit) await core.appendAuditTx(tx, plan.audit);
          }
        }
        // Known only once every device was read: a refused import rolls back what it wrote.
        if (!input.merge && tally.otherDevices > 0) throw new ImportRefused(tally.otherDevices);
        return { ok: true, devices: reports, applied: !input.dryRun };
      };
      // A dry run reads inside the same serialized transaction as a real one, so both report alike.
      try {
        return await core.write(run);
      } catch (err) {
        if (err instanceof ImportRefused) return { ok: false, reason: 'not-empty', otherDevices: err.otherDevices };
        throw err;
      }
    },
  };
}
