/**
 * `clawgate dashboard`: print a one-time owner sign-in link for the Control UI. The link's
 * token sits in the URL fragment (never sent to a server), works once, for two minutes by
 * default, and the page removes it from the address bar as soon as it has read it.
 */
import { withGateway } from './gateway-session.js';
import { parseDuration } from './qr.js';
import { parse, UsageError } from './usage.js';

const USAGE = 'usage: clawgate dashboard [--ttl 2m] [--url <ws-url>] [--json]';

/**
 * ws://host:port[/path] → http://host:port[/path]/ (wss → https): the UI is served on the
 * gateway's own port, under its context path when it has one.
 */
export function httpBaseOf(wsUrl: string): string {
  const u = new URL(wsUrl);
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new UsageError(`--url must be a ws:// or wss:// URL, got ${wsUrl}`);
  const path = u.pathname.endsWith('/') ? u.pathname : `${u.pathname}/`;
  return `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}${path}`;
}

export async function dashboardCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    ttl: { type: 'string' },
    url: { type: 'string' },
    token: { type: 'string' },
    password: { type: 'string' },
    'gateway-key': { type: 'string' },
    'state-dir': { type: 'string' },
    json: { type: 'boolean' },
  });
  if (positionals.length > 0) throw new UsageError(USAGE);
  const ttlMs = values.ttl !== undefined ? parseDuration(values.ttl as string) : undefined;
  return withGateway(values, async (conn) => {
    const res = await conn.request<{ linkId: string; token: string; expiresAtMs: number; fragment: string }>(
      'dashboard.link',
      ttlMs !== undefined ? { ttlMs } : {},
    );
    const base = httpBaseOf(conn.url);
    const link = `${base}${res.fragment}`;
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ url: link, linkId: res.linkId, expiresAtMs: res.expiresAtMs })}\n`);
    } else {
      const secs = Math.round((res.expiresAtMs - Date.now()) / 1000);
      process.stdout.write(`Open this link in a browser on this host (works once, for ${secs}s):\n\n  ${link}\n\n`);
      process.stdout.write('Or open the page and sign in with the owner credential or the gateway token.\n');
    }
    return 0;
  });
}
