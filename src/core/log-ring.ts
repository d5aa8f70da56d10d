/**
 * The gateway's own log, kept in memory for `logs.tail` (what `openclaw logs` reads). The
 * composition root tees the gateway's logger into a ring: every line the gateway logs is kept
 * as one JSON line `{"time","level","subsystem":"gateway","message",…fields}` (the shape
 * OpenClaw's log reader parses) until the ring's byte budget pushes it out.
 *
 * Cursors are byte offsets into the stream of lines this process has logged (each line counts
 * its UTF-8 bytes plus a newline), as the reference's file cursors are: `size` is everything
 * logged since start, a cursor past it (a restarted gateway) is a reset, and a cursor whose
 * bytes the ring has already dropped (or that lies more than `maxBytes` back) skips ahead with
 * `reset`, `truncated` and `skippedBytes`.
 *
 * No secret ever enters the ring: values under secret-named keys, clawgate's secret formats
 * (shared and owner secrets, device, setup and dashboard tokens, setup links), any long opaque
 * base64url run, and the literal configured gateway secrets are replaced by `[redacted]` before
 * a line is stored.
 */
import type { Clock } from './env.js';
import { isoClock, jsonWithLeadingMembers } from './json-line.js';

export const LOG_TAIL_DEFAULT_LIMIT = 500;
export const LOG_TAIL_MAX_LIMIT = 5000;
export const LOG_TAIL_DEFAULT_MAX_BYTES = 250_000;
export const LOG_TAIL_MAX_BYTES = 1_000_000;
/** What the ring keeps by default: about the reference's default tail window, four times over. */
export const LOG_RING_DEFAULT_BYTES = 1_000_000;

export interface LogLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface LogTail {
  cursor: number;
  size: number;
  lines: string[];
  truncated: boolean;
  reset: boolean;
  skippedBytes?: number;
  /** Where the lines come from (OpenClaw clients show it instead of a file name). */
  source: string;
  sourceKind: 'memory';
  /** Offset of the oldest line still held. */
  firstCursor: number;
}

const REDACTED = '[redacted]';
const SECRET_KEY_RE =
  /^(token|password|secret|credential|ownerCredential|authorization|cookie|setupCode|link|joinUrl|bootstrapToken|deviceToken|sharedSecret)$/i;
/** Each secret format, as a regular expression source (all case-sensitive but the setup link's scheme). */
const SECRET_VALUE_SOURCES = [
  // Device, setup-code and dashboard tokens: `<prefix>_<16 hex id>_<43 char secret>`.
  /cg[dbla]1_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}/.source,
  // Generated shared and owner secrets.
  /cg[so]_[A-Za-z0-9_-]{16,}/.source,
  // Setup links carry a bootstrap token (the scheme in any case).
  /[oO][cC]-[pP][aA][iI][rR]:\/\/[A-Za-z0-9_-]+/.source,
  // Join URLs are single-use bearer links.
  /\/j\/[A-Za-z0-9_-]{22}\b/.source,
  // A setup code or any other long opaque run, matched from where the run starts: tried at every
  // position inside a shorter run (a 64-hex device id), it rescanned the rest of the run each time
  // and took most of a log line's cost; a run that is long enough matches at its first character.
  /(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{80,}/.source,
];
/**
 * All formats in one pass (every log line is scrubbed, two per connect): at each position the
 * first format that matches is replaced, and every format consumes the whole opaque run it
 * starts, so nothing one of them would have redacted is left.
 */
const SECRET_VALUE_RE = new RegExp(SECRET_VALUE_SOURCES.map((src) => `(?:${src})`).join('|'), 'g');

/** `text` with every secret the gateway knows of, and every secret-shaped run, replaced. */
export function scrubSecrets(text: string, literals: readonly string[]): string {
  let out = text;
  for (const lit of literals) if (lit.length >= 8 && out.includes(lit)) out = out.split(lit).join(REDACTED);
  return mayHoldSecretValue(out) ? out.replace(SECRET_VALUE_RE, REDACTED) : out;
}

