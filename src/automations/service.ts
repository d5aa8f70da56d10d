/**
 * Automations inside the gateway process: the cron scheduler, the webhook delivery worker, and
 * chat event fan-out. Every state change an automation makes is a method call through the same
 * dispatcher sockets use (`gw.call`), made with an InternalPrincipal: its grant is the fixed
 * INTERNAL_GRANT below, and it exists only as an object in this process (no socket, device
 * record, token, client id, header or address can produce one), so a foreign process on the
 * host has nothing to present to obtain it.
 */

import { MAX_BUFFERED_BYTES } from '@clawgate/protocol/frames';
import { READ, scopeSatisfied, WRITE } from '@clawgate/protocol/scopes';
import type { Clock, Random } from '../core/env.js';
import type { Gateway } from '../core/gateway.js';
import { InternalPrincipal, type SessionPrincipal } from '../core/principal.js';
import type { ChatMessage, CronJob, Store } from '../store/types.js';
import { type ActionOutcome, CronScheduler } from './scheduler.js';
import { systemTimers, type Timers } from './timers.js';
import { DEFAULT_WEBHOOK_POLICY, DeliveryWorker, fetchPost, type HttpPost, type WebhookPolicy } from './webhook.js';

/**
 * The fixed grant of every internal component: read and write, never admin or pairing. Cron
 * jobs are created by admins; running them needs only the methods their actions call
 * (`chat.send`, `sessions.spawn`, `send`, `node.invoke`), which are all write.
 */
export const INTERNAL_GRANT: readonly string[] = Object.freeze([READ, WRITE]);

/**
 * Components that act with the internal principal (their actor is `internal:<component>`).
 * Announcements are the `send` calls of cron jobs, so they are attributed to `internal:cron`.
 */
export type InternalComponent = 'cron' | 'spawn';

export interface AutomationsOptions {
  timers?: Timers;
  post?: HttpPost;
  webhook?: Partial<WebhookPolicy>;
  /** Webhook channels from the config file, put into the store at start. */
  channels?: Array<{ name: string; url: string; username?: string | undefined }>;
}

/** What automations use of the gateway: the store, time, ids, the log, method calls, sessions and cluster topics. */
export type AutomationsGateway = Pick<Gateway, 'store' | 'clock' | 'random' | 'log' | 'call' | 'sessions' | 'onClusterTopic' | 'publishClusterTopic'>;

export class Automations {
  readonly scheduler: CronScheduler;
  readonly deliveries: DeliveryWorker;
  readonly policy: WebhookPolicy;
  private readonly principals = new Map<InternalComponent, InternalPrincipal>();
  /** Chat subscribers by session id; closed sockets are dropped lazily on the next event. */
  private readonly subscribers = new Map<string, Set<SessionPrincipal>>();
  private readonly store: Store;
  private readonly clock: Clock;
  private readonly random: Random;

  constructor(
    private readonly gw: AutomationsGateway,
    private readonly opts: AutomationsOptions = {},
  ) {
    this.store = gw.store;
    this.clock = gw.clock;
    this.random = gw.random;
    const timers = opts.timers ?? systemTimers;
    this.policy = { ...DEFAULT_WEBHOOK_POLICY, ...opts.webhook };
    this.deliveries = new DeliveryWorker({ store: gw.store, clock: gw.clock, timers, post: opts.post ?? fetchPost, policy: this.policy, log: gw.log });
    this.scheduler = new CronScheduler({
      store: gw.store,
      clock: gw.clock,
      random: gw.random,
      timers,
      log: gw.log,
      runAction: (job, runId) => this.runAction(job, runId),
    });
    gw.onClusterTopic('chat', (p) => {
      const { message, sessionKey } = p as { message: ChatMessage; sessionKey: string };
      this.publishLocal(message, sessionKey);
    });
  }

  /** The internal principal of a component; only code in this process can hold one. */
  principal(component: InternalComponent): InternalPrincipal {
    let p = this.principals.get(component);
    if (!p) {
      p = new InternalPrincipal(component, INTERNAL_GRANT);
      this.principals.set(component, p);
    }
    return p;
  }

  async start(): Promise<void> {
    for (const c of this.opts.channels ?? []) {
      const now = this.clock.now();
      const res = await this.store.putChannel({
        channelId: this.random.uuid(),
        name: c.name,
        url: c.url,
        username: c.username,
        source: 'config',
        createdBy: 'config',
        createdAtMs: now,
        audit: { atMs: now, actor: 'config', action: 'channel.configured', subject: c.name, data: { type: 'webhook' } },
      });
      if (!res.ok) this.gw.log.warn('config channel not applied: the name is taken by a channel added at runtime', { channel: c.name });
    }
    this.deliveries.start();
    // Not awaited: catch-up runs must not hold the gateway's startup (a node action can take its timeout).
    void this.scheduler.start();
  }

