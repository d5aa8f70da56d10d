/**
 * The shared gateway token/password is handed to remote devices and node hosts, so by itself it
 * must never be owner-equivalent (not even from loopback), it must never travel on a command line,
 * a wrong one must never be ignored next to a valid device token, and no secret may reach a log
 * line. Every test here runs over real sockets, a real store and real CLI processes.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { ConnectError, connectGateway, GatewayRequestError, generateIdentity } from '../../src/client/connection.js';
import type { Gateway } from '../../src/core/gateway.js';
import { readGatewayKeyFingerprint } from '../../src/server/gateway-key.js';
import { asOwner, cli, expectRefused, removeDir, runClawgate, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/net.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const READ_WRITE = ['operator.read', 'operator.write'];
const ASK_ALL = ['operator.admin', 'operator.pairing'];

async function gatewayFor(t: TestContext, config: Parameters<typeof startTestGateway>[0] = {}): Promise<TestGateway> {
  const tg = await startTestGateway(config);
  t.after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });
  return tg;
}

async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, deadlineMs = 20_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - start > deadlineMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function spawnCli(args: string[], env: Record<string, string>, stdin?: string): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (stdin !== undefined) child.stdin?.end(stdin);
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, exited };
}

function cmdlineOf(pid: number): string {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
}

/** A private file holding `secret` (mode 0600 unless told otherwise). */
function secretFile(dir: string, name: string, secret: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, `${secret}\n`, { mode });
  chmodSync(path, mode);
  return path;
}

