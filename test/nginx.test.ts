/**
 * Remote access through a real nginx terminating TLS in front of clawgate. nginx routes
 * `/clawgate` to the gateway (context path), connects to it from 127.0.0.2 (`proxy_bind`), and
 * the gateway trusts exactly that address. Clients reach nginx from their own loopback addresses
 * (127.0.0.23, …), so the gateway must attribute them from X-Forwarded-For; being on this very
 * host must never make them "local". A second part gives a client a real non-loopback address
 * (a network namespace with a veth pair) and has it forge `X-Forwarded-For: 127.0.0.1`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { startGateway } from '../src/app.js';
import { type ConnectOptions, connectGateway, type DeviceIdentity, type GatewayConnection, generateIdentity, TlsPinError } from '../src/client/connection.js';
import { DEFAULTS, type GatewayConfig } from '../src/core/config.js';
import { certFacts, ensureSelfSignedCert } from '../src/server/tls.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { asOwner, cli, expectRefused, removeDir, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { NGINX_BIN, type RunningNginx, startBehindNginx } from './helpers/nginx.js';
import { readNodeCredentials } from './helpers/node-state.js';
import { openclawEnv, openclawPaths } from './helpers/openclaw.js';
import { missingFile, skipUnlessPresent } from './helpers/strict.js';
import { waitFor } from './helpers/wait.js';

const run = promisify(execFile);
const PROXY_ADDRESS = '127.0.0.2';
const CONTEXT = '/clawgate';

/** `clawgate node run` as a child process, its output lines collected for waitFor. */
class NodeRun {
  readonly lines: string[] = [];
  readonly errLines: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private waiters: Array<() => void> = [];
  constructor(args: string[]) {
    this.child = spawn(process.execPath, [join(process.cwd(), 'bin', 'clawgate.js'), 'node', 'run', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CLAWGATE_NODE_TOKEN: '' },
    });
    const collect = (into: string[]) => {
      let buf = '';
      return (c: Buffer) => {
        buf += c.toString();
        const parts = buf.split('\n');
        buf = parts.pop() ?? '';
        into.push(...parts);
        for (const w of this.waiters) w();
      };
    };
    this.child.stdout?.on('data', collect(this.lines));
    this.child.stderr?.on('data', collect(this.errLines));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }
  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }
  /** Resolve with the match of the `nth` line matching `re` (1-based). */
  waitFor(re: RegExp, nth = 1, timeoutMs = 15_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hits = this.lines.map((l) => re.exec(l)).filter((m): m is RegExpExecArray => m !== null);
        if (hits.length >= nth) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w !== check);
          resolve(hits[nth - 1] as RegExpExecArray);
        }
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(new Error(`timed out waiting for ${re}\n--- stdout\n${this.lines.join('\n')}\n--- stderr\n${this.errLines.join('\n')}`));
      }, timeoutMs);
      this.waiters.push(check);
      check();
    });
  }
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

