/**
 * The commands a `clawgate node run` host answers: `system.which` and `system.run`. Each takes
 * the invoke's params (already JSON-decoded) and returns the result payload or an error shape,
 * never throws for a caller's mistake. Result field names follow the OpenClaw node host
 * (`{bins:{name:path}}`; `{exitCode, timedOut, success, stdout, stderr, error}`).
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { GatewayError } from '@clawgate/protocol/errors';
import type { ErrorShape } from '@clawgate/protocol/frames';
import { Type as T } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { Clock } from '../core/env.js';
import { allowedEnvNames, decideExec, type ExecPolicyMode } from './exec-policy.js';

export const SUPPORTED_COMMANDS = ['system.run', 'system.which'] as const;

/** Default and ceiling of a `system.run` timeout (the reference's 30 s default, 10 min max). */
export const RUN_DEFAULT_TIMEOUT_MS = 30_000;
export const RUN_MAX_TIMEOUT_MS = 600_000;
/** Per-stream output cap; the rest is read and dropped so the child never blocks on a full pipe. */
export const RUN_MAX_OUTPUT_BYTES = 256 * 1024;
/** After the command exits, how long its output pipes may stay open (held by something it left behind). */
export const RUN_STREAM_GRACE_MS = 1_000;

export type CommandResult = { ok: true; payload: unknown } | { ok: false; error: ErrorShape };

export interface CommandContext {
  stateDir: string;
  execPolicy: ExecPolicyMode;
  clock: Clock;
  /** The node host's own environment; PATH here is where executables are looked up. */
  env: NodeJS.ProcessEnv;
  /** Aborted when the caller cancels the invoke or its deadline passes. */
  signal: AbortSignal;
}

const WhichParams = T.Object({ bins: T.Array(T.String({ minLength: 1, maxLength: 255 }), { maxItems: 256 }) });
const checkWhich = TypeCompiler.Compile(WhichParams);

/** The OS cannot pass a NUL inside an argument, path or environment value. */
const NO_NUL = '^[^\\u0000]*$';
const RunParams = T.Object({
  command: T.Array(T.String({ maxLength: 32 * 1024, pattern: NO_NUL }), { minItems: 1, maxItems: 4096 }),
  cwd: T.Optional(T.Union([T.String({ minLength: 1, maxLength: 4096, pattern: NO_NUL }), T.Null()])),
  env: T.Optional(T.Union([T.Record(T.String(), T.String({ maxLength: 32 * 1024, pattern: NO_NUL })), T.Null()])),
  timeoutMs: T.Optional(T.Union([T.Integer({ minimum: 1, maximum: RUN_MAX_TIMEOUT_MS }), T.Null()])),
});
const checkRun = TypeCompiler.Compile(RunParams);
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function invalid(command: string, check: { Errors(v: unknown): { First(): { path: string; message: string } | undefined } }, params: unknown): CommandResult {
  const first = check.Errors(params).First();
  return {
    ok: false,
    error: new GatewayError('NODE_INVOKE_PARAMS_INVALID', { vars: { command, problem: `${first?.path || '/'} ${first?.message ?? 'unexpected shape'}` } })
      .shape,
  };
}

/** First executable file called `name` on `pathEnv`, or null. Names with a slash are not looked up. */
export function findExecutable(name: string, pathEnv: string | undefined): string | null {
  if (name.includes('/') || name === '.' || name === '..') return null;
  for (const dir of (pathEnv ?? '').split(delimiter)) {
    if (!dir || !isAbsolute(dir)) continue; // a relative PATH entry would depend on the caller's cwd
    const candidate = join(dir, name);
    if (isExecutableFile(candidate)) return candidate;
  }
  return null;
}

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function systemWhich(params: unknown, ctx: CommandContext): CommandResult {
  if (!checkWhich.Check(params)) return invalid('system.which', checkWhich, params);
  const bins: Record<string, string> = {};
  for (const name of params.bins) {
    const found = findExecutable(name, ctx.env.PATH);
    if (found) bins[name] = found;
  }
  return { ok: true, payload: { bins } };
}

/** Environment for the child: the host's own minus clawgate's secrets, plus the caller's allowed names. */
function childEnv(ctx: CommandContext, requested: Record<string, string> | null | undefined): { env: NodeJS.ProcessEnv; dropped: string[] } {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(ctx.env)) if (!k.startsWith('CLAWGATE_')) env[k] = v;
  const dropped: string[] = [];
  if (requested) {
    const allowed = allowedEnvNames(ctx.stateDir);
    for (const [k, v] of Object.entries(requested)) {
      if (allowed.has(k)) env[k] = v;
      else dropped.push(k);
    }
  }
  return { env, dropped };
}

function refuse(message: string, reason: string): CommandResult {
  return { ok: false, error: new GatewayError('NODE_EXEC_DENIED', { vars: { detail: message }, details: { reason } }).shape };
}

