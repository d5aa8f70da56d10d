/**
 * The only code that knows HTTP and WebSocket. One port: `/healthz`, `/readyz`, single-use join
 * URLs (`/j/<code>`), the Control UI at `/`, and the WebSocket control plane (browser upgrades pass an `Origin` check). Everything
 * it learns from the network goes to the core as text frames and transport facts; every socket has an `error` listener so no client can crash
 * the process.
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { CLOSE } from '@clawgate/protocol/errors';
import { MAX_PREAUTH_PAYLOAD_BYTES } from '@clawgate/protocol/frames';
import { asksForGatewayProof } from '@clawgate/protocol/gateway-proof';
import type { SetupPayload } from '@clawgate/protocol/setup-code';
import { WebSocket, WebSocketServer } from 'ws';
import type { Gateway, TransportFacts } from '../core/gateway.js';
import { joinCodesOf } from '../core/join-codes.js';
import { type ConnectionContext, GatewaySocket, SocketList, serveConnection } from './connection.js';
import { gatewayOrigins, lazyControlUi, originAllowed, serveControlUi } from './control-ui.js';
import { type Attribution, attribute, ProxyTrust } from './proxy.js';
import { TimerWheel } from './timer-wheel.js';
import { certFacts } from './tls.js';

export const PING_INTERVAL_MS = 25_000;
/** A store that has not answered the readiness probe by then counts as away. */
export const READY_STORE_TIMEOUT_MS = 2_000;

/** `/metrics`, when enabled: who may scrape and how the exposition is rendered. */
export interface MetricsEndpoint {
  /** Addresses/CIDRs allowed besides direct loopback peers (empty: loopback only). */
  allowFrom: readonly string[];
  render(): Promise<{ contentType: string; body: string }>;
}

export interface ServerOptions {
  metrics?: MetricsEndpoint | undefined;
}

export interface RunningServer {
  server: Server;
  port: number;
  host: string;
  /** `ws://` or `wss://` (native TLS), including the context path. */
  url: string;
  /** SHA-256 fingerprint of the certificate when the gateway serves TLS itself. */
  tlsFingerprint?: string | undefined;
  /** Graceful stop: shutdown event, close 1012, store closed. */
  close(): Promise<void>;
}

