/**
 * Client attribution behind reverse proxies. Forwarded headers are believed only when the
 * direct peer is a configured trusted proxy; the client is then the right-most address in the
 * forwarding chain that is not itself a trusted proxy (everything left of it was written by
 * parties we have no reason to believe). A proxied request is never "local", whatever address
 * the proxy reports. A request from a trusted proxy's address that carries no forwarding headers
 * at all is indistinguishable from a direct connection and is treated as one (as the reference
 * does); `clawgate doctor` warns when a loopback address is trusted, because a same-host proxy
 * that forgets its headers would then make remote clients look local. The deployment guide has
 * the proxy connect from its own loopback address (nginx `proxy_bind 127.0.0.2`) and trusts only that.
 */
import { BlockList, isIP } from 'node:net';

type Headers = Record<string, string | string[] | undefined>;

/** Headers that are evidence of a proxy in the path (any `X-Forwarded-*` counts as well). */
export const FORWARDED_HEADERS = ['forwarded', 'x-real-ip'] as const;

export function normalizeAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const a = normalizeAddress(address);
  return a === '::1' || (isIP(a) === 4 && a.startsWith('127.'));
}

export class ProxyTrust {
  private readonly list = new BlockList();
  readonly size: number;
  readonly entries: readonly string[];
  constructor(entries: readonly string[]) {
    for (const raw of entries) {
      const problem = proxyEntryProblem(raw);
      if (problem) throw new Error(`trustedProxies: ${problem}`);
      const [addr = '', bits] = raw.trim().split('/');
      const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.list.addAddress(addr, type);
      else this.list.addSubnet(addr, Number(bits), type);
    }
    this.size = entries.length;
    this.entries = [...entries];
  }
  trusts(address: string): boolean {
    const a = normalizeAddress(address);
    const family = isIP(a);
    if (family === 0) return false;
    return this.list.check(a, family === 6 ? 'ipv6' : 'ipv4');
  }
}

/** Why a `trustedProxies` entry is unusable, or null. */
export function proxyEntryProblem(raw: string): string | null {
  const [addr, bits, extra] = raw.trim().split('/');
  const family = isIP(addr ?? '');
  if (!addr || family === 0 || extra !== undefined) return `"${raw}" is not an IP address or CIDR`;
  if (bits === undefined) return null;
  const prefix = Number(bits);
  if (!/^\d+$/.test(bits) || prefix > (family === 6 ? 128 : 32)) return `bad prefix length in "${raw}"`;
  return null;
}

/** How many addresses an entry covers, as a power of two (0 for a single address). */
export function proxyEntryWidthBits(raw: string): number {
  const [addr, bits] = raw.trim().split('/');
  const max = isIP(addr ?? '') === 6 ? 128 : 32;
  return bits === undefined ? 0 : max - Number(bits);
}

export type Attribution =
  | {
      ok: true;
      /** The client address as attributed (an IP, or `unknown` when a trusted proxy said so). */
      address: string;
      /** True only for a loopback peer with no proxy evidence at all. */
      directLocal: boolean;
      proxied: boolean;
      /** The identity-aware proxy's user header (only when one is configured): null when absent or ambiguous. */
      proxyUser?: string | null;
      /** What the trusted proxy says the client used (`https`, …) and asked for (Host). */
      forwardedProto?: string;
      forwardedHost?: string;
    }
  | { ok: false; status: 403; type: 'proxy_attribution_required'; message: string };

function headerText(v: string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(',') : v;
}

