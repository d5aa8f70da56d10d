/**
 * The Control UI over HTTP: a fixed allowlist of static files (no directory walking, so no path
 * can reach outside it), a strict Content-Security-Policy, and the WebSocket `Origin` check.
 *
 * Files: `src/ui/static/` (HTML, CSS) and the browser modules tsc builds to `dist/`: the UI
 * (`src/ui/web/`) and the import closure of its entry (the client SDK's build `packages/client/dist/`,
 * and the pure protocol modules of `packages/protocol/dist/` it shares with the gateway, so the
 * browser signs exactly what the gateway verifies).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** No inline script or style anywhere; the page talks only to its own origin. */
export const CONTROL_UI_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

interface Asset {
  type: string;
  body: Buffer;
}

/**
 * The repository root: three levels up from dist/src/server/control-ui.js, one up from the
 * single-file build dist/clawgate.cjs, or two up from src/server/… when run from source.
 */
function repoRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const root of [join(here, '..', '..', '..'), join(here, '..')]) {
    if (existsSync(join(root, 'src', 'ui', 'static', 'index.html'))) return root;
  }
  return join(here, '..', '..');
}

/**
 * Load the UI once. A missing build is not fatal for the gateway (the WebSocket plane works
 * without it); `/` then answers 503 with the command that builds it.
 */
export function loadControlUi(): Map<string, Asset> {
  const root = repoRoot();
  const assets = new Map<string, Asset>();
  const add = (url: string, file: string) => {
    if (!existsSync(file)) return;
    const ext = file.slice(file.lastIndexOf('.'));
    const type = TYPES[ext];
    if (type) assets.set(url, { type, body: readFileSync(file) });
  };
  const staticDir = join(root, 'src', 'ui', 'static');
  if (existsSync(staticDir)) for (const f of readdirSync(staticDir)) add(f === 'index.html' ? '/' : `/ui/${f}`, join(staticDir, f));
  // The page declares ui/favicon.svg; a browser that asks for /favicon.ico anyway gets the same icon, not a 404.
  const icon = assets.get('/ui/favicon.svg');
  if (icon) assets.set('/favicon.ico', icon);
  // The browser modules: the UI entry and every module it imports, transitively (the client
  // SDK, the pure protocol modules), served at /ui/<path under dist>/ so relative imports
  // resolve in the browser exactly as they do on disk. The workspace packages build to their
  // own dist/ (packages/<name>/dist/), which the UI reaches as dist/packages/<name>/dist/: an
  // import resolved there is read from the package's build output. Nothing outside that
  // closure is served.
  const dist = join(root, 'dist');
  const onDisk = (file: string, rel: string): string | null => {
    if (existsSync(file)) return file;
    const parts = rel.split(sep);
    if (parts.length > 3 && parts[0] === 'packages' && parts[2] === 'dist' && !parts.includes('..')) {
      const built = join(root, rel);
      if (existsSync(built)) return built;
    }
    return null;
  };
  const pending = [join(dist, 'src', 'ui', 'web', 'app.js')];
  const seen = new Set<string>();
  while (pending.length > 0) {
    const file = pending.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const rel = relative(dist, file);
    if (rel.startsWith('..') || !file.endsWith('.js')) continue;
    const real = onDisk(file, rel);
    if (real === null) continue;
    add(`/ui/${rel.split(sep).join('/')}`, real);
    const text = readFileSync(real, 'utf8');
    for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"`;]*?['"](\.{1,2}\/[^'"]+\.js)['"]/g)) {
      pending.push(join(dirname(file), m[1] as string));
    }
  }
  return assets;
}

/** Serve one Control UI asset; false when the path is not one of them. */
/**
 * The UI assets, read on the first request that may be for them rather than at start: reading
 * and scanning them costs a start ~50 ms that the gateway's WebSocket plane does not need.
 */
export function lazyControlUi(): () => Map<string, Asset> {
  let assets: Map<string, Asset> | null = null;
  return () => {
    assets ??= loadControlUi();
    return assets;
  };
}

