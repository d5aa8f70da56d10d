/**
 * `clawgate gateway run` as a user runs it: a real process, zero config, signals.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { type ConnectError, connectGateway, GatewayRequestError, generateIdentity } from '../src/client/connection.js';
import { readGatewayKeyFingerprint } from '../src/server/gateway-key.js';
import { removeDir } from './helpers/gateway.js';
import { onFreePort } from './helpers/net.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');

/** An empty state dir of this test's own (never the shared temp dir itself), removed afterwards. */
function scratchStateDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-cli-'));
  t.after(() => removeDir(dir));
  return dir;
}

test('zero-config start: SQLite in the state dir, generated secrets (0600), URL printed; SIGTERM shuts down cleanly; restart keeps the secrets', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-cli-'));
  const procs: Array<Pick<GatewayProcess, 'kill'>> = [];
  try {
    // Port 0 keeps parallel test files from racing for one port; the banner says which it got.
    const env = { CLAWGATE_STATE_DIR: stateDir, CLAWGATE_PORT: '0' };
    const gw = await spawnGateway([], { env, onSpawn: (p) => procs.push(p) });
    const port = gw.port;
    assert.match(gw.out(), /ws:\/\/127\.0\.0\.1:\d+/);
    assert.match(gw.out(), /generated a gateway token and an owner credential/);
    const credsPath = join(stateDir, 'credentials.json');
    assert.equal(statSync(credsPath).mode & 0o777, 0o600);
    assert.equal(statSync(join(stateDir, 'clawgate.sqlite')).mode & 0o777, 0o600);
    assert.equal(statSync(stateDir).mode & 0o777, 0o700);
    const creds = JSON.parse(readFileSync(credsPath, 'utf8')) as { token: string; owner: string };

    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);

    // The local CLI works with the owner credential, no flags.
    const call = spawnSync(process.execPath, [BIN, 'call', 'health', '--json'], { env: { ...process.env, CLAWGATE_STATE_DIR: stateDir }, encoding: 'utf8' });
    assert.equal(call.status, 0, call.stderr);
    assert.equal(JSON.parse(call.stdout).ok, true);
    const tokenOut = spawnSync(process.execPath, [BIN, 'gateway', 'token'], { env: { ...process.env, CLAWGATE_STATE_DIR: stateDir }, encoding: 'utf8' });
    assert.equal(tokenOut.stdout.trim(), creds.token);

    const client = await connectGateway({
      url: `ws://127.0.0.1:${port}`,
      auth: { token: creds.token },
      client: { id: 'cli', mode: 'cli' },
      scopes: ['operator.read'],
    });
    const shutdown = client.waitForEvent<{ reason: string }>('shutdown');
    gw.child.kill('SIGTERM');
    assert.equal((await shutdown).reason, 'gateway stopping');
    const closed = await client.closed;
    assert.equal(closed.code, 1012);
    assert.equal(closed.reason, 'service restart');
    assert.equal(await gw.exited, 0);
    assert.match(gw.err(), /gateway stopped cleanly/);
    // A clean stop forgets the recorded address: a stale one would point the CLI at whoever takes the port next.
    assert.equal(existsSync(join(stateDir, 'gateway.json')), false, 'gateway.json removed on a clean stop');
    // The store was closed: the WAL was folded back into the database file.
    const wal = join(stateDir, 'clawgate.sqlite-wal');
    assert.ok(!existsSync(wal) || statSync(wal).size === 0, 'WAL checkpointed on shutdown');

    const again = await spawnGateway([], { env, onSpawn: (p) => procs.push(p) });
    assert.match(again.out(), /using the credentials/);
    const after = JSON.parse(readFileSync(credsPath, 'utf8')) as { token: string; owner: string };
    assert.deepEqual(after, { ...creds, ...after });
    assert.equal(after.token, creds.token);
    assert.equal(after.owner, creds.owner);
    // The owner credential is proven to the gateway key of the state dir, never sent.
    const c2 = await connectGateway({
      url: again.url,
      owner: creds.owner,
      gatewayKey: readGatewayKeyFingerprint(stateDir),
      client: { id: 'cli', mode: 'cli' },
    });
    assert.ok(c2.hello.auth.scopes.includes('operator.admin'));
    await c2.close();
    again.child.kill('SIGINT');
    assert.equal(await again.exited, 0);
  } finally {
    await Promise.all(procs.map((p) => p.kill()));
    removeDir(stateDir);
  }
});

