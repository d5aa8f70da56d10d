/**
 * What every `clawgate` command that talks to a running gateway shares: its connection options,
 * the `--json` switch between one JSON line and a human listing, and the connection itself.
 */
import type { ParseArgsConfig } from 'node:util';
import { ConnectError, type ConnectOptions, connectGateway, type GatewayConnection } from '../client/connection.js';
import { printable, printableLines } from '../protocol/text.js';
import { CliFailure, explainConnectError } from './connect-errors.js';
import { SECRET_FLAGS } from './secret-input.js';
import { commandHint, credentialOptions, resolveTarget } from './target.js';
import { parse, UsageError } from './usage.js';

/** How to reach and authenticate to the gateway (resolved by resolveTarget) plus `--json`. */
export const CONN_OPTIONS = {
  url: { type: 'string' },
  ...SECRET_FLAGS,
  'state-dir': { type: 'string' },
  json: { type: 'boolean' },
  'tls-fingerprint': { type: 'string' },
  'gateway-key': { type: 'string' },
} as const;

/**
 * One line (or block) of output. Whatever a client or operator named may be in it, so every
 * control, bidi or invisible character is written as a visible `\uXXXX` escape (also valid inside
 * JSON, so a `--json` line stays the same JSON); the CLI's own line breaks stay.
 */
export const out = (text: string) => process.stdout.write(`${printableLines(text)}\n`);
/** Output the CLI made entirely itself and that must keep its escapes (the ANSI-coloured QR code). */
export const outRaw = (text: string) => process.stdout.write(`${text}\n`);
/** One client-supplied field of a human listing: also its line breaks become visible escapes. */
export const field = (s: string | null | undefined): string => (s === null || s === undefined ? '' : printable(s));

/**
 * Parse a gateway command's arguments: CONN_OPTIONS plus the command's own. `print(v, human)`
 * writes `v` as one JSON line under `--json`, else runs `human`.
 */
export function parseGatewayCommand(args: string[], own: ParseArgsConfig['options'] = {}) {
  const { values, positionals } = parse(args, { ...CONN_OPTIONS, ...own });
  const json = values.json === true;
  const print = (v: unknown, human: () => void) => (json ? out(JSON.stringify(v)) : human());
  return { values, positionals, json, print };
}

/** The value of a `--params <json>` option (undefined when it is absent); bad JSON is a usage error. */
export function jsonParams(text: unknown): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text as string);
  } catch (err) {
    throw new UsageError(`--params is not valid JSON: ${(err as Error).message}`);
  }
}

/** The value of a whole-number option such as `--limit` or `--timeout` (undefined when absent); anything but a positive integer is a usage error. */
export function positiveIntFlag(values: Record<string, unknown>, flag: string): number | undefined {
  const text = values[flag];
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${flag} must be a positive whole number, got ${String(text)}`);
  return n;
}

export async function withGateway<T>(values: Record<string, unknown>, fn: (conn: GatewayConnection) => Promise<T>): Promise<T> {
  const target = resolveTarget(values);
  if (!target.token && !target.password && !target.owner) {
    throw new UsageError(
      'no credential: set CLAWGATE_TOKEN, pass --token-file <path> or --token-stdin, or run on the gateway host (owner credential in the state dir)',
    );
  }
  // The server proves the gateway key before anything is sent; the owner credential is only proven.
  const conn = await connectExplained(values, {
    url: target.url,
    ...credentialOptions(target),
    tlsFingerprint: target.tlsFingerprint,
    // The owner credential holds every scope; with the shared token a local cli keeps these.
    scopes: ['operator.admin', 'operator.pairing'],
    client: { id: 'cli', mode: 'cli' },
  });
  try {
    return await fn(conn);
  } finally {
    await conn.close();
  }
}

/**
 * connectGateway, with a socket that reached no gateway reported as what to do ("no gateway is
 * listening on … — start it with `clawgate gateway run --state-dir …` or pass --url").
 */
export async function connectExplained(values: Record<string, unknown>, opts: ConnectOptions): Promise<GatewayConnection> {
  try {
    return await connectGateway(opts);
  } catch (err) {
    const explained = err instanceof ConnectError ? explainConnectError(err, commandHint(values, 'gateway run', ['state-dir'])) : null;
    if (explained) throw new CliFailure(explained.message, explained.nextStep);
    throw err;
  }
}
