/**
 * Setup codes (PROTOCOL.md §Setup codes): what `clawgate qr` prints and a new device redeems.
 * A code is the unpadded base64url of UTF-8 JSON
 *
 *   {"url":"ws://host:port","urls":[…]?,"bootstrapToken":"cgb1_…","expiresAtMs":…,"tlsFingerprint":"…"?,"gatewayKey":"…"?}
 *
 * optionally written as a link `oc-pair://<code>` (the scheme is matched case-insensitively).
 * It never carries the gateway token or password: only the short-lived bootstrap token, which
 * the gateway stores as a hash. `gatewayKey` names the gateway's identity key (PROTOCOL.md
 * §Gateway identity), so the device checks the challenge signature before it sends the token —
 * end to end, through TLS-terminating proxies and over plain ws:// alike. Pure: no IO and no Node-only API, so the client SDK (and a
 * browser) can import it.
 */

import { normalizeGatewayKeyFingerprint } from './gateway-proof.js';

export const SETUP_LINK_SCHEME = 'oc-pair://';

/** Longest setup code (or link) a decoder accepts, in characters. */
export const MAX_SETUP_CODE_CHARS = 4096;
/** Longest bootstrap token a decoder accepts (the reference clients cap it at 512). */
export const MAX_BOOTSTRAP_TOKEN_CHARS = 512;
/** At most this many fallback URLs in `urls`. */
export const MAX_SETUP_URLS = 8;

export interface SetupPayload {
  /** Where to connect: a `ws://` or `wss://` URL without credentials. */
  url: string;
  /** Optional ordered fallback routes (1–8), e.g. LAN and a tunnel. */
  urls?: string[];
  /** The credential to send once as `connect.params.auth.bootstrapToken`. */
  bootstrapToken: string;
  /** When the gateway stops accepting the code (ms since the epoch). */
  expiresAtMs: number;
  /** Optional SHA-256 fingerprint of the gateway's TLS certificate (64 hex, colons allowed). */
  tlsFingerprint?: string;
  /**
   * Optional SHA-256 of the gateway's raw Ed25519 identity key (64 lowercase hex). A client
   * that knows it sends nothing until a challenge signed by that key arrives.
   */
  gatewayKey?: string;
}

export type SetupDecodeResult = { ok: true; payload: SetupPayload } | { ok: false; problem: string };

const CODE_RE = /^[A-Za-z0-9_-]+$/;
const FINGERPRINT_RE = /^(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31})$/;

