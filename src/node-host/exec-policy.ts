/**
 * The node host's local exec policy: what `system.run` may start on this machine. The gateway's
 * approval of a node's command surface says "this node may be asked to run things"; this file
 * says which things, and only the person at the node can widen it.
 *
 *   deny       every `system.run` is refused;
 *   allowlist  (default) only executables named in `exec-allowlist.json` run;
 *   full       anything on the node host's PATH or given by absolute path runs.
 *
 * The allowlist is re-read on every call, so an edit takes effect without a restart.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { type Static, Type as T } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { writeFileDurably } from '../platform/durable-file.js';

export const EXEC_POLICIES = ['deny', 'allowlist', 'full'] as const;
export type ExecPolicyMode = (typeof EXEC_POLICIES)[number];

export const ALLOWLIST_FILE = 'exec-allowlist.json';

const AllowlistSchema = T.Object(
  {
    version: T.Literal(1),
    /** Bare names match a command given by that bare name; entries with a `/` match the resolved absolute path. */
    allow: T.Array(T.String({ minLength: 1, maxLength: 4096 }), { maxItems: 10_000 }),
    /** Environment variable names a caller may set through `system.run` params.env. */
    env: T.Array(T.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), { maxItems: 1000 }),
  },
  { additionalProperties: false },
);
export type Allowlist = Static<typeof AllowlistSchema>;
const checkAllowlist = TypeCompiler.Compile(AllowlistSchema);

/** What a fresh state dir gets: a few read-only commands, and locale/terminal variables. */
export const DEFAULT_ALLOWLIST: Allowlist = {
  version: 1,
  allow: ['echo', 'true', 'uname', 'hostname', 'whoami', 'date', 'uptime'],
  env: ['LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TERM', 'NO_COLOR', 'COLUMNS'],
};

function defaultAllowlistText(): string {
  const doc = {
    '//': [
      'Executables `system.run` may start on this node while `clawgate node run` uses --exec-policy allowlist (the default).',
      '"allow": a bare name ("echo") allows that name looked up on the node host\'s PATH; an entry with a slash',
      '("/usr/local/bin/backup") allows exactly that file. Arguments are not restricted: allow only programs you would',
      'let any approved operator run with any arguments.',
      '"env": variable names a caller may set via params.env; any other name is dropped.',
      'This file is re-read on every call: edits take effect immediately.',
    ],
    ...DEFAULT_ALLOWLIST,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** Create the allowlist file with the commented default when it does not exist yet. */
export function ensureAllowlistFile(stateDir: string): { path: string; created: boolean } {
  const path = join(stateDir, ALLOWLIST_FILE);
  if (existsSync(path)) return { path, created: false };
  writeFileDurably(path, defaultAllowlistText());
  return { path, created: true };
}

export type AllowlistRead = { ok: true; list: Allowlist; path: string } | { ok: false; problem: string; path: string };

/** Read and validate the allowlist; a broken file is a refusal (fail closed), never "allow all". */
export function readAllowlist(stateDir: string): AllowlistRead {
  const path = join(stateDir, ALLOWLIST_FILE);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    return { ok: false, path, problem: `cannot read ${path}: ${(err as Error).message}` };
  }
  // `//` keys are comments (JSON has none); any other unknown key is a typo worth reporting.
  if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
    parsed = Object.fromEntries(Object.entries(parsed).filter(([k]) => !k.startsWith('//')));
  }
  if (!checkAllowlist.Check(parsed)) {
    const first = checkAllowlist.Errors(parsed).First();
    return { ok: false, path, problem: `${path} is invalid at ${first?.path || '/'}: ${first?.message ?? 'unexpected shape'}` };
  }
  return { ok: true, list: parsed, path };
}

export type ExecDecision = { allowed: true } | { allowed: false; reason: 'policy-deny' | 'not-allowlisted' | 'allowlist-invalid'; message: string };

/**
 * May `argv0` (as the caller wrote it), resolved to `resolvedPath`, run under `mode`?
 * A bare allowlist entry never matches a command given by path, so "echo" does not let a
 * caller run /tmp/x/echo.
 */
export function decideExec(mode: ExecPolicyMode, argv0: string, resolvedPath: string, stateDir: string): ExecDecision {
  if (mode === 'full') return { allowed: true };
  if (mode === 'deny') {
    return {
      allowed: false,
      reason: 'policy-deny',
      message: `system.run refused: this node runs with --exec-policy deny. To allow commands, restart \`clawgate node run\` with --exec-policy allowlist and list "${basename(argv0)}" in ${join(stateDir, ALLOWLIST_FILE)}`,
    };
  }
  const read = readAllowlist(stateDir);
  if (!read.ok)
    return {
      allowed: false,
      reason: 'allowlist-invalid',
      message: `system.run refused: the exec allowlist is unusable (${read.problem}); fix the file on the node`,
    };
  const byName = !argv0.includes('/');
  const hit = read.list.allow.some((entry) => (entry.includes('/') ? entry === resolvedPath : byName && entry === argv0));
  if (hit) return { allowed: true };
  const suggestion = byName ? `"${argv0}" (or "${resolvedPath}")` : `"${resolvedPath}"`;
  return {
    allowed: false,
    reason: 'not-allowlisted',
    message: `system.run refused: "${argv0}" is not in the node's exec allowlist. To allow it, add ${suggestion} to "allow" in ${read.path} on the node (re-read on every call), or run the node with --exec-policy full`,
  };
}

/** The env names a caller may pass, under the current policy (none when the file is unusable). */
export function allowedEnvNames(stateDir: string): ReadonlySet<string> {
  const read = readAllowlist(stateDir);
  return new Set(read.ok ? read.list.env : []);
}
