/** PostgreSQL store, domain: pruning finished records (never the audit log). */
import { approvalRecordRequestId, SIGN_IN_LINK_META_PREFIX, signInLinkPrunable } from '../retention-shared.js';
import type { PruneCounts, RetentionCutoffs, RetentionStore } from '../types.js';
import type { PgDb } from './db.js';

export function postgresRetention(core: PgDb): RetentionStore {
  return {
    async pruneRetained(c: RetentionCutoffs): Promise<PruneCounts> {
      return core.write(async (tx) => {
        const out: PruneCounts = { deliveries: 0, cronRuns: 0, signInLinks: 0, setupCodes: 0, approvalRecords: 0 };
        // Approval records go with their request, whatever the cutoffs.
        const records = await tx.all<{ key: string }>(`SELECT key FROM meta WHERE left(key, 15) = 'approval.votes.' OR left(key, 16) = 'approval.proofs.'`);
        for (const { key } of records) {
          const requestId = approvalRecordRequestId(key);
          if (requestId === null) continue;
          const live =
            (await tx.one('SELECT 1 AS x FROM pairing_requests WHERE request_id = $1', [requestId])) ??
            (await tx.one('SELECT 1 AS x FROM node_surface_requests WHERE request_id = $1', [requestId]));
          if (!live) out.approvalRecords += await tx.run('DELETE FROM meta WHERE key = $1', [key]);
        }
        if (c.deliveredBeforeMs !== null) {
          out.deliveries = await tx.run("DELETE FROM deliveries WHERE status = 'delivered' AND (body_json::jsonb->>'deliveredAtMs')::bigint < $1", [
            c.deliveredBeforeMs,
          ]);
        }
        if (c.cronRunsBeforeMs !== null) {
          out.cronRuns = await tx.run("DELETE FROM cron_runs WHERE (body_json::jsonb->>'finishedAtMs')::bigint < $1", [c.cronRunsBeforeMs]);
        }
        if (c.signInLinksBeforeMs !== null) {
          const rows = await tx.all<{ key: string; value: string }>('SELECT key, value FROM meta WHERE left(key, $1) = $2', [
            SIGN_IN_LINK_META_PREFIX.length,
            SIGN_IN_LINK_META_PREFIX,
          ]);
          for (const r of rows) {
            if (signInLinkPrunable(r.value, c.signInLinksBeforeMs)) out.signInLinks += await tx.run('DELETE FROM meta WHERE key = $1', [r.key]);
          }
        }
        if (c.setupCodesBeforeMs !== null) {
          out.setupCodes = await tx.run('DELETE FROM setup_codes WHERE expires_at_ms < $1', [c.setupCodesBeforeMs]);
        }
        return out;
      });
    },
  };
}