test('a non-loopback bind without chosen authentication is refused with a clear message', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-cli-'));
  try {
    // Refused before it binds anything, so port 0 is as good as any.
    const r = spawnSync(process.execPath, [BIN, 'gateway', 'run', '--bind', 'lan', '--port', '0'], {
      env: { ...process.env, CLAWGATE_STATE_DIR: stateDir },
      encoding: 'utf8',
      timeout: 10_000,
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /refusing to listen on lan .*without authentication/);
    assert.match(r.stderr, /--token/);
  } finally {
    removeDir(stateDir);
  }
});

test('every command that talks to a gateway takes --tls-fingerprint (and checks it before connecting)', (t) => {
  const stateDir = scratchStateDir(t);
  for (const cmd of [
    ['devices', 'list'],
    ['audit'],
    ['nodes', 'list'],
    ['cron', 'list'],
    ['channels', 'list'],
    ['sessions', 'list'],
    ['chat', 'history', 'main'],
  ]) {
    const r = spawnSync(process.execPath, [BIN, ...cmd, '--tls-fingerprint', 'abc'], {
      encoding: 'utf8',
      env: { ...process.env, CLAWGATE_STATE_DIR: stateDir },
    });
    assert.equal(r.status, 2, `${cmd.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /--tls-fingerprint must be a SHA-256 fingerprint/, cmd.join(' '));
  }
});

test('a --params that is not JSON is a usage error for nodes invoke and cron add', (t) => {
  const stateDir = scratchStateDir(t);
  for (const cmd of [
    ['nodes', 'invoke', '--node', 'n1', '--command', 'system.which'],
    ['cron', 'add', '--name', 'j', '--every', '1m', '--node', 'n1', '--command', 'system.which'],
  ]) {
    const r = spawnSync(process.execPath, [BIN, ...cmd, '--params', '{'], { encoding: 'utf8', env: { ...process.env, CLAWGATE_STATE_DIR: stateDir } });
    assert.equal(r.status, 2, `${cmd.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /--params is not valid JSON/, cmd.join(' '));
  }
});

test('postgres.waiterReconcileMs outside a whole number of milliseconds from 100 to a day is a usage error', (t) => {
  const stateDir = scratchStateDir(t);
  for (const value of [5, 1.5, '1000', 86_400_001]) {
    const config = join(stateDir, 'config.json');
    writeFileSync(config, JSON.stringify({ gateway: { postgres: { waiterReconcileMs: value } } }));
    const r = spawnSync(process.execPath, [BIN, 'gateway', 'run', '--port', '0', '--config', config], {
      encoding: 'utf8',
      env: { ...process.env, CLAWGATE_STATE_DIR: stateDir },
      // A gateway that accepted the value would run until stopped: the deadline ends it.
      timeout: 15_000,
    });
    assert.equal(r.status, 2, `${JSON.stringify(value)}: ${r.stderr}`);
    assert.match(r.stderr, /gateway\.postgres\.waiterReconcileMs must be a whole number of milliseconds from 100 to 86400000/);
  }
});

test('usage errors exit 2 and say what to do; a port in use is explained', async (t) => {
  const bad = spawnSync(process.execPath, [BIN, 'gateway', 'run', '--port', 'abc'], {
    encoding: 'utf8',
    env: { ...process.env, CLAWGATE_STATE_DIR: scratchStateDir(t) },
  });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--port must be a whole number/);
  const unknown = spawnSync(process.execPath, [BIN, 'frobnicate'], { encoding: 'utf8' });
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown command/);
  const help = spawnSync(process.execPath, [BIN, 'help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /clawgate gateway run/);

  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const port = (blocker.address() as { port: number }).port;
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-cli-'));
  try {
    const busy = spawnSync(process.execPath, [BIN, 'gateway', 'run', '--port', String(port)], {
      encoding: 'utf8',
      env: { ...process.env, CLAWGATE_STATE_DIR: stateDir },
      timeout: 10_000,
    });
    assert.equal(busy.status, 1);
    assert.match(busy.stderr, /already in use/);
  } finally {
    blocker.close();
    removeDir(stateDir);
  }
});

test('--config file: port, token, autoApproveLocal and trustedProxies take effect; a broken file is a usage error', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-cli-'));
  const configPath = join(stateDir, 'config.json');
  const procs: Array<Pick<GatewayProcess, 'kill'>> = [];
  try {
    // The port under test comes from the file, so it is chosen up front (and chosen again if
    // another process took it first).
    const gw = await onFreePort(
      (port) => {
        writeFileSync(
          configPath,
          JSON.stringify({ gateway: { port, auth: { token: 'cgs_from-config-file' }, autoApproveLocal: false, trustedProxies: ['127.0.0.1'] } }),
        );
        return spawnGateway(['--config', configPath], { env: { CLAWGATE_STATE_DIR: stateDir }, portFromConfig: true, onSpawn: (p) => procs.push(p) });
      },
      (err) => /already in use/.test(String(err)),
    );
    const port = JSON.parse(readFileSync(configPath, 'utf8')).gateway.port as number;
    assert.equal(gw.port, port);
    const url = `ws://127.0.0.1:${port}`;
    // The configured token works; with autoApproveLocal off even a local device waits for approval.
    await assert.rejects(
      connectGateway({
        url,
        identity: generateIdentity(),
        client: { id: 'test', mode: 'test' },
        auth: { token: 'cgs_from-config-file' },
        scopes: ['operator.read'],
      }),
      (err: ConnectError) => err.detailCode === 'PAIRING_REQUIRED',
    );
    // trustedProxies: a forwarded header from 127.0.0.1 is believed instead of refused with 403.
    const viaProxy = await connectGateway({
      url,
      client: { id: 'cli', mode: 'cli' },
      auth: { token: 'cgs_from-config-file' },
      headers: { 'x-forwarded-for': '198.51.100.77' },
    });
    const presence = await viaProxy.request<Array<{ address: string }>>('system-presence').catch((e: Error) => e);
    // Device-less and not local: its self-declared scopes were cleared, so even presence is refused.
    assert.ok(presence instanceof GatewayRequestError && presence.detailCode === 'MISSING_SCOPE');
    await viaProxy.close();
    gw.child.kill('SIGTERM');
    assert.equal(await gw.exited, 0);

    writeFileSync(configPath, '{ not json');
    const broken = spawnSync(process.execPath, [BIN, 'gateway', 'run', '--config', configPath], {
      env: { ...process.env, CLAWGATE_STATE_DIR: stateDir },
      encoding: 'utf8',
      timeout: 10_000,
    });
    assert.equal(broken.status, 2);
    assert.match(broken.stderr, /is not valid JSON/);
  } finally {
    await Promise.all(procs.map((p) => p.kill()));
    removeDir(stateDir);
  }
});

