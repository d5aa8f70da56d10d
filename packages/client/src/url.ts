/**
 * Gateway URL rules (reference: windows-companion §5). Two separate things:
 * - the connect URL: http→ws, https→wss, path and query kept (reverse-proxy prefixes work),
 *   fragment dropped, default ports implicit;
 * - the credential key: the connect URL with loopback aliases (`localhost`, `127.0.0.1`,
 *   `::1`) folded into one host and the default port written out, so `ws://localhost:18789`,
 *   `http://127.0.0.1:18789/` and `ws://[::1]:18789` are one gateway with one identity.
 */
import { ClientError } from './errors.js';

const DEFAULT_PORT: Record<string, string> = { 'ws:': '80', 'wss:': '443' };
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

export interface NormalizedUrl {
  /** What to open: `ws(s)://host[:port]/path?query`. */
  url: string;
  /** What credentials are filed under. */
  key: string;
  loopback: boolean;
  secure: boolean;
}

function invalid(input: string, why: string): ClientError {
  return new ClientError('INVALID_GATEWAY_URL', `invalid gateway URL ${JSON.stringify(input)}: ${why}`, 'Give a ws://, wss://, http:// or https:// URL.');
}

export function normalizeGatewayUrl(input: string): NormalizedUrl {
  const text = input.trim();
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(text)?.[1]?.toLowerCase();
  if (!scheme) throw invalid(input, 'not an absolute URL');
  const mapped = scheme === 'http' ? 'ws' : scheme === 'https' ? 'wss' : scheme;
  if (mapped !== 'ws' && mapped !== 'wss') throw invalid(input, `unsupported scheme ${scheme}://`);
  let u: URL;
  try {
    u = new URL(`${mapped}${text.slice(scheme.length)}`);
  } catch {
    throw invalid(input, 'not parseable');
  }
  if (u.username || u.password) throw invalid(input, 'credentials in the URL are not supported; pass a shared token instead');
  if (!u.hostname) throw invalid(input, 'no host');
  u.hash = '';
  const host = u.hostname.toLowerCase().replace(/\.$/, '');
  const loopback = LOOPBACK_HOSTS.has(host);
  const port = u.port || DEFAULT_PORT[u.protocol]!;
  const path = u.pathname === '/' ? '' : u.pathname.replace(/\/+$/, '');
  const connect = `${u.protocol}//${u.host}${u.pathname === '/' && !u.search ? '' : u.pathname}${u.search}`;
  const key = `${u.protocol}//${loopback ? 'loopback' : host}:${port}${path}${u.search}`;
  return { url: connect, key, loopback, secure: u.protocol === 'wss:' };
}

/** The credential key of a URL (see normalizeGatewayUrl). */
export function gatewayKey(input: string): string {
  return normalizeGatewayUrl(input).key;
}

/**
 * Whether falling back from a rejected device token to the shared or bootstrap credential is
 * safe here: over TLS, or to this machine. A plain ws:// to a remote host never qualifies, so a
 * listener impersonating the gateway cannot fish the fallback credential out of the client.
 */
export function isRecoverySafe(u: NormalizedUrl): boolean {
  return u.secure || u.loopback;
}
