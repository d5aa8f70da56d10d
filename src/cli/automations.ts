/** `clawgate cron …`, `clawgate channels …`, `clawgate sessions …`, `clawgate chat …`: thin wrappers over the automation RPCs. */
import { parseDurationMs } from '../automations/cron.js';
import type { AutomationsConfig } from '../core/config.js';
import type { ChatMessage, ChatSession, CronJob, CronRun, Delivery } from '../store/types.js';
import { field, jsonParams, out, parseGatewayCommand } from './common.js';
import { CliFailure } from './connect-errors.js';
import type { CliConnection } from './gateway-session.js';
import { withGateway } from './gateway-session.js';
import { ambiguityMessage, resolveRef } from './resolve.js';
import { UsageError } from './usage.js';

const iso = (ms: number | null | undefined) => (ms === null || ms === undefined ? '-' : new Date(ms).toISOString());

/** Validate the `automations` block of the config file (unknown shapes are a usage error, not a surprise later). */
export function automationsConfig(raw: unknown): AutomationsConfig | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'object' || raw === null) throw new UsageError('config: automations must be an object');
  const a = raw as { channels?: unknown; webhook?: unknown };
  const cfg: AutomationsConfig = {};
  if (a.channels !== undefined) {
    const hooks = (a.channels as { webhooks?: unknown }).webhooks;
    if (!Array.isArray(hooks)) throw new UsageError('config: automations.channels.webhooks must be a list of {name, url}');
    cfg.channels = hooks.map((h, i) => {
      const c = h as { name?: unknown; url?: unknown; username?: unknown };
      if (typeof c.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(c.name)) {
        throw new UsageError(`config: automations.channels.webhooks[${i}].name must be 1-64 letters, digits, '.', '_' or '-'`);
      }
      let ok = false;
      try {
        const u = new URL(String(c.url));
        ok = u.protocol === 'http:' || u.protocol === 'https:';
      } catch {}
      if (!ok) throw new UsageError(`config: automations.channels.webhooks[${i}].url must be an http(s) URL`);
      return { name: c.name, url: String(c.url), ...(typeof c.username === 'string' ? { username: c.username } : {}) };
    });
  }
  if (a.webhook !== undefined) {
    const w = a.webhook as Record<string, unknown>;
    const policy: NonNullable<AutomationsConfig['webhook']> = {};
    for (const k of ['maxAttempts', 'baseBackoffMs', 'maxBackoffMs', 'timeoutMs'] as const) {
      if (w[k] === undefined) continue;
      if (!Number.isInteger(w[k]) || (w[k] as number) < 1) throw new UsageError(`config: automations.webhook.${k} must be a positive whole number`);
      policy[k] = w[k] as number;
    }
    cfg.webhook = policy;
  }
  return cfg;
}

/** A node named on the command line, as its id; an unknown one is passed on for the gateway to refuse with its own code. */
async function nodeIdOf(c: CliConnection, ref: string): Promise<string> {
  const { nodes } = await c.request<{ nodes: Array<{ nodeId: string; displayName?: string | null; label?: string | null }> }>('node.list', {});
  const r = resolveRef(
    nodes.map((n) => ({ id: n.nodeId, names: [n.displayName, n.label] })),
    ref,
  );
  if (r.kind === 'ambiguous') throw new CliFailure(ambiguityMessage('node', ref, r), 'clawgate nodes list shows every node with its id');
  return r.kind === 'found' ? r.id : ref;
}

function describeSchedule(j: CronJob): string {
  return j.schedule.kind === 'every' ? `every ${j.schedule.everyMs}ms` : `cron "${j.schedule.expr}"${j.schedule.tz ? ` ${j.schedule.tz}` : ''}`;
}
function describeAction(j: CronJob): string {
  const a = j.action;
  if (a.kind === 'send') return `send to ${a.channel}`;
  if (a.kind === 'chat') return `${a.spawn ? 'spawn under' : 'post to'} session ${a.sessionKey}`;
  return `node ${a.nodeId} ${a.command}`;
}