  async stop(): Promise<void> {
    await this.scheduler.stop();
    await this.deliveries.stop();
  }

  // --- chat events ----------------------------------------------------------------------------

  subscribe(session: SessionPrincipal, sessionId: string): void {
    let set = this.subscribers.get(sessionId);
    if (!set) this.subscribers.set(sessionId, (set = new Set()));
    set.add(session);
  }

  unsubscribe(session: SessionPrincipal, sessionId: string): boolean {
    const set = this.subscribers.get(sessionId);
    const had = set?.delete(session) ?? false;
    if (set && set.size === 0) this.subscribers.delete(sessionId);
    return had;
  }

  /** `chat` event to every live subscriber of the session that still holds operator.read. */
  publish(message: ChatMessage, sessionKey: string): void {
    this.publishLocal(message, sessionKey);
    // POSTGRES: subscribers connected to other instances.
    this.gw.publishClusterTopic('chat', { message, sessionKey });
  }

  private publishLocal(message: ChatMessage, sessionKey: string): void {
    const set = this.subscribers.get(message.sessionId);
    if (!set) return;
    for (const s of [...set]) {
      if (!this.gw.sessions.has(s.connId)) {
        set.delete(s);
        continue;
      }
      if (!scopeSatisfied(s.scopes, READ)) continue;
      // Best effort like presence: a slow consumer misses the event (seq shows the gap), history has it.
      if (s.transport.bufferedBytes() > MAX_BUFFERED_BYTES) {
        s.skipEvent();
        continue;
      }
      s.sendEvent('chat', { sessionKey, sessionId: message.sessionId, message });
    }
    if (set.size === 0) this.subscribers.delete(message.sessionId);
  }

  // --- cron actions ----------------------------------------------------------------------------

  private async call(component: InternalComponent, method: string, params: unknown): Promise<{ ok: true; payload: unknown } | { ok: false; error: string }> {
    const res = await this.gw.call(this.principal(component), method, params);
    if (res.ok) {
      this.gw.log.info('internal call', { principal: `internal:${component}`, method, ok: true });
      return res;
    }
    const code = (res.error.details as { code?: string } | undefined)?.code ?? res.error.code;
    this.gw.log.warn('internal call failed', { principal: `internal:${component}`, method, code, message: res.error.message });
    return { ok: false, error: `${method}: ${res.error.message} [${code}]` };
  }

  /** One cron run: method calls with the cron principal; the run id is the idempotency key. */
  private async runAction(job: CronJob, runId: string): Promise<ActionOutcome> {
    const a = job.action;
    if (a.kind === 'send') {
      const r = await this.call('cron', 'send', {
        channel: a.channel,
        content: a.content,
        ...(a.username ? { username: a.username } : {}),
        idempotencyKey: `cron:${runId}`,
      });
      return r.ok ? { ok: true, result: r.payload as Record<string, unknown> } : r;
    }
    if (a.kind === 'chat') {
      let target = a.sessionKey;
      const result: Record<string, unknown> = {};
      const existing = await this.call('cron', 'sessions.get', { sessionKey: a.sessionKey });
      if (!existing.ok) {
        // First run into a session nobody created yet: create it (the job names it).
        const created = await this.call('cron', 'sessions.create', { key: a.sessionKey, label: `cron: ${job.name}` });
        if (!created.ok && !created.error.includes('SESSION_KEY_TAKEN')) return created;
      }
      if (a.spawn) {
        const child = await this.call('spawn', 'sessions.spawn', { parentKey: a.sessionKey, ...(a.spawn.label ? { label: a.spawn.label } : {}) });
        if (!child.ok) return child;
        const session = (child.payload as { session: { key: string; sessionId: string } }).session;
        target = session.key;
        result.spawnedSessionId = session.sessionId;
        result.spawnedSessionKey = session.key;
      }
      const sent = await this.call('cron', 'chat.send', { sessionKey: target, text: a.text, idempotencyKey: `cron:${runId}` });
      if (!sent.ok) return sent;
      const m = (sent.payload as { message: ChatMessage }).message;
      return { ok: true, result: { ...result, sessionKey: target, messageId: m.messageId, seq: m.seq } };
    }
    const r = await this.call('cron', 'node.invoke', {
      nodeId: a.nodeId,
      command: a.command,
      ...(a.params !== undefined ? { params: a.params } : {}),
      idempotencyKey: `cron:${runId}`,
    });
    return r.ok ? { ok: true, result: { invoked: a.command, nodeId: a.nodeId, payload: r.payload } } : r;
  }
}
