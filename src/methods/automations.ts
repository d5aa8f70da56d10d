/**
 * Sessions and chat, channels and `send`, and cron. Scopes follow the reference
 * method table: read for reads, write for sends, admin for cron and channel mutations. The
 * same handlers serve sockets and the internal principal of automations (`gw.call`).
 */

import { createHash } from 'node:crypto';
import { GatewayError } from '@clawgate/protocol/errors';
import { ADMIN, READ, scopeSatisfied, WRITE } from '@clawgate/protocol/scopes';
import { unsafeFieldError } from '@clawgate/protocol/text';
import { type Static, Type as T, type TSchema } from '@sinclair/typebox';
import { checkSchedule, nextRun } from '../automations/cron.js';
import {
  actionFromOpenClaw,
  OpenClawJobFields,
  type OpenClawJobInput,
  type OpenClawSchedule,
  OpenClawScheduleSchema,
  openClawJobView,
  openClawRunEntry,
  scheduleFromOpenClaw,
} from '../automations/openclaw-jobs.js';
import { type Automations, INTERNAL_GRANT } from '../automations/service.js';
import type { DispatchLog, MethodSpec } from '../core/dispatch.js';
import type { Gateway } from '../core/gateway.js';
import { hasScope, type Principal, SessionPrincipal } from '../core/principal.js';
import type { ChatSession, CronAction, CronJob, CronJobPatch, CronRun, CronSchedule, WebhookChannel } from '../store/types.js';

const SessionKey = T.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._:/@-]*$' });
const Name = T.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' });
const IdemKey = T.String({ minLength: 1, maxLength: 200 });
const Limit = (max: number) => T.Integer({ minimum: 1, maximum: max });
const closed = { additionalProperties: false } as const;

const JobRef = T.String({ minLength: 1, maxLength: 128 });

const Embed = T.Record(T.String({ maxLength: 64 }), T.Unknown());

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
  // What `openclaw channels status` sends; `channel` is `webhook` (all) or one channel's name.
  channelsStatus: T.Object(
    { probe: T.Optional(T.Boolean()), timeoutMs: T.Optional(T.Integer({ minimum: 0 })), channel: T.Optional(T.String({ minLength: 1, maxLength: 64 })) },
    closed,
  ),
  deliveries: T.Object(
    {
      channel: T.Optional(Name),
      status: T.Optional(T.Union([T.Literal('pending'), T.Literal('delivered'), T.Literal('dead')])),
      limit: T.Optional(Limit(1000)),
    },
    closed,
  ),
  deadLetters: T.Object({ channel: T.Optional(Name), limit: T.Optional(Limit(1000)) }, closed),
  // clawgate's form ({name, schedule, action}) and OpenClaw's ({name, schedule, payload, sessionTarget …}, docs/automations.md).
  cronAdd: T.Object(
    {
      name: T.String({ minLength: 1, maxLength: 128 }),
      schedule: OpenClawScheduleSchema,
      action: T.Optional(ActionSchema),
      enabled: T.Optional(T.Boolean()),
      ...OpenClawJobFields,
    },
    closed,
  ),
  cronUpdate: T.Object(
    {
      jobId: T.Optional(JobRef),
      id: T.Optional(JobRef),
      name: T.Optional(T.String({ minLength: 1, maxLength: 128 })),
      schedule: T.Optional(OpenClawScheduleSchema),
      action: T.Optional(ActionSchema),
      enabled: T.Optional(T.Boolean()),
      // OpenClaw's form: {id, patch: {…job fields}}.
      patch: T.Optional(
        T.Object(
          {
            name: T.Optional(T.String({ minLength: 1, maxLength: 128 })),
            schedule: T.Optional(OpenClawScheduleSchema),
            enabled: T.Optional(T.Boolean()),
            ...OpenClawJobFields,
          },
          closed,
        ),
      ),
    },
    closed,
  ),
  cronList: T.Object(
    {
      includeDisabled: T.Optional(T.Boolean()),
      // What the OpenClaw CLI sends: pages of at most 200, an agent filter and a text query.
      limit: T.Optional(Limit(1000)),
      offset: T.Optional(T.Integer({ minimum: 0 })),
      agentId: T.Optional(T.String({ minLength: 1, maxLength: 200 })),
      query: T.Optional(T.String({ maxLength: 200 })),
    },
    closed,
  ),
  cronJob: T.Object({ jobId: T.Optional(JobRef), id: T.Optional(JobRef) }, closed),
  cronRun: T.Object({ jobId: T.Optional(JobRef), id: T.Optional(JobRef), mode: T.Optional(T.Union([T.Literal('due'), T.Literal('force')])) }, closed),
  cronRuns: T.Object(
    {
      jobId: T.Optional(JobRef),
      id: T.Optional(JobRef),
      limit: T.Optional(Limit(1000)),
      offset: T.Optional(T.Integer({ minimum: 0 })),
      runId: T.Optional(T.String({ minLength: 1, maxLength: 128 })),
      status: T.Optional(T.Union([T.Literal('all'), T.Literal('ok'), T.Literal('error'), T.Literal('skipped')])),
      deliveryStatus: T.Optional(T.Union([T.Literal('delivered'), T.Literal('not-delivered'), T.Literal('unknown'), T.Literal('not-requested')])),
      query: T.Optional(T.String({ maxLength: 200 })),
      sortDir: T.Optional(T.Union([T.Literal('asc'), T.Literal('desc')])),
    },
    closed,
  ),
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