function toBase64Url(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64Url(text: string): Uint8Array | null {
  if (text.length % 4 === 1) return null;
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  let bin: string;
  try {
    bin = atob(b64);
  } catch {
    return null;
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Why `url` is not acceptable in a setup code, or null when it is. */
export function setupUrlProblem(url: unknown): string | null {
  if (typeof url !== 'string' || url.length === 0) return 'must be a non-empty string';
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `is not a URL: ${url}`;
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') return `must use ws:// or wss://, got ${u.protocol}//`;
  if (u.username || u.password) return 'must not carry credentials';
  if (!u.hostname) return 'must name a host';
  return null;
}

/** Encode a payload as a setup code. Throws on a payload that would not decode. */
export function encodeSetupCode(p: SetupPayload): string {
  const urlProblem = setupUrlProblem(p.url);
  if (urlProblem) throw new Error(`setup code url ${urlProblem}`);
  if (!p.bootstrapToken || p.bootstrapToken.length > MAX_BOOTSTRAP_TOKEN_CHARS) throw new Error('setup code bootstrapToken is empty or too long');
  if (!Number.isSafeInteger(p.expiresAtMs) || p.expiresAtMs < 0) throw new Error('setup code expiresAtMs must be a whole number of ms');
  // Key order as the reference writes it: url, urls, bootstrapToken, expiresAtMs, tlsFingerprint
  // (then clawgate's own gatewayKey, which reference clients ignore as an unknown member).
  const body: Record<string, unknown> = { url: p.url };
  if (p.urls && p.urls.length > 0) {
    if (p.urls.length > MAX_SETUP_URLS) throw new Error(`setup code holds at most ${MAX_SETUP_URLS} urls`);
    for (const u of p.urls) {
      const problem = setupUrlProblem(u);
      if (problem) throw new Error(`setup code urls entry ${problem}`);
    }
    body.urls = [...p.urls];
  }
  body.bootstrapToken = p.bootstrapToken;
  body.expiresAtMs = p.expiresAtMs;
  if (p.tlsFingerprint !== undefined) {
    if (!FINGERPRINT_RE.test(p.tlsFingerprint)) throw new Error('setup code tlsFingerprint must be a SHA-256 fingerprint');
    body.tlsFingerprint = p.tlsFingerprint;
  }
  if (p.gatewayKey !== undefined) {
    const key = normalizeGatewayKeyFingerprint(p.gatewayKey);
    if (!key) throw new Error('setup code gatewayKey must be a SHA-256 fingerprint (64 hex digits)');
    body.gatewayKey = key;
  }
  return toBase64Url(new TextEncoder().encode(JSON.stringify(body)));
}

/** The `oc-pair://` link form of a code. */
export function setupLink(code: string): string {
  return `${SETUP_LINK_SCHEME}${code}`;
}

/** Strip surrounding space and an `oc-pair://` prefix (any case); the bare code remains. */
export function stripSetupLink(input: string): string {
  let s = input.trim();
  if (s.slice(0, SETUP_LINK_SCHEME.length).toLowerCase() === SETUP_LINK_SCHEME) s = s.slice(SETUP_LINK_SCHEME.length);
  // A link pasted from a browser may end with a slash.
  return s.replace(/\/+$/, '');
}

/**
 * Decode a setup code or `oc-pair://` link. With `nowMs`, an expired code is refused too.
 * Unknown JSON members are ignored (later versions may add some).
 */
export function decodeSetupCode(input: string, opts: { nowMs?: number } = {}): SetupDecodeResult {
  const fail = (problem: string): SetupDecodeResult => ({ ok: false, problem });
  if (typeof input !== 'string') return fail('setup code must be a string');
  if (input.length > MAX_SETUP_CODE_CHARS) return fail(`setup code is longer than ${MAX_SETUP_CODE_CHARS} characters`);
  const code = stripSetupLink(input);
  if (!code) return fail('setup code is empty');
  if (!CODE_RE.test(code)) return fail('setup code must be base64url (A–Z, a–z, 0–9, - and _)');
  const bytes = fromBase64Url(code);
  if (!bytes) return fail('setup code is not valid base64url');
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return fail('setup code does not hold UTF-8 JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('setup code JSON must be an object');
  const o = json as Record<string, unknown>;
  const urlProblem = setupUrlProblem(o.url);
  if (urlProblem) return fail(`url ${urlProblem}`);
  if (typeof o.bootstrapToken !== 'string' || o.bootstrapToken.length === 0) return fail('bootstrapToken must be a non-empty string');
  if (o.bootstrapToken.length > MAX_BOOTSTRAP_TOKEN_CHARS) return fail(`bootstrapToken is longer than ${MAX_BOOTSTRAP_TOKEN_CHARS} characters`);
  if (typeof o.expiresAtMs !== 'number' || !Number.isSafeInteger(o.expiresAtMs) || o.expiresAtMs < 0) {
    return fail('expiresAtMs must be a whole number of milliseconds');
  }
  const payload: SetupPayload = { url: o.url as string, bootstrapToken: o.bootstrapToken, expiresAtMs: o.expiresAtMs };
  if (o.urls !== undefined) {
    if (!Array.isArray(o.urls) || o.urls.length < 1 || o.urls.length > MAX_SETUP_URLS) return fail(`urls must be an array of 1 to ${MAX_SETUP_URLS} URLs`);
    for (const u of o.urls) {
      const problem = setupUrlProblem(u);
      if (problem) return fail(`urls entry ${problem}`);
    }
    payload.urls = [...(o.urls as string[])];
  }
  if (o.tlsFingerprint !== undefined) {
    if (typeof o.tlsFingerprint !== 'string' || !FINGERPRINT_RE.test(o.tlsFingerprint))
      return fail('tlsFingerprint must be a SHA-256 fingerprint (64 hex digits)');
    payload.tlsFingerprint = o.tlsFingerprint;
  }
  if (o.gatewayKey !== undefined) {
    const key = typeof o.gatewayKey === 'string' ? normalizeGatewayKeyFingerprint(o.gatewayKey) : null;
    if (!key) return fail('gatewayKey must be the SHA-256 fingerprint of the gateway key (64 hex digits)');
    payload.gatewayKey = key;
  }
  if (opts.nowMs !== undefined && payload.expiresAtMs <= opts.nowMs) return fail('setup code has expired; mint a new one');
  return { ok: true, payload };
}