export async function startServer(gateway: Gateway, host: string, port: number, opts: ServerOptions = {}): Promise<RunningServer> {
  let ready = false;
  const trust = new ProxyTrust(gateway.config.trustedProxies);
  const ctx = gateway.config.contextPath;
  const tls = gateway.config.tls;
  const ui = lazyControlUi();
  const wheel = socketWheel(gateway);
  const scrapers = opts.metrics ? new ProxyTrust(opts.metrics.allowFrom) : null;
  const httpDeps: HttpDeps = {
    ctx,
    ui,
    readiness: () => readiness(gateway, ready),
    metrics:
      opts.metrics && scrapers
        ? {
            render: opts.metrics.render,
            allowed: (req) => attribute(req.socket.remoteAddress, req.headers, trust, gateway.config.untrustedForwarded),
            permits: (who) => who.ok && (who.directLocal || scrapers.trusts(who.address)),
          }
        : null,
    log: gateway.log,
    redeemJoinCode: (code) => joinCodesOf(gateway).redeem(code),
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => handleHttp(req, res, httpDeps);
  const http: Server = tls ? createTlsServer({ cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' }, onRequest) : createServer(onRequest);
  const fingerprint = tls ? certFacts(tls.certPem).fingerprint : undefined;
  // A failed TLS handshake (a plaintext client, a client refusing our certificate) is routine.
  if (tls) http.on('tlsClientError', (err) => gateway.log.warn('tls handshake failed', { err: String(err.message) }));
  // Sockets are tracked in `conn.sockets` (ws's own client tracking would add a closure per socket).
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_PREAUTH_PAYLOAD_BYTES,
    perMessageDeflate: false,
    clientTracking: false,
    WebSocket: GatewaySocket,
  });
  const conn: ConnectionContext = {
    gateway,
    wheel,
    sockets: new SocketList(),
    handshakeTimeoutMs: gateway.config.handshakeTimeoutMs,
    pingIntervalMs: gateway.config.pingIntervalMs ?? PING_INTERVAL_MS,
  };
  const sockets = conn.sockets;
  // Filled in once the listener is bound (no upgrade can arrive before that).
  let ownOrigins = gatewayOrigins({ allowedOrigins: gateway.config.allowedOrigins, publicUrl: gateway.config.publicUrl });

  http.on('clientError', (_err, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nX-Content-Type-Options: nosniff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', destroySocket);
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (ctx && path !== ctx && path !== `${ctx}/`) {
      // The request path is not echoed back: an answer never reflects what the client sent.
      refuseUpgrade(socket, 404, 'not_found', `the gateway answers WebSocket upgrades at ${ctx} only`);
      return;
    }
    const who = attribute(
      req.socket.remoteAddress,
      req.headers,
      trust,
      gateway.config.untrustedForwarded,
      gateway.config.trustedProxyUser?.header.toLowerCase(),
    );
    if (!who.ok) {
      refuseUpgrade(socket, who.status, who.type, who.message);
      return;
    }
    const origin = req.headers.origin;
    // The allowed origins come from the configuration; behind a proxy no Host header counts.
    if (!originAllowed(origin, req.headers.host, { ownOrigins, viaTrustedProxy: who.proxied })) {
      // A page from another origin must not drive this gateway with a browser's help.
      gateway.log.warn('websocket upgrade refused: origin not allowed', { origin, address: who.address });
      refuseUpgrade(
        socket,
        403,
        'origin_not_allowed',
        'This page origin may not open a WebSocket to this gateway. Open the Control UI from the gateway itself, set gateway.publicUrl to the URL it is reached at (behind a proxy), or add the origin to gateway.controlUi.allowedOrigins.',
      );
      return;
    }
    // One id per connection: every log line about it carries it, and an admitted session keeps it.
    const connId = gateway.random.uuid();
    const signedChallenge = asksForGatewayProof(req.url ?? '/');
    if (who.proxied) {
      gateway.log.info('proxied connection', {
        connId,
        client: who.address,
        proxy: req.socket.remoteAddress,
        proto: who.forwardedProto,
        host: who.forwardedHost,
      });
    }
    // The 101 response and the challenge frame leave in one write (one syscall, one packet):
    // corked until everything this upgrade writes synchronously is queued.
    socket.cork();
    wss.handleUpgrade(req, socket, head, (ws) => {
      const facts: TransportFacts = {
        address: who.address,
        directLocal: who.directLocal,
        connId,
        proxied: who.proxied,
        ...(who.proxyUser !== undefined ? { proxyUser: who.proxyUser } : {}),
      };
      serveConnection(conn, ws, facts, signedChallenge);
    });
    process.nextTick(() => socket.uncork());
  });

  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host, () => {
      http.off('error', reject);
      resolve();
    });
  });
  http.on('error', (err) => gateway.log.error('http server error', { err: String(err) }));
  ready = true;
  const addr = http.address() as AddressInfo;
  const urlHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  ownOrigins = gatewayOrigins({
    allowedOrigins: gateway.config.allowedOrigins,
    publicUrl: gateway.config.publicUrl,
    listen: { host: addr.address, port: addr.port, tls: !!tls },
  });

  return {
    server: http,
    port: addr.port,
    host: addr.address,
    url: `${tls ? 'wss' : 'ws'}://${urlHost}:${addr.port}${ctx}`,
    tlsFingerprint: fingerprint,
    async close() {
      ready = false;
      await gateway.stop();
      for (const ws of sockets) if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(CLOSE.restart, 'service restart');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          for (const ws of sockets) ws.terminate();
          resolve();
        }, 1000);
        timer.unref();
        http.close(() => {
          clearTimeout(timer);
          resolve();
        });
        http.closeAllConnections();
      });
    },
  };
}

/** A raw socket's error listener (shared: no closure per socket). */
function destroySocket(this: Socket): void {
  this.destroy();
}

