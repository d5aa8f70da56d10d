/**
 * Client attribution behind reverse proxies. Forwarded headers are believed only when the
 * direct peer is a configured trusted proxy; the client is then the right-most address in
 * X-Forwarded-For (or Forwarded: for=) that is not itself a trusted proxy. A proxied request
 * is never "local", whatever address the proxy reports.
 */
import { BlockList, isIP } from 'node:net';

export const FORWARDED_HEADERS = ['forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip'] as const;

export function normalizeAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const a = normalizeAddress(address);
  return a === '::1' || a.startsWith('127.');
}

export class ProxyTrust {
  private readonly list = new BlockList();
  readonly size: number;
  constructor(entries: readonly string[]) {
    for (const raw of entries) {
      const [addr, bits] = raw.trim().split('/');
      const family = isIP(addr ?? '');
      if (!addr || family === 0) throw new Error(`trustedProxies: "${raw}" is not an IP address or CIDR`);
      const type = family === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.list.addAddress(addr, type);
      else {
        const prefix = Number(bits);
        if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32)) throw new Error(`trustedProxies: bad prefix in "${raw}"`);
        this.list.addSubnet(addr, prefix, type);
      }
    }
    this.size = entries.length;
  }
  trusts(address: string): boolean {
    const a = normalizeAddress(address);
    const family = isIP(a);
    if (family === 0) return false;
    return this.list.check(a, family === 6 ? 'ipv6' : 'ipv4');
  }
}

export type Attribution =
  | { ok: true; address: string; directLocal: boolean; proxied: boolean }
  | { ok: false; status: 403; type: 'proxy_attribution_required'; message: string };

function forwardedChain(headers: Record<string, string | string[] | undefined>): string[] {
  const xff = headers['x-forwarded-for'];
  if (xff)
    return (Array.isArray(xff) ? xff.join(',') : xff)
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const fwd = headers.forwarded;
  if (fwd) {
    const text = Array.isArray(fwd) ? fwd.join(',') : fwd;
    const out: string[] = [];
    for (const m of text.matchAll(/for=("?)\[?([^\]";,]+)\]?\1/gi)) if (m[2]) out.push(m[2]);
    return out;
  }
  const real = headers['x-real-ip'];
  return real ? [Array.isArray(real) ? (real[0] ?? '') : real] : [];
}

/** Decide who the client is, from the socket peer and the request headers. */
export function attribute(
  peer: string | undefined,
  headers: Record<string, string | string[] | undefined>,
  trust: ProxyTrust,
  untrusted: 'refuse' | 'ignore',
): Attribution {
  const peerAddr = normalizeAddress(peer);
  const forwarded = FORWARDED_HEADERS.some((h) => headers[h] !== undefined);
  if (!forwarded) return { ok: true, address: peerAddr, directLocal: isLoopbackAddress(peerAddr), proxied: false };
  if (!trust.trusts(peerAddr)) {
    if (untrusted === 'ignore') return { ok: true, address: peerAddr, directLocal: false, proxied: false };
    return {
      ok: false,
      status: 403,
      type: 'proxy_attribution_required',
      message: 'Forwarded headers from an untrusted peer. Add the proxy address to gateway.trustedProxies, or connect directly.',
    };
  }
  const chain = forwardedChain(headers);
  let client = peerAddr;
  for (let i = chain.length - 1; i >= 0; i--) {
    const hop = normalizeAddress(chain[i]);
    client = hop;
    if (!trust.trusts(hop)) break;
  }
  return { ok: true, address: client, directLocal: false, proxied: true };
}