type ShownAction = { spawn?: { label?: string } | undefined; username?: string | undefined } | undefined;
const actionShown = (a: ShownAction) => ({ 'action.spawn.label': a?.spawn?.label, 'action.username': a?.username });

/** The params of each method that listings later show to a person (labels, job names, usernames). */
// biome-ignore lint/suspicious/noExplicitAny: params were already checked against the method's schema.
const SHOWN: Record<string, (p: any) => Record<string, string | undefined>> = {
  'sessions.create': (p: { label?: string }) => ({ label: p.label }),
  'sessions.spawn': (p: { label?: string }) => ({ label: p.label }),
  'channels.add': (p: { username?: string }) => ({ username: p.username }),
  send: (p: { username?: string }) => ({ username: p.username }),
  'cron.add': (p: { name?: string; action?: ShownAction }) => ({ name: p.name, ...actionShown(p.action) }),
  'cron.update': (p: { name?: string; action?: ShownAction }) => ({ name: p.name, ...actionShown(p.action) }),
};

/** What these methods use of the gateway (nothing else reaches them). */
export type AutomationMethodDeps = Pick<Gateway, 'methods' | 'store' | 'clock' | 'random' | 'bus' | 'call' | 'audit'>;

export function registerAutomationMethods(gw: AutomationMethodDeps, auto: Automations): void {
  const now = () => gw.clock.now();
  const audit = (p: Principal, action: string, subject: string, data?: Record<string, unknown>) => ({ atMs: now(), actor: p.actor, action, subject, data });

  /**
   * Every method here is an operator method; the handler's params type follows from the schema.
   * A param people later read in a listing (SHOWN) holding a control, bidi or invisible
   * character is refused before the handler runs.
   */
  const operator = <S extends TSchema>(name: string, scope: string, params: S, handler: MethodSpec<Static<S>>['handler']) => {
    const shown = SHOWN[name];
    const checked: MethodSpec<Static<S>>['handler'] = shown ? async (call) => unsafeFieldError(name, shown(call.params)) ?? handler(call) : handler;
    return gw.methods.add<Static<S>>({ name, role: 'operator', scope, params, handler: checked });
  };

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

  /**
   * `channels.status` (what `openclaw channels status` and `openclaw status` read): clawgate's
   * webhook channels as one OpenClaw channel, `webhook`, with one account per named channel.
   * What is reported is what clawgate knows: the delivery outbox of each channel. A webhook is
   * never probed (a probe would post a message), so `probe: true` answers with a warning saying so.
   */
  operator('channels.status', READ, Params.channelsStatus, async ({ principal, params }) => {
    let channels = await gw.store.listChannels();
    if (params.channel !== undefined && params.channel !== 'webhook') {
      const one = channels.find((c) => c.name === params.channel);
      if (!one) return new GatewayError('UNKNOWN_CHANNEL', { vars: { channel: params.channel } });
      channels = [one];
    }
    const accounts = await Promise.all(
      channels.map(async (c) => {
        const [pending, delivered, dead] = await Promise.all([
          gw.store.listDeliveries({ channelId: c.channelId, status: 'pending', limit: 1000 }),
          gw.store.listDeliveries({ channelId: c.channelId, status: 'delivered', limit: 20 }),
          gw.store.listDeliveries({ channelId: c.channelId, status: 'dead', limit: 20 }),
        ]);
        const lastOutboundAt = delivered.reduce<number | null>(
          (m, d) => (d.deliveredAtMs !== undefined && (m === null || d.deliveredAtMs > m) ? d.deliveredAtMs : m),
          null,
        );
        const lastDead = dead.reduce<(typeof dead)[number] | null>((m, d) => (m === null || (d.deadAtMs ?? 0) > (m.deadAtMs ?? 0) ? d : m), null);
        const failing = lastDead !== null && (lastOutboundAt === null || (lastDead.deadAtMs ?? 0) > lastOutboundAt);
        const retrying = pending.find((d) => d.attempts > 0 && d.lastError !== undefined);
        const view = channelView(c, principal);
        return {
          accountId: c.name,
          name: c.name,
          enabled: true,
          configured: true,
          // Deliveries are made by the gateway's outbox worker whenever one is due.
          running: true,
          mode: 'webhook',
          baseUrl: view.url,
          source: c.source,
          lastOutboundAt,
          lastInboundAt: null,
          lastError: failing ? (lastDead?.lastError ?? 'delivery failed') : (retrying?.lastError ?? null),
          healthState: failing ? 'failing' : retrying ? 'retrying' : 'ok',
          deliveries: { pending: pending.length, recentDelivered: delivered.length, recentDead: dead.length },
        };
      }),
    );
    const warnings = params.probe ? ['webhook: channels are not probed (a probe would post a message); delivery outcomes are in channels.deliveries'] : [];
    return {
      ts: now(),
      channelOrder: ['webhook'],
      channelLabels: { webhook: 'Webhook' },
      channelDetailLabels: { webhook: 'clawgate webhook channels' },
      channelSystemImages: {},
      channelMeta: [{ id: 'webhook', label: 'Webhook', detailLabel: 'clawgate webhook channels' }],
      channels: { webhook: { configured: accounts.length > 0, running: true, accounts: accounts.length } },
      channelAccounts: { webhook: accounts },
      channelDefaultAccountId: accounts[0] ? { webhook: accounts[0].accountId } : {},
      ...(warnings.length > 0 ? { warnings } : {}),
    };
  });

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
    return named.length === 1 ? (named[0] as CronJob) : new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: idOrName }, details: { jobId: idOrName } });
  };

  /** The job a `{jobId}` (clawgate) or `{id}` (OpenClaw) names; both forms name one job. */
  const jobRef = (method: string, p: { jobId?: string | undefined; id?: string | undefined }): string | GatewayError => {
    if (p.jobId !== undefined && p.id !== undefined && p.jobId !== p.id) return invalidParams(method, 'jobId and id name different jobs');
    const ref = p.jobId ?? p.id;
    return ref ?? invalidParams(method, 'pass jobId (or id)');
  };
  const invalidParams = (method: string, problem: string) => new GatewayError('INVALID_PARAMS', { vars: { method, problem } });
  const OPENCLAW_FIELDS = Object.keys(OpenClawJobFields);

  /** schedule + action from either form of cron.add / a cron.update patch. */
  const jobSpec = (
    method: string,
    p: { schedule?: OpenClawSchedule | undefined; action?: CronAction | undefined } & OpenClawJobInput,
  ): { schedule?: CronSchedule; action?: CronAction } | GatewayError => {
    const openclaw = OPENCLAW_FIELDS.filter((f) => (p as Record<string, unknown>)[f] !== undefined);
    let action: CronAction | undefined;
    if (p.action !== undefined) {
      if (openclaw.length > 0)
        return invalidParams(method, `/${openclaw[0]} belongs to OpenClaw's job form: pass action (clawgate) or payload (OpenClaw), not both`);
      action = p.action;
    } else if (openclaw.length > 0) {
      const mapped = actionFromOpenClaw(method, p);
      if (mapped instanceof GatewayError) return mapped;
      action = mapped ?? undefined;
    }
    let schedule: CronSchedule | undefined;
    if (p.schedule !== undefined) {
      const mapped = scheduleFromOpenClaw(p.schedule);
      if (mapped instanceof GatewayError) return mapped;
      schedule = mapped;
    }
    const bad = checkJob(schedule, action);
    if (bad) return bad;
    return { ...(schedule ? { schedule } : {}), ...(action ? { action } : {}) };
  };

  operator('cron.add', ADMIN, Params.cronAdd, async ({ principal, params }) => {
    const spec = jobSpec('cron.add', params as Parameters<typeof jobSpec>[1]);
    if (spec instanceof GatewayError) return spec;
    const { schedule, action } = spec;
    if (!schedule || !action) return invalidParams('cron.add', 'pass action (clawgate) or payload (OpenClaw)');
    const jobId = gw.random.uuid();
    const createdAtMs = now();
    const enabled = params.enabled ?? true;
    const job = await gw.store.createCronJob({
      jobId,
      name: params.name,
      schedule,
      action,
      enabled,
      createdBy: principal.actor,
      createdAtMs,
      nextRunAtMs: enabled ? nextRun(schedule, createdAtMs, createdAtMs) : null,
      audit: audit(principal, 'cron.added', jobId, { name: params.name, schedule, action: action.kind, form: params.payload ? 'openclaw' : 'clawgate' }),
    });
    rescheduled();
    // `job` for clawgate clients; the job's own fields at the top level are what OpenClaw's CLI prints.
    return { ...openClawJobView(job), job };
  });

  operator('cron.list', READ, Params.cronList, async ({ params }) => {
    const all = await gw.store.listCronJobs();
    // `includeDisabled: false` (what the OpenClaw CLI sends without --all) lists enabled jobs only.
    let jobs = params.includeDisabled === false ? all.filter((j) => j.enabled) : all;
    // No clawgate job belongs to an agent, so an agent filter matches none.
    if (params.agentId !== undefined) jobs = [];
    const q = params.query?.trim().toLowerCase();
    if (q) jobs = jobs.filter((j) => j.jobId.toLowerCase().includes(q) || j.name.toLowerCase().includes(q));
    const views = jobs.map(openClawJobView);
    if (params.limit === undefined && params.offset === undefined) return { jobs: views };
    // OpenClaw's paging: a page, the total, and a revision that changes whenever the inventory does.
    const offset = params.offset ?? 0;
    const limit = params.limit ?? 200;
    const page = views.slice(offset, offset + limit);
    const snapshotRevision = createHash('sha256')
      .update(JSON.stringify(all.map((j) => [j.jobId, j.updatedAtMs])))
      .digest('hex')
      .slice(0, 16);
    const hasMore = offset + page.length < views.length;
    return { jobs: page, total: views.length, offset, limit, hasMore, nextOffset: hasMore ? offset + page.length : null, snapshotRevision };
  });

  operator('cron.get', READ, Params.cronJob, async ({ params }) => {
    const ref = jobRef('cron.get', params);
    if (ref instanceof GatewayError) return ref;
    const job = await findJob(ref);
    return job instanceof GatewayError ? job : openClawJobView(job);
  });

  operator('cron.status', READ, Params.empty, async () => {
    const jobs = await gw.store.listCronJobs();
    const due = jobs.flatMap((j) => (j.enabled && j.nextRunAtMs !== null ? [j.nextRunAtMs] : []));
    return {
      // The scheduler always runs: on this gateway, or on the cluster's leader instance.
      enabled: true,
      scheduler: gw.bus ? 'cluster-leader' : 'this-gateway',
      jobs: jobs.length,
      enabledJobs: jobs.filter((j) => j.enabled).length,
      nextWakeAtMs: due.length > 0 ? Math.min(...due) : null,
      store: gw.store.kind,
    };
  });

  operator('cron.update', ADMIN, Params.cronUpdate, async ({ principal, params }) => {
    const ref = jobRef('cron.update', params);
    if (ref instanceof GatewayError) return ref;
    const job = await findJob(ref);
    if (job instanceof GatewayError) return job;
    const patchIn = params.patch;
    if (patchIn && (params.name !== undefined || params.schedule !== undefined || params.action !== undefined || params.enabled !== undefined)) {
      return invalidParams('cron.update', 'pass the changes at the top level (clawgate) or in patch (OpenClaw), not both');
    }
    const fields = patchIn ?? params;
    const spec = jobSpec('cron.update', fields as Parameters<typeof jobSpec>[1]);
    if (spec instanceof GatewayError) return spec;
    const patch: CronJobPatch = {};
    if (fields.name !== undefined) patch.name = fields.name;
    if (spec.schedule !== undefined) patch.schedule = spec.schedule;
    if (spec.action !== undefined) patch.action = spec.action;
    if (fields.enabled !== undefined) patch.enabled = fields.enabled;
    const schedule = patch.schedule ?? job.schedule;
    const enabled = patch.enabled ?? job.enabled;
    // A new schedule, or re-enabling, starts from now: no catch-up for time spent disabled.
    if (patch.schedule !== undefined || patch.enabled !== undefined) patch.nextRunAtMs = enabled ? nextRun(schedule, now(), job.createdAtMs) : null;
    const updated = await gw.store.updateCronJob(job.jobId, patch, now(), audit(principal, 'cron.updated', job.jobId, { fields: Object.keys(patch) }));
    if (!updated) return new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: ref }, details: { jobId: ref } });
    rescheduled();
    return { ...openClawJobView(updated), job: updated };
  });

  operator('cron.remove', ADMIN, Params.cronJob, async ({ principal, params }) => {
    const ref = jobRef('cron.remove', params);
    if (ref instanceof GatewayError) return ref;
    const job = await findJob(ref);
    if (job instanceof GatewayError) return job;
    const removed = await gw.store.removeCronJob(job.jobId, audit(principal, 'cron.removed', job.jobId, { name: job.name }));
    if (!removed) return new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: ref }, details: { jobId: ref } });
    rescheduled();
    return { ok: true, removed: true, jobId: job.jobId, id: job.jobId };
  });

  operator('cron.run', ADMIN, Params.cronRun, async ({ principal, params }) => {
    const ref = jobRef('cron.run', params);
    if (ref instanceof GatewayError) return ref;
    const job = await findJob(ref);
    if (job instanceof GatewayError) return job;
    // OpenClaw's `--due`: run only when the job is due now (its default, `force`, always runs).
    if (params.mode === 'due' && (job.nextRunAtMs === null || job.nextRunAtMs > now())) {
      return { ok: true, ran: false, enqueued: false, reason: 'not-due', jobId: job.jobId, nextRunAtMs: job.nextRunAtMs };
    }
    await gw.audit(principal.actor, 'cron.run-requested', job.jobId, { name: job.name });
    const run = await auto.scheduler.runNow(job.jobId);
    if (!run) return new GatewayError('UNKNOWN_CRON_JOB', { vars: { jobId: ref }, details: { jobId: ref } });
    // The run has finished when this answers (nothing is left queued to wait for).
    return { ok: true, ran: true, enqueued: false, runId: run.runId, jobId: job.jobId, run };
  });

  /** Runs one cron.runs call reads before filtering (the store keeps a bounded history anyway). */
  const RUNS_SCAN = 5000;

  operator('cron.runs', READ, Params.cronRuns, async ({ params }) => {
    const ref = jobRef('cron.runs', params);
    if (ref instanceof GatewayError) return ref;
    const job = await findJob(ref);
    if (job instanceof GatewayError) return job;
    const filtered =
      params.runId !== undefined || (params.status !== undefined && params.status !== 'all') || params.deliveryStatus !== undefined || !!params.query;
    const offset = params.offset ?? 0;
    const limit = params.limit ?? 50;
    if (!filtered && params.offset === undefined && params.sortDir === undefined) {
      const runs = await gw.store.listCronRuns(job.jobId, limit);
      return { jobId: job.jobId, id: job.jobId, runs, entries: runs.map((r) => openClawRunEntry(r, job)) };
    }
    // Newest first, as the store lists them; `asc` turns the order round.
    let runs: CronRun[] = await gw.store.listCronRuns(job.jobId, RUNS_SCAN);
    if (params.runId !== undefined) runs = runs.filter((r) => r.runId === params.runId);
    // clawgate records ok and error runs; a skipped run is never recorded, so `skipped` matches none.
    if (params.status !== undefined && params.status !== 'all') runs = runs.filter((r) => r.status === params.status);
    let entries = runs.map((r) => openClawRunEntry(r, job));
    if (params.deliveryStatus !== undefined) entries = entries.filter((e) => e.deliveryStatus === params.deliveryStatus);
    const q = params.query?.trim().toLowerCase();
    if (q)
      entries = entries.filter(
        (e) =>
          (e.error ?? '').toLowerCase().includes(q) ||
          JSON.stringify(e.result ?? {})
            .toLowerCase()
            .includes(q),
      );
    if (params.sortDir === 'asc') entries.reverse();
    const page = entries.slice(offset, offset + limit);
    const hasMore = offset + page.length < entries.length;
    return {
      jobId: job.jobId,
      id: job.jobId,
      runs: page.map((e) => runs.find((r) => r.runId === e.runId) as CronRun),
      entries: page,
      total: entries.length,
      offset,
      limit,
      hasMore,
      nextOffset: hasMore ? offset + page.length : null,
    };
  });
}

/** A spawned child's key: under its parent's when it fits, else a fresh one. */
function childKey(parentKey: string, sessionId: string): string {
  const k = `${parentKey}/${sessionId.slice(0, 8)}`;
  return k.length <= 128 ? k : `s-${sessionId.slice(0, 8)}`;
}
