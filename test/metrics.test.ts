/**
 * Operator-facing signals over real sockets and the real SQLite store: the Prometheus `/metrics`
 * endpoint (scraped over HTTP after real connects, pairing, revocation and a webhook delivery),
 * who may scrape it, `/readyz` while the store is away, ids on every log line, and the
 * retention prune on its schedule.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { startGateway } from '../src/app.js';
import { resolveGatewaySettings } from '../src/cli/gateway-config.js';
import { type ConnectOptions, connectGateway, type DeviceIdentity, generateIdentity } from '../src/client/connection.js';
import { DEFAULTS, type GatewayConfig } from '../src/core/config.js';
import type { Clock } from '../src/core/env.js';
import type { Logger } from '../src/core/logger.js';
import { readGatewayKeyFingerprint } from '../src/server/gateway-key.js';
import type { RunningServer } from '../src/server/server.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import type { Store } from '../src/store/types.js';
import { asOwner, expectRefused, removeDir, runClawgate, startTestGateway, TEST_OWNER, TEST_TOKEN } from './helpers/gateway.js';
import { freePort } from './helpers/net.js';
import { startPgCluster } from './helpers/pg-cluster.js';
import { connectAsNode, type Frame, RawClient } from './helpers/raw.js';
import { WebhookTarget } from './helpers/webhook.js';

const REMOTE = { 'x-forwarded-for': '198.51.100.23' };

interface Line {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
  text: string;
}

/** A logger that keeps every line as the JSON logger would write it. */
function captureLogger(): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const write = (level: string, msg: string, fields: Record<string, unknown> = {}) =>
    lines.push({ level, msg, fields, text: JSON.stringify({ level, msg, ...fields }) });
  return { log: { info: (m, f) => write('info', m, f), warn: (m, f) => write('warn', m, f), error: (m, f) => write('error', m, f) }, lines };
}

/** The real SQLite store behind a switch: while `away`, every call fails as a lost database would. */
function switchableStore(inner: Store): { store: Store; setAway(away: boolean): void } {
  let away = false;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'close') return value;
      return (...args: unknown[]) => {
        if (away) return Promise.reject(Object.assign(new Error('database is unreachable: secret-bearing driver text'), { code: 'ECONNREFUSED' }));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, setAway: (a) => (away = a) };
}

async function http(url: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; type: string | null }> {
  const res = await fetch(url, { headers });
  return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
}

/** The value of one series in a Prometheus text exposition (null when absent). */
function series(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const pair of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(pair[1] as string, pair[2] as string);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[4]);
  }
  return null;
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, deadlineMs = 10_000): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function httpBase(server: RunningServer): string {
  return server.url.replace(/^ws/, 'http');
}