/**
 * False only when no format can match: no `cg` (every token and secret prefix), no `/j/`, no
 * `-pair:` in any case, and no run of 80 opaque characters. Most lines (ids, addresses, names)
 * are settled by this one pass instead of the five-way expression at every position.
 */
function mayHoldSecretValue(text: string): boolean {
  if (text.includes('cg') || text.includes('/j/')) return true;
  let run = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // A-Z, a-z, 0-9, '_' and '-': the base64url alphabet every opaque format uses.
    if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 95 || c === 45) {
      if (++run >= 80) return true;
    } else {
      // The setup-link scheme `oc-pair://`, in any case (the run resets at its ':').
      if (c === 58 && run >= 7 && text.slice(i - 7, i).toLowerCase() === 'oc-pair') return true;
      run = 0;
    }
  }
  return false;
}

/** Whether scrubFields would return `fields` unchanged: no secret-named key, no nested value, no header key. */
function plainFields(fields: Record<string, unknown>): boolean {
  for (const k in fields) {
    const v = fields[k];
    if ((v !== null && typeof v === 'object') || SECRET_KEY_RE.test(k) || HEADER_KEYS.has(k)) return false;
  }
  return true;
}
const HEADER_KEYS = new Set(['time', 'level', 'subsystem', 'message']);

function scrubFields(value: unknown, depth = 0): unknown {
  if (depth > 6) return '[…]';
  if (Array.isArray(value)) return value.map((v) => scrubFields(v, depth + 1));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = SECRET_KEY_RE.test(k) && v != null ? REDACTED : scrubFields(v, depth + 1);
    return out;
  }
  return value;
}

/**
 * The held lines live as UTF-8 in one buffer of `capacityBytes`, written around it: a line is
 * kept as bytes, not as a string object, so the ring holds no per-line heap objects. A held line
 * outlives thousands of connects; kept as strings, every one of them reached the old generation
 * and died there (about half a KiB of heap per connection at 10,000 connections).
 * A line is read back (decoded) only when `logs.tail` asks for it.
 */
export class LogRing {
  private buf: Buffer | null = null;
  /** Stream offset and size (its UTF-8 bytes plus the newline) of each held line, oldest at `head`. */
  private offsets: number[] = [];
  private sizes: number[] = [];
  private head = 0;
  private heldBytes = 0;
  private total = 0;
  /** The clock's time as ISO 8601, formatted once per millisecond. */
  private readonly isoNow = isoClock(() => this.clock.now());
  /** A line longer than the whole buffer (kept as text; only ever the newest line). */
  private oversized: { offset: number; text: string } | null = null;

  constructor(
    private readonly clock: Clock,
    /** The literal secrets of this gateway (token, password, owner credential), read at each line. */
    private readonly secrets: () => readonly string[],
    private readonly capacityBytes = LOG_RING_DEFAULT_BYTES,
  ) {}

  append(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    let body: string;
    const time = this.isoNow();
    try {
      // The common line (flat fields, none secret-named): the header and the fields serialized
      // as they are, without copying them into a new object first.
      const flat =
        (fields === undefined || plainFields(fields)) &&
        jsonWithLeadingMembers(`"time":"${time}","level":"${level}","subsystem":"gateway","message":${JSON.stringify(msg)}`, fields);
      body = flat || JSON.stringify({ time, level, subsystem: 'gateway', message: msg, ...(scrubFields(fields ?? {}) as object) });
    } catch {
      body = JSON.stringify({ time, level, subsystem: 'gateway', message: msg, fields: '[unserialisable]' });
    }
    this.hold(scrubSecrets(body, this.secrets()));
  }

