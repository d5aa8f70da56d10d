/** PostgreSQL store, domain: bulk loading of approved devices, one transaction per batch. */

import type { DeviceSeedStore, SeedDevicesInput, SeedDevicesResult } from '../../core/store.js';
import { seedBatchProblem } from '../device-page.js';
import { columnsOf, SEED_DEVICE_COLUMNS, SEED_GRANT_COLUMNS, SEED_TOKEN_COLUMNS, seedRefusal, seedRows } from '../seed-devices.js';
import type { PgDb } from './db.js';

export function postgresDeviceSeed(core: PgDb): DeviceSeedStore {
  return {
    async seedPairedDevices(input: SeedDevicesInput): Promise<SeedDevicesResult> {
      // A wrong size is refused before the write lock; ids (repeated or held) are checked under
      // it, so one answer names every offending id.
      const problem = seedBatchProblem(input.devices);
      if (problem) return { ok: false, reason: problem };
      return core.write(async (tx): Promise<SeedDevicesResult> => {
        const ids = input.devices.map((d) => d.deviceId);
        const taken = await tx.all<{ device_id: string }>('SELECT device_id FROM devices WHERE device_id = ANY($1::text[])', [ids]);
        const refused = seedRefusal(input.devices, new Set(taken.map((r) => r.device_id)));
        if (refused) return refused;
        // One statement per table whatever the batch size: arrays bind as one parameter each,
        // so a batch never meets PostgreSQL's 65,535-parameter limit.
        const { devicesRows, grants, tokens } = seedRows(input.devices);
        await tx.run(
          `INSERT INTO ${SEED_DEVICE_COLUMNS} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])`,
          columnsOf(devicesRows, 5),
        );
        if (grants.length > 0) {
          await tx.run(
            `INSERT INTO ${SEED_GRANT_COLUMNS} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[])`,
            columnsOf(grants, 6),
          );
        }
        if (tokens.length > 0) {
          await tx.run(
            `INSERT INTO ${SEED_TOKEN_COLUMNS} SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::bigint[], $7::bigint[])`,
            columnsOf(tokens, 7),
          );
        }
        await core.appendAuditTx(tx, input.audit);
        return { ok: true, inserted: input.devices.length };
      });
    },
  };
}
