/**
 * Sessions and chat, channels and `send`, and cron (issue 7). Scopes follow the reference
 * method table: read for reads, write for sends, admin for cron and channel mutations. The
 * same handlers serve sockets and the internal principal of automations (`gw.call`).
 */
import { type Static, Type as T, type TSchema } from '@sinclair/typebox';
import { checkSchedule, nextRun } from '../automations/cron.js';
import { type Automations, INTERNAL_GRANT } from '../automations/service.js';
import type { DispatchLog, MethodSpec } from '../core/dispatch.js';
import type { Gateway } from '../core/gateway.js';
import { hasScope, type Principal, SessionPrincipal } from '../core/principal.js';
import { GatewayError } from '../protocol/errors.js';
import { ADMIN, READ, scopeSatisfied, WRITE } from '../protocol/scopes.js';
import type { ChatSession, CronAction, CronJob, CronJobPatch, CronSchedule, WebhookChannel } from '../store/types.js';

const SessionKey = T.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._:/@-]*$' });
const Name = T.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' });
const IdemKey = T.String({ minLength: 1, maxLength: 200 });
const Limit = (max: number) => T.Integer({ minimum: 1, maximum: max });
const closed = { additionalProperties: false } as const;

const Embed = T.Record(T.String({ maxLength: 64 }), T.Unknown());

const ScheduleSchema = T.Union([
  T.Object({ kind: T.Literal('cron'), expr: T.String({ minLength: 1, maxLength: 200 }), tz: T.Optional(T.String({ minLength: 1, maxLength: 64 })) }, closed),
  T.Object({ kind: T.Literal('every'), everyMs: T.Integer({ minimum: 1 }) }, closed),
]);

const ActionSchema = T.Union([
  T.Object(
    {
      kind: T.Literal('chat'),
      sessionKey: SessionKey,
      text: T.String({ minLength: 1, maxLength: 16_000 }),
      spawn: T.Optional(T.Object({ label: T.Optional(T.String({ maxLength: 128 })) }, closed)),
    },
    closed,
  ),
  T.Object(
    {
      kind: T.Literal('send'),
      channel: Name,
      content: T.String({ minLength: 1, maxLength: 2000 }),
      username: T.Optional(T.String({ minLength: 1, maxLength: 80 })),
    },
    closed,
  ),
  T.Object(
    {
      kind: T.Literal('node'),
      nodeId: T.String({ minLength: 1, maxLength: 200 }),
      command: T.String({ minLength: 1, maxLength: 200 }),
      params: T.Optional(T.Unknown()),
    },
    closed,
  ),
]);

const Params = {
  sessionsList: T.Object({ parentKey: T.Optional(SessionKey), limit: T.Optional(Limit(1000)) }, closed),
  sessionsCreate: T.Object({ key: T.Optional(SessionKey), label: T.Optional(T.String({ maxLength: 128 })) }, closed),
  sessionsGet: T.Object({ sessionKey: SessionKey }, closed),
  sessionsSpawn: T.Object({ parentKey: SessionKey, key: T.Optional(SessionKey), label: T.Optional(T.String({ maxLength: 128 })) }, closed),
  chatSend: T.Object({ sessionKey: SessionKey, text: T.String({ minLength: 1, maxLength: 16_000 }), idempotencyKey: T.Optional(IdemKey) }, closed),
  chatHistory: T.Object({ sessionKey: SessionKey, beforeSeq: T.Optional(T.Integer({ minimum: 1 })), limit: T.Optional(Limit(500)) }, closed),
  send: T.Object(
    {
      channel: Name,
      content: T.Optional(T.String({ maxLength: 2000 })),
      username: T.Optional(T.String({ minLength: 1, maxLength: 80 })),
      embeds: T.Optional(T.Array(Embed, { maxItems: 10 })),
      idempotencyKey: T.Optional(IdemKey),
    },
    closed,
  ),
  channelsAdd: T.Object(
    {
      type: T.Literal('webhook'),
      name: Name,
      url: T.String({ minLength: 1, maxLength: 2048 }),
      username: T.Optional(T.String({ minLength: 1, maxLength: 80 })),
    },
    closed,
  ),
  channelsRemove: T.Object({ name: Name }, closed),
  deliveries: T.Object(
    {
      channel: T.Optional(Name),
      status: T.Optional(T.Union([T.Literal('pending'), T.Literal('delivered'), T.Literal('dead')])),
      limit: T.Optional(Limit(1000)),
    },
    closed,
  ),
  deadLetters: T.Object({ channel: T.Optional(Name), limit: T.Optional(Limit(1000)) }, closed),
  cronAdd: T.Object(
    { name: T.String({ minLength: 1, maxLength: 128 }), schedule: ScheduleSchema, action: ActionSchema, enabled: T.Optional(T.Boolean()) },
    closed,
  ),
  cronUpdate: T.Object(
    {
      jobId: T.String({ minLength: 1, maxLength: 128 }),
      name: T.Optional(T.String({ minLength: 1, maxLength: 128 })),
      schedule: T.Optional(ScheduleSchema),
      action: T.Optional(ActionSchema),
      enabled: T.Optional(T.Boolean()),
    },
    closed,
  ),
  cronList: T.Object({ includeDisabled: T.Optional(T.Boolean()) }, closed),
  cronJob: T.Object({ jobId: T.String({ minLength: 1, maxLength: 128 }) }, closed),
  cronRuns: T.Object({ jobId: T.String({ minLength: 1, maxLength: 128 }), limit: T.Optional(Limit(1000)) }, closed),
  empty: T.Object({}, closed),
};

