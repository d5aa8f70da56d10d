/**
 * Client strings a person will read (docs/security.md §Client strings). A device's display
 * name, platform, a node's command names, an operator's rename: all end up in `clawgate devices
 * list`, the Control UI and the audit log, so none may carry characters that change what the
 * reader sees — terminal escapes (ESC, CSI, OSC), NUL, line breaks, bidi overrides/isolates that
 * reorder the text around them (Trojan Source), or invisible format characters that make two
 * different names look the same or hide text.
 *
 * One definition of "unsafe", three uses: `findUnsafe` (refuse: names an operator sets through a
 * method), `cleanText` (replace: metadata a real client sends at connect, so an OpenClaw client
 * with an odd name is never refused) and `printable` (escape: every human CLI line). Pure.
 */
import { GatewayError } from './errors.js';

/**
 * Unsafe code points: every control (C0 incl. TAB/LF/CR, DEL, C1), every format character (bidi
 * marks/embeddings/overrides/isolates U+061C U+200E U+200F U+202A–U+202E U+2066–U+2069, zero
 * width space U+200B, word joiner and invisible operators U+2060–U+2064, BOM U+FEFF, soft hyphen,
 * tag characters U+E0000–U+E007F, …) except ZWNJ/ZWJ (U+200C/U+200D, which Persian, Indic
 * scripts and emoji sequences need and which hide nothing), the line/paragraph separators
 * U+2028/U+2029, lone surrogates, and the Hangul fillers that render as nothing.
 */
const UNSAFE = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}\u115F\u1160\u3164\uFFA0]|(?![\u200C\u200D])\p{Cf}/u;
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'gu');

/** What kind of unsafe character a code point is, for the refusal message. */
function kindOf(cp: number): string {
  if (cp <= 0x1f || cp === 0x7f) return 'a control character';
  if (cp >= 0x80 && cp <= 0x9f) return 'a C1 control character';
  if (cp === 0x061c || cp === 0x200e || cp === 0x200f || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069)) {
    return 'a bidirectional control character';
  }
  if (cp === 0x2028 || cp === 0x2029) return 'a line separator';
  if (cp >= 0xd800 && cp <= 0xdfff) return 'an unpaired surrogate';
  return 'an invisible format character';
}

export interface UnsafeChar {
  /** UTF-16 index of the first unsafe character. */
  index: number;
  /** Its code point as `U+XXXX`. */
  codePoint: string;
  /** Human words for it ("a control character", "a bidirectional control character", …). */
  kind: string;
}

const hex = (cp: number) => cp.toString(16).toUpperCase().padStart(4, '0');

/** The first unsafe character of `s`, or null when every character is safe to show. */
export function findUnsafe(s: string): UnsafeChar | null {
  const m = UNSAFE.exec(s);
  if (!m) return null;
  const cp = m[0].codePointAt(0) as number;
  return { index: m.index, codePoint: `U+${hex(cp)}`, kind: kindOf(cp) };
}

export const isSafeText = (s: string): boolean => !UNSAFE.test(s);

/** Every unsafe character replaced by U+FFFD (for connect metadata: kept visible, never refused). */
export function cleanText(s: string): string {
  return s.replace(UNSAFE_ALL, '\uFFFD');
}

/** `cleanText` for an optional field. */
export function cleanOptional(s: string | undefined): string | undefined {
  return s === undefined ? undefined : cleanText(s);
}

/** UTF-16 `\uXXXX` escapes: valid inside a JSON string too, so escaping a JSON line keeps it the same JSON. */
function escapeUnits(ch: string): string {
  let outText = '';
  for (let i = 0; i < ch.length; i++) outText += `\\u${hex(ch.charCodeAt(i))}`;
  return outText;
}

/**
 * `s` with every unsafe character written as a visible `\uXXXX` escape (line breaks included),
 * for one field of a human listing: what a terminal shows is exactly what is there.
 */
export function printable(s: string): string {
  return s.replace(UNSAFE_ALL, escapeUnits);
}

/** Like `printable`, but each `\n` stays a line break: for a whole block of output the CLI wrote itself. */
export function printableLines(text: string): string {
  return text.split('\n').map(printable).join('\n');
}

/**
 * The refusal for the first named field holding an unsafe character (null when all are safe):
 * names an operator or a client sets through a method are refused, never silently changed, so
 * what was asked is exactly what is stored.
 */
export function unsafeFieldError(method: string, fields: Record<string, string | readonly string[] | undefined>): GatewayError | null {
  for (const [field, value] of Object.entries(fields)) {
    const list = typeof value === 'string' ? [value] : (value ?? []);
    for (const v of list) {
      const bad = findUnsafe(v);
      if (bad)
        return new GatewayError('TEXT_NOT_PRINTABLE', {
          vars: { method, field, kind: bad.kind, codePoint: bad.codePoint },
          details: { method, field, codePoint: bad.codePoint },
        });
    }
  }
  return null;
}