describe('Prometheus /metrics on a real gateway', () => {
  let server: RunningServer;
  let stateDir: string;
  let base: string;
  let target: WebhookTarget;
  let storeSwitch: ReturnType<typeof switchableStore>;
  const captured = captureLogger();
  const secrets: string[] = [TEST_TOKEN, TEST_OWNER];

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'clawgate-metrics-'));
    target = await WebhookTarget.start();
    storeSwitch = switchableStore(new SqliteStore(join(stateDir, 'clawgate.sqlite')));
    const config: GatewayConfig = {
      ...DEFAULTS,
      port: 0,
      stateDir,
      token: TEST_TOKEN,
      ownerCredential: TEST_OWNER,
      trustedProxies: ['127.0.0.1'],
      rateLimit: { ...DEFAULTS.rateLimit, maxFailures: 2 },
      metrics: { enabled: true },
      automations: { channels: [{ name: 'ops', url: target.url }] },
    };
    ({ server } = await startGateway({ config, store: storeSwitch.store, log: captured.log, host: '127.0.0.1' }));
    base = httpBase(server);
  });
  after(async () => {
    await server.close();
    await target.close();
    removeDir(stateDir);
  });

  const url = () => server.url;
  const operator = (identity: DeviceIdentity, extra: Partial<ConnectOptions> = {}) =>
    connectGateway({
      url: url(),
      identity,
      client: { id: 'test', mode: 'test' },
      auth: { token: TEST_TOKEN },
      headers: REMOTE,
      scopes: ['operator.read'],
      ...extra,
    });
  const ownerConn = () =>
    connectGateway({ url: url(), owner: TEST_OWNER, gatewayKey: readGatewayKeyFingerprint(stateDir), client: { id: 'cli', mode: 'cli' } });

  test('connects, pairing, approval, revocation, lockouts and a webhook delivery show in the scrape', async () => {
    // A good connect (owner) and a bad token, twice: the second runs out the budget of 2.
    const o = await ownerConn();
    await expectRefused(
      connectGateway({ url: url(), auth: { token: 'cgs_wrong' }, client: { id: 'test', mode: 'test' }, headers: REMOTE }),
      'AUTH_TOKEN_MISMATCH',
    );
    await expectRefused(
      connectGateway({ url: url(), auth: { token: 'cgs_wrong' }, client: { id: 'test', mode: 'test' }, headers: REMOTE }),
      'AUTH_TOKEN_MISMATCH',
    );

    // A remote device: refused pending approval, approved by the owner, admitted, then revoked.
    const id = generateIdentity();
    const refused = await expectRefused(operator(id, { headers: { 'x-forwarded-for': '198.51.100.24' } }), 'PAIRING_REQUIRED');
    const requestId = (refused.error?.details as { requestId?: string } | undefined)?.requestId ?? assert.fail('no requestId');
    let scrape = (await http(`${base}/metrics`)).text;
    assert.equal(series(scrape, 'clawgate_pairing_requests_pending'), 1);
    await o.request('device.pair.approve', { requestId });
    const device = await operator(id, { headers: { 'x-forwarded-for': '198.51.100.24' } });
    if (device.hello.auth.deviceToken) secrets.push(device.hello.auth.deviceToken);
    scrape = (await http(`${base}/metrics`)).text;
    assert.equal(series(scrape, 'clawgate_sessions_active', { role: 'operator' }), 2, 'owner + device');
    assert.equal(series(scrape, 'clawgate_pairing_requests_pending'), 0);
    await o.request('device.token.revoke', { deviceId: id.deviceId, role: 'operator' });
    await device.closed;

    // A webhook delivery to a local HTTP server.
    await o.request('send', { channel: 'ops', content: 'hello from the metrics test' });
    await target.waitFor(1);
    scrape = await until('the delivery to be counted', async () => {
      const t = (await http(`${base}/metrics`)).text;
      return series(t, 'clawgate_webhook_deliveries_total', { outcome: 'delivered' }) === 1 ? t : null;
    });
    await o.close();

    const r = await http(`${base}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.type ?? '', /^text\/plain; version=0\.0\.4/);
    scrape = r.text;
    assert.equal(series(scrape, 'clawgate_connects_total', { outcome: 'ok', auth_method: 'owner' }), 1);
    assert.equal(series(scrape, 'clawgate_connects_total', { outcome: 'AUTH_TOKEN_MISMATCH', auth_method: 'token' }), 2);
    assert.equal(series(scrape, 'clawgate_connects_total', { outcome: 'PAIRING_REQUIRED', auth_method: 'token' }), 1);
    assert.equal(series(scrape, 'clawgate_connects_total', { outcome: 'ok', auth_method: 'token' }), 1, 'the approved device');
    assert.equal(series(scrape, 'clawgate_auth_lockouts_total', { kind: 'shared' }), 1);
    assert.equal(series(scrape, 'clawgate_pairing_approval_latency_seconds_count'), 1);
    assert.equal(series(scrape, 'clawgate_revocation_close_latency_seconds_count', { reason: 'TOKEN_REVOKED' }), 1);
    assert.equal(series(scrape, 'clawgate_webhook_queue_depth'), 0);
    assert.equal(series(scrape, 'clawgate_sessions_active', { role: 'operator' }), 0);
    assert.ok((series(scrape, 'clawgate_store_operation_duration_seconds_count', { operation: 'approve' }) ?? 0) >= 1);
    assert.equal(series(scrape, 'clawgate_store_errors_total', { operation: 'approve' }), null, 'no store error yet');
    // Every series this gateway exports carries the prefix.
    const names = scrape
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split(/[{ ]/)[0]);
    assert.ok(names.length > 0 && names.every((n) => n?.startsWith('clawgate_')), 'clawgate_ prefix');
  });

  test('a client that is not on loopback is refused, through a trusted proxy too', async () => {
    const far = await http(`${base}/metrics`, { 'x-forwarded-for': '203.0.113.9' });
    assert.equal(far.status, 403);
    assert.equal((JSON.parse(far.text) as { error: { type: string } }).error.type, 'metrics_forbidden');
    assert.doesNotMatch(far.text, /clawgate_/);
    // A loopback client behind the proxy is not "direct": refused as well.
    assert.equal((await http(`${base}/metrics`, { 'x-forwarded-for': '127.0.0.1' })).status, 403);
  });

  test('/readyz names the store while it is away and is ready again when it returns', async () => {
    const ok = await http(`${base}/readyz`);
    assert.equal(ok.status, 200);
    assert.deepEqual(JSON.parse(ok.text), { ready: true, failing: [], checks: { listening: { ok: true }, store: { ok: true } } });
    storeSwitch.setAway(true);
    try {
      const down = await http(`${base}/readyz`);
      assert.equal(down.status, 503);
      const body = JSON.parse(down.text) as { ready: boolean; failing: string[]; checks: Record<string, { ok: boolean; error?: string }> };
      assert.equal(body.ready, false);
      assert.deepEqual(body.failing, ['store']);
      assert.equal(body.checks.store?.ok, false);
      assert.equal(body.checks.store?.error, 'store call failed (ECONNREFUSED)');
      assert.doesNotMatch(down.text, /secret-bearing/, 'the driver message is not echoed');
      const scrape = (await http(`${base}/metrics`)).text;
      assert.ok((series(scrape, 'clawgate_store_errors_total', { operation: 'getMeta' }) ?? 0) >= 1);
    } finally {
      storeSwitch.setAway(false);
    }
    assert.equal((await http(`${base}/readyz`)).status, 200);
  });

  test('log lines carry the connection id and the request id, and no secret', async () => {
    const o = await ownerConn();
    const connId = o.hello.server.connId;
    await o.request('send', { channel: 'ops', content: 'second', idempotencyKey: 'log-ids-1' });
    await o.close();
    const opened = captured.lines.find((l) => l.msg === 'session opened' && l.fields.connId === connId);
    assert.ok(opened, 'session opened line with the hello-ok connId');
    assert.equal(opened.fields.authMethod, 'owner');
    const queued = captured.lines.find((l) => l.msg === 'channel send queued' && l.fields.connId === connId);
    assert.ok(queued, 'method line carries the connection id');
    assert.equal(typeof queued.fields.requestId, 'string');
    assert.ok((queued.fields.requestId as string).length > 0);
    await until('the session closed line', async () => captured.lines.find((l) => l.msg === 'session closed' && l.fields.connId === connId));
    // Connect refusals and revocation closes name their connection as well.
    const refusals = captured.lines.filter((l) => l.msg === 'connect refused');
    assert.ok(refusals.length >= 3 && refusals.every((l) => typeof l.fields.connId === 'string'));
    const revoked = captured.lines.find((l) => l.msg === 'session closed: authority gone');
    assert.ok(revoked && typeof revoked.fields.connId === 'string');
    for (const l of captured.lines) for (const s of secrets) assert.ok(!l.text.includes(s), `secret in log line: ${l.msg}`);
  });
});

describe('/metrics is off by default', () => {
  test('404 without gateway.metrics.enabled; --metrics and the config file turn it on', async () => {
    const tg = await startTestGateway();
    try {
      const r = await http(`${httpBase(tg.server)}/metrics`);
      assert.equal(r.status, 404);
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-metrics-cfg-'));
    try {
      assert.equal(resolveGatewaySettings({ 'state-dir': dir }, {}).base.metrics?.enabled, false);
      assert.equal(resolveGatewaySettings({ 'state-dir': dir, metrics: true }, {}).base.metrics?.enabled, true);
      const file = join(dir, 'config.json');
      writeFileSync(
        file,
        JSON.stringify({
          gateway: { metrics: { enabled: true, allowFrom: ['10.0.0.0/8'] }, retention: { cronRunsDays: 7, signInLinksDays: 0, intervalMinutes: 5 } },
        }),
      );
      const s = resolveGatewaySettings({ 'state-dir': dir, config: file }, {});
      assert.deepEqual(s.base.metrics, { enabled: true, allowFrom: ['10.0.0.0/8'] });
      assert.deepEqual(s.base.retention, { cronRunsMs: 7 * 24 * 3600_000, signInLinksMs: 0, intervalMs: 5 * 60_000 });
      // The flag survives into a systemd unit.
      const unit = await runClawgate(['gateway', 'install-service', '--print', '--metrics', '--state-dir', dir]);
      assert.equal(unit.code, 0, unit.stderr);
      assert.match(unit.stdout, /^ExecStart=.* "?--metrics"?$/m);
      writeFileSync(file, JSON.stringify({ gateway: { retention: { cronRunsDays: -1 } } }));
      assert.throws(() => resolveGatewaySettings({ 'state-dir': dir, config: file }, {}), /retention\.cronRunsDays/);
      writeFileSync(file, JSON.stringify({ gateway: { metrics: { allowFrom: ['not an address'] } } }));
      assert.throws(() => resolveGatewaySettings({ 'state-dir': dir, config: file }, {}), /metrics\.allowFrom/);
    } finally {
      removeDir(dir);
    }
  });

  test('gateway.metrics.allowFrom admits a named network behind a trusted proxy', async () => {
    const tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'], metrics: { enabled: true, allowFrom: ['203.0.113.0/24'] } } });
    try {
      const base = httpBase(tg.server);
      assert.equal((await http(`${base}/metrics`, { 'x-forwarded-for': '203.0.113.9' })).status, 200);
      assert.equal((await http(`${base}/metrics`, { 'x-forwarded-for': '198.51.100.1' })).status, 403);
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('clawgate gateway run --metrics (real process, real JSON logger)', () => {
  test('serves /metrics, and its stderr log lines carry connection and request ids but no secret', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-metrics-cli-'));
    const port = await freePort();
    const env = { CLAWGATE_STATE_DIR: stateDir, CLAWGATE_PORT: String(port) };
    const child = spawn(process.execPath, [join(process.cwd(), 'bin', 'clawgate.js'), 'gateway', 'run', '--metrics'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise((resolve) => child.on('exit', resolve));
    try {
      await until('the startup banner', async () => out.includes('listening on'));
      const called = await runClawgate(['call', 'health', '--json'], env);
      assert.equal(called.code, 0, called.stderr);
      const scrape = await http(`http://127.0.0.1:${port}/metrics`);
      assert.equal(scrape.status, 200);
      assert.equal(series(scrape.text, 'clawgate_connects_total', { outcome: 'ok', auth_method: 'owner' }), 1);
      const lines = await until('the session closed line', async () => {
        const parsed = err
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        return parsed.some((l) => l.msg === 'session closed') ? parsed : null;
      });
      const opened = lines.find((l) => l.msg === 'session opened');
      assert.ok(opened && typeof opened.connId === 'string', 'session opened carries connId');
      assert.ok(lines.some((l) => l.msg === 'session closed' && l.connId === opened.connId));
      const creds = JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')) as { token: string; owner: string };
      assert.ok(!err.includes(creds.token) && !err.includes(creds.owner), 'no credential in the log');
    } finally {
      child.kill('SIGTERM');
      await exited;
      removeDir(stateDir);
    }
  });
});

