/**
 * Database faults a client can do nothing about but retry: SQLite busy or locked by another
 * process, a full disk, a read-only file; PostgreSQL unreachable, restarting, timing out or
 * its backend terminated. The gateway answers these with the catalogued STORE_UNAVAILABLE
 * instead of INTERNAL_ERROR, so a client knows to retry and an operator knows where to look.
 */

export type StoreFaultCause = 'busy' | 'locked' | 'disk full' | 'read-only' | 'unreachable' | 'timed out' | 'connection lost' | 'I/O error';

/** SQLite result codes (better-sqlite3 puts the extended name in `code`). */
const SQLITE: Array<[RegExp, StoreFaultCause]> = [
  [/^SQLITE_BUSY/, 'busy'],
  [/^SQLITE_LOCKED/, 'locked'],
  [/^SQLITE_FULL$/, 'disk full'],
  [/^SQLITE_READONLY/, 'read-only'],
  [/^SQLITE_IOERR/, 'I/O error'],
];

/** Node socket errors on a PostgreSQL connection. */
const NET = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/** What the fault is, or null when `err` is not a database availability fault (a bug, a constraint). */
export function storeFault(err: unknown): StoreFaultCause | null {
  if (!err || typeof err !== 'object') return null;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : '';
  for (const [re, cause] of SQLITE) if (re.test(code)) return cause;
  if (code === 'ENOSPC') return 'disk full';
  if (NET.has(code)) return 'unreachable';
  // PostgreSQL SQLSTATEs: class 08 (connection exception), 57P01-57P03 (admin/crash shutdown,
  // cannot connect now), 53300 (too many connections), 53100 (disk full), 57014 (statement timeout).
  if (/^08[0-9A-Z]{3}$/.test(code) || /^57P0[123]$/.test(code) || code === '53300') return 'unreachable';
  if (code === '53100') return 'disk full';
  if (code === '57014') return 'timed out';
  // node-postgres's own client-side failures carry no code, only these messages.
  if (/^Query read timeout$|timeout exceeded when trying to connect|Connection terminated due to connection timeout/.test(message)) return 'timed out';
  if (/^Connection terminated|^Client has encountered a connection error|^Client was closed|Cannot use a pool after calling end/.test(message))
    return 'connection lost';
  return null;
}