describe('behind a real nginx terminating TLS', { skip: skipUnlessPresent(missingFile(NGINX_BIN, 'scripts/system-deps.sh')) }, () => {
  let tg: TestGateway;
  let nginx: RunningNginx;
  let nginxDir: string;
  let publicUrl: string;
  let pin: string;
  /** The operator paired with approval through nginx in the first test (used to invoke node commands). */
  let operator: { identity: DeviceIdentity; deviceToken: string } | null = null;
  const nodeProcs: NodeRun[] = [];
  const nodeDirs: string[] = [];

  before(async () => {
    nginxDir = mkdtempSync(join(tmpdir(), 'clawgate-nginx-'));
    const cert = ensureSelfSignedCert(nginxDir);
    pin = certFacts(readFileSync(cert.certPath, 'utf8')).fingerprint;
    const started = await startBehindNginx(
      (port) => startTestGateway({ config: { trustedProxies: [PROXY_ADDRESS], contextPath: CONTEXT, publicUrl: `wss://127.0.0.1:${port}${CONTEXT}` } }),
      async (g) => {
        await g.stop();
        removeDir(g.stateDir);
      },
      (port, g) => ({
        dir: nginxDir,
        port,
        certPath: cert.certPath,
        keyPath: cert.keyPath,
        upstream: `http://127.0.0.1:${g.server.port}`,
        location: CONTEXT,
        proxyBind: PROXY_ADDRESS,
      }),
      `${CONTEXT}/healthz`,
    );
    tg = started.gateway;
    nginx = started.nginx;
    publicUrl = `wss://127.0.0.1:${started.port}${CONTEXT}`;
  });
  after(async () => {
    for (const n of nodeProcs) await n.stop();
    for (const d of nodeDirs) removeDir(d);
    await nginx?.stop();
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
    removeDir(nginxDir);
  });

  /** Connect through nginx from `from` (a loopback address of our own), pinned to nginx's certificate. */
  function viaProxy(from: string, o: Partial<ConnectOptions> = {}): Promise<GatewayConnection> {
    return connectGateway({ url: publicUrl, tlsFingerprint: pin, localAddress: from, client: { id: 'test', mode: 'test', displayName: 'remote' }, ...o });
  }

  test('an operator pairs with approval through wss://: it waits, is approved from the CLI, and is admitted on the same connection', async () => {
    const identity = generateIdentity();
    const events: string[] = [];
    let requestId = '';
    const waiting = viaProxy('127.0.0.23', {
      url: publicUrl,
      identity,
      auth: { token: TEST_TOKEN },
      scopes: ['operator.read', 'operator.write'],
      caps: ['device-pairing-wait'],
      timeoutMs: 20_000,
      onEvent: (e, p) => {
        events.push(e);
        if (e === 'device.pair.waiting') requestId = (p as { requestId: string }).requestId;
      },
    });
    // The request shows up with the forwarded client address, pending (no silent local approval).
    // Waited for in the store (no CLI process per probe), then read once through the CLI.
    await waitFor(async () => (await tg.store.listPairingRequests(identity.deviceId)).length > 0, 'the pairing request', { timeoutMs: 10_000 });
    const listed = await cli(tg, 'devices', 'list', '--json');
    const pending = (JSON.parse(listed.stdout) as { pending: Array<{ requestId: string; deviceId: string; remoteIp: string }> }).pending.find(
      (p) => p.deviceId === identity.deviceId,
    );
    assert.ok(pending, 'the pairing request is pending');
    assert.equal(pending.remoteIp, '127.0.0.23', 'the gateway records the forwarded client address, not nginx');
    const approved = await cli(tg, 'devices', 'approve', pending.requestId);
    assert.equal(approved.code, 0, approved.stderr);
    const conn = await waiting;
    assert.ok(events.includes('device.pair.waiting'));
    assert.equal(requestId, pending.requestId);
    assert.equal(conn.hello.auth.role, 'operator');
    assert.deepEqual([...conn.hello.auth.scopes].sort(), ['operator.read', 'operator.write']);
    const deviceToken = conn.hello.auth.deviceToken;
    assert.ok(deviceToken, 'a device token is issued');
    // Working state: a call that needs operator.read.
    const status = await conn.request<{ ok?: boolean }>('status', {});
    assert.ok(status);
    await conn.close();

    // It comes back with its device token, still through the proxy.
    const again = await viaProxy('127.0.0.23', { url: publicUrl, identity, auth: { deviceToken }, scopes: ['operator.read'] });
    assert.equal(again.hello.auth.method, 'device-token');
    await again.close();
    operator = { identity, deviceToken };
  });

  test('silent local approval never applies through the proxy, although every client here is on loopback', async () => {
    const identity = generateIdentity();
    const refused = await expectRefused(
      viaProxy('127.0.0.1', { url: publicUrl, identity, auth: { token: TEST_TOKEN }, scopes: ['operator.read'] }),
      'PAIRING_REQUIRED',
    );
    assert.equal((refused.error?.details as { reason?: string } | undefined)?.reason, 'not-paired');
    // Control: the same kind of client directly on loopback is approved silently, so the refusal above is the proxy's doing.
    const direct = await connectGateway({
      url: tg.url,
      identity: generateIdentity(),
      auth: { token: TEST_TOKEN },
      scopes: ['operator.read'],
      client: { id: 'test', mode: 'test' },
    });
    assert.ok(direct.hello.auth.deviceToken);
    await direct.close();
  });

  test('a forged X-Forwarded-For: 127.0.0.1 sent to nginx gains nothing: nginx appends the real peer and the gateway takes the right-most untrusted', async () => {
    const identity = generateIdentity();
    const refused = await expectRefused(
      viaProxy('127.0.0.31', { url: publicUrl, identity, auth: { token: TEST_TOKEN }, scopes: ['operator.read'], headers: { 'X-Forwarded-For': '127.0.0.1' } }),
      'PAIRING_REQUIRED',
    );
    const requestId = (refused.error?.details as { requestId?: string } | undefined)?.requestId ?? '';
    const req = await tg.store.getPairingRequest(requestId);
    assert.equal(req?.address, '127.0.0.31');
  });

  test('setup codes advertise the public URL; a node pairs with one through nginx, reconnects with its token, and survives a token rotation', async () => {
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    // nginx serves a self-signed certificate here, so the code carries its fingerprint for pinning.
    const minted = await owner.request<{ setupCode: string; gatewayUrl: string }>('device.pair.setupCode', { profile: 'node', tlsFingerprint: pin });
    await owner.close();
    assert.equal(minted.gatewayUrl, publicUrl);
    const code = decodeSetupCode(minted.setupCode);
    assert.ok(code.ok);
    assert.equal(code.payload.url, publicUrl);
    assert.equal(code.payload.tlsFingerprint, pin);

    const identity: DeviceIdentity = generateIdentity();
    const node = (auth: Record<string, string>) =>
      connectGateway({
        url: code.payload.url,
        tlsFingerprint: code.payload.tlsFingerprint,
        localAddress: '127.0.0.41',
        identity,
        role: 'node',
        scopes: [],
        client: { id: 'node-host', mode: 'node', displayName: 'remote node' },
        auth,
      });
    const first = await node({ bootstrapToken: code.payload.bootstrapToken });
    assert.equal(first.hello.auth.role, 'node');
    const token1 = first.hello.auth.deviceToken;
    assert.ok(token1);
    await first.close();
    const device = await tg.store.getDevice(identity.deviceId);
    assert.ok(device);

    const second = await node({ deviceToken: token1 });
    assert.equal(second.hello.auth.role, 'node');
    await second.close();

    // Rotate from the CLI on the gateway host: the old token stops working at once, no restart.
    // The new secret is never handed to the operator who rotated it; the node receives it on its
    // next connect with the gateway token (its key already paired, so no new approval).
    const rotated = await cli(tg, 'devices', 'rotate', '--device', identity.deviceId, '--role', 'node', '--json');
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.equal((JSON.parse(rotated.stdout) as { tokenDelivery: string }).tokenDelivery, 'withheld-cross-device');
    await expectRefused(node({ deviceToken: token1 }), 'AUTH_DEVICE_TOKEN_MISMATCH');
    const renewed = await node({ token: TEST_TOKEN });
    const token2 = renewed.hello.auth.deviceToken;
    assert.ok(token2 && token2 !== token1, 'a fresh node token');
    await renewed.close();
    const third = await node({ deviceToken: token2 });
    assert.equal(third.hello.auth.role, 'node');

    // Rotated while connected through nginx: the new token reaches the node over its wss:// socket
    // (never the operator), the socket closes 4001, and the node reconnects with the pushed token.
    const live = await cli(tg, 'devices', 'rotate', '--device', identity.deviceId, '--role', 'node', '--json');
    assert.equal(live.code, 0, live.stderr);
    const liveRes = JSON.parse(live.stdout) as { tokenDelivery: string; token?: string };
    assert.deepEqual([liveRes.tokenDelivery, liveRes.token], ['pushed-live', undefined]);
    assert.equal((await third.closed).code, 4001);
    const pushed = third.events.find((e) => e.event === 'device.token.rotated')?.payload as { deviceToken: string } | undefined;
    assert.ok(pushed && pushed.deviceToken !== token2, 'the new token was pushed through the proxy');
    const fourth = await node({ deviceToken: pushed.deviceToken });
    assert.equal(fourth.hello.auth.method, 'device-token');
    await fourth.close();
    // Once the pushed token is in use, the one it replaced is dead (no rotation grace left, PROTOCOL.md §11.1).
    await expectRefused(node({ deviceToken: token2 }), 'AUTH_DEVICE_TOKEN_MISMATCH');
  });

  /** Invoke a node command as the operator paired through nginx, over wss:// with its device token. */
  async function invokeAsOperator(nodeId: string, command: string, params: unknown): Promise<{ payload: { bins: Record<string, string> } }> {
    assert.ok(operator, 'the operator pairing test ran first');
    const c = await viaProxy('127.0.0.23', {
      identity: operator.identity,
      auth: { deviceToken: operator.deviceToken },
      scopes: ['operator.read', 'operator.write'],
    });
    try {
      return await c.request('node.invoke', { nodeId, command, params, timeoutMs: 10_000 });
    } finally {
      await c.close();
    }
  }

  async function approveSurface(nodeId: string, expectAddress: string): Promise<void> {
    await waitFor(async () => (await tg.store.listNodeSurfaceRequests()).some((r) => r.deviceId === nodeId), 'a surface request', { timeoutMs: 10_000 });
    const listed = await cli(tg, 'nodes', 'pending', '--json');
    const req = (JSON.parse(listed.stdout) as { pending: Array<{ requestId: string; nodeId: string; remoteIp: string }> }).pending.find(
      (p) => p.nodeId === nodeId,
    );
    assert.ok(req, 'a surface request');
    assert.equal(req.remoteIp, expectAddress);
    const approved = await cli(tg, 'nodes', 'approve', req.requestId);
    assert.equal(approved.code, 0, approved.stderr);
  }

  test('clawgate node run --pair through nginx: pins the certificate from the code, and runs system.which invoked by the remote operator', async () => {
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const minted = await owner.request<{ setupCode: string }>('device.pair.setupCode', { profile: 'node', tlsFingerprint: pin });
    await owner.close();
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-nginx-node-'));
    nodeDirs.push(stateDir);
    const n = new NodeRun(['--pair', minted.setupCode, '--state-dir', stateDir, '--name', 'proxied-node']);
    nodeProcs.push(n);
    await n.waitFor(new RegExp(`^connected to ${publicUrl.replace(/[.[\]/]/g, '\\$&')} as node "proxied-node"`));
    const creds = readNodeCredentials(stateDir) ?? assert.fail(`no gateway record in ${stateDir}`);
    assert.equal(creds.tlsFingerprint, pin, 'the pin from the setup code is kept for every later connect');
    const nodeId = (JSON.parse(readFileSync(join(stateDir, 'identity.json'), 'utf8')) as { deviceId: string }).deviceId;
    await approveSurface(nodeId, '127.0.0.1');
    await n.waitFor(/^command surface approved/);
    const which = await invokeAsOperator(nodeId, 'system.which', { bins: ['sh', 'no-such-binary-xyz'] });
    assert.deepEqual(Object.keys(which.payload.bins), ['sh']);
    assert.match(which.payload.bins.sh as string, /\/sh$/);
    assert.equal(await n.stop(), 0);
  });

  test('a node host facing another certificate than the pinned one stops with a clear error instead of connecting', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-nginx-node-'));
    nodeDirs.push(stateDir);
    const n = new NodeRun(['--url', publicUrl, '--token', TEST_TOKEN, '--tls-fingerprint', 'cd'.repeat(32), '--state-dir', stateDir]);
    nodeProcs.push(n);
    assert.equal(await n.exited, 1);
    assert.match(
      n.errLines.join('\n'),
      /TLS certificate mismatch: the certificate at wss:\/\/127\.0\.0\.1:\d+\/clawgate is not the one this device paired with \(expected SHA-256 (cd){32}, got [0-9a-f]{64}\)[^\n]*nothing was sent/,
    );
  });

  test('a node on the gateway token through nginx: device approval (never silent), surface approval, invoke, then a token rotation it rides out without a restart', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-nginx-node-'));
    nodeDirs.push(stateDir);
    const n = new NodeRun(['--url', publicUrl, '--token', TEST_TOKEN, '--tls-fingerprint', pin, '--state-dir', stateDir, '--name', 'token-node']);
    nodeProcs.push(n);
    const [, deviceRequest] = await n.waitFor(/^waiting for approval: request (\S+) /);
    assert.equal((await cli(tg, 'devices', 'approve', deviceRequest as string)).code, 0);
    await n.waitFor(/^connected to /);
    const nodeId = (JSON.parse(readFileSync(join(stateDir, 'identity.json'), 'utf8')) as { deviceId: string }).deviceId;
    await approveSurface(nodeId, '127.0.0.1');
    await n.waitFor(/^command surface approved/);
    assert.ok((await invokeAsOperator(nodeId, 'system.which', { bins: ['sh'] })).payload.bins.sh);
    const tokenBefore = (await tg.store.listTokens(nodeId)).filter((t) => t.role === 'node' && !t.revokedAtMs).map((t) => t.tokenId);

    const connectedBefore = n.count(/^connected to /);
    const rotated = await cli(tg, 'devices', 'rotate', '--device', nodeId, '--role', 'node', '--json');
    assert.equal(rotated.code, 0, rotated.stderr);
    await n.waitFor(/^disconnected from /);
    await n.waitFor(/^connected to /, connectedBefore + 1);
    const tokenAfter = (await tg.store.listTokens(nodeId)).filter((t) => t.role === 'node' && !t.revokedAtMs).map((t) => t.tokenId);
    assert.notDeepEqual(tokenAfter, tokenBefore, 'a new node token is in force');
    assert.ok((await invokeAsOperator(nodeId, 'system.which', { bins: ['sh'] })).payload.bins.sh, 'invocations work again, no restart');
    assert.equal(await n.stop(), 0);
  });

  /**
   * The real OpenClaw node host pairing with a node setup code minted on the gateway and pinned to
   * `tlsFingerprint`. No --host/--port/--tls flags: everything (URL with the context path, pin)
   * comes from the code. Its output collects in `log`.
   */
  async function openclawNodeWithCode(tlsFingerprint: string, displayName: string) {
    const oc = openclawPaths();
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const minted = await owner.request<{ link: string; setupId: string }>('device.pair.setupCode', { profile: 'node', tlsFingerprint });
    await owner.close();
    const home = mkdtempSync(join(tmpdir(), 'clawgate-nginx-oc-'));
    nodeDirs.push(home);
    const child = spawn(oc.node, [oc.cli, 'node', 'run', '--pair', minted.link, '--display-name', displayName], {
      env: openclawEnv(home),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const host = {
      setupId: minted.setupId,
      log: '',
      async stop() {
        child.kill('SIGTERM');
        await exited;
      },
    };
    child.stdout?.on('data', (d) => (host.log += d));
    child.stderr?.on('data', (d) => (host.log += d));
    return host;
  }

  test('the real OpenClaw node host pairs through nginx with a setup code (wss://, context path, pinned certificate) and runs system.which for the remote operator', async () => {
    const before = new Set([...tg.gateway.sessions.values()].map((x) => x.deviceId));
    const host = await openclawNodeWithCode(pin, 'oc-proxied-node');
    try {
      const until = <T>(probe: () => T | undefined | Promise<T | undefined>, what: string): Promise<T> =>
        waitFor(probe, what, { timeoutMs: 60_000, intervalMs: 200, detail: () => `openclaw node host output:\n${host.log}` });
      const session = await until(
        () => [...tg.gateway.sessions.values()].find((x) => x.role === 'node' && x.client.id === 'node-host' && !before.has(x.deviceId)),
        'the openclaw node host to be admitted',
      );
      const nodeId = session.deviceId as string;
      assert.equal(session.address, '127.0.0.1', 'attributed from X-Forwarded-For, not nginx (127.0.0.2)');
      assert.equal((await tg.store.getGrant(nodeId, 'node'))?.approvedVia, 'bootstrap');
      await approveSurface(nodeId, '127.0.0.1');
      await until(
        async () => ((await tg.store.listAudit()).some((e) => e.action === 'node.surface.approved' && e.subject === nodeId) ? true : undefined),
        'the surface approval',
      );
      const which = await until(async () => {
        try {
          return await invokeAsOperator(nodeId, 'system.which', { bins: ['sh'] });
        } catch {
          return undefined; // the node host may still be re-publishing after the approval
        }
      }, 'system.which on the openclaw node host');
      assert.match(which.payload.bins.sh ?? '', /\/sh$/);
    } finally {
      await host.stop();
    }
  });

  test('the real OpenClaw node host given a code with another fingerprint refuses the proxy certificate and never reaches the gateway', async () => {
    const host = await openclawNodeWithCode('ab'.repeat(32), 'oc-wrong-pin');
    try {
      await waitFor(() => /tls fingerprint mismatch/i.test(host.log), 'the fingerprint refusal', {
        timeoutMs: 60_000,
        intervalMs: 200,
        detail: () => `openclaw node host output:\n${host.log}`,
      });
      // Its bootstrap token never reached the gateway: the code is still unredeemed and unburned.
      const code = await tg.store.getSetupCode(host.setupId);
      assert.equal(code?.redeemedAtMs ?? null, null);
      assert.equal(code?.failures ?? 0, 0);
    } finally {
      await host.stop();
    }
  });

  test('a client whose pin does not match the proxy certificate refuses to talk', async () => {
    const wrong = 'ab'.repeat(32);
    const err = await connectGateway({ url: publicUrl, tlsFingerprint: wrong, auth: { token: TEST_TOKEN } }).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TlsPinError);
    assert.equal(err.actual, pin);
  });

  test('clawgate doctor: the advertised URL reaches the gateway through nginx', async () => {
    const r = await run(
      process.execPath,
      [
        join(process.cwd(), 'bin', 'clawgate.js'),
        'doctor',
        '--json',
        '--public-url',
        publicUrl,
        '--tls-fingerprint',
        pin,
        '--trusted-proxy',
        PROXY_ADDRESS,
        '--context-path',
        CONTEXT,
      ],
      { env: { ...process.env, CLAWGATE_STATE_DIR: tg.stateDir } },
    ).then(
      (x) => ({ code: 0, stdout: x.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
    );
    const report = JSON.parse(r.stdout) as { checks: Array<{ name: string; status: string; message: string }> };
    const adv = report.checks.find((c) => c.name === 'advertised-url');
    assert.equal(adv?.status, 'ok', JSON.stringify(report));
    // nginx down (this is the last test of the suite): the same check fails.
    await nginx.stop();
    {
      const down = await run(
        process.execPath,
        [join(process.cwd(), 'bin', 'clawgate.js'), 'doctor', '--json', '--public-url', publicUrl, '--tls-fingerprint', pin],
        {
          env: { ...process.env, CLAWGATE_STATE_DIR: tg.stateDir },
        },
      ).then(
        (x) => ({ code: 0, stdout: x.stdout }),
        (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
      );
      assert.equal(down.code, 1);
      const report2 = JSON.parse(down.stdout) as { checks: Array<{ name: string; status: string; message: string }> };
      assert.equal(report2.checks.find((c) => c.name === 'advertised-url')?.status, 'fail');
    }
  });
});

/** Root and iproute2 are needed to give a client a real non-loopback address. */
function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root for a network namespace';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return 'ip netns is not available';
  }
  return null;
}