describe('node.invoke metrics', () => {
  test('an invoke through a real node socket is timed by outcome', async () => {
    const tg = await startTestGateway({ config: { metrics: { enabled: true } } });
    const node = await RawClient.open(tg.url);
    try {
      const id = generateIdentity();
      const res = await connectAsNode(node, id, { auth: { token: TEST_TOKEN }, caps: ['system'], commands: ['system.which'] });
      assert.equal(res?.ok, true);
      node.ws.on('message', (data) => {
        const f = JSON.parse(data.toString()) as Frame;
        if (f.type !== 'event' || f.event !== 'node.invoke.request') return;
        const req = f.payload as { id: string; nodeId: string };
        node.send({ type: 'req', id: `r-${req.id}`, method: 'node.invoke.result', params: { id: req.id, nodeId: req.nodeId, ok: true, payloadJSON: '"sh"' } });
      });
      const o = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
      const pending = await o.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {});
      const req = pending.pending.find((p) => p.nodeId === id.deviceId);
      assert.ok(req, 'surface request listed');
      await o.request('node.pair.approve', { requestId: req.requestId });
      await o.request('node.invoke', { nodeId: id.deviceId, command: 'system.which', params: {} });
      await assert.rejects(o.request('node.invoke', { nodeId: id.deviceId, command: 'camera.snap' }));
      await o.close();
      const scrape = (await http(`${httpBase(tg.server)}/metrics`)).text;
      assert.equal(series(scrape, 'clawgate_node_invoke_duration_seconds_count', { outcome: 'ok' }), 1);
      assert.equal(series(scrape, 'clawgate_node_invoke_duration_seconds_count', { outcome: 'NODE_COMMAND_NOT_DECLARED' }), 1);
      assert.equal(series(scrape, 'clawgate_sessions_active', { role: 'node' }), 1);
    } finally {
      await node.close();
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('retention on the gateway schedule', () => {
  test('the periodic prune deletes delivered webhooks past retention and keeps the audit log', async () => {
    let nowMs = Date.now();
    const clock: Clock = { now: () => nowMs };
    const target = await WebhookTarget.start();
    const tg = await startTestGateway({
      clock,
      config: {
        metrics: { enabled: true },
        automations: { channels: [{ name: 'ops', url: target.url }] },
        retention: { deliveredWebhooksMs: 24 * 3600_000, intervalMs: 50 },
      },
    });
    try {
      const o = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
      await o.request('send', { channel: 'ops', content: 'to be pruned' });
      await o.close();
      await target.waitFor(1);
      await until('the delivery to be recorded', async () => (await tg.store.listDeliveries({ status: 'delivered' })).length === 1);
      const auditBefore = (await tg.store.listAudit({ limit: 10_000 })).length;
      // Still within retention: the scheduled prune keeps it.
      await until('a prune pass', async () => (await tg.gateway.pruneRetained()) !== null);
      assert.equal((await tg.store.listDeliveries({ status: 'delivered' })).length, 1);
      nowMs += 2 * 24 * 3600_000;
      await until('the scheduled prune', async () => (await tg.store.listDeliveries({ status: 'delivered' })).length === 0);
      assert.ok((await tg.store.listAudit({ limit: 10_000 })).length >= auditBefore, 'audit never pruned');
      const scrape = (await http(`${httpBase(tg.server)}/metrics`)).text;
      assert.equal(series(scrape, 'clawgate_retention_pruned_total', { kind: 'deliveries' }), 1);
    } finally {
      await tg.stop();
      await target.close();
      removeDir(tg.stateDir);
    }
  });
});

describe('/readyz with PostgreSQL (a real outage: the database refuses connections)', () => {
  test('503 naming the store while the database is unreachable, 200 once it is back', async () => {
    const pgCluster = await startPgCluster();
    const dbUrl = await pgCluster.createDatabase();
    const dbName = new URL(dbUrl).pathname.slice(1);
    const admin = new pg.Client({ connectionString: pgCluster.adminUrl });
    await admin.connect();
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-metrics-pg-'));
    const store = await PostgresStore.open(dbUrl);
    const config: GatewayConfig = { ...DEFAULTS, port: 0, stateDir, token: TEST_TOKEN, ownerCredential: TEST_OWNER };
    const { server } = await startGateway({ config, store, host: '127.0.0.1' });
    const readyz = async () => {
      const r = await http(`${httpBase(server)}/readyz`);
      return { status: r.status, body: JSON.parse(r.text) as { failing: string[]; checks: Record<string, { ok: boolean; error?: string }> } };
    };
    try {
      assert.equal((await readyz()).status, 200);
      // No new connection is allowed to the database and the open ones are cut: the store is away.
      await admin.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS false`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [dbName]);
      const down = await until('readyz to report the store', async () => {
        const r = await readyz();
        return r.status === 503 ? r : null;
      });
      assert.deepEqual(down.body.failing, ['store']);
      assert.equal(down.body.checks.store?.ok, false);
      assert.match(down.body.checks.store?.error ?? '', /^store (call failed|did not answer)/);
      assert.equal(down.body.checks.listening?.ok, true);
      assert.equal((await http(`${httpBase(server)}/healthz`)).status, 200, 'alive while not ready');
      await admin.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`);
      await until('readyz to recover', async () => (await readyz()).status === 200);
    } finally {
      await admin.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`).catch(() => {});
      await admin.end();
      await server.close();
      await pgCluster.stop();
      removeDir(stateDir);
    }
  });
});
