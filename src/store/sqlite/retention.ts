/** SQLite store, domain: pruning finished records (never the audit log). */
import { approvalRecordRequestId, SIGN_IN_LINK_META_PREFIX, signInLinkPrunable } from '../retention-shared.js';
import type { PruneCounts, RetentionCutoffs, RetentionStore } from '../types.js';
import type { SqliteDb } from './db.js';

export function sqliteRetention(core: SqliteDb): RetentionStore {
  return {
    async pruneRetained(c: RetentionCutoffs): Promise<PruneCounts> {
      return core.tx(() => {
        const out: PruneCounts = { deliveries: 0, cronRuns: 0, signInLinks: 0, setupCodes: 0, approvalRecords: 0 };
        // Approval records go with their request, whatever the cutoffs.
        const records = core
          .stmt(`SELECT key FROM meta WHERE substr(key, 1, 15) = 'approval.votes.' OR substr(key, 1, 16) = 'approval.proofs.'`)
          .all() as Array<{ key: string }>;
        for (const { key } of records) {
          const requestId = approvalRecordRequestId(key);
          if (requestId === null) continue;
          const live =
            core.stmt('SELECT 1 FROM pairing_requests WHERE request_id = ?').get(requestId) ??
            core.stmt('SELECT 1 FROM node_surface_requests WHERE request_id = ?').get(requestId);
          if (!live) out.approvalRecords += core.stmt('DELETE FROM meta WHERE key = ?').run(key).changes;
        }
        if (c.deliveredBeforeMs !== null) {
          out.deliveries = core
            .stmt("DELETE FROM deliveries WHERE status = 'delivered' AND json_extract(body_json, '$.deliveredAtMs') < ?")
            .run(c.deliveredBeforeMs).changes;
        }
        if (c.cronRunsBeforeMs !== null) {
          out.cronRuns = core.stmt("DELETE FROM cron_runs WHERE json_extract(body_json, '$.finishedAtMs') < ?").run(c.cronRunsBeforeMs).changes;
        }
        if (c.signInLinksBeforeMs !== null) {
          const before = c.signInLinksBeforeMs;
          const rows = core
            .stmt('SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?')
            .all(SIGN_IN_LINK_META_PREFIX.length, SIGN_IN_LINK_META_PREFIX) as Array<{
            key: string;
            value: string;
          }>;
          const del = core.stmt('DELETE FROM meta WHERE key = ?');
          for (const r of rows) if (signInLinkPrunable(r.value, before)) out.signInLinks += del.run(r.key).changes;
        }
        if (c.setupCodesBeforeMs !== null) {
          out.setupCodes = core.stmt('DELETE FROM setup_codes WHERE expires_at_ms < ?').run(c.setupCodesBeforeMs).changes;
        }
        return out;
      });
    },
  };
}
