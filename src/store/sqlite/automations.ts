/** SQLite store, domain: chat sessions and messages, webhook channels, the delivery outbox, cron jobs and runs. */
import {
  applyAttempt,
  CHAT_PAGE_DEFAULT,
  type ChannelRow,
  type ChatMessageRow,
  type ChatSessionRow,
  channelNameTaken,
  channelValues,
  chatMessageValues,
  toChannel,
  toChatMessage,
  toChatSession,
} from '../shared.js';
import type {
  AppendMessageResult,
  AuditInput,
  AutomationStore,
  ChatSession,
  CronJob,
  CronJobPatch,
  CronRun,
  Delivery,
  DeliveryAttempt,
  DeliveryStatus,
  NewChannel,
  NewChatMessage,
  NewChatSession,
  NewCronJob,
  NewDelivery,
  WebhookChannel,
} from '../types.js';
import type { SqliteDb } from './db.js';
import { body } from './db.js';

export function chatSessionSync(core: SqliteDb, idOrKey: string): ChatSession | null {
  const r = core.stmt('SELECT * FROM chat_sessions WHERE session_id = ? OR key = ? ORDER BY session_id = ? DESC LIMIT 1').get(idOrKey, idOrKey, idOrKey) as
    | ChatSessionRow
    | undefined;
  return r ? toChatSession(r) : null;
}

export function channelSync(core: SqliteDb, idOrName: string): WebhookChannel | null {
  const r = core.stmt('SELECT * FROM channels WHERE channel_id = ? OR name = ? ORDER BY channel_id = ? DESC LIMIT 1').get(idOrName, idOrName, idOrName) as
    | ChannelRow
    | undefined;
  return r ? toChannel(r) : null;
}

export function putDeliverySync(core: SqliteDb, d: Delivery): void {
  core
    .stmt(
      `INSERT INTO deliveries (delivery_id, channel_id, idempotency_key, status, next_attempt_at_ms, body_json) VALUES (?,?,?,?,?,?)
     ON CONFLICT(delivery_id) DO UPDATE SET status = excluded.status, next_attempt_at_ms = excluded.next_attempt_at_ms, body_json = excluded.body_json`,
    )
    .run(d.deliveryId, d.channelId, d.idempotencyKey, d.status, d.nextAttemptAtMs, body(d));
}

export function deliverySync(core: SqliteDb, deliveryId: string): Delivery | null {
  const r = core.stmt('SELECT body_json FROM deliveries WHERE delivery_id = ?').get(deliveryId) as { body_json: string } | undefined;
  return r ? (JSON.parse(r.body_json) as Delivery) : null;
}

export function cronJobSync(core: SqliteDb, jobId: string): CronJob | null {
  const r = core.stmt('SELECT body_json FROM cron_jobs WHERE job_id = ?').get(jobId) as { body_json: string } | undefined;
  return r ? (JSON.parse(r.body_json) as CronJob) : null;
}

export function putCronJobSync(core: SqliteDb, job: CronJob): void {
  core
    .stmt('INSERT INTO cron_jobs (job_id, created_at_ms, body_json) VALUES (?,?,?) ON CONFLICT(job_id) DO UPDATE SET body_json = excluded.body_json')
    .run(job.jobId, job.createdAtMs, body(job));
}