  private hold(text: string): void {
    const textBytes = Buffer.byteLength(text);
    const size = textBytes + 1;
    const offset = this.total;
    this.total += size;
    // Make room: the oldest lines go until this one fits (a line larger than the buffer pushes out everything).
    while (this.head < this.offsets.length && this.heldBytes + size > this.capacityBytes) {
      this.heldBytes -= this.sizes[this.head] as number;
      this.head++;
    }
    this.oversized = null;
    if (size > this.capacityBytes) {
      this.oversized = { offset, text };
    } else {
      this.buf ??= Buffer.alloc(this.capacityBytes);
      const at = offset % this.capacityBytes;
      if (at + textBytes <= this.capacityBytes) this.buf.write(text, at, 'utf8');
      else {
        // Around the end of the buffer: the bytes, not the characters, are split.
        const bytes = Buffer.from(text, 'utf8');
        const first = this.capacityBytes - at;
        bytes.copy(this.buf, at, 0, first);
        bytes.copy(this.buf, 0, first);
      }
    }
    this.offsets.push(offset);
    this.sizes.push(size);
    this.heldBytes += size;
    // Compact now and then instead of shifting on every line.
    if (this.head > 1024 && this.head * 2 > this.offsets.length) {
      this.offsets.splice(0, this.head);
      this.sizes.splice(0, this.head);
      this.head = 0;
    }
  }

  /** The text of the held line at index `i` (decoded from the buffer). */
  private text(i: number): string {
    const offset = this.offsets[i] as number;
    if (this.oversized?.offset === offset) return this.oversized.text;
    const buf = this.buf as Buffer;
    const len = (this.sizes[i] as number) - 1;
    const at = offset % this.capacityBytes;
    if (at + len <= this.capacityBytes) return buf.toString('utf8', at, at + len);
    return Buffer.concat([buf.subarray(at), buf.subarray(0, len - (this.capacityBytes - at))]).toString('utf8');
  }

  get size(): number {
    return this.total;
  }

  /** The reference's `logs.tail` over this ring (see the module comment for the cursor rules). */
  tail(opts: { cursor?: number | undefined; limit?: number | undefined; maxBytes?: number | undefined }): LogTail {
    const size = this.total;
    const maxBytes = Math.min(Math.max(opts.maxBytes ?? LOG_TAIL_DEFAULT_MAX_BYTES, 1), LOG_TAIL_MAX_BYTES);
    const limit = Math.min(Math.max(opts.limit ?? LOG_TAIL_DEFAULT_LIMIT, 1), LOG_TAIL_MAX_LIMIT);
    const first = this.head < this.offsets.length ? (this.offsets[this.head] as number) : size;
    const cursor = opts.cursor === undefined ? undefined : Math.max(0, Math.floor(opts.cursor));
    let reset = false;
    let truncated = false;
    let skippedBytes = 0;
    let start: number;
    if (cursor === undefined) {
      start = Math.max(0, size - maxBytes);
      truncated = start > 0;
    } else if (cursor > size) {
      reset = true;
      start = Math.max(0, size - maxBytes);
      truncated = start > 0;
    } else {
      start = cursor;
      if (size - start > maxBytes) {
        reset = true;
        truncated = true;
        skippedBytes = size - maxBytes - start;
        start = size - maxBytes;
      }
    }
    if (start < first) {
      // Those bytes were logged but the ring no longer holds them.
      truncated = true;
      if (cursor !== undefined && cursor <= size) {
        reset = true;
        skippedBytes += first - start;
      }
      start = first;
    }
    // Whole lines only: a window that starts inside a line begins at the next one.
    let from = this.head;
    while (from < this.offsets.length && (this.offsets[from] as number) < start) from++;
    if (this.offsets.length - from > limit) {
      truncated = true;
      from = this.offsets.length - limit;
    }
    const lines: string[] = [];
    for (let i = from; i < this.offsets.length; i++) lines.push(this.text(i));
    return {
      cursor: size,
      size,
      lines,
      truncated,
      reset,
      ...(skippedBytes > 0 ? { skippedBytes } : {}),
      source: 'clawgate gateway log (in memory)',
      sourceKind: 'memory',
      firstCursor: first,
    };
  }
}

/** A logger that writes to `base` and keeps each line in `ring`. */
export function teeLogger<L extends LogLogger>(base: L, ring: LogRing): L {
  const tee = Object.create(base) as L;
  tee.info = (m, f) => {
    ring.append('info', m, f);
    base.info(m, f);
  };
  tee.warn = (m, f) => {
    ring.append('warn', m, f);
    base.warn(m, f);
  };
  tee.error = (m, f) => {
    ring.append('error', m, f);
    base.error(m, f);
  };
  return tee;
}
