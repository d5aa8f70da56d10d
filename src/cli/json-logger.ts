/**
 * The gateway's stderr log: one JSON object per line, `{"ts","level","msg",…fields}`.
 *
 * Two lines per connect go through here, so a line is built with as little garbage as the format
 * allows: the fields are serialized as they are (no merged copy of them with ts, level and msg),
 * and the ISO timestamp is formatted once per millisecond, not once per line. Every object the
 * connect path leaves behind makes the gateway's young-generation collections come sooner, and a
 * collection that lands inside a connect is that connect's latency.
 */
import { isoClock, jsonWithLeadingMembers } from '../core/json-line.js';
import type { Logger } from '../core/logger.js';
import { lineWriter } from './line-writer.js';

/** Field names the line itself uses: a field of the same name replaces it (object spread's rule). */
const OWN_KEYS = ['ts', 'level', 'msg'] as const;

/**
 * The text of one log line (newline included): the members of
 * `JSON.stringify({ ts, level, msg, ...fields })`, in its order (integer-like field names, which
 * an object lists first, excepted: none is logged).
 */
export function jsonLogLine(ts: string, level: string, msg: string, fields?: Record<string, unknown>): string {
  if (fields !== undefined && fields !== null) {
    // Rare (no gateway line does it): the merged object gives the exact key order and override.
    for (const key of OWN_KEYS) if (Object.hasOwn(fields, key)) return `${JSON.stringify({ ts, level, msg, ...fields })}\n`;
  }
  const line = jsonWithLeadingMembers(`"ts":"${ts}","level":"${level}","msg":${JSON.stringify(msg)}`, fields);
  return `${line ?? JSON.stringify({ ts, level, msg, ...fields })}\n`;
}

/** A Logger writing JSON lines to `stream`, gathered by the line writer. */
export function jsonLogger(stream: NodeJS.WritableStream, now: () => number = Date.now): Logger {
  const out = lineWriter(stream);
  const ts = isoClock(now);
  return {
    info: (m, f) => out.write(jsonLogLine(ts(), 'info', m, f)),
    warn: (m, f) => out.write(jsonLogLine(ts(), 'warn', m, f)),
    error: (m, f) => out.write(jsonLogLine(ts(), 'error', m, f)),
  };
}
