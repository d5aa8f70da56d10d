/** PostgreSQL store, domain: chat sessions and messages, webhook channels, the delivery outbox, cron jobs and runs. */
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
import type { PgDb } from './db.js';
import { DELIVERY_LEASE_MS, type PgQuery } from './db.js';

export async function chatSessionTx(tx: PgQuery, idOrKey: string): Promise<ChatSession | null> {
  const r = await tx.one<ChatSessionRow>('SELECT * FROM chat_sessions WHERE session_id = $1 OR key = $1 ORDER BY (session_id = $1) DESC LIMIT 1', [idOrKey]);
  return r ? toChatSession(r) : null;
}

export async function channelTx(tx: PgQuery, idOrName: string): Promise<WebhookChannel | null> {
  const r = await tx.one<ChannelRow>('SELECT * FROM channels WHERE channel_id = $1 OR name = $1 ORDER BY (channel_id = $1) DESC LIMIT 1', [idOrName]);
  return r ? toChannel(r) : null;
}

/** Write a delivery's state; a lease on it ends (its attempt is recorded). */
export async function putDeliveryTx(tx: PgQuery, d: Delivery): Promise<void> {
  await tx.run(
    `INSERT INTO deliveries (delivery_id, channel_id, idempotency_key, status, next_attempt_at_ms, body_json) VALUES ($1,$2,$3,$4,$5,$6)
     ON CONFLICT (delivery_id) DO UPDATE SET status = excluded.status, next_attempt_at_ms = excluded.next_attempt_at_ms,
       body_json = excluded.body_json, claimed_until_ms = NULL`,
    [d.deliveryId, d.channelId, d.idempotencyKey, d.status, d.nextAttemptAtMs, JSON.stringify(d)],
  );
}

export async function deliveryTx(tx: PgQuery, deliveryId: string): Promise<Delivery | null> {
  const r = await tx.one<{ body_json: string }>('SELECT body_json FROM deliveries WHERE delivery_id = $1', [deliveryId]);
  return r ? (JSON.parse(r.body_json) as Delivery) : null;
}

export async function cronJobTx(tx: PgQuery, jobId: string): Promise<CronJob | null> {
  const r = await tx.one<{ body_json: string }>('SELECT body_json FROM cron_jobs WHERE job_id = $1', [jobId]);
  return r ? (JSON.parse(r.body_json) as CronJob) : null;
}

export async function putCronJobTx(tx: PgQuery, job: CronJob): Promise<void> {
  await tx.run('INSERT INTO cron_jobs (job_id, created_at_ms, body_json) VALUES ($1,$2,$3) ON CONFLICT (job_id) DO UPDATE SET body_json = excluded.body_json', [
    job.jobId,
    job.createdAtMs,
    JSON.stringify(job),
  ]);
}

