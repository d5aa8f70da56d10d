/**
 * OpenClaw's cron job schema (what `openclaw cron add|edit|enable|disable` sends) mapped onto
 * clawgate's jobs, and clawgate's jobs shown in OpenClaw's shape (docs/automations.md §OpenClaw
 * job schema). clawgate runs no agent and no host command, so only what it can do is accepted:
 *
 * - `payload: {kind:"systemEvent", text}` on the main session (or `sessionKey`) becomes a `chat`
 *   action: the text is posted into that session at the scheduled time;
 * - `schedule` `cron` (with `tz`; `staggerMs` 0 only: clawgate runs at the exact time) and
 *   `every` (no `anchorMs`: an interval counts from the job's creation) map one to one;
 * - everything else (`agentTurn`, `command` and `script` payloads, chat or webhook `delivery`,
 *   `at`, `on-exit` and `stream` schedules, agents, pacing, triggers …) is refused with the
 *   catalogue code that names the parameter and the clawgate way to get the same effect.
 *
 * Pure: no IO; the method layer validates params against the schemas below first.
 */

import { GatewayError } from '@clawgate/protocol/errors';
import { Type as T } from '@sinclair/typebox';
import type { CronAction, CronJob, CronRun, CronSchedule } from '../store/types.js';

const closed = { additionalProperties: false } as const;
const Text = (max: number) => T.String({ maxLength: max });
const StringList = T.Array(T.String({ maxLength: 200 }), { maxItems: 100 });

/** Every schedule kind OpenClaw sends; clawgate's two are a subset (cron without stagger, every without anchor). */
export const OpenClawScheduleSchema = T.Union([
  T.Object(
    {
      kind: T.Literal('cron'),
      expr: T.String({ minLength: 1, maxLength: 200 }),
      tz: T.Optional(T.String({ minLength: 1, maxLength: 64 })),
      staggerMs: T.Optional(T.Integer({ minimum: 0 })),
    },
    closed,
  ),
  T.Object({ kind: T.Literal('every'), everyMs: T.Integer({ minimum: 1 }), anchorMs: T.Optional(T.Integer({ minimum: 0 })) }, closed),
  T.Object({ kind: T.Literal('at'), at: Text(64) }, closed),
  T.Object({ kind: T.Literal('on-exit'), command: Text(4096), cwd: T.Optional(Text(4096)) }, closed),
  T.Object(
    {
      kind: T.Literal('stream'),
      command: Text(4096),
      cwd: T.Optional(Text(4096)),
      mode: T.Optional(Text(64)),
      match: T.Optional(Text(4096)),
      batchMs: T.Optional(T.Integer({ minimum: 0 })),
      maxBatchBytes: T.Optional(T.Integer({ minimum: 0 })),
    },
    closed,
  ),
]);

/** The union of the fields of OpenClaw's four payload kinds (the kind decides which apply). */
export const OpenClawPayloadSchema = T.Object(
  {
    kind: T.Union([T.Literal('systemEvent'), T.Literal('agentTurn'), T.Literal('command'), T.Literal('script')]),
    text: T.Optional(T.String({ maxLength: 16_000 })),
    message: T.Optional(T.String({ maxLength: 16_000 })),
    model: T.Optional(Text(200)),
    fallbacks: T.Optional(StringList),
    thinking: T.Optional(Text(64)),
    timeoutSeconds: T.Optional(T.Integer({ minimum: 0 })),
    lightContext: T.Optional(T.Boolean()),
    toolsAllow: T.Optional(StringList),
    argv: T.Optional(StringList),
    cwd: T.Optional(Text(4096)),
    env: T.Optional(T.Record(T.String({ maxLength: 200 }), T.String({ maxLength: 4096 }))),
    input: T.Optional(T.String({ maxLength: 65_536 })),
    noOutputTimeoutSeconds: T.Optional(T.Integer({ minimum: 0 })),
    outputMaxBytes: T.Optional(T.Integer({ minimum: 0 })),
    toolBudget: T.Optional(T.Integer({ minimum: 0 })),
    script: T.Optional(T.String({ maxLength: 65_536 })),
  },
  closed,
);

export const OpenClawDeliverySchema = T.Object(
  {
    mode: T.Union([T.Literal('announce'), T.Literal('none'), T.Literal('webhook')]),
    channel: T.Optional(Text(200)),
    to: T.Optional(Text(2048)),
    threadId: T.Optional(T.Union([T.Integer(), Text(200)])),
    accountId: T.Optional(Text(200)),
    bestEffort: T.Optional(T.Boolean()),
  },
  closed,
);

