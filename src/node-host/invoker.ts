/**
 * Answering `node.invoke.request` events: the node side's command dispatch, shared by every
 * connection that serves as a node (the companion's node lifecycle). What may run on this machine
 * is decided here, by the local exec policy, whatever the gateway approved.
 */

import { GatewayError } from '@clawgate/protocol/errors';
import type { Clock } from '../core/env.js';
import { type CommandContext, type CommandResult, SUPPORTED_COMMANDS, systemRun, systemWhich } from './commands.js';
import type { ExecPolicyMode } from './exec-policy.js';

/** Invokes running at once; more are answered "node busy" (the reference's limit). */
export const MAX_CONCURRENT_INVOKES = 8;

export interface InvokerOptions {
  /** Commands this node declared (a subset of SUPPORTED_COMMANDS). */
  commands: string[];
  execPolicy: ExecPolicyMode;
  /** Directory holding exec-allowlist.json. */
  allowlistDir: string;
  clock: Clock;
  env: NodeJS.ProcessEnv;
  out(line: string): void;
  err(line: string): void;
}

/** Sends `node.invoke.result` on the connection the request came in on. */
export type ResultSender = (params: Record<string, unknown>) => Promise<unknown>;

export class NodeInvoker {
  private readonly active = new Map<string, { controller: AbortController; timer: ReturnType<typeof setTimeout> | null }>();

  constructor(private readonly opts: InvokerOptions) {}

  get running(): number {
    return this.active.size;
  }

  /** `node.invoke.cancel {invokeId}`: kill it; nobody waits for its result any more. */
  cancel(payload: unknown): void {
    const p = (payload ?? {}) as Record<string, unknown>;
    this.active.get(String(p.invokeId ?? p.id ?? ''))?.controller.abort();
  }

  /** The connection is gone: every running command is killed (its result has nowhere to go). */
  abortAll(): void {
    for (const [id, inv] of this.active) {
      inv.controller.abort();
      if (inv.timer) clearTimeout(inv.timer);
      this.active.delete(id);
    }
  }

  handle(payload: unknown, send: ResultSender): void {
    const p = (payload ?? {}) as Record<string, unknown>;
    const { id, nodeId, command } = p;
    // Malformed requests are ignored: there is nobody to answer.
    if (typeof id !== 'string' || !id || typeof nodeId !== 'string' || !nodeId || typeof command !== 'string' || !command) return;
    if (this.active.has(id)) return;
    const reply = (result: CommandResult) => {
      const frame = result.ok
        ? { id, nodeId, ok: true, payloadJSON: JSON.stringify(result.payload) }
        : {
            id,
            nodeId,
            ok: false,
            error: { code: result.error.code, message: result.error.message, ...(result.error.details ? { details: result.error.details } : {}) },
          };
      send(frame).catch((err: Error) => this.opts.err(`could not deliver the result of invoke ${id}: ${err.message}`));
    };
    if (this.active.size >= MAX_CONCURRENT_INVOKES) {
      reply({ ok: false, error: new GatewayError('NODE_HOST_BUSY', { vars: { limit: MAX_CONCURRENT_INVOKES } }).shape });
      return;
    }
    if (!this.opts.commands.includes(command) || !(SUPPORTED_COMMANDS as readonly string[]).includes(command)) {
      reply({ ok: false, error: new GatewayError('NODE_COMMAND_UNSUPPORTED', { vars: { command } }).shape });
      return;
    }
    let params: unknown = p.params ?? {};
    if (typeof p.paramsJSON === 'string') {
      try {
        params = JSON.parse(p.paramsJSON);
      } catch (err) {
        reply({
          ok: false,
          error: new GatewayError('NODE_INVOKE_PARAMS_INVALID', { vars: { command, problem: `paramsJSON is not JSON (${(err as Error).message})` } }).shape,
        });
        return;
      }
    }
    const controller = new AbortController();
    const timeoutMs = typeof p.timeoutMs === 'number' && p.timeoutMs > 0 ? p.timeoutMs : null;
    // Past the caller's deadline nobody waits for the answer: stop the work.
    const timer = timeoutMs ? setTimeout(() => controller.abort(), timeoutMs) : null;
    this.active.set(id, { controller, timer });
    const ctx: CommandContext = {
      stateDir: this.opts.allowlistDir,
      execPolicy: this.opts.execPolicy,
      clock: this.opts.clock,
      env: this.opts.env,
      signal: controller.signal,
    };
    const started = this.opts.clock.now();
    const work: Promise<CommandResult> = command === 'system.run' ? systemRun(params, ctx) : Promise.resolve(systemWhich(params, ctx));
    work
      .catch((err: Error): CommandResult => {
        // A bug in this host, not the caller's fault: say so with a reference to this log line.
        this.opts.err(`invoke ${id} (${command}) crashed: ${err.stack ?? err.message}`);
        return { ok: false, error: new GatewayError('INTERNAL_ERROR', { vars: { ref: id } }).shape };
      })
      .then((result) => {
        if (timer) clearTimeout(timer);
        const wasActive = this.active.delete(id);
        const cancelled = controller.signal.aborted;
        this.opts.out(
          `invoke ${id}: ${command}${describeArgs(command, params)} → ${cancelled ? 'cancelled' : summarize(result)} (${this.opts.clock.now() - started} ms)`,
        );
        // A cancelled or expired invoke has nobody waiting for it at the gateway.
        if (wasActive && !cancelled) reply(result);
      });
  }
}

/** What the progress line shows of the params: the program name only, since arguments may hold secrets. */
export function describeArgs(command: string, params: unknown): string {
  const p = params as { command?: unknown; bins?: unknown } | null;
  if (command === 'system.run' && Array.isArray(p?.command) && typeof p.command[0] === 'string') return ` ${p.command[0]}`;
  if (command === 'system.which' && Array.isArray(p?.bins)) return ` ${p.bins.length} name(s)`;
  return '';
}

export function summarize(r: CommandResult): string {
  if (!r.ok) return `refused: ${r.error.message}`;
  const p = r.payload as { exitCode?: number | null; timedOut?: boolean; bins?: Record<string, string> };
  if (p.bins) return `${Object.keys(p.bins).length} found`;
  return p.timedOut ? 'timed out, killed' : `exit ${p.exitCode}`;
}