export async function cronCommand(sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals, print } = parseGatewayCommand(args, {
    name: { type: 'string' },
    cron: { type: 'string' },
    tz: { type: 'string' },
    every: { type: 'string' },
    send: { type: 'string' },
    content: { type: 'string' },
    username: { type: 'string' },
    session: { type: 'string' },
    text: { type: 'string' },
    spawn: { type: 'boolean' },
    'spawn-label': { type: 'string' },
    node: { type: 'string' },
    command: { type: 'string' },
    params: { type: 'string' },
    disabled: { type: 'boolean' },
    limit: { type: 'string' },
  });
  const job = positionals[0];
  switch (sub) {
    case 'add': {
      const name = values.name as string | undefined;
      if (!name) throw new UsageError('cron add needs --name <name>');
      let schedule: unknown;
      if (values.cron !== undefined && values.every !== undefined) throw new UsageError('give --cron or --every, not both');
      if (values.cron !== undefined) schedule = { kind: 'cron', expr: values.cron, ...(values.tz ? { tz: values.tz } : {}) };
      else if (values.every !== undefined) {
        const ms = parseDurationMs(values.every as string);
        if (ms === null) throw new UsageError(`--every must be a duration like 10s, 5m, 1h, 1d; got ${values.every}`);
        schedule = { kind: 'every', everyMs: ms };
      } else throw new UsageError('cron add needs --cron "<m h dom mon dow>" or --every <duration>');
      let action: unknown;
      if (values.send !== undefined) {
        if (!values.content) throw new UsageError('--send needs --content <text>');
        action = { kind: 'send', channel: values.send, content: values.content, ...(values.username ? { username: values.username } : {}) };
      } else if (values.session !== undefined) {
        if (!values.text) throw new UsageError('--session needs --text <text>');
        const spawn = values.spawn || values['spawn-label'] !== undefined;
        action = {
          kind: 'chat',
          sessionKey: values.session,
          text: values.text,
          ...(spawn ? { spawn: values['spawn-label'] ? { label: values['spawn-label'] } : {} } : {}),
        };
      } else if (values.node !== undefined) {
        if (!values.command) throw new UsageError('--node needs --command <command>');
        const params = jsonParams(values.params);
        action = { kind: 'node', nodeId: values.node, command: values.command, ...(params !== undefined ? { params } : {}) };
      } else throw new UsageError('cron add needs an action: --send <channel> --content <text>, or --session <key> --text <text> [--spawn]');
      return withGateway(values, async (c) => {
        // --node takes what `nodes` commands take: an id, a unique id prefix or a name.
        if (values.node !== undefined) action = { ...(action as object), nodeId: await nodeIdOf(c, values.node as string) };
        const res = await c.request<{ job: CronJob }>('cron.add', { name, schedule, action, ...(values.disabled ? { enabled: false } : {}) });
        print(res, () =>
          out(`added cron job ${res.job.jobId} (${name}): ${describeSchedule(res.job)}, ${describeAction(res.job)}; next run ${iso(res.job.nextRunAtMs)}`),
        );
        return 0;
      });
    }
    case 'list':
      return withGateway(values, async (c) => {
        const res = await c.request<{ jobs: CronJob[] }>('cron.list', {});
        print(res, () => {
          out(`Cron jobs (${res.jobs.length})`);
          for (const j of res.jobs) {
            out(
              `  ${j.jobId}  ${field(j.name)}  ${describeSchedule(j)}  ${describeAction(j)}  ${j.enabled ? `next ${iso(j.nextRunAtMs)}` : 'disabled'}  last ${iso(j.lastRunAtMs)}`,
            );
          }
        });
        return 0;
      });
    case 'remove':
    case 'run':
    case 'runs': {
      if (!job) throw new UsageError(`usage: clawgate cron ${sub} <jobId|name>`);
      return withGateway(values, async (c) => {
        if (sub === 'remove') {
          const res = await c.request<{ jobId: string }>('cron.remove', { jobId: job });
          print(res, () => out(`removed cron job ${res.jobId}`));
        } else if (sub === 'run') {
          const res = await c.request<{ run: CronRun }>('cron.run', { jobId: job });
          print(res, () =>
            out(`ran ${res.run.jobId}: ${res.run.status}${res.run.error ? ` (${res.run.error})` : ''} ${res.run.result ? JSON.stringify(res.run.result) : ''}`),
          );
          return res.run.status === 'ok' ? 0 : 1;
        } else {
          const res = await c.request<{ runs: CronRun[] }>('cron.runs', { jobId: job, ...(values.limit ? { limit: Number(values.limit) } : {}) });
          print(res, () => {
            for (const r of res.runs) out(`${iso(r.startedAtMs)}  ${r.trigger}  ${r.status}  ${r.error ?? (r.result ? JSON.stringify(r.result) : '')}`);
          });
        }
        return 0;
      });
    }
    default:
      throw new UsageError('usage: clawgate cron add|list|remove <job>|run <job>|runs <job> [--json] (see clawgate help)');
  }
}

