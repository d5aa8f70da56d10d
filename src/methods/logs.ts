/**
 * `logs.tail` (what `openclaw logs` reads): bounded reads of the gateway's own log, held in an
 * in-memory ring fed by the logger the composition root builds (core/log-ring.ts). Read scope,
 * as in the reference; the ring never holds a secret.
 *
 * `diagnostics.stability` (what `openclaw status --all` and `openclaw gateway stability` read):
 * the reference reports its diagnostic event stream there. clawgate records no such stream; what
 * it does know is the warnings and errors it logged, so those are its events
 * (`log.warn` / `log.error`), with the gateway's uptime and connection count beside them.
 */

import { READ } from '@clawgate/protocol/scopes';
import { Type as T } from '@sinclair/typebox';
import type { Gateway } from '../core/gateway.js';
import { LOG_TAIL_MAX_BYTES, LOG_TAIL_MAX_LIMIT, type LogRing } from '../core/log-ring.js';

/** What these methods use of the gateway (nothing else reaches them). */
export type LogMethodDeps = Pick<Gateway, 'methods' | 'clock' | 'sessions' | 'startedAtMs'>;

export function registerLogMethods(gw: LogMethodDeps, ring: LogRing): void {
  gw.methods.add({
    name: 'logs.tail',
    role: 'operator',
    scope: READ,
    params: T.Object(
      {
        cursor: T.Optional(T.Integer({ minimum: 0 })),
        limit: T.Optional(T.Integer({ minimum: 1, maximum: LOG_TAIL_MAX_LIMIT })),
        maxBytes: T.Optional(T.Integer({ minimum: 1, maximum: LOG_TAIL_MAX_BYTES })),
      },
      { additionalProperties: false },
    ),
    handler: async ({ params }) => ring.tail(params as { cursor?: number; limit?: number; maxBytes?: number }),
  });

  gw.methods.add({
    name: 'diagnostics.stability',
    role: 'operator',
    scope: READ,
    params: T.Object(
      { limit: T.Optional(T.Integer({ minimum: 1, maximum: LOG_TAIL_MAX_LIMIT })), type: T.Optional(T.String({ minLength: 1, maxLength: 128 })) },
      { additionalProperties: false },
    ),
    handler: async ({ params }) => {
      const p = params as { limit?: number; type?: string };
      const lines = ring.tail({ limit: LOG_TAIL_MAX_LIMIT, maxBytes: LOG_TAIL_MAX_BYTES }).lines;
      let events: StabilityEvent[] = [];
      for (const line of lines) {
        const e = eventOf(line);
        if (e) events.push(e);
      }
      if (p.type !== undefined) events = events.filter((e) => e.type === p.type);
      const byType: Record<string, number> = {};
      for (const e of events) byType[e.type] = (byType[e.type] ?? 0) + 1;
      const limit = p.limit ?? 100;
      events = events.slice(Math.max(0, events.length - limit)).map((e, i) => ({ ...e, seq: i + 1 }));
      return {
        generatedAtMs: gw.clock.now(),
        source: 'clawgate gateway log (warnings and errors)',
        uptimeMs: gw.clock.now() - gw.startedAtMs,
        connections: gw.sessions.size,
        events,
        summary: { total: Object.values(byType).reduce((a, b) => a + b, 0), byType },
      };
    },
  });
}

interface StabilityEvent {
  seq: number;
  type: string;
  ts: number;
  level: string;
  message: string;
}

/** A warning or error line of the ring as a stability event (other lines are not events). */
function eventOf(line: string): StabilityEvent | null {
  try {
    const o = JSON.parse(line) as { time?: string; level?: string; message?: string };
    if (o.level !== 'warn' && o.level !== 'error') return null;
    return { seq: 0, type: `log.${o.level}`, ts: Date.parse(o.time ?? ''), level: o.level, message: String(o.message ?? '') };
  } catch {
    return null;
  }
}