test('gateway token prints the token the running gateway accepts: the --token-file one, not the generated one; from the environment it says so', async (t) => {
  const stateDir = scratchStateDir(t);
  const tokenFile = join(stateDir, 'chosen-token');
  writeFileSync(tokenFile, 'cgs_chosen-token-from-a-file\n', { mode: 0o600 });
  const procs: Array<Pick<GatewayProcess, 'kill'>> = [];
  t.after(() => Promise.all(procs.map((p) => p.kill())));
  const env = { ...process.env, CLAWGATE_STATE_DIR: stateDir, CLAWGATE_GATEWAY_TOKEN: '' };
  const gw = await spawnGateway(['--token-file', tokenFile], { env: { CLAWGATE_STATE_DIR: stateDir }, onSpawn: (p) => procs.push(p) });
  const printed = spawnSync(process.execPath, [BIN, 'gateway', 'token'], { env, encoding: 'utf8' });
  assert.equal(printed.status, 0, printed.stderr);
  assert.equal(printed.stdout.trim(), 'cgs_chosen-token-from-a-file');
  const generated = (JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')) as { token: string }).token;
  assert.notEqual(printed.stdout.trim(), generated);
  // What it printed is what the gateway accepts.
  const conn = await connectGateway({ url: gw.url, auth: { token: printed.stdout.trim() }, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.read'] });
  await conn.close();
  assert.equal(await gw.stop(), 0);

  const fromEnv = await spawnGateway([], {
    env: { CLAWGATE_STATE_DIR: stateDir, CLAWGATE_GATEWAY_TOKEN: 'cgs_chosen-in-the-environment' },
    onSpawn: (p) => procs.push(p),
  });
  const refused = spawnSync(process.execPath, [BIN, 'gateway', 'token'], { env, encoding: 'utf8' });
  assert.equal(refused.status, 1);
  assert.equal(refused.stdout, '', 'no token the gateway would refuse is printed');
  assert.match(refused.stderr, /accepts the token it was given in its environment \(CLAWGATE_GATEWAY_TOKEN\)/);
  assert.equal(await fromEnv.stop(), 0);
  // Stopped: the generated token is what a plain start would accept again.
  const idle = spawnSync(process.execPath, [BIN, 'gateway', 'token'], { env, encoding: 'utf8' });
  assert.equal(idle.stdout.trim(), generated);
});

test('a LAN bind records a URL this host can dial and advertises a reachable address, never 0.0.0.0; the page has an icon', async (t) => {
  const stateDir = scratchStateDir(t);
  const tokenFile = join(stateDir, 'token');
  writeFileSync(tokenFile, 'cgs_lan-test-token\n', { mode: 0o600 });
  const procs: Array<Pick<GatewayProcess, 'kill'>> = [];
  t.after(() => Promise.all(procs.map((p) => p.kill())));
  const gw = await spawnGateway(['--bind', 'lan', '--token-file', tokenFile], { env: { CLAWGATE_STATE_DIR: stateDir }, onSpawn: (p) => procs.push(p) });
  const lan = Object.values(networkInterfaces())
    .flatMap((l) => l ?? [])
    .find((a) => a.family === 'IPv4' && !a.internal)?.address;
  const local = `ws://127.0.0.1:${gw.port}`;
  const advertised = lan ? `ws://${lan}:${gw.port}` : local;
  const runtime = JSON.parse(readFileSync(join(stateDir, 'gateway.json'), 'utf8')) as { url: string; advertisedUrl?: string };
  assert.equal(runtime.url, local);
  assert.equal(runtime.advertisedUrl ?? runtime.url, advertised);
  assert.doesNotMatch(JSON.stringify(runtime), /0\.0\.0\.0/);
  // Only the "listening on" line names the wildcard it listens on; everything a user copies is dialable.
  const [, ...rest] = gw.out().split('\n');
  assert.doesNotMatch(rest.join('\n'), /0\.0\.0\.0/);
  if (lan) assert.ok(gw.out().includes(`OPENCLAW_GATEWAY_URL=${advertised}`), gw.out());

  // The local CLI reaches it through the recorded URL, and setup codes point at the advertised one.
  const env = { ...process.env, CLAWGATE_STATE_DIR: stateDir, CLAWGATE_URL: '', CLAWGATE_TOKEN: '' };
  const health = spawnSync(process.execPath, [BIN, 'call', 'health', '--json'], { env, encoding: 'utf8' });
  assert.equal(health.status, 0, health.stderr);
  const qr = spawnSync(process.execPath, [BIN, 'qr', '--json'], { env, encoding: 'utf8' });
  assert.equal(qr.status, 0, qr.stderr);
  assert.equal((JSON.parse(qr.stdout) as { gatewayUrl: string }).gatewayUrl, advertised);

  // The Control UI declares its icon, and /favicon.ico answers with it instead of a 404.
  const page = await (await fetch(`http://127.0.0.1:${gw.port}/`)).text();
  assert.match(page, /<link rel="icon" href="ui\/favicon\.svg" type="image\/svg\+xml">/);
  for (const path of ['/ui/favicon.svg', '/favicon.ico']) {
    const icon = await fetch(`http://127.0.0.1:${gw.port}${path}`);
    assert.equal(icon.status, 200, path);
    assert.equal(icon.headers.get('content-type'), 'image/svg+xml');
    assert.match(await icon.text(), /^<svg /);
  }
});
