/**
 * The method table and dispatcher. Every method declares the role and scope it needs; the
 * dispatcher checks them before the handler runs, so a handler never forgets. Expected
 * failures come back as GatewayError values; a thrown exception is a bug and is answered with
 * INTERNAL_ERROR (with a log reference), never by killing the process or the socket.
 */

import { GatewayError } from '@clawgate/protocol/errors';
import type { ErrorShape, Role } from '@clawgate/protocol/frames';
import type { TSchema } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';
import { hasScope, type Principal } from './principal.js';
import { storeFault } from './store-faults.js';

export interface MethodContext<P = unknown> {
  principal: Principal;
  params: P;
  /** Aborted when the client sends `cancel` for this request or disconnects. */
  signal: AbortSignal;
  /** The gateway's logger with this call's connection and request ids on every line. */
  log: DispatchLog;
}

export interface MethodSpec<P = unknown> {
  name: string;
  role: Role;
  /** Required scope for operators; null = any authenticated caller of the role. */
  scope: string | null;
  /** Optional stricter scope derived from the params (e.g. admin for host-level commands). */
  dynamicScope?: (params: P) => string | null;
  /** Closed params schema; absent params are validated as `{}`. */
  params?: TSchema;
  /** Listed in `hello-ok.features.methods`; some management methods are deliberately hidden. */
  advertised?: boolean;
  handler(ctx: MethodContext<P>): Promise<unknown>;
}

interface Compiled {
  spec: MethodSpec<unknown>;
  /** The compiled params check; undefined until the method is first called (see `register`). */
  check: TypeCheck<TSchema> | null | undefined;
}

export type DispatchResult = { ok: true; payload: unknown } | { ok: false; error: ErrorShape };

export interface DispatchLog {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** Which connection and request a call belongs to: every log line about it carries them. */
export interface CallIds {
  connId?: string | undefined;
  requestId?: string | undefined;
}

/** A logger that adds `ids` to every line (the line's own fields win on a clash). */
export function logWith(log: DispatchLog, ids: CallIds): DispatchLog {
  const base: Record<string, unknown> = {};
  if (ids.connId !== undefined) base.connId = ids.connId;
  if (ids.requestId !== undefined) base.requestId = ids.requestId;
  if (Object.keys(base).length === 0) return log;
  return {
    info: (m, f) => log.info(m, { ...base, ...f }),
    warn: (m, f) => log.warn(m, { ...base, ...f }),
    error: (m, f) => log.error(m, { ...base, ...f }),
  };
}

export class MethodTable {
  private readonly methods = new Map<string, Compiled>();
  /** advertised(), kept until the next add (every hello-ok lists them). */
  private advertisedNames: readonly string[] | null = null;

  constructor(private readonly log: DispatchLog) {}

  add<P>(spec: MethodSpec<P>): void {
    if (this.methods.has(spec.name)) throw new Error(`method ${spec.name} registered twice`);
    // Compiled on first call, not here: compiling every schema cost each start ~20 ms (~100
    // methods, most of them never called in a process's life). `compileAll` checks them eagerly.
    this.methods.set(spec.name, { spec: spec as MethodSpec<unknown>, check: spec.params ? undefined : null });
    this.advertisedNames = null;
  }

  has(name: string): boolean {
    return this.methods.has(name);
  }

  get(name: string): MethodSpec | undefined {
    return this.methods.get(name)?.spec;
  }

  /** The same array until a method is added (callers must not change it). */
  advertised(): readonly string[] {
    this.advertisedNames ??= [...this.methods.values()].filter((m) => m.spec.advertised !== false).map((m) => m.spec.name);
    return this.advertisedNames;
  }

  all(): MethodSpec[] {
    return [...this.methods.values()].map((m) => m.spec);
  }

  /** Compile every registered params schema now (tests: a broken schema fails at once); how many. */
  compileAll(): number {
    let n = 0;
    for (const entry of this.methods.values()) {
      if (entry.check === undefined) entry.check = TypeCompiler.Compile(entry.spec.params as TSchema);
      if (entry.check) n++;
    }
    return n;
  }