function printDeliveries(list: Delivery[]): void {
  for (const d of list) {
    out(
      `  ${d.deliveryId}  ${d.channelName}  ${d.status}  attempts ${d.attempts}  ${d.status === 'pending' ? `next ${iso(d.nextAttemptAtMs)}` : ''}${d.lastError ? `  last error: ${d.lastError}` : ''}  by ${d.actor}`,
    );
  }
}

export async function channelsCommand(sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals, print } = parseGatewayCommand(args, {
    name: { type: 'string' },
    url: { type: 'string' },
    username: { type: 'string' },
    channel: { type: 'string' },
    status: { type: 'string' },
    limit: { type: 'string' },
    'gateway-url': { type: 'string' },
  });
  const limit = values.limit ? { limit: Number(values.limit) } : {};
  // `channels add` takes the webhook's address as --url, so there the gateway is only
  // --gateway-url; every other subcommand accepts either, like the rest of the CLI.
  const { url: webhookUrl, 'gateway-url': gatewayUrl, ...rest } = values;
  const gateway = { ...rest, url: sub === 'add' ? gatewayUrl : (gatewayUrl ?? webhookUrl) };
  switch (sub) {
    case 'add': {
      if (positionals[0] !== 'webhook') throw new UsageError('usage: clawgate channels add webhook --name <n> --url <u> [--username <name>]');
      if (!values.name || !values.url) throw new UsageError('channels add webhook needs --name <n> and --url <u>');
      return withGateway(gateway, async (c) => {
        const res = await c.request<{ channel: { name: string; url: string } }>('channels.add', {
          type: 'webhook',
          name: values.name,
          url: webhookUrl,
          ...(values.username ? { username: values.username } : {}),
        });
        print(res, () => out(`added webhook channel ${res.channel.name} → ${res.channel.url}`));
        return 0;
      });
    }
    case 'remove': {
      const name = positionals[0] ?? (values.name as string | undefined);
      if (!name) throw new UsageError('usage: clawgate channels remove <name>');
      return withGateway(gateway, async (c) => {
        const res = await c.request('channels.remove', { name });
        print(res, () => out(`removed channel ${name}`));
        return 0;
      });
    }
    case 'list':
      return withGateway(gateway, async (c) => {
        const res = await c.request<{ channels: Array<{ name: string; type: string; url: string; source: string }> }>('channels.list', {});
        print(res, () => {
          out(`Channels (${res.channels.length})`);
          for (const ch of res.channels) out(`  ${ch.name}  ${ch.type}  ${ch.url}  (${ch.source})`);
        });
        return 0;
      });
    case 'deliveries':
    case 'dead-letters':
      return withGateway(gateway, async (c) => {
        const channel = values.channel ? { channel: values.channel } : {};
        const res =
          sub === 'deliveries'
            ? await c.request<{ deliveries: Delivery[] }>('channels.deliveries', { ...channel, ...(values.status ? { status: values.status } : {}), ...limit })
            : await c.request<{ deliveries: Delivery[] }>('channels.deadLetters', { ...channel, ...limit });
        print(res, () => {
          out(`${sub === 'deliveries' ? 'Deliveries' : 'Dead letters'} (${res.deliveries.length})`);
          printDeliveries(res.deliveries);
        });
        return 0;
      });
    default:
      throw new UsageError(
        'usage: clawgate channels add webhook --name <n> --url <webhook-url> [--gateway-url <ws-url>] | remove <name> | list | deliveries | dead-letters [--json]',
      );
  }
}