/** The job fields OpenClaw's cron.add sends besides name/schedule/enabled (all optional here). */
export const OpenClawJobFields = {
  payload: T.Optional(OpenClawPayloadSchema),
  sessionTarget: T.Optional(Text(200)),
  sessionKey: T.Optional(T.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._:/@-]*$' })),
  wakeMode: T.Optional(T.Union([T.Literal('now'), T.Literal('next-heartbeat')])),
  agentId: T.Optional(Text(200)),
  declarationKey: T.Optional(Text(200)),
  displayName: T.Optional(Text(200)),
  description: T.Optional(Text(2000)),
  deleteAfterRun: T.Optional(T.Boolean()),
  pacing: T.Optional(T.Object({ min: T.Optional(Text(64)), max: T.Optional(Text(64)) }, closed)),
  trigger: T.Optional(T.Object({ script: T.String({ maxLength: 65_536 }), once: T.Optional(T.Boolean()) }, closed)),
  delivery: T.Optional(OpenClawDeliverySchema),
  // `openclaw cron edit --no-failure-alert` sends false; the flags that configure one send an object.
  failureAlert: T.Optional(
    T.Union([
      T.Literal(false),
      T.Object(
        {
          after: T.Optional(T.Integer({ minimum: 0 })),
          channel: T.Optional(Text(200)),
          to: T.Optional(Text(2048)),
          cooldownMs: T.Optional(T.Integer({ minimum: 0 })),
          includeSkipped: T.Optional(T.Boolean()),
          mode: T.Optional(T.Union([T.Literal('announce'), T.Literal('webhook')])),
          accountId: T.Optional(Text(200)),
        },
        closed,
      ),
    ]),
  ),
};

export interface OpenClawJobInput {
  schedule?: OpenClawSchedule;
  payload?: { kind: 'systemEvent' | 'agentTurn' | 'command' | 'script'; text?: string; message?: string; toolsAllow?: string[] } & Record<string, unknown>;
  sessionTarget?: string;
  sessionKey?: string;
  wakeMode?: 'now' | 'next-heartbeat';
  agentId?: string;
  declarationKey?: string;
  displayName?: string;
  description?: string;
  deleteAfterRun?: boolean;
  pacing?: unknown;
  trigger?: unknown;
  delivery?: { mode: 'announce' | 'none' | 'webhook'; channel?: string; to?: string };
  failureAlert?: false | Record<string, unknown>;
}

export type OpenClawSchedule =
  | { kind: 'cron'; expr: string; tz?: string; staggerMs?: number }
  | { kind: 'every'; everyMs: number; anchorMs?: number }
  | { kind: 'at'; at: string }
  | { kind: 'on-exit'; command: string }
  | { kind: 'stream'; command: string };

const NO_AGENT = 'clawgate runs no agent and no host command';

const invalid = (method: string, problem: string) => new GatewayError('INVALID_PARAMS', { vars: { method, problem } });

/** OpenClaw's schedule as clawgate's, or the refusal naming what clawgate does instead. */
export function scheduleFromOpenClaw(s: OpenClawSchedule): CronSchedule | GatewayError {
  const refuse = (problem: string) => new GatewayError('INVALID_SCHEDULE', { vars: { problem } });
  switch (s.kind) {
    case 'cron':
      if (s.staggerMs !== undefined && s.staggerMs > 0) {
        return refuse('staggerMs is not supported: clawgate runs a cron job at its exact time (use --exact, or spread jobs with different expressions)');
      }
      return s.tz !== undefined ? { kind: 'cron', expr: s.expr, tz: s.tz } : { kind: 'cron', expr: s.expr };
    case 'every':
      if (s.anchorMs !== undefined) return refuse('anchorMs is not supported: an interval counts from the moment the job is created');
      return { kind: 'every', everyMs: s.everyMs };
    case 'at':
      return refuse('one-shot "at" schedules are not supported: use a cron expression for that time and remove the job after it ran');
    case 'on-exit':
    case 'stream':
      return refuse(`"${s.kind}" schedules run a host command, which ${NO_AGENT}`);
  }
}

/**
 * The clawgate action for OpenClaw's payload fields, null when they change no action (a
 * `cron edit` that only sets `wakeMode`), or the refusal. `method` names the method in
 * INVALID_PARAMS; `sessionTarget` defaults to main as the OpenClaw CLI infers for a system event.
 */