export function sqliteAutomations(core: SqliteDb): AutomationStore {
  return {
    async createChatSession(input: NewChatSession) {
      return core.tx(() => {
        if (core.stmt('SELECT 1 FROM chat_sessions WHERE key = ?').get(input.key)) return { ok: false as const, reason: 'key-taken' as const };
        core
          .stmt(
            `INSERT INTO chat_sessions (session_id, key, label, parent_id, created_by, created_at_ms, updated_at_ms, message_count)
           VALUES (?,?,?,?,?,?,?,0)`,
          )
          .run(input.sessionId, input.key, input.label ?? null, input.parentId ?? null, input.createdBy, input.createdAtMs, input.createdAtMs);
        core.appendAuditSync(input.audit);
        return { ok: true as const, session: chatSessionSync(core, input.sessionId) as ChatSession };
      });
    },
    async getChatSession(idOrKey: string) {
      return chatSessionSync(core, idOrKey);
    },
    async listChatSessions(opts: { parentId?: string; limit?: number } = {}) {
      const rows = (
        opts.parentId === undefined
          ? core.stmt('SELECT * FROM chat_sessions ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT ?').all(opts.limit ?? -1)
          : core
              .stmt('SELECT * FROM chat_sessions WHERE parent_id = ? ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT ?')
              .all(opts.parentId, opts.limit ?? -1)
      ) as ChatSessionRow[];
      return rows.map(toChatSession);
    },
    async appendChatMessage(input: NewChatMessage): Promise<AppendMessageResult> {
      return core.tx((): AppendMessageResult => {
        const s = core.stmt('SELECT * FROM chat_sessions WHERE session_id = ?').get(input.sessionId) as ChatSessionRow | undefined;
        if (!s) return { ok: false, reason: 'unknown-session' };
        if (input.idempotencyKey !== undefined) {
          const prior = core.stmt('SELECT * FROM chat_messages WHERE session_id = ? AND idempotency_key = ?').get(input.sessionId, input.idempotencyKey) as
            | ChatMessageRow
            | undefined;
          if (prior) return { ok: true, message: toChatMessage(prior), duplicate: true };
        }
        const seq = s.message_count + 1;
        core
          .stmt('INSERT INTO chat_messages (session_id, seq, message_id, author, text, idempotency_key, at_ms) VALUES (?,?,?,?,?,?,?)')
          .run(...chatMessageValues(input, seq));
        core
          .stmt('UPDATE chat_sessions SET message_count = ?, updated_at_ms = MAX(updated_at_ms, ?) WHERE session_id = ?')
          .run(seq, input.atMs, input.sessionId);
        core.appendAuditSync(input.audit);
        const { audit: _audit, ...rest } = input;
        return { ok: true, message: { ...rest, seq }, duplicate: false };
      });
    },
    async listChatMessages(sessionId: string, opts: { beforeSeq?: number; afterSeq?: number; limit?: number } = {}) {
      const limit = opts.limit ?? CHAT_PAGE_DEFAULT;
      if (opts.afterSeq !== undefined) {
        const rows = core
          .stmt('SELECT * FROM chat_messages WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?')
          .all(sessionId, opts.afterSeq, limit) as ChatMessageRow[];
        return rows.map(toChatMessage);
      }
      const rows = core
        .stmt('SELECT * FROM chat_messages WHERE session_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?')
        .all(sessionId, opts.beforeSeq ?? Number.MAX_SAFE_INTEGER, limit) as ChatMessageRow[];
      return rows.reverse().map(toChatMessage);
    },
    async putChannel(input: NewChannel) {
      return core.tx(() => {
        const existing = core.stmt('SELECT * FROM channels WHERE name = ?').get(input.name) as ChannelRow | undefined;
        if (channelNameTaken(existing, input)) return { ok: false as const, reason: 'name-taken' as const };
        if (existing) {
          core.stmt('UPDATE channels SET url = ?, username = ? WHERE channel_id = ?').run(input.url, input.username ?? null, existing.channel_id);
        } else {
          core
            .stmt('INSERT INTO channels (channel_id, name, url, username, source, created_by, created_at_ms) VALUES (?,?,?,?,?,?,?)')
            .run(...channelValues(input));
        }
        core.appendAuditSync(input.audit);
        return { ok: true as const, channel: channelSync(core, existing?.channel_id ?? input.channelId) as WebhookChannel, created: !existing };
      });
    },
    async getChannel(idOrName: string) {
      return channelSync(core, idOrName);
    },
    async listChannels() {
      return (core.stmt('SELECT * FROM channels ORDER BY name').all() as ChannelRow[]).map(toChannel);
    },
    async removeChannel(idOrName: string, audit: AuditInput) {
      return core.tx(() => {
        const c = channelSync(core, idOrName);
        if (!c) return false;
        core.stmt('DELETE FROM channels WHERE channel_id = ?').run(c.channelId);
        core.appendAuditSync(audit);
        return true;
      });
    },
    async enqueueDelivery(input: NewDelivery) {
      return core.tx(() => {
        const prior = core.stmt('SELECT delivery_id FROM deliveries WHERE channel_id = ? AND idempotency_key = ?').get(input.channelId, input.idempotencyKey) as
          | { delivery_id: string }
          | undefined;
        if (prior) return { delivery: deliverySync(core, prior.delivery_id) as Delivery, duplicate: true };
        const { audit, ...rest } = input;
        const d: Delivery = { ...rest, status: 'pending', attempts: 0, nextAttemptAtMs: input.createdAtMs };
        putDeliverySync(core, d);
        core.appendAuditSync(audit);
        return { delivery: deliverySync(core, d.deliveryId) as Delivery, duplicate: false };
      });
    },
    async getDelivery(deliveryId: string) {
      return deliverySync(core, deliveryId);
    },
    async listDeliveries(opts: { status?: DeliveryStatus; channelId?: string; limit?: number } = {}) {
      const rows = core
        .stmt(`SELECT body_json FROM deliveries WHERE (? IS NULL OR status = ?) AND (? IS NULL OR channel_id = ?) ORDER BY rowid DESC LIMIT ?`)
        .all(opts.status ?? null, opts.status ?? null, opts.channelId ?? null, opts.channelId ?? null, opts.limit ?? -1) as Array<{ body_json: string }>;
      return rows.map((r) => JSON.parse(r.body_json) as Delivery);
    },
    async dueDeliveries(nowMs: number, limit: number) {
      const rows = core
        .stmt("SELECT body_json FROM deliveries WHERE status = 'pending' AND next_attempt_at_ms <= ? ORDER BY next_attempt_at_ms, rowid LIMIT ?")
        .all(nowMs, limit) as Array<{ body_json: string }>;
      return rows.map((r) => JSON.parse(r.body_json) as Delivery);
    },
    async nextDeliveryDueAtMs() {
      const r = core.stmt("SELECT MIN(next_attempt_at_ms) AS due FROM deliveries WHERE status = 'pending'").get() as { due: number | null };
      return r.due;
    },
    async recordDeliveryAttempt(a: DeliveryAttempt) {
      return core.tx(() => {
        const d = deliverySync(core, a.deliveryId);
        if (d?.status !== 'pending') return null;
        const next = applyAttempt(d, a);
        putDeliverySync(core, next);
        if (a.outcome === 'dead' && a.deadAudit) core.appendAuditSync(a.deadAudit);
        return deliverySync(core, a.deliveryId);
      });
    },
    async createCronJob(input: NewCronJob) {
      return core.tx(() => {
        const { audit, ...rest } = input;
        putCronJobSync(core, { ...rest, updatedAtMs: input.createdAtMs });
        core.appendAuditSync(audit);
        return cronJobSync(core, input.jobId) as CronJob;
      });
    },
    async getCronJob(jobId: string) {
      return cronJobSync(core, jobId);
    },
    async listCronJobs() {
      return (core.stmt('SELECT body_json FROM cron_jobs ORDER BY created_at_ms, rowid').all() as Array<{ body_json: string }>).map(
        (r) => JSON.parse(r.body_json) as CronJob,
      );
    },
    async updateCronJob(jobId: string, patch: CronJobPatch, atMs: number, audit: AuditInput) {
      return core.tx(() => {
        const j = cronJobSync(core, jobId);
        if (!j) return null;
        putCronJobSync(core, { ...j, ...patch, updatedAtMs: atMs });
        core.appendAuditSync(audit);
        return cronJobSync(core, jobId);
      });
    },
    async removeCronJob(jobId: string, audit: AuditInput) {
      return core.tx(() => {
        const n = core.stmt('DELETE FROM cron_jobs WHERE job_id = ?').run(jobId).changes;
        if (n > 0) core.appendAuditSync(audit);
        return n > 0;
      });
    },
    async recordCronRun(run: CronRun, nextRunAtMs: number | null) {
      return core.tx(() => {
        const j = cronJobSync(core, run.jobId);
        if (!j) return null;
        core.stmt('INSERT INTO cron_runs (run_id, job_id, body_json) VALUES (?,?,?)').run(run.runId, run.jobId, body(run));
        putCronJobSync(core, { ...j, nextRunAtMs, lastRunAtMs: run.startedAtMs });
        return cronJobSync(core, run.jobId);
      });
    },
    async listCronRuns(jobId: string, limit = 50) {
      const rows = core.stmt('SELECT body_json FROM cron_runs WHERE job_id = ? ORDER BY rowid DESC LIMIT ?').all(jobId, limit) as Array<{ body_json: string }>;
      return rows.map((r) => JSON.parse(r.body_json) as CronRun);
    },
    async pendingDeliveryCount(): Promise<number> {
      return (core.stmt("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'").get() as { n: number }).n;
    },
  };
}