export async function sessionsCommand(sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals, print } = parseGatewayCommand(args, {
    label: { type: 'string' },
    parent: { type: 'string' },
    limit: { type: 'string' },
  });
  switch (sub) {
    case 'list':
      return withGateway(values, async (c) => {
        const res = await c.request<{ sessions: ChatSession[] }>('sessions.list', {
          ...(values.parent ? { parentKey: values.parent } : {}),
          ...(values.limit ? { limit: Number(values.limit) } : {}),
        });
        print(res, () => {
          out(`Sessions (${res.sessions.length})`);
          for (const s of res.sessions)
            out(`  ${s.key}  ${field(s.label)}  ${s.messageCount} messages  by ${s.createdBy}${s.parentId ? `  child of ${s.parentId}` : ''}`);
        });
        return 0;
      });
    case 'create':
    case 'spawn': {
      if (sub === 'spawn' && !positionals[0]) throw new UsageError('usage: clawgate sessions spawn <parentKey> [<key>] [--label <l>]');
      const key = sub === 'create' ? positionals[0] : positionals[1];
      return withGateway(values, async (c) => {
        const res = await c.request<{ session: ChatSession }>(sub === 'create' ? 'sessions.create' : 'sessions.spawn', {
          ...(sub === 'spawn' ? { parentKey: positionals[0] } : {}),
          ...(key ? { key } : {}),
          ...(values.label ? { label: values.label } : {}),
        });
        print(res, () => out(`${sub === 'create' ? 'created' : 'spawned'} session ${res.session.key} (${res.session.sessionId})`));
        return 0;
      });
    }
    default:
      throw new UsageError('usage: clawgate sessions list [--parent <key>] | create [<key>] | spawn <parentKey> [<key>] [--json]');
  }
}

export async function chatCommand(sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals, print } = parseGatewayCommand(args, {
    limit: { type: 'string' },
    before: { type: 'string' },
    'idempotency-key': { type: 'string' },
  });
  const key = positionals[0];
  switch (sub) {
    case 'send': {
      const text = positionals.slice(1).join(' ');
      if (!key || !text) throw new UsageError('usage: clawgate chat send <sessionKey> <text>');
      return withGateway(values, async (c) => {
        const res = await c.request<{ message: ChatMessage; duplicate: boolean }>('chat.send', {
          sessionKey: key,
          text,
          ...(values['idempotency-key'] ? { idempotencyKey: values['idempotency-key'] } : {}),
        });
        print(res, () => out(`${res.duplicate ? 'already sent' : 'sent'} #${res.message.seq} to ${key}`));
        return 0;
      });
    }
    case 'history':
      if (!key) throw new UsageError('usage: clawgate chat history <sessionKey> [--limit <n>] [--before <seq>]');
      return withGateway(values, async (c) => {
        const res = await c.request<{ messages: ChatMessage[] }>('chat.history', {
          sessionKey: key,
          ...(values.limit ? { limit: Number(values.limit) } : {}),
          ...(values.before ? { beforeSeq: Number(values.before) } : {}),
        });
        print(res, () => {
          for (const m of res.messages) out(`#${m.seq}  ${iso(m.atMs)}  ${field(m.author)}: ${m.text}`);
        });
        return 0;
      });
    default:
      throw new UsageError('usage: clawgate chat send <sessionKey> <text> | history <sessionKey> [--json]');
  }
}