/** Answer an upgrade request with a plain HTTP error (JSON body) instead of a WebSocket, and close. */
function refuseUpgrade(socket: Socket, status: number, type: string, message: string): void {
  const body = JSON.stringify({ error: { type, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

interface HttpDeps {
  ctx: string;
  ui: ReturnType<typeof lazyControlUi>;
  readiness(): Promise<Readiness>;
  metrics: {
    render(): Promise<{ contentType: string; body: string }>;
    allowed(req: IncomingMessage): Attribution;
    permits(who: Attribution): boolean;
  } | null;
  log: Gateway['log'];
  /** The setup payload of a one-time join code, once (null when used, expired or unknown). */
  redeemJoinCode(code: string): SetupPayload | null;
}

interface Readiness {
  ready: boolean;
  /** Names of the checks that fail (empty when ready). */
  failing: string[];
  checks: Record<string, { ok: boolean; error?: string }>;
}

/** Ready when the listener is up and the store answers in time. */
async function readiness(gateway: Gateway, listening: boolean): Promise<Readiness> {
  const checks: Readiness['checks'] = { listening: listening ? { ok: true } : { ok: false, error: 'not listening (starting or stopping)' } };
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      gateway.store.getMeta('gateway.id'),
      new Promise((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error('timeout')), READY_STORE_TIMEOUT_MS);
        timer.unref();
      }),
    ]);
    checks.store = { ok: true };
  } catch (err) {
    // Only a fixed text and the error code: a driver's message may carry connection details.
    const code = (err as { code?: unknown })?.code;
    const timedOut = (err as Error)?.message === 'timeout';
    checks.store = {
      ok: false,
      error: timedOut
        ? `store did not answer within ${READY_STORE_TIMEOUT_MS} ms`
        : `store call failed${typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code) ? ` (${code})` : ''}`,
    };
  } finally {
    clearTimeout(timer);
  }
  const failing = Object.entries(checks)
    .filter(([, c]) => !c.ok)
    .map(([name]) => name);
  return { ready: failing.length === 0, failing, checks };
}

function handleHttp(req: IncomingMessage, res: ServerResponse, deps: HttpDeps): void {
  const { ctx, ui } = deps;
  const full = (req.url ?? '/').split('?')[0] ?? '/';
  // Health endpoints answer at the root and under the context path (a path-routing proxy forwards the latter).
  const path = ctx && full.startsWith(`${ctx}/`) ? full.slice(ctx.length) : full;
  // Every answer of the gateway, whatever branch writes it: no content sniffing.
  res.setHeader('x-content-type-options', 'nosniff');
  const json = (status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  if (path === '/healthz') json(200, { ok: true });
  else if ((!ctx || full.startsWith(`${ctx}/`)) && path.startsWith('/j/')) {
    // A join code is fetched exactly once; a used, expired, malformed or unknown one (or a request
    // with a query string, or not a GET) answers the same 404, so a probe learns nothing.
    const payload = req.method === 'GET' && !(req.url ?? '').includes('?') ? deps.redeemJoinCode(path.slice(3)) : null;
    if (payload) deps.log.info('join code redeemed', { address: req.socket.remoteAddress ?? null });
    json(payload ? 200 : 404, payload ?? { error: 'not_found' });
  } else if (path === '/readyz') {
    deps.readiness().then(
      (r) => json(r.ready ? 200 : 503, r),
      (err) => {
        deps.log.error('readiness check crashed', { err: String(err) });
        json(503, { ready: false, failing: ['internal'], checks: {} });
      },
    );
  } else if (path === '/metrics' && deps.metrics) {
    const m = deps.metrics;
    const who = m.allowed(req);
    if (!who.ok) json(who.status, { error: { type: who.type, message: who.message } });
    else if (!m.permits(who)) {
      json(403, { error: { type: 'metrics_forbidden', message: 'metrics are served to loopback clients and gateway.metrics.allowFrom only' } });
    } else {
      m.render().then(
        ({ contentType, body }) => {
          res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        },
        (err) => {
          deps.log.error('metrics exposition failed', { err: String(err) });
          json(500, { error: { type: 'internal', message: 'metrics exposition failed' } });
        },
      );
    }
  } else if (ctx && full === ctx) {
    // The UI's asset URLs are relative to its page: `/clawgate` must become `/clawgate/`.
    res.writeHead(308, { location: `${ctx}/`, 'content-length': 0 });
    res.end();
  } else if ((!ctx || full.startsWith(`${ctx}/`)) && serveControlUi(ui(), path, req, res)) return;
  // The path is not echoed: an answer never reflects what the client sent.
  else json(404, { error: { type: 'not_found', message: 'no such path on this gateway' } });
}

/**
 * The wheel holding every socket's handshake deadline and keep-alive ping (one timer for all of
 * them): a tick of 1/64 of the shorter period, so a deadline fires at most ~1.5 % late.
 */
function socketWheel(gateway: Gateway): TimerWheel {
  const shortest = Math.min(gateway.config.handshakeTimeoutMs, gateway.config.pingIntervalMs ?? PING_INTERVAL_MS);
  return new TimerWheel(Math.max(5, Math.floor(shortest / 64)));
}