describe('the shared secret alone is worth read and write, even from loopback', () => {
  test('a device-less cli/cli on loopback asking admin and pairing with the shared token gets only read+write', async (t) => {
    const tg = await gatewayFor(t);
    for (const client of [
      { id: 'cli', mode: 'cli' },
      { id: 'gateway-client', mode: 'backend' },
    ]) {
      const c = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, client, scopes: ASK_ALL });
      try {
        assert.deepEqual(c.hello.auth.scopes, READ_WRITE, `${client.id}/${client.mode}`);
        await assert.rejects(c.request('device.pair.list', {}), (err: unknown) => {
          assert.ok(err instanceof GatewayRequestError);
          assert.equal(err.detailCode, 'MISSING_SCOPE');
          assert.match(err.message, /grants operator\.read and operator\.write only/);
          return true;
        });
      } finally {
        await c.close();
      }
    }
  });

  test('a device with the shared token on loopback is paired silently with at most read+write; the rest is a pending upgrade the owner approves', async (t) => {
    const tg = await gatewayFor(t);
    const id = generateIdentity();
    const c = await connectGateway({ url: tg.url, identity: id, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' }, scopes: ASK_ALL });
    t.after(() => c.close());
    assert.deepEqual(c.hello.auth.scopes, READ_WRITE);
    assert.deepEqual((await tg.store.getGrant(id.deviceId, 'operator'))?.scopes, READ_WRITE);
    const pending = await tg.store.listPairingRequests(id.deviceId);
    assert.equal(pending.length, 1);
    const req = pending[0] as (typeof pending)[number];
    assert.equal(req.kind, 'scope-upgrade');
    assert.ok(req.scopes.includes('operator.admin') && req.scopes.includes('operator.pairing'));
    assert.equal(c.hello.auth.pendingRequestId, req.requestId);

    // A client that prints only the message still learns which request and which command.
    const err = await c.request('device.pair.list', {}).then(
      () => assert.fail('pairing must wait for the owner'),
      (e: unknown) => e as GatewayRequestError,
    );
    assert.equal(err.detailCode, 'MISSING_SCOPE');
    assert.ok(err.message.includes(`clawgate devices approve ${req.requestId}`), err.message);

    // The owner approves once; the live session is widened.
    const approved = await cli(tg, 'devices', 'approve', req.requestId, '--json');
    assert.equal(approved.code, 0, approved.stderr);
    await waitFor(() => (c.events.some((e) => e.event === 'auth.updated') ? true : undefined), 'auth.updated');
    const listed = await c.request<{ pending: unknown[] }>('device.pair.list', {});
    assert.ok(Array.isArray(listed.pending));
  });

  test('a new device asking for more than the shared secret is worth, from a non-local peer, is held for the owner (message names request and command)', async (t) => {
    const tg = await gatewayFor(t, { config: { trustedProxies: ['127.0.0.1'] } });
    const err = await expectRefused(
      connectGateway({
        url: tg.url,
        identity: generateIdentity(),
        auth: { token: TEST_TOKEN },
        client: { id: 'cli', mode: 'cli' },
        scopes: ASK_ALL,
        headers: { 'x-forwarded-for': '198.51.100.7' },
      }),
      'PAIRING_REQUIRED',
    );
    const requestId = (err.error?.details as { requestId?: string } | undefined)?.requestId;
    assert.ok(requestId);
    assert.ok(err.message.includes(`clawgate devices approve ${requestId}`), err.message);
  });

  test('the opt-in sharedSecretIsAdminOnHost restores admin on a direct loopback socket only, and clawgate doctor warns about it', async (t) => {
    const tg = await gatewayFor(t, { config: { sharedSecretIsAdminOnHost: true, trustedProxies: ['127.0.0.1'] } });
    const deviceless = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' }, scopes: ASK_ALL });
    assert.ok(deviceless.hello.auth.scopes.includes('operator.admin') && deviceless.hello.auth.scopes.includes('operator.pairing'));
    await deviceless.close();
    const id = generateIdentity();
    const dev = await connectGateway({ url: tg.url, identity: id, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' }, scopes: ASK_ALL });
    assert.ok(dev.hello.auth.scopes.includes('operator.admin'));
    assert.deepEqual(await tg.store.listPairingRequests(id.deviceId), []);
    await dev.close();
    // Through a proxy the same secret is a remote client's: no scopes device-less, held with a device.
    const proxied = { 'x-forwarded-for': '198.51.100.8' };
    const remote = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' }, scopes: ASK_ALL, headers: proxied });
    assert.deepEqual(remote.hello.auth.scopes, []);
    await remote.close();
    await expectRefused(
      connectGateway({
        url: tg.url,
        identity: generateIdentity(),
        auth: { token: TEST_TOKEN },
        client: { id: 'cli', mode: 'cli' },
        scopes: ASK_ALL,
        headers: proxied,
      }),
      'PAIRING_REQUIRED',
    );

    const dir = mkdtempSync(join(tmpdir(), 'clawgate-doctor-'));
    t.after(() => removeDir(dir));
    const doctor = async (args: string[], env: Record<string, string> = {}) => {
      const r = await runClawgate(['doctor', '--state-dir', join(dir, 'state'), '--json', ...args], { CLAWGATE_GATEWAY_TOKEN: '', CLAWGATE_TOKEN: '', ...env });
      return (JSON.parse(r.stdout) as { checks: Array<{ name: string; status: string; message: string }> }).checks;
    };
    for (const [on, expected] of [
      [true, 'warn'],
      [false, undefined],
    ] as const) {
      const config = join(dir, `config-${on}.json`);
      writeFileSync(config, JSON.stringify({ gateway: { auth: { sharedSecretIsAdminOnHost: on } } }));
      const checks = await doctor(['--config', config]);
      assert.equal(checks.find((c) => c.name === 'shared-secret')?.status, expected, JSON.stringify(checks));
    }
    // The gateway reads its own variable, never CLAWGATE_TOKEN (often the owner credential).
    const lan = ['--bind', 'lan'];
    assert.equal((await doctor(lan, { CLAWGATE_GATEWAY_TOKEN: 'cgs_chosen' })).find((c) => c.name === 'config')?.status, 'ok');
    assert.equal((await doctor(lan, { CLAWGATE_TOKEN: TEST_OWNER })).find((c) => c.name === 'config')?.status, 'fail');
  });
});

describe('no secret on a command line', () => {
  test('gateway run --token-file: the token is in use and not in /proc/<pid>/cmdline; a group-readable file is refused; --token warns', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-argv-'));
    t.after(() => removeDir(dir));
    const token = 'cgs_from-a-file-not-argv-0123456789';
    const file = secretFile(dir, 'token', token);
    const port = await freePort();
    const gw = spawnCli(['gateway', 'run', '--port', String(port), '--token-file', file], { CLAWGATE_STATE_DIR: join(dir, 'state') });
    t.after(async () => {
      gw.child.kill('SIGTERM');
      await gw.exited;
    });
    await waitFor(() => (gw.out().includes('listening on') ? true : undefined), `the gateway to start:\n${gw.out()}`);
    const cmdline = cmdlineOf(gw.child.pid as number);
    assert.ok(cmdline.includes('--token-file'), cmdline);
    assert.ok(!cmdline.includes(token), 'the token is not on the command line');
    // The file's token is the gateway token.
    const c = await connectGateway({ url: `ws://127.0.0.1:${port}`, auth: { token }, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.read'] });
    assert.equal(c.hello.auth.method, 'token');
    await c.close();
    // The banner shows the environment form, not --token.
    assert.match(gw.out(), /OPENCLAW_GATEWAY_TOKEN="\$\(npx clawgate gateway token\)" openclaw gateway call health/);
    assert.doesNotMatch(gw.out(), /--token "\$\(/);

    const open = secretFile(dir, 'open-token', token, 0o644);
    const refused = await runClawgate(['gateway', 'run', '--port', '0', '--token-file', open], { CLAWGATE_STATE_DIR: join(dir, 'state2') });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /group or others may access it \(mode 0644\); run chmod 600/);

    // A service unit names the file, never the secret; a service has no stdin to read one from.
    const unit = await runClawgate(['gateway', 'install-service', '--print', '--token-file', file, '--state-dir', join(dir, 'state')]);
    assert.equal(unit.code, 0, unit.stderr);
    assert.match(unit.stdout, new RegExp(`^ExecStart=.* --token-file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'));
    assert.ok(!unit.stdout.includes(token));
    const noStdin = await runClawgate(['gateway', 'install-service', '--print', '--token-stdin']);
    assert.equal(noStdin.code, 2);
    assert.match(noStdin.stderr, /no standard input/);

    // On the busy port it stops right after reading its flags: only the warning matters here.
    const warned = await runClawgate(['gateway', 'run', '--port', String(port), '--token', 'x'], { CLAWGATE_STATE_DIR: join(dir, 'state3') });
    assert.match(warned.stderr, /warning: --token puts the token on the command line.*--token-file <path>.*--token-stdin or CLAWGATE_GATEWAY_TOKEN/);
  });

  test('call with CLAWGATE_TOKEN, --token-file or --token-stdin sends the token without it ever being in /proc/<pid>/cmdline; --token/--password warn', async (t) => {
    const tg = await gatewayFor(t);
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-argv-'));
    t.after(() => removeDir(dir));
    // Hold each connect once it arrives, so the CLI process is alive while its command line is read.
    const seen: string[] = [];
    let release!: () => void;
    let held = new Promise<void>((r) => (release = r));
    const gw = tg.gateway as Gateway & { connect: Gateway['connect'] };
    const original = gw.connect.bind(gw);
    gw.connect = async (text, ...rest) => {
      seen.push(text);
      await held;
      return original(text, ...rest);
    };
    const file = secretFile(dir, 'token', TEST_TOKEN);
    const env = { CLAWGATE_STATE_DIR: join(dir, 'state') };
    const ways: Array<[string, string[], Record<string, string>, string | undefined]> = [
      ['CLAWGATE_TOKEN', [], { CLAWGATE_TOKEN: TEST_TOKEN }, undefined],
      ['--token-file', ['--token-file', file], {}, undefined],
      ['--token-stdin', ['--token-stdin'], {}, `${TEST_TOKEN}\n`],
    ];
    for (const [way, flags, extraEnv, stdin] of ways) {
      seen.length = 0;
      const run = spawnCli(['call', 'health', '--url', tg.url, '--json', ...flags], { ...env, ...extraEnv }, stdin);
      const frame = await waitFor(() => seen[0], `${way}: the connect frame`);
      assert.equal((JSON.parse(frame) as { params: { auth: { token: string } } }).params.auth.token, TEST_TOKEN, way);
      const cmdline = cmdlineOf(run.child.pid as number);
      assert.ok(!cmdline.includes(TEST_TOKEN), `${way}: ${cmdline}`);
      release();
      assert.equal(await run.exited, 0, `${way}: ${run.out()}`);
      assert.doesNotMatch(run.out(), /warning/, way);
      held = new Promise<void>((r) => (release = r));
    }
    release();

    const byArgv = await runClawgate(['call', 'health', '--url', tg.url, '--token', TEST_TOKEN], env);
    assert.equal(byArgv.code, 0, byArgv.stderr);
    assert.match(byArgv.stderr, /warning: --token puts the token on the command line, where every local user can read it/);
    assert.match(byArgv.stderr, /--token-file <path> \(mode 0600\), --token-stdin or CLAWGATE_TOKEN/);
    const pw = await runClawgate(['devices', 'list', '--url', tg.url, '--password', 'nope'], env);
    assert.match(pw.stderr, /warning: --password puts the password on the command line.*CLAWGATE_PASSWORD/);
    const both = await runClawgate(['call', 'health', '--url', tg.url, '--token', 'a', '--token-file', file], env);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /--token-file and --token exclude each other/);
  });

  test('node run takes --token-file and CLAWGATE_NODE_TOKEN, and --token warns', async (t) => {
    const tg = await gatewayFor(t);
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-node-argv-'));
    t.after(() => removeDir(dir));
    const file = secretFile(dir, 'token', TEST_TOKEN);
    const ways: Array<[string, string[], Record<string, string>]> = [
      ['--token-file', ['--token-file', file], {}],
      ['CLAWGATE_NODE_TOKEN', [], { CLAWGATE_NODE_TOKEN: TEST_TOKEN }],
      ['--token', ['--token', TEST_TOKEN], {}],
    ];
    for (const [way, flags, env] of ways) {
      const node = spawnCli(['node', 'run', '--url', tg.url, '--name', `n-${way}`, '--state-dir', join(dir, way), ...flags], env);
      try {
        await waitFor(() => ([...tg.gateway.sessions.values()].some((s) => s.role === 'node' && s.client.displayName === `n-${way}`) ? true : undefined), way);
        const cmdline = cmdlineOf(node.child.pid as number);
        assert.equal(cmdline.includes(TEST_TOKEN), way === '--token', `${way}: ${cmdline}`);
        assert.equal(/warning: --token puts the token on the command line.*CLAWGATE_NODE_TOKEN/.test(node.out()), way === '--token', `${way}: ${node.out()}`);
      } finally {
        node.child.kill('SIGTERM');
        await node.exited;
      }
    }
  });
});

describe('a wrong shared secret is never ignored', () => {
  async function pairedDevice(tg: TestGateway) {
    const id = generateIdentity();
    const first = await connectGateway({
      url: tg.url,
      identity: id,
      ...asOwner(tg),
      client: { id: 'test', mode: 'test' },
      scopes: ['operator.read'],
    });
    const deviceToken = first.hello.auth.deviceToken as string;
    assert.ok(deviceToken);
    await first.close();
    const as = (auth: Record<string, string>) =>
      connectGateway({ url: tg.url, identity: id, auth, client: { id: 'test', mode: 'test' }, scopes: ['operator.read'] });
    return { deviceToken, as };
  }

  test('wrong password + valid device token is refused and counted until lockout; right password + device token reports the credential used', async (t) => {
    const maxFailures = 3;
    const tg = await gatewayFor(t, { config: { password: 'correct horse', rateLimit: { maxFailures, windowMs: 60_000, lockoutMs: 60_000, maxKeys: 100 } } });
    const { deviceToken, as } = await pairedDevice(tg);
    for (let i = 0; i < maxFailures; i++) await expectRefused(as({ deviceToken, password: `guess-${i}` }), 'AUTH_PASSWORD_MISMATCH');
    // The budget is spent: even the right password is not even looked at now.
    await expectRefused(as({ deviceToken, password: 'correct horse' }), 'AUTH_RATE_LIMITED');
    assert.ok((await tg.store.listAudit()).some((e) => e.action === 'auth.rate-limited' && (e.data as { kind?: string }).kind === 'password'));

    const fresh = await gatewayFor(t, { config: { password: 'correct horse' } });
    const other = await pairedDevice(fresh);
    const right = await other.as({ deviceToken: other.deviceToken, password: 'correct horse' });
    assert.equal(right.hello.auth.method, 'password');
    await right.close();
    const byToken = await other.as({ deviceToken: other.deviceToken });
    assert.equal(byToken.hello.auth.method, 'device-token');
    await byToken.close();
    // A device token in the token slot does not hide a password next to it either.
    await expectRefused(other.as({ token: other.deviceToken, password: 'wrong' }), 'AUTH_PASSWORD_MISMATCH');
    const slot = await other.as({ token: other.deviceToken, password: 'correct horse' });
    assert.equal(slot.hello.auth.method, 'password');
    await slot.close();
  });

  test('wrong shared token + valid device token is refused and counted, and says no retry would help', async (t) => {
    const maxFailures = 2;
    const tg = await gatewayFor(t, { config: { rateLimit: { maxFailures, windowMs: 60_000, lockoutMs: 60_000, maxKeys: 100 } } });
    const { deviceToken, as } = await pairedDevice(tg);
    const err = await expectRefused(as({ token: 'cgs_wrong', deviceToken }), 'AUTH_TOKEN_MISMATCH');
    assert.equal(err.error?.details?.canRetryWithDeviceToken, false);
    await expectRefused(as({ token: 'cgs_wrong-again', deviceToken }), 'AUTH_TOKEN_MISMATCH');
    await expectRefused(as({ token: TEST_TOKEN, deviceToken }), 'AUTH_RATE_LIMITED');
  });
});

describe('no secret in a log line', () => {
  test('a gateway process logs none of the token, password, owner credential, setup code, device token or a wrong guess, over failed and successful connects', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-logs-'));
    t.after(() => removeDir(dir));
    const token = 'cgs_log-audit-shared-token-7f3a9c';
    const password = 'log-audit-password-b81e2d';
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ gateway: { auth: { password } } }), { mode: 0o600 });
    const port = await freePort();
    const url = `ws://127.0.0.1:${port}`;
    const gw = spawnCli(['gateway', 'run', '--port', String(port), '--token-file', secretFile(dir, 'token', token), '--config', config], {
      CLAWGATE_STATE_DIR: join(dir, 'state'),
    });
    t.after(async () => {
      gw.child.kill('SIGTERM');
      await gw.exited;
    });
    await waitFor(() => (gw.out().includes('listening on') ? true : undefined), `the gateway to start:\n${gw.out()}`);
    const owner = (JSON.parse(readFileSync(join(dir, 'state', 'credentials.json'), 'utf8')) as { owner: string }).owner;
    const guesses = ['cgs_wrong-guess-4d2c1b', 'wrong-password-guess-93af', `cgd1_${'x'.repeat(20)}_${'y'.repeat(43)}`];
    const attempt = (o: Parameters<typeof connectGateway>[0]) =>
      connectGateway(o).then(
        (c) => c.close().then(() => c.hello),
        (e: unknown) => e,
      );

    const gatewayKey = readGatewayKeyFingerprint(join(dir, 'state')) as string;
    const ownerConn = await connectGateway({ url, owner, gatewayKey, client: { id: 'cli', mode: 'cli' } });
    const minted = await ownerConn.request<{ setupCode: string; bootstrapToken?: string }>('device.pair.setupCode', { profile: 'operator' });
    await ownerConn.close();
    const decoded = decodeSetupCode(minted.setupCode);
    assert.ok(decoded.ok);
    const setupPayload = decoded.payload;

    const id = generateIdentity();
    const paired = await connectGateway({ url, identity: id, auth: { token }, client: { id: 'test', mode: 'test' }, scopes: ['operator.read'] });
    const deviceToken = paired.hello.auth.deviceToken as string;
    await paired.close();
    const base = { url, client: { id: 'test', mode: 'test' }, scopes: ['operator.read'] };
    const outcomes = [
      await attempt({ ...base, auth: { password } }),
      await attempt({ ...base, auth: { token: guesses[0] as string } }),
      await attempt({ ...base, auth: { password: guesses[1] as string } }),
      await attempt({ ...base, identity: id, auth: { deviceToken } }),
      await attempt({ ...base, identity: id, auth: { deviceToken: guesses[2] as string } }),
      await attempt({ ...base, identity: id, auth: { deviceToken, password: guesses[1] as string } }),
      await attempt({ ...base, identity: generateIdentity(), auth: { bootstrapToken: setupPayload.bootstrapToken } }),
      await attempt({ ...base, identity: generateIdentity(), auth: { bootstrapToken: setupPayload.bootstrapToken } }),
      await attempt({ ...base, identity: generateIdentity(), auth: { bootstrapToken: `${setupPayload.bootstrapToken.slice(0, -4)}AAAA` } }),
    ];
    // Both kinds happened: admitted connects and refused ones.
    assert.ok(outcomes.some((o) => !(o instanceof Error)));
    assert.ok(outcomes.some((o) => o instanceof ConnectError));
    // A CLI process failing with a wrong token, too (its stderr is a log a person reads).
    const failedCli = await runClawgate(['call', 'health', '--url', url], { CLAWGATE_TOKEN: guesses[0] as string, CLAWGATE_STATE_DIR: join(dir, 'client') });
    assert.equal(failedCli.code, 1);

    // The audit trail is a log too.
    const audit = await runClawgate(['audit', '--json', '--url', url, '--gateway-key', gatewayKey], {
      CLAWGATE_TOKEN: owner,
      CLAWGATE_STATE_DIR: join(dir, 'client'),
    });
    assert.equal(audit.code, 0, audit.stderr);
    assert.match(audit.stdout, /auth\.rate-limited|pairing\.approved|setup\.redeemed/);

    gw.child.kill('SIGTERM');
    await gw.exited;
    const logged = `${gw.out()}\n${failedCli.stdout}\n${failedCli.stderr}\n${audit.stdout}\n${audit.stderr}`;
    assert.match(logged, /gateway stopped cleanly/, 'the log was captured');
    const secrets: Record<string, string> = {
      token,
      password,
      owner,
      setupCode: minted.setupCode,
      bootstrapToken: setupPayload.bootstrapToken,
      deviceToken,
      deviceTokenSecret: deviceToken.split('_').pop() as string,
      ...Object.fromEntries(guesses.map((g, i) => [`guess${i}`, g])),
    };
    for (const [what, secret] of Object.entries(secrets)) assert.ok(!logged.includes(secret), `${what} appears in the log output`);
  });
});