export function serveControlUi(assets: Map<string, Asset>, path: string, req: IncomingMessage, res: ServerResponse): boolean {
  const key = path === '/index.html' ? '/' : path;
  const asset = assets.get(key);
  if (!asset) {
    if (key !== '/') return false;
    const text = 'The Control UI is not built: run `npm run build` in the clawgate checkout, then restart the gateway.\n';
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return true;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 });
    res.end();
    return true;
  }
  res.writeHead(200, {
    'content-type': asset.type,
    'content-length': asset.body.length,
    'content-security-policy': CONTROL_UI_CSP,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'cross-origin-opener-policy': 'same-origin',
    // The page may carry a one-time sign-in link in its fragment; nothing of it is cached.
    'cache-control': 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : asset.body);
  return true;
}

/** `scheme://host[:port]` of an http(s) or ws(s) URL, as a browser writes `Origin`; null if it is neither. */
export function originOf(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const scheme = { 'http:': 'http:', 'https:': 'https:', 'ws:': 'http:', 'wss:': 'https:' }[u.protocol];
  if (!scheme) return null;
  // Re-parsed under the page scheme, so a default port (443 for wss and https) drops out the same way.
  return new URL(`${scheme}//${u.host}`).origin;
}

/**
 * The origins that are this gateway's own, from its configuration alone: the listed
 * `allowedOrigins`, the page origin of `publicUrl` (wss://gw.example.com/x serves its UI at
 * https://gw.example.com), and the address it listens on when that is one specific address (a
 * loopback listener also as `localhost`). Nothing a request says can add to this list.
 */
export function gatewayOrigins(opts: {
  allowedOrigins: readonly string[];
  publicUrl?: string | undefined;
  listen?: { host: string; port: number; tls: boolean } | undefined;
}): string[] {
  const out = new Set<string>();
  for (const o of opts.allowedOrigins) out.add(originOf(o) ?? o);
  const pub = opts.publicUrl ? originOf(opts.publicUrl) : null;
  if (pub) out.add(pub);
  const l = opts.listen;
  if (l && l.host !== '0.0.0.0' && l.host !== '::' && isIP(l.host) !== 0) {
    const scheme = l.tls ? 'https' : 'http';
    const host = isIP(l.host) === 6 ? `[${l.host}]` : l.host;
    for (const h of [host, ...(l.host === '127.0.0.1' || l.host === '::1' ? ['localhost'] : [])]) {
      const o = originOf(`${scheme}://${h}:${l.port}`);
      if (o) out.add(o);
    }
  }
  return [...out];
}

/**
 * May a WebSocket upgrade carrying this `Origin` proceed? Browsers always send `Origin`;
 * non-browser clients (CLI, nodes, SDK) send none and are judged by their credentials alone.
 * A browser page is allowed from the gateway's own origins (gatewayOrigins: configuration
 * only). On a direct connection it is also allowed when the page's host:port equals the `Host`
 * the browser sent and is an IP literal or `localhost`: a browser writes both from the URL it
 * loaded, and a DNS name pointing at the gateway could be an attacker's name rebound to this
 * address, so a named origin must be configured. Behind a trusted proxy no request header
 * counts (`Host` and `X-Forwarded-Host` carry what the client asked for, rebound names
 * included): only the configured origins do.
 */
export function originAllowed(
  origin: string | undefined,
  host: string | undefined,
  opts: { ownOrigins: readonly string[]; viaTrustedProxy: boolean },
): boolean {
  if (origin === undefined) return true;
  let parsed: URL;
  try {
    parsed = new URL(origin);
  } catch {
    return false; // includes the literal "null" of sandboxed frames and file: pages
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return opts.ownOrigins.includes(origin);
  if (opts.ownOrigins.includes(parsed.origin)) return true;
  if (opts.viaTrustedProxy) return false;
  if (!host || host.toLowerCase() !== parsed.host.toLowerCase()) return false;
  const name = parsed.hostname.replace(/^\[|\]$/g, '');
  return name === 'localhost' || isIP(name) !== 0;
}