describe('a real non-loopback peer (network namespace) forging X-Forwarded-For', { skip: skipUnlessPresent(netnsUnavailable()) }, () => {
  const tag = `${process.pid % 10000}`;
  const ns = `cgt${tag}`;
  const hostIf = `cgh${tag}`;
  const nsIf = `cgn${tag}`;
  // 10.<pid-derived>.<pid-derived>.0/30: our own addresses, unlikely to clash with a parallel run.
  const b = 100 + (process.pid % 150);
  const c = Math.floor(process.pid / 150) % 250;
  const hostAddr = `10.${b}.${c}.1`;
  const nsAddr = `10.${b}.${c}.2`;
  const gateways: Array<{ close(): Promise<void> }> = [];
  const dirs: string[] = [];
  let refuseUrl = '';
  let ignoreUrl = '';
  let ignoreStore: SqliteStore;

  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

  before(async () => {
    ip('netns', 'add', ns);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    ip('addr', 'add', `${hostAddr}/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${nsAddr}/30`, 'dev', nsIf);
    ip('netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    for (const mode of ['refuse', 'ignore'] as const) {
      const dir = mkdtempSync(join(tmpdir(), `clawgate-netns-${mode}-`));
      dirs.push(dir);
      const store = new SqliteStore(join(dir, 'clawgate.sqlite'));
      const config: GatewayConfig = {
        ...DEFAULTS,
        port: 0,
        bind: hostAddr,
        stateDir: dir,
        token: TEST_TOKEN,
        ownerCredential: TEST_OWNER,
        untrustedForwarded: mode,
      };
      const { server } = await startGateway({ config, store, host: hostAddr });
      gateways.push(server);
      if (mode === 'refuse') refuseUrl = server.url;
      else {
        ignoreUrl = server.url;
        ignoreStore = store;
      }
    }
  });
  after(async () => {
    for (const g of gateways) await g.close();
    try {
      ip('netns', 'del', ns); // takes the veth pair with it
    } catch {
      // already gone
    }
    try {
      ip('link', 'del', hostIf);
    } catch {
      // deleted with the namespace
    }
    for (const d of dirs) removeDir(d);
  });

  async function fromNamespace(
    url: string,
    headers?: Record<string, string>,
  ): Promise<{ ok: boolean; detail?: string; closeCode?: number; message?: string; details?: { requestId?: string } }> {
    const script = join(process.cwd(), 'dist', 'test', 'helpers', 'netns-client.js');
    const r = await run('ip', ['netns', 'exec', ns, process.execPath, script, JSON.stringify({ url, token: TEST_TOKEN, headers })]);
    return JSON.parse(r.stdout.trim().split('\n').pop() as string);
  }

  test('the namespace really is another host: the gateway sees its 10.x address', async () => {
    const r = await fromNamespace(ignoreUrl);
    assert.equal(r.ok, false);
    assert.equal(r.detail, 'PAIRING_REQUIRED');
    const req = await ignoreStore.getPairingRequest(r.details?.requestId as string);
    assert.equal(req?.address, nsAddr);
  });

  test('default (refuse): the forged header is answered with HTTP 403 proxy_attribution_required before any pairing logic', async () => {
    const r = await fromNamespace(refuseUrl, { 'X-Forwarded-For': '127.0.0.1' });
    assert.equal(r.ok, false);
    assert.equal(r.closeCode, 403);
    assert.match(r.message ?? '', /proxy_attribution_required/);
    // The same socket without the forged header is an ordinary remote client.
    const plain = await fromNamespace(refuseUrl);
    assert.equal(plain.detail, 'PAIRING_REQUIRED');
  });

  test('ignore mode: the header is dropped, the client is attributed to its real address and stays remote', async () => {
    const r = await fromNamespace(ignoreUrl, { 'X-Forwarded-For': '127.0.0.1', Forwarded: 'for=127.0.0.1' });
    assert.equal(r.ok, false, 'no silent approval');
    assert.equal(r.detail, 'PAIRING_REQUIRED');
    const req = await ignoreStore.getPairingRequest(r.details?.requestId as string);
    assert.equal(req?.address, nsAddr);
  });
});
