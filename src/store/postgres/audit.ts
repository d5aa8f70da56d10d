/** PostgreSQL store, domain: the hash-chained audit log. */
import { type AuditRow, toAudit } from '../shared.js';
import type { AuditInput, AuditStore } from '../types.js';
import type { PgDb } from './db.js';

export function postgresAudit(core: PgDb): AuditStore {
  return {
    async appendAudit(input: AuditInput) {
      return core.write((tx) => core.appendAuditTx(tx, input));
    },
    async listAudit(opts: { afterSeq?: number; limit?: number } = {}) {
      const rows = await core.q.all<AuditRow>('SELECT * FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2', [opts.afterSeq ?? 0, opts.limit ?? null]);
      return rows.map(toAudit);
    },
  };
}
