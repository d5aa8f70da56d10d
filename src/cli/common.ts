/**
 * What every `clawgate` command that talks to a running gateway shares: its connection options,
 * the `--json` switch between one JSON line and a human listing, and the connection itself.
 */
import type { ParseArgsConfig } from 'node:util';
import { printable, printableLines } from '@clawgate/protocol/text';
import { SECRET_FLAGS } from './secret-input.js';
import { parse, UsageError } from './usage.js';

/** How to reach and authenticate to the gateway (resolved by resolveTarget) plus `--json`. */
export const CONN_OPTIONS = {
  url: { type: 'string' },
  ...SECRET_FLAGS,
  'state-dir': { type: 'string' },
  json: { type: 'boolean' },
  'tls-fingerprint': { type: 'string' },
  'gateway-key': { type: 'string' },
  /** As the CLI device: file the pairing request and exit (status 3) instead of waiting for the approval. */
  'no-wait': { type: 'boolean' },
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