export async function systemRun(params: unknown, ctx: CommandContext): Promise<CommandResult> {
  if (!checkRun.Check(params)) return invalid('system.run', checkRun, params);
  const badName = Object.keys(params.env ?? {}).find((k) => !ENV_NAME.test(k));
  if (badName !== undefined) {
    return {
      ok: false,
      error: new GatewayError('NODE_INVOKE_PARAMS_INVALID', {
        vars: { command: 'system.run', problem: `env name ${JSON.stringify(badName)} is not a variable name` },
      }).shape,
    };
  }
  const argv = params.command;
  const argv0 = argv[0] as string;
  if (argv0.length === 0) {
    return {
      ok: false,
      error: new GatewayError('NODE_INVOKE_PARAMS_INVALID', { vars: { command: 'system.run', problem: 'command[0] must not be empty' } }).shape,
    };
  }
  if (argv0.includes('/') && !isAbsolute(argv0)) {
    return {
      ok: false,
      error: new GatewayError('NODE_INVOKE_PARAMS_INVALID', { vars: { command: 'system.run', problem: 'command[0] must be a bare name or an absolute path' } })
        .shape,
    };
  }
  const resolved = argv0.includes('/') ? (isExecutableFile(argv0) ? argv0 : null) : findExecutable(argv0, ctx.env.PATH);
  // Policy first: a refused caller learns nothing about what exists on the node.
  const decision = decideExec(ctx.execPolicy, argv0, resolved ?? argv0, ctx.stateDir);
  let allowedByRealPath = false;
  if (!decision.allowed && decision.reason === 'not-allowlisted' && resolved) {
    // An entry may name the real file behind a symlinked path (/bin/sh vs /usr/bin/dash).
    const real = safeRealpath(resolved);
    allowedByRealPath = real !== resolved && real !== null && decideExec(ctx.execPolicy, real, real, ctx.stateDir).allowed;
  }
  if (!decision.allowed && !allowedByRealPath) return refuse(decision.message, decision.reason);
  if (!resolved) {
    return { ok: false, error: new GatewayError('NODE_EXEC_NOT_FOUND', { vars: { name: argv0 } }).shape };
  }
  const cwd = params.cwd ?? undefined;
  if (cwd !== undefined) {
    if (!isAbsolute(cwd))
      return {
        ok: false,
        error: new GatewayError('NODE_INVOKE_PARAMS_INVALID', { vars: { command: 'system.run', problem: 'cwd must be an absolute path' } }).shape,
      };
    try {
      if (!statSync(cwd).isDirectory()) throw new Error('not a directory');
    } catch {
      return {
        ok: false,
        error: new GatewayError('NODE_INVOKE_PARAMS_INVALID', { vars: { command: 'system.run', problem: `cwd ${cwd} is not a directory on the node` } }).shape,
      };
    }
  }
  const timeoutMs = params.timeoutMs ?? RUN_DEFAULT_TIMEOUT_MS;
  const { env, dropped } = childEnv(ctx, params.env);
  return { ok: true, payload: await runProcess(resolved, argv, { cwd, env, timeoutMs, signal: ctx.signal, clock: ctx.clock, droppedEnv: dropped }) };
}

function safeRealpath(p: string): string | null {
  try {
    return realpathSync(p);
  } catch {
    return null;
  }
}

export interface RunOutcome {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  success: boolean;
  stdout: string;
  stderr: string;
  truncated: boolean;
  durationMs: number;
  error: string | null;
  droppedEnv?: string[];
}

interface RunOptions {
  cwd: string | undefined;
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  signal: AbortSignal;
  clock: Clock;
  droppedEnv: string[];
}

/** Run one process (no shell), capped and killed — with its whole process group — on timeout or cancel. */
function runProcess(file: string, argv: string[], opts: RunOptions): Promise<RunOutcome> {
  const started = opts.clock.now();
  return new Promise((resolve) => {
    const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], stdoutBytes: 0, stderrBytes: 0 };
    let truncated = false;
    let timedOut = false;
    let spawnError: string | null = null;
    const child = spawn(file, argv.slice(1), {
      argv0: argv[0],
      cwd: opts.cwd,
      env: opts.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so a timeout also kills what the command started.
      detached: true,
    });
    const kill = () => {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, opts.timeoutMs);
    const onAbort = () => kill();
    opts.signal.addEventListener('abort', onAbort, { once: true });
    if (opts.signal.aborted) kill();
    const collect = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
      const key = stream === 'stdout' ? 'stdoutBytes' : 'stderrBytes';
      const room = RUN_MAX_OUTPUT_BYTES - out[key];
      if (room <= 0) {
        truncated = true;
        return;
      }
      const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
      if (part.length < chunk.length) truncated = true;
      out[stream].push(part);
      out[key] += part.length;
    };
    child.stdout.on('data', collect('stdout'));
    child.stderr.on('data', collect('stderr'));
    child.stdout.on('error', () => {});
    child.stderr.on('error', () => {});
    let finished = false;
    let grace: NodeJS.Timeout | null = null;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (grace) clearTimeout(grace);
      opts.signal.removeEventListener('abort', onAbort);
      child.stdout.destroy();
      child.stderr.destroy();
      const exitCode = spawnError ? null : code;
      resolve({
        exitCode,
        signal: signal ?? null,
        timedOut,
        success: exitCode === 0 && !timedOut,
        stdout: Buffer.concat(out.stdout).toString('utf8'),
        stderr: Buffer.concat(out.stderr).toString('utf8'),
        truncated,
        durationMs: opts.clock.now() - started,
        error: spawnError ?? (timedOut ? `timed out after ${opts.timeoutMs} ms; killed` : null),
        ...(opts.droppedEnv.length > 0 ? { droppedEnv: opts.droppedEnv } : {}),
      });
    };
    child.on('error', (err) => {
      spawnError = err.message;
      if (child.pid === undefined) finish(null, null); // never started: no exit or close follows
    });
    // 'close' waits for the pipes; a process that escaped the group (setsid) may hold them for
    // ever. After the command itself exits, what is still unread gets a short grace, no more.
    child.on('exit', (code, signal) => {
      grace = setTimeout(() => finish(code, signal), RUN_STREAM_GRACE_MS);
    });
    child.on('close', (code, signal) => finish(code, signal));
  });
}