/** Split on `sep` outside double quotes (RFC 7239 values may be quoted-strings). */
function splitOutsideQuotes(text: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (quoted && ch === '\\' && i + 1 < text.length) {
      cur += text[++i];
      continue;
    }
    if (ch === '"') quoted = !quoted;
    if (ch === sep && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

/** RFC 7239 `Forwarded`: one record per element, parameter names case-insensitive. */
export function parseForwarded(text: string): Array<Record<string, string>> {
  const elements: Array<Record<string, string>> = [];
  for (const element of splitOutsideQuotes(text, ',')) {
    const rec: Record<string, string> = {};
    for (const pair of splitOutsideQuotes(element, ';')) {
      const eq = pair.indexOf('=');
      if (eq < 0) continue;
      const key = pair.slice(0, eq).trim().toLowerCase();
      let value = pair.slice(eq + 1).trim();
      if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
      if (key) rec[key] = value;
    }
    if (Object.keys(rec).length > 0) elements.push(rec);
  }
  return elements;
}

/**
 * One hop of a forwarding chain as an address: ports and IPv6 brackets stripped. Anything that
 * is not an IP (`unknown`, RFC 7239 obfuscated `_hidden` names, garbage) becomes `unknown`,
 * which is never trusted and so ends the walk.
 */
export function hopAddress(raw: string): string {
  let s = raw.trim();
  if (s.startsWith('"') && s.endsWith('"')) s = s.slice(1, -1);
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (bracket) s = bracket[1] as string;
  else if (/^[\d.]+:\d+$/.test(s)) s = s.slice(0, s.lastIndexOf(':'));
  s = normalizeAddress(s);
  return isIP(s) ? s : 'unknown';
}

/**
 * The forwarding chain, nearest hop last. X-Forwarded-For wins over `Forwarded` when both are
 * present: the common proxies (nginx `$proxy_add_x_forwarded_for`, Caddy, Traefik) append to
 * X-Forwarded-For but pass a client-supplied `Forwarded` through untouched.
 */
function forwardedChain(headers: Headers): { chain: string[]; proto?: string; host?: string } {
  const last = (v: string | undefined) =>
    v
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .pop();
  const xff = headerText(headers['x-forwarded-for']);
  const xfProto = last(headerText(headers['x-forwarded-proto']));
  const xfHost = last(headerText(headers['x-forwarded-host']));
  const fwdText = headerText(headers.forwarded);
  const fwd = fwdText ? parseForwarded(fwdText) : [];
  const nearest = fwd[fwd.length - 1];
  const proto = xfProto ?? nearest?.proto;
  const host = xfHost ?? nearest?.host;
  const extras = { ...(proto ? { proto: proto.toLowerCase() } : {}), ...(host ? { host } : {}) };
  if (xff) {
    const chain = xff
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    return { chain, ...extras };
  }
  if (fwd.length > 0) return { chain: fwd.map((r) => r.for ?? 'unknown'), ...extras };
  const real = headerText(headers['x-real-ip']);
  return { chain: real ? [real.split(',')[0] ?? ''] : [], ...extras };
}

/** `userHeader`: the identity-aware proxy's user header (gateway.auth.trustedProxyUser), proxy evidence too. */
export function hasForwardedHeaders(headers: Headers, userHeader?: string): boolean {
  // for…in: no array of header names per request (this runs on every upgrade).
  for (const name in headers) {
    if (headers[name] === undefined) continue;
    if (name.startsWith('x-forwarded-') || (FORWARDED_HEADERS as readonly string[]).includes(name) || name === userHeader) return true;
  }
  return false;
}

/** Decide who the client is, from the socket peer and the request headers. */
export function attribute(peer: string | undefined, headers: Headers, trust: ProxyTrust, untrusted: 'refuse' | 'ignore', userHeader?: string): Attribution {
  const peerAddr = normalizeAddress(peer);
  // The common case (a direct client, no forwarding headers) needs no trust lookup.
  if (!hasForwardedHeaders(headers, userHeader)) return { ok: true, address: peerAddr, directLocal: isLoopbackAddress(peerAddr), proxied: false };
  if (!trust.trusts(peerAddr)) {
    if (untrusted === 'ignore') return { ok: true, address: peerAddr, directLocal: false, proxied: false };
    return {
      ok: false,
      status: 403,
      type: 'proxy_attribution_required',
      message:
        `Forwarded headers arrived from ${peerAddr}, which is not a trusted proxy, so the client cannot be attributed. ` +
        'If a reverse proxy sits in front of the gateway, add its address to gateway.trustedProxies (as narrowly as possible) ' +
        'and make it overwrite or append X-Forwarded-For; otherwise connect directly without forwarding headers.',
    };
  }
  const { chain, proto, host } = forwardedChain(headers);
  let client = peerAddr;
  for (let i = chain.length - 1; i >= 0; i--) {
    client = hopAddress(chain[i] as string);
    if (!trust.trusts(client)) break;
  }
  const user = userHeader === undefined ? undefined : headerText(headers[userHeader]);
  return {
    ok: true,
    address: client,
    directLocal: false,
    proxied: true,
    // One value only: a proxy that appended to a client-supplied header would otherwise let the client choose.
    ...(userHeader !== undefined ? { proxyUser: user === undefined || user.includes(',') ? null : user.trim() } : {}),
    ...(proto ? { forwardedProto: proto } : {}),
    ...(host ? { forwardedHost: host } : {}),
  };
}
