/** SQLite store, domain: the hash-chained audit log. */
import { type AuditRow, toAudit } from '../shared.js';
import type { AuditInput, AuditStore } from '../types.js';
import type { SqliteDb } from './db.js';

export function sqliteAudit(core: SqliteDb): AuditStore {
  return {
    async appendAudit(input: AuditInput) {
      return core.tx(() => core.appendAuditSync(input));
    },
    async listAudit(opts: { afterSeq?: number; limit?: number } = {}) {
      const rows = core.stmt('SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?').all(opts.afterSeq ?? 0, opts.limit ?? -1) as AuditRow[];
      return rows.map(toAudit);
    },
  };
}
