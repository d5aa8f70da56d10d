/**
 * Retention: finished records (delivered webhooks, cron runs, used sign-in links, expired setup
 * codes) are deleted once they are older than the configured retention. The audit log is never
 * pruned: it is the record of who did what, and its hash chain must stay whole.
 */

import { DEFAULT_RETENTION, type RetentionPolicy } from './config.js';
import type { Clock } from './env.js';
import type { PruneCounts, RetentionCutoffs, Store } from './store.js';

export function retentionPolicy(configured: Partial<RetentionPolicy> | undefined): RetentionPolicy {
  return { ...DEFAULT_RETENTION, ...configured };
}

/** The cutoffs at `nowMs`: a retention of 0 keeps that kind forever. */
export function retentionCutoffs(policy: RetentionPolicy, nowMs: number): RetentionCutoffs {
  const cut = (keepMs: number) => (keepMs > 0 ? nowMs - keepMs : null);
  return {
    deliveredBeforeMs: cut(policy.deliveredWebhooksMs),
    cronRunsBeforeMs: cut(policy.cronRunsMs),
    signInLinksBeforeMs: cut(policy.signInLinksMs),
    setupCodesBeforeMs: cut(policy.setupCodesMs),
  };
}

/** One prune pass at the clock's current time. */
export function pruneRetained(store: Store, clock: Clock, policy: RetentionPolicy): Promise<PruneCounts> {
  return store.pruneRetained(retentionCutoffs(policy, clock.now()));
}