/** Webhook URLs carry the target's secret (Discord puts a token in the path): non-admins see only the origin. */
function channelView(c: WebhookChannel, p: Principal) {
  let url = c.url;
  if (!hasScope(p, ADMIN)) {
    try {
      url = `${new URL(c.url).origin}/…`;
    } catch {
      url = '…';
    }
  }
  return {
    channelId: c.channelId,
    name: c.name,
    type: c.type,
    url,
    username: c.username ?? null,
    source: c.source,
    createdBy: c.createdBy,
    createdAtMs: c.createdAtMs,
  };
}

function checkUrl(text: string): GatewayError | null {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return new GatewayError('INVALID_WEBHOOK_URL', { vars: { problem: 'not an absolute URL' } });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    return new GatewayError('INVALID_WEBHOOK_URL', { vars: { problem: `scheme ${u.protocol} is not http(s)` } });
  if (u.username || u.password) return new GatewayError('INVALID_WEBHOOK_URL', { vars: { problem: 'credentials in the URL are not supported' } });
  return null;
}

export function registerAutomationMethods(gw: Gateway, auto: Automations): void {
  const now = () => gw.clock.now();
  const audit = (p: Principal, action: string, subject: string, data?: Record<string, unknown>) => ({ atMs: now(), actor: p.actor, action, subject, data });

  /** Every method here is an operator method; the handler's params type follows from the schema. */
  const operator = <S extends TSchema>(name: string, scope: string, params: S, handler: MethodSpec<Static<S>>['handler']) =>
    gw.methods.add<Static<S>>({ name, role: 'operator', scope, params, handler });

  const session = async (key: string): Promise<ChatSession | GatewayError> =>
    (await gw.store.getChatSession(key)) ?? new GatewayError('UNKNOWN_SESSION', { vars: { session: key } });

  // --- sessions and chat ---------------------------------------------------------------------

  operator('sessions.list', READ, Params.sessionsList, async ({ params }) => {
    let parentId: string | undefined;
    if (params.parentKey !== undefined) {
      const parent = await session(params.parentKey);
      if (parent instanceof GatewayError) return parent;
      parentId = parent.sessionId;
    }
    return { sessions: await gw.store.listChatSessions({ ...(parentId ? { parentId } : {}), ...(params.limit ? { limit: params.limit } : {}) }) };
  });

  const create = async (p: Principal, log: DispatchLog, key: string | undefined, label: string | undefined, parent?: ChatSession) => {
    const sessionId = gw.random.uuid();
    const k = key ?? (parent ? childKey(parent.key, sessionId) : `s-${sessionId.slice(0, 8)}`);
    const res = await gw.store.createChatSession({
      sessionId,
      key: k,
      label,
      parentId: parent?.sessionId,
      createdBy: p.actor,
      createdAtMs: now(),
      audit: audit(p, parent ? 'session.spawned' : 'session.created', sessionId, { key: k, ...(parent ? { parentKey: parent.key } : {}) }),
    });
    if (!res.ok) return new GatewayError('SESSION_KEY_TAKEN', { vars: { key: k } });
    log.info(parent ? 'session spawned' : 'session created', { principal: p.actor, sessionKey: k, ...(parent ? { parentKey: parent.key } : {}) });
    return { session: res.session };
  };

  operator('sessions.create', WRITE, Params.sessionsCreate, async ({ principal, params, log }) => create(principal, log, params.key, params.label));

  operator('sessions.get', READ, Params.sessionsGet, async ({ params }) => {
    const s = await session(params.sessionKey);
    if (s instanceof GatewayError) return s;
    return { session: s, children: (await gw.store.listChatSessions({ parentId: s.sessionId })).map((c) => c.key) };
  });

  operator('sessions.spawn', WRITE, Params.sessionsSpawn, async ({ principal, params, log }) => {
    const parent = await session(params.parentKey);
    if (parent instanceof GatewayError) return parent;
    return create(principal, log, params.key, params.label, parent);
  });

  operator('sessions.subscribe', READ, Params.sessionsGet, async ({ principal, params }) => {
    const s = await session(params.sessionKey);
    if (s instanceof GatewayError) return s;
    // Only sockets receive events; an internal caller has nothing to subscribe.
    if (principal instanceof SessionPrincipal) auto.subscribe(principal, s.sessionId);
    return { subscribed: true, sessionKey: s.key, sessionId: s.sessionId, messageCount: s.messageCount };
  });

  operator('sessions.unsubscribe', READ, Params.sessionsGet, async ({ principal, params }) => {
    const s = await session(params.sessionKey);
    if (s instanceof GatewayError) return s;
    const was = principal instanceof SessionPrincipal ? auto.unsubscribe(principal, s.sessionId) : false;
    return { unsubscribed: was };
  });

  operator('chat.send', WRITE, Params.chatSend, async ({ principal, params }) => {
    const s = await session(params.sessionKey);
    if (s instanceof GatewayError) return s;
    const messageId = gw.random.uuid();
    const res = await gw.store.appendChatMessage({
      sessionId: s.sessionId,
      messageId,
      author: principal.actor,
      text: params.text,
      idempotencyKey: params.idempotencyKey,
      atMs: now(),
      audit: audit(principal, 'chat.sent', s.sessionId, { sessionKey: s.key, messageId }),
    });
    // The session was removed between the read and the append.
    if (!res.ok) return new GatewayError('UNKNOWN_SESSION', { vars: { session: params.sessionKey } });
    if (!res.duplicate) auto.publish(res.message, s.key);
    return { message: res.message, duplicate: res.duplicate };
  });

  operator('chat.history', READ, Params.chatHistory, async ({ params }) => {
    const s = await session(params.sessionKey);
    if (s instanceof GatewayError) return s;
    const messages = await gw.store.listChatMessages(s.sessionId, {
      ...(params.beforeSeq ? { beforeSeq: params.beforeSeq } : {}),
      limit: params.limit ?? 50,
    });
    const first = messages[0];
    return { sessionKey: s.key, sessionId: s.sessionId, messages, nextBeforeSeq: first && first.seq > 1 ? first.seq : null };
  });

  // --- channels ------------------------------------------------------------------------------

  operator('send', WRITE, Params.send, async ({ principal, params, log }) => {
    const channel = await gw.store.getChannel(params.channel);
    if (!channel) return new GatewayError('UNKNOWN_CHANNEL', { vars: { channel: params.channel } });
    if (!params.content && !(params.embeds && params.embeds.length > 0)) return new GatewayError('EMPTY_MESSAGE');
    const deliveryId = gw.random.uuid();
    const username = params.username ?? channel.username;
    // Discord-webhook compatible body: {content, username?, embeds?}.
    const body: Record<string, unknown> = {
      ...(params.content ? { content: params.content } : {}),
      ...(username ? { username } : {}),
      ...(params.embeds ? { embeds: params.embeds } : {}),
    };
    const idempotencyKey = params.idempotencyKey ?? deliveryId;
    const res = await gw.store.enqueueDelivery({
      deliveryId,
      channelId: channel.channelId,
      channelName: channel.name,
      body,
      idempotencyKey,
      actor: principal.actor,
      createdAtMs: now(),
      audit: audit(principal, 'channel.send', deliveryId, { channel: channel.name, idempotencyKey }),
    });
    if (!res.duplicate) {
      log.info('channel send queued', { principal: principal.actor, channel: channel.name, deliveryId });
      auto.deliveries.kick();
    }
    const d = res.delivery;
    return { deliveryId: d.deliveryId, channel: channel.name, status: d.status, idempotencyKey: d.idempotencyKey, duplicate: res.duplicate };
  });

  operator('channels.list', READ, Params.empty, async ({ principal }) => ({ channels: (await gw.store.listChannels()).map((c) => channelView(c, principal)) }));

  operator('channels.add', ADMIN, Params.channelsAdd, async ({ principal, params }) => {
    const bad = checkUrl(params.url);
    if (bad) return bad;
    const res = await gw.store.putChannel({
      channelId: gw.random.uuid(),
      name: params.name,
      url: params.url,
      username: params.username,
      source: 'api',
      createdBy: principal.actor,
      createdAtMs: now(),
      audit: audit(principal, 'channel.added', params.name, { type: 'webhook', origin: new URL(params.url).origin }),
    });
    if (!res.ok) return new GatewayError('CHANNEL_NAME_TAKEN', { vars: { name: params.name } });
    return { channel: channelView(res.channel, principal) };
  });

  operator('channels.remove', ADMIN, Params.channelsRemove, async ({ principal, params }) => {
    const removed = await gw.store.removeChannel(params.name, audit(principal, 'channel.removed', params.name));
    if (!removed) return new GatewayError('UNKNOWN_CHANNEL', { vars: { channel: params.name } });
    return { removed: true };
  });

  const channelFilter = async (name: string | undefined): Promise<{ channelId?: string } | GatewayError> => {
    if (name === undefined) return {};
    const c = await gw.store.getChannel(name);
    return c ? { channelId: c.channelId } : new GatewayError('UNKNOWN_CHANNEL', { vars: { channel: name } });
  };

  operator('channels.deliveries', READ, Params.deliveries, async ({ params }) => {
    const f = await channelFilter(params.channel);
    if (f instanceof GatewayError) return f;
    const list = await gw.store.listDeliveries({ ...f, ...(params.status ? { status: params.status } : {}), limit: params.limit ?? 100 });
    return { deliveries: list };
  });

  operator('channels.deadLetters', READ, Params.deadLetters, async ({ params }) => {
    const f = await channelFilter(params.channel);
    if (f instanceof GatewayError) return f;
    return { deliveries: await gw.store.listDeliveries({ ...f, status: 'dead', limit: params.limit ?? 100 }) };
  });

  // --- cron ----------------------------------------------------------------------------------

  const checkJob = (schedule: CronSchedule | undefined, action: CronAction | undefined): GatewayError | null => {
    if (schedule) {
      const c = checkSchedule(schedule);
      if (!c.ok) return new GatewayError('INVALID_SCHEDULE', { vars: { problem: c.problem } });
      if (nextRun(schedule, now(), now()) === null) return new GatewayError('INVALID_SCHEDULE', { vars: { problem: 'the expression never fires' } });
    }
    if (action?.kind === 'node') {
      const invoke = gw.methods.get('node.invoke');
      if (!invoke) return new GatewayError('CRON_ACTION_UNAVAILABLE', { vars: { action: 'node', why: 'this gateway has no node.invoke' } });
      // The run uses the fixed internal grant: a command that needs more (browser.proxy, fs.listDir
      // … need admin to invoke) would fail on every run, so it is refused now, with the reason.
      const extra = invoke.dynamicScope?.({ nodeId: action.nodeId, command: action.command, params: action.params });
      if (extra && !scopeSatisfied(INTERNAL_GRANT, extra)) {
        return new GatewayError('CRON_ACTION_UNAVAILABLE', {
          vars: { action: 'node', why: `command ${action.command} needs ${extra}, which the internal grant (${INTERNAL_GRANT.join(', ')}) does not hold` },
          details: { requiredScope: extra, internalGrant: [...INTERNAL_GRANT] },
        });
      }
    }
    return null;
  };

  // Not awaited: a long-running job must not hold the caller; the scheduler re-reads the jobs in order.
  const rescheduled = () => void auto.scheduler.changed();

  /** A job by id, or by name when exactly one job has it. */
  const findJob = async (idOrName: string): Promise<CronJob | GatewayError> => {
    const byId = await gw.store.getCronJob(idOrName);
    if (byId) return byId;
    const named = (await gw.store.listCronJobs()).filter((j) => j.name === idOrName);
    return named.length === 1 ? (named[0] as CronJob) : new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: idOrName } });
  };

  operator('cron.add', ADMIN, Params.cronAdd, async ({ principal, params }) => {
    const bad = checkJob(params.schedule as CronSchedule, params.action as CronAction);
    if (bad) return bad;
    const jobId = gw.random.uuid();
    const createdAtMs = now();
    const enabled = params.enabled ?? true;
    const job = await gw.store.createCronJob({
      jobId,
      name: params.name,
      schedule: params.schedule as CronSchedule,
      action: params.action as CronAction,
      enabled,
      createdBy: principal.actor,
      createdAtMs,
      nextRunAtMs: enabled ? nextRun(params.schedule as CronSchedule, createdAtMs, createdAtMs) : null,
      audit: audit(principal, 'cron.added', jobId, { name: params.name, schedule: params.schedule, action: params.action.kind }),
    });
    rescheduled();
    return { job };
  });

  operator('cron.list', READ, Params.cronList, async ({ params }) => {
    const all = await gw.store.listCronJobs();
    // `includeDisabled: false` (what the OpenClaw CLI sends without --all) lists enabled jobs only.
    return { jobs: params.includeDisabled === false ? all.filter((j) => j.enabled) : all };
  });

  operator('cron.update', ADMIN, Params.cronUpdate, async ({ principal, params }) => {
    const job = await findJob(params.jobId);
    if (job instanceof GatewayError) return job;
    const bad = checkJob(params.schedule as CronSchedule | undefined, params.action as CronAction | undefined);
    if (bad) return bad;
    const patch: CronJobPatch = {};
    if (params.name !== undefined) patch.name = params.name;
    if (params.schedule !== undefined) patch.schedule = params.schedule as CronSchedule;
    if (params.action !== undefined) patch.action = params.action as CronAction;
    if (params.enabled !== undefined) patch.enabled = params.enabled;
    const schedule = patch.schedule ?? job.schedule;
    const enabled = patch.enabled ?? job.enabled;
    // A new schedule, or re-enabling, starts from now: no catch-up for time spent disabled.
    if (patch.schedule !== undefined || patch.enabled !== undefined) patch.nextRunAtMs = enabled ? nextRun(schedule, now(), job.createdAtMs) : null;
    const updated = await gw.store.updateCronJob(job.jobId, patch, now(), audit(principal, 'cron.updated', job.jobId, { fields: Object.keys(patch) }));
    if (!updated) return new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: params.jobId } });
    rescheduled();
    return { job: updated };
  });

  operator('cron.remove', ADMIN, Params.cronJob, async ({ principal, params }) => {
    const job = await findJob(params.jobId);
    if (job instanceof GatewayError) return job;
    const removed = await gw.store.removeCronJob(job.jobId, audit(principal, 'cron.removed', job.jobId, { name: job.name }));
    if (!removed) return new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: params.jobId } });
    rescheduled();
    return { removed: true, jobId: job.jobId };
  });

  operator('cron.run', ADMIN, Params.cronJob, async ({ principal, params }) => {
    const job = await findJob(params.jobId);
    if (job instanceof GatewayError) return job;
    await gw.audit(principal.actor, 'cron.run-requested', job.jobId, { name: job.name });
    const run = await auto.scheduler.runNow(job.jobId);
    if (!run) return new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: params.jobId } });
    return { run };
  });

  operator('cron.runs', READ, Params.cronRuns, async ({ params }) => {
    const job = await findJob(params.jobId);
    if (job instanceof GatewayError) return job;
    return { jobId: job.jobId, runs: await gw.store.listCronRuns(job.jobId, params.limit ?? 50) };
  });
}

/** A spawned child's key: under its parent's when it fits, else a fresh one. */
function childKey(parentKey: string, sessionId: string): string {
  const k = `${parentKey}/${sessionId.slice(0, 8)}`;
  return k.length <= 128 ? k : `s-${sessionId.slice(0, 8)}`;
}
