/** SQLite store, domain: bulk loading of approved devices, one transaction per batch. */

import type { DeviceSeedStore, SeedDevicesInput, SeedDevicesResult } from '../../core/store.js';
import { seedBatchProblem } from '../device-page.js';
import { insertRowsSqlite, SEED_DEVICE_COLUMNS, SEED_GRANT_COLUMNS, SEED_TOKEN_COLUMNS, seedRefusal, seedRows } from '../seed-devices.js';
import type { SqliteDb } from './db.js';

export function sqliteDeviceSeed(core: SqliteDb): DeviceSeedStore {
  return {
    async seedPairedDevices(input: SeedDevicesInput): Promise<SeedDevicesResult> {
      // A wrong size is refused before the write lock; ids (repeated or held) are checked under
      // it, so one answer names every offending id.
      const problem = seedBatchProblem(input.devices);
      if (problem) return { ok: false, reason: problem };
      const held = core.stmt('SELECT device_id FROM devices WHERE device_id IN (SELECT value FROM json_each(?))');
      return core.tx((): SeedDevicesResult => {
        const ids = input.devices.map((d) => d.deviceId);
        const taken = new Set((held.all(JSON.stringify(ids)) as Array<{ device_id: string }>).map((r) => r.device_id));
        const refused = seedRefusal(input.devices, taken);
        if (refused) return refused;
        const { devicesRows, grants, tokens } = seedRows(input.devices);
        const cached = (sql: string) => core.stmt(sql);
        insertRowsSqlite(core.db, cached, SEED_DEVICE_COLUMNS, 5, devicesRows);
        insertRowsSqlite(core.db, cached, SEED_GRANT_COLUMNS, 6, grants);
        insertRowsSqlite(core.db, cached, SEED_TOKEN_COLUMNS, 7, tokens);
        core.appendAuditSync(input.audit);
        return { ok: true, inserted: input.devices.length };
      });
    },
  };
}