export function actionFromOpenClaw(method: string, p: OpenClawJobInput): CronAction | null | GatewayError {
  const payload = p.payload;
  for (const [field, why] of [
    ['agentId', 'agents'],
    ['declarationKey', 'declaration keys'],
    ['pacing', 'pacing'],
    ['trigger', 'trigger scripts'],
    ['displayName', 'display names (the job name is its label)'],
    ['description', 'descriptions'],
  ] as const) {
    if (p[field] !== undefined) return invalid(method, `/${field} is not supported: clawgate cron jobs have no ${why}`);
  }
  if (p.deleteAfterRun === true) return invalid(method, '/deleteAfterRun is not supported: remove the job after it ran');
  if (p.failureAlert !== undefined && p.failureAlert !== false) {
    return invalid(method, '/failureAlert is not supported: a failed run is recorded with status error (cron.runs); no alert is sent');
  }
  // The payload kind first: an agent turn usually comes with a delivery, and the agent is the reason.
  if (payload && payload.kind !== 'systemEvent') {
    const kind = payload.kind;
    return new GatewayError('CRON_ACTION_UNAVAILABLE', {
      vars: {
        action: kind,
        why: `${NO_AGENT}: a job can post fixed text into a session (--system-event <text>) or, through the clawgate API, to a webhook channel or a node command`,
      },
    });
  }
  if (p.delivery !== undefined && p.delivery.mode !== 'none') {
    return invalid(
      method,
      '/delivery is not supported: a system event is posted into its session; to announce to a webhook channel use a clawgate send action',
    );
  }
  if (!payload) {
    if (p.sessionTarget !== undefined || p.sessionKey !== undefined) {
      return invalid(method, '/sessionTarget and /sessionKey choose where a payload goes: pass them with payload (--system-event)');
    }
    return null;
  }
  if (payload.text === undefined || payload.text.trim() === '') return invalid(method, '/payload/text is required for a systemEvent payload');
  if (payload.toolsAllow !== undefined) return invalid(method, `/payload/toolsAllow is not supported: ${NO_AGENT}`);
  for (const field of ['message', 'model', 'fallbacks', 'thinking', 'timeoutSeconds', 'lightContext', 'argv', 'cwd', 'env', 'input', 'script'] as const) {
    if (payload[field] !== undefined) return invalid(method, `/payload/${field} does not apply to a systemEvent payload`);
  }
  const target = p.sessionTarget ?? 'main';
  let sessionKey: string;
  if (target === 'main') sessionKey = p.sessionKey ?? 'main';
  else if (target.startsWith('session:') && target.length > 8) sessionKey = target.slice(8);
  else return invalid(method, `/sessionTarget ${target} is not supported: a system event goes to main or session:<key>`);
  if (p.sessionKey !== undefined && p.sessionKey !== sessionKey) return invalid(method, '/sessionKey and /sessionTarget name different sessions');
  if (!/^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$/.test(sessionKey)) return invalid(method, `/sessionTarget session key ${sessionKey} is not a valid session key`);
  // wakeMode only says when an agent would wake; clawgate posts the text at the scheduled time either way.
  return { kind: 'chat', sessionKey, text: payload.text };
}

/**
 * A clawgate job as OpenClaw clients read it: every clawgate field, plus `id`, and for a chat
 * action the system-event payload it is equivalent to.
 */
export function openClawJobView(job: CronJob): CronJob & Record<string, unknown> {
  const view: CronJob & Record<string, unknown> = {
    ...job,
    id: job.jobId,
    wakeMode: 'now',
    state: { nextRunAtMs: job.nextRunAtMs, ...(job.lastRunAtMs !== undefined ? { lastRunAtMs: job.lastRunAtMs } : {}) },
  };
  if (job.action.kind === 'chat') {
    view.sessionTarget = job.action.sessionKey === 'main' ? 'main' : `session:${job.action.sessionKey}`;
    view.payload = { kind: 'systemEvent', text: job.action.text };
  }
  return view;
}

/** A run as OpenClaw's `cron runs` entries read it (`ts`, `status`, `deliveryStatus`), with every clawgate field. */
export function openClawRunEntry(run: CronRun, job: CronJob): CronRun & Record<string, unknown> {
  return {
    ...run,
    id: run.runId,
    ts: run.finishedAtMs,
    runAtMs: run.startedAtMs,
    durationMs: run.finishedAtMs - run.startedAtMs,
    // A send action queues a webhook delivery (its outcome is in channels.deliveries); the others deliver nothing.
    deliveryStatus: job.action.kind === 'send' ? 'unknown' : 'not-requested',
    ...(run.error !== undefined ? { summary: run.error } : {}),
  };
}
