/** PostgreSQL store, domain: pruning finished records (never the audit log). */
import { SIGN_IN_LINK_META_PREFIX, signInLinkPrunable } from '../retention-shared.js';
import type { PruneCounts, RetentionCutoffs, RetentionStore } from '../types.js';
import type { PgDb } from './db.js';

export function postgresRetention(core: PgDb): RetentionStore {
  return {
    async pruneRetained(c: RetentionCutoffs): Promise<PruneCounts> {
      return core.write(async (tx) => {
        const out: PruneCounts = { deliveries: 0, cronRuns: 0, signInLinks: 0, setupCodes: 0 };
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