  /** Authorize and run one call. Never throws. */
  async dispatch(principal: Principal, method: string, rawParams: unknown, signal: AbortSignal, ids: CallIds = {}): Promise<DispatchResult> {
    const entry = this.methods.get(method);
    if (!entry) return fail(new GatewayError('UNKNOWN_METHOD', { vars: { method } }));
    if (entry.check === undefined) entry.check = TypeCompiler.Compile(entry.spec.params as TSchema);
    const { spec, check } = entry;
    const wrongRole = roleDenial(spec, principal);
    if (wrongRole) return fail(wrongRole);
    const params = rawParams === undefined ? {} : rawParams;
    // Handlers and stores serialise params (JSON.stringify recurses): a value nested deep enough
    // overflows the stack there. Refused here, before any schema or handler walks it.
    const deepAt = pathDeeperThan(params, MAX_PARAMS_DEPTH);
    if (deepAt !== null) {
      return fail(
        new GatewayError('INVALID_PARAMS', {
          vars: { method, problem: `params nest deeper than ${MAX_PARAMS_DEPTH} levels` },
          // The path names client-chosen keys: cut, like every echoed client string.
          details: { method, path: deepAt.slice(0, 256) },
        }),
      );
    }
    if (check && !check.Check(params)) {
      const first = check.Errors(params).First();
      const problem = first ? `${first.path || '/'} ${first.message}` : 'invalid';
      return fail(new GatewayError('INVALID_PARAMS', { vars: { method, problem }, details: { method, path: first?.path ?? '' } }));
    }
    const noScope = scopeDenial(spec, principal, params);
    if (noScope) return fail(noScope);
    const log = logWith(this.log, ids);
    try {
      const result = await spec.handler({ principal, params, signal, log });
      if (result instanceof GatewayError) return fail(result);
      return { ok: true, payload: result ?? {} };
    } catch (err) {
      // The database refusing or not answering is not a bug: the client is told to retry.
      const cause = storeFault(err);
      if (cause) {
        this.log.error('method failed: database unavailable', { method, cause, err: String(err) });
        return fail(new GatewayError('STORE_UNAVAILABLE', { vars: { cause } }));
      }
      const ref = Math.random().toString(36).slice(2, 10);
      log.error('method handler threw', { method, ref, actor: principal.actor, err: String((err as Error)?.stack ?? err) });
      return fail(new GatewayError('INTERNAL_ERROR', { vars: { ref } }));
    }
  }
}

/**
 * Whether `principal` may call `spec` with `params`, as far as authority goes: the role, then
 * every scope the method and its params need. The one decision dispatch enforces and
 * `device.explain` reports (core/explain.ts); null when allowed.
 */
export function callDenial(spec: MethodSpec, principal: Principal, params: unknown): GatewayError | null {
  return roleDenial(spec, principal) ?? scopeDenial(spec, principal, params);
}

/** The scopes a call of `spec` with `params` needs (operators only; nodes are checked by role). */
export function requiredScopes(spec: MethodSpec, params: unknown): string[] {
  if (spec.role !== 'operator') return [];
  return [spec.scope, spec.dynamicScope?.(params)].filter((s): s is string => !!s);
}

function roleDenial(spec: MethodSpec, principal: Principal): GatewayError | null {
  if (principal.role === spec.role) return null;
  const method = spec.name;
  return new GatewayError('ROLE_NOT_ALLOWED', { vars: { method, role: spec.role }, details: { method, requiredRole: spec.role, role: principal.role } });
}

function scopeDenial(spec: MethodSpec, principal: Principal, params: unknown): GatewayError | null {
  const required = requiredScopes(spec, params);
  for (const scope of required) {
    if (!hasScope(principal, scope)) return missingScope(principal, scope, required);
  }
  return null;
}

export function missingScope(principal: Principal, scope: string, required: readonly string[]): GatewayError {
  const details: Record<string, unknown> = { missingScope: scope, requiredScopes: [...required] };
  const pending = principal.pendingUpgradeRequestId;
  if (pending) details.requestId = pending;
  // Clients such as the openclaw CLI print only the message: it names the request and its approval.
  // Without a device there is no request the owner could approve: say what would carry the scope.
  const hint = pending
    ? approveHint(pending)
    : principal.kind === 'shared'
      ? ' (the gateway token or password alone grants operator.read and operator.write only: run it with the `clawgate` CLI on the gateway host (its owner proof), from a device the owner approved, or opt in with gateway.auth.sharedSecretIsAdminOnHost)'
      : '';
  return new GatewayError('MISSING_SCOPE', { vars: { scope, pending: hint }, details });
}

/** The part of an error message that names a pending request and the command approving it. */
export function approveHint(requestId: string): string {
  return ` (request ${requestId}; the owner approves it with: clawgate devices approve ${requestId})`;
}

/** How deep request params may nest (objects and arrays); PROTOCOL.md §13. */
export const MAX_PARAMS_DEPTH = 64;

/**
 * The JSON-pointer path of the first container nested deeper than `max` levels in `value`, or
 * null. Iterative, so the check itself cannot overflow the stack it protects.
 */
export function pathDeeperThan(value: unknown, max: number): string | null {
  const stack: Array<{ v: unknown; depth: number; path: string }> = [{ v: value, depth: 0, path: '' }];
  while (stack.length > 0) {
    const { v, depth, path } = stack.pop() as { v: unknown; depth: number; path: string };
    if (typeof v !== 'object' || v === null) continue;
    if (depth >= max) return path || '/';
    const entries: Array<[string, unknown]> = Array.isArray(v) ? v.map((x, i) => [String(i), x]) : Object.entries(v);
    for (const [k, x] of entries) {
      if (typeof x === 'object' && x !== null) stack.push({ v: x, depth: depth + 1, path: `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}` });
    }
  }
  return null;
}

function fail(e: GatewayError): DispatchResult {
  return { ok: false, error: e.shape };
}