export function postgresAutomations(core: PgDb): AutomationStore {
  return {
    async createChatSession(input: NewChatSession) {
      return core.write(async (tx) => {
        if (await tx.one('SELECT 1 FROM chat_sessions WHERE key = $1', [input.key])) return { ok: false as const, reason: 'key-taken' as const };
        await tx.run(
          `INSERT INTO chat_sessions (session_id, key, label, parent_id, created_by, created_at_ms, updated_at_ms, message_count)
           VALUES ($1,$2,$3,$4,$5,$6,$7,0)`,
          [input.sessionId, input.key, input.label ?? null, input.parentId ?? null, input.createdBy, input.createdAtMs, input.createdAtMs],
        );
        await core.appendAuditTx(tx, input.audit);
        return { ok: true as const, session: (await chatSessionTx(tx, input.sessionId)) as ChatSession };
      });
    },
    async getChatSession(idOrKey: string) {
      return chatSessionTx(core.q, idOrKey);
    },
    async listChatSessions(opts: { parentId?: string; limit?: number } = {}) {
      const rows =
        opts.parentId === undefined
          ? await core.q.all<ChatSessionRow>('SELECT * FROM chat_sessions ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT $1', [opts.limit ?? null])
          : await core.q.all<ChatSessionRow>('SELECT * FROM chat_sessions WHERE parent_id = $1 ORDER BY updated_at_ms DESC, created_at_ms DESC LIMIT $2', [
              opts.parentId,
              opts.limit ?? null,
            ]);
      return rows.map(toChatSession);
    },
    async appendChatMessage(input: NewChatMessage): Promise<AppendMessageResult> {
      return core.write(async (tx): Promise<AppendMessageResult> => {
        const s = await tx.one<ChatSessionRow>('SELECT * FROM chat_sessions WHERE session_id = $1', [input.sessionId]);
        if (!s) return { ok: false, reason: 'unknown-session' };
        if (input.idempotencyKey !== undefined) {
          const prior = await tx.one<ChatMessageRow>('SELECT * FROM chat_messages WHERE session_id = $1 AND idempotency_key = $2', [
            input.sessionId,
            input.idempotencyKey,
          ]);
          if (prior) return { ok: true, message: toChatMessage(prior), duplicate: true };
        }
        const seq = s.message_count + 1;
        await tx.run(
          'INSERT INTO chat_messages (session_id, seq, message_id, author, text, idempotency_key, at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7)',
          chatMessageValues(input, seq),
        );
        await tx.run('UPDATE chat_sessions SET message_count = $1, updated_at_ms = GREATEST(updated_at_ms, $2) WHERE session_id = $3', [
          seq,
          input.atMs,
          input.sessionId,
        ]);
        await core.appendAuditTx(tx, input.audit);
        const { audit: _audit, ...rest } = input;
        return { ok: true, message: { ...rest, seq }, duplicate: false };
      });
    },
    async listChatMessages(sessionId: string, opts: { beforeSeq?: number; afterSeq?: number; limit?: number } = {}) {
      const limit = opts.limit ?? CHAT_PAGE_DEFAULT;
      if (opts.afterSeq !== undefined) {
        const rows = await core.q.all<ChatMessageRow>('SELECT * FROM chat_messages WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [
          sessionId,
          opts.afterSeq,
          limit,
        ]);
        return rows.map(toChatMessage);
      }
      const rows = await core.q.all<ChatMessageRow>('SELECT * FROM chat_messages WHERE session_id = $1 AND seq < $2::bigint ORDER BY seq DESC LIMIT $3', [
        sessionId,
        opts.beforeSeq ?? Number.MAX_SAFE_INTEGER,
        limit,
      ]);
      return rows.reverse().map(toChatMessage);
    },
    async putChannel(input: NewChannel) {
      return core.write(async (tx) => {
        const existing = await tx.one<ChannelRow>('SELECT * FROM channels WHERE name = $1', [input.name]);
        if (channelNameTaken(existing, input)) return { ok: false as const, reason: 'name-taken' as const };
        if (existing) {
          await tx.run('UPDATE channels SET url = $1, username = $2 WHERE channel_id = $3', [input.url, input.username ?? null, existing.channel_id]);
        } else {
          await tx.run(
            'INSERT INTO channels (channel_id, name, url, username, source, created_by, created_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7)',
            channelValues(input),
          );
        }
        await core.appendAuditTx(tx, input.audit);
        return { ok: true as const, channel: (await channelTx(tx, existing?.channel_id ?? input.channelId)) as WebhookChannel, created: !existing };
      });
    },
    async getChannel(idOrName: string) {
      return channelTx(core.q, idOrName);
    },
    async listChannels() {
      return (await core.q.all<ChannelRow>('SELECT * FROM channels ORDER BY name')).map(toChannel);
    },
    async removeChannel(idOrName: string, audit: AuditInput) {
      return core.write(async (tx) => {
        const c = await channelTx(tx, idOrName);
        if (!c) return false;
        await tx.run('DELETE FROM channels WHERE channel_id = $1', [c.channelId]);
        await core.appendAuditTx(tx, audit);
        return true;
      });
    },
    async enqueueDelivery(input: NewDelivery) {
      return core.write(async (tx) => {
        const prior = await tx.one<{ delivery_id: string }>('SELECT delivery_id FROM deliveries WHERE channel_id = $1 AND idempotency_key = $2', [
          input.channelId,
          input.idempotencyKey,
        ]);
        if (prior) return { delivery: (await deliveryTx(tx, prior.delivery_id)) as Delivery, duplicate: true };
        const { audit, ...rest } = input;
        const d: Delivery = { ...rest, status: 'pending', attempts: 0, nextAttemptAtMs: input.createdAtMs };
        await putDeliveryTx(tx, d);
        await core.appendAuditTx(tx, audit);
        return { delivery: (await deliveryTx(tx, d.deliveryId)) as Delivery, duplicate: false };
      });
    },
    async getDelivery(deliveryId: string) {
      return deliveryTx(core.q, deliveryId);
    },
    async listDeliveries(opts: { status?: DeliveryStatus; channelId?: string; limit?: number } = {}) {
      const rows = await core.q.all<{ body_json: string }>(
        'SELECT body_json FROM deliveries WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR channel_id = $2) ORDER BY ord DESC LIMIT $3',
        [opts.status ?? null, opts.channelId ?? null, opts.limit ?? null],
      );
      return rows.map((r) => JSON.parse(r.body_json) as Delivery);
    },
    /**
     * Due deliveries, each handed out once: every instance runs a delivery worker, and a row
     * returned here is leased to the caller (SKIP LOCKED; the lease ends when the attempt is
     * recorded, or after DELIVERY_LEASE_MS if the worker died), so no two workers attempt the
     * same delivery at once.
     */
    async dueDeliveries(nowMs: number, limit: number) {
      const rows = await core.q.all<{ body_json: string }>(
        `UPDATE deliveries SET claimed_until_ms = $1::bigint + $3::bigint WHERE delivery_id IN (
           SELECT delivery_id FROM deliveries
           WHERE status = 'pending' AND next_attempt_at_ms <= $1::bigint AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1::bigint)
           ORDER BY next_attempt_at_ms, ord LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING body_json`,
        [nowMs, limit, DELIVERY_LEASE_MS],
      );
      return rows.map((r) => JSON.parse(r.body_json) as Delivery).sort((a, b) => a.nextAttemptAtMs - b.nextAttemptAtMs);
    },
    async nextDeliveryDueAtMs() {
      // A leased delivery is due again only when its lease ends (until then it is another worker's).
      const r = await core.q.one<{ due: number | null }>(
        "SELECT MIN(GREATEST(next_attempt_at_ms, COALESCE(claimed_until_ms, 0))) AS due FROM deliveries WHERE status = 'pending'",
      );
      return r?.due ?? null;
    },
    async recordDeliveryAttempt(a: DeliveryAttempt) {
      return core.write(async (tx) => {
        const d = await deliveryTx(tx, a.deliveryId);
        if (d?.status !== 'pending') return null;
        const next = applyAttempt(d, a);
        await putDeliveryTx(tx, next);
        if (a.outcome === 'dead' && a.deadAudit) await core.appendAuditTx(tx, a.deadAudit);
        return deliveryTx(tx, a.deliveryId);
      });
    },
    async createCronJob(input: NewCronJob) {
      return core.write(async (tx) => {
        const { audit, ...rest } = input;
        await putCronJobTx(tx, { ...rest, updatedAtMs: input.createdAtMs });
        await core.appendAuditTx(tx, audit);
        return (await cronJobTx(tx, input.jobId)) as CronJob;
      });
    },
    async getCronJob(jobId: string) {
      return cronJobTx(core.q, jobId);
    },
    async listCronJobs() {
      return (await core.q.all<{ body_json: string }>('SELECT body_json FROM cron_jobs ORDER BY created_at_ms, ord')).map(
        (r) => JSON.parse(r.body_json) as CronJob,
      );
    },
    async updateCronJob(jobId: string, patch: CronJobPatch, atMs: number, audit: AuditInput) {
      return core.write(async (tx) => {
        const j = await cronJobTx(tx, jobId);
        if (!j) return null;
        await putCronJobTx(tx, { ...j, ...patch, updatedAtMs: atMs });
        await core.appendAuditTx(tx, audit);
        return cronJobTx(tx, jobId);
      });
    },
    async removeCronJob(jobId: string, audit: AuditInput) {
      return core.write(async (tx) => {
        const n = await tx.run('DELETE FROM cron_jobs WHERE job_id = $1', [jobId]);
        if (n > 0) await core.appendAuditTx(tx, audit);
        return n > 0;
      });
    },
    async recordCronRun(run: CronRun, nextRunAtMs: number | null) {
      return core.write(async (tx) => {
        const j = await cronJobTx(tx, run.jobId);
        if (!j) return null;
        await tx.run('INSERT INTO cron_runs (run_id, job_id, body_json) VALUES ($1,$2,$3)', [run.runId, run.jobId, JSON.stringify(run)]);
        await putCronJobTx(tx, { ...j, nextRunAtMs, lastRunAtMs: run.startedAtMs });
        return cronJobTx(tx, run.jobId);
      });
    },
    async listCronRuns(jobId: string, limit = 50) {
      const rows = await core.q.all<{ body_json: string }>('SELECT body_json FROM cron_runs WHERE job_id = $1 ORDER BY ord DESC LIMIT $2', [jobId, limit]);
      return rows.map((r) => JSON.parse(r.body_json) as CronRun);
    },
    async pendingDeliveryCount(): Promise<number> {
      return (await core.q.one<{ n: number }>("SELECT COUNT(*)::int AS n FROM deliveries WHERE status = 'pending'"))?.n ?? 0;
    },
  };
}
