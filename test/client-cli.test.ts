/**
 * The companion CLI as a user runs it (real `clawgate` processes against a real gateway):
 * `clawgate pair`, `clawgate call` with the stored credentials, `clawgate status --client`, and
 * crash safety — a `clawgate pair` process SIGKILLed at each point of the hand-off (test-only
 * hook CLAWGATE_TEST_CRASH_AT) is never left without a way back in, and the next command
 * finishes the job.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FileCredentialStore, type GatewayRecord } from '@clawgate/client';
import { mintCode, ownerCall, tempDir } from './helpers/client.js';
import { removeDir, startTestGateway, type TestGateway } from './helpers/gateway.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI as a client on its own state dir (no owner credential there). */
function clawgate(stateDir: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args, '--state-dir', stateDir], {
      env: { ...process.env, CLAWGATE_URL: '', CLAWGATE_TOKEN: '', CLAWGATE_STATE_DIR: '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

async function records(stateDir: string): Promise<GatewayRecord[]> {
  return new FileCredentialStore(join(stateDir, 'client')).list();
}

let tg: TestGateway;
const dirs: string[] = [];
function clientDir(): string {
  const d = tempDir('clawgate-companion-');
  dirs.push(d);
  return d;
}

before(async () => {
  tg = await startTestGateway();
});
after(async () => {
  await tg.stop();
  removeDir(tg.stateDir);
  for (const d of dirs) removeDir(d);
});

describe('clawgate pair / call / status --client', () => {
  test('pair with a setup code, then call and status use the stored credentials; URL variants are one gateway', async () => {
    const dir = clientDir();
    const code = await mintCode(tg, { profile: 'operator' });
    const paired = await clawgate(dir, ['pair', code.setupCode, '--name', 'laptop', '--json']);
    assert.equal(paired.code, 0, paired.stderr);
    const out = JSON.parse(paired.stdout);
    assert.equal(out.bootstrapCleared, true);
    assert.ok(out.roles.operator.scopes.includes('operator.write'));
    // The code named the gateway key; it is pinned for every later connect.
    assert.equal(out.gatewayKey, tg.gateway.identity?.fingerprint);

    const health = await clawgate(dir, ['call', 'health', '--json']);
    assert.equal(health.code, 0, health.stderr);
    assert.equal(JSON.parse(health.stdout).ok, true);
    const write = await clawgate(dir, ['call', 'sessions.create', '--params', '{"key":"cli-write-check"}', '--json']);
    assert.equal(write.code, 0, `a call needing operator.write: ${write.stderr}`);
    const port = new URL(tg.url).port;
    const viaAlias = await clawgate(dir, ['call', 'status', '--url', `http://localhost:${port}/`, '--json']);
    assert.equal(viaAlias.code, 0, viaAlias.stderr);

    const status = await clawgate(dir, ['status', '--client', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const { gateways } = JSON.parse(status.stdout);
    assert.equal(gateways.length, 1, 'one gateway, whatever URL spelling was used');
    assert.equal(gateways[0].displayName, 'laptop');
    assert.equal(gateways[0].bootstrap, null);
    assert.equal(gateways[0].gatewayKey, tg.gateway.identity?.fingerprint);
    const op = gateways[0].roles.find((r: { role: string }) => r.role === 'operator');
    assert.equal(op.state, 'connected');
    assert.equal(op.credential, 'device-token');
    assert.ok(op.scopes.includes('operator.write'));
    const human = await clawgate(dir, ['status', '--client']);
    assert.match(human.stdout, /operator: connected; credential: device token; scopes /);
    assert.match(human.stdout, new RegExp(`gateway key: pinned SHA-256 ${tg.gateway.identity?.fingerprint}`));

    // A damaged record is reported (exit 1) next to the readable ones, never rewritten.
    const broken = join(dir, 'client', 'gateways', 'ffffffffffffffffffffffffffffffff.json');
    writeFileSync(broken, '{oops', { mode: 0o600 });
    const damaged = await clawgate(dir, ['status', '--client', '--json', '--offline']);
    assert.equal(damaged.code, 1);
    const report = JSON.parse(damaged.stdout);
    assert.equal(report.gateways.length, 1);
    assert.match(report.problems[0].message, /not valid JSON/);
    assert.equal(readFileSync(broken, 'utf8'), '{oops');
    rmSync(broken);
  });

  test('the hint pair prints runs as printed (it carries --state-dir); status says what it checked and what a down gateway means', async () => {
    const dir = clientDir();
    const code = await mintCode(tg, { profile: 'operator' });
    const paired = await clawgate(dir, ['pair', code.setupCode]);
    assert.equal(paired.code, 0, paired.stderr);
    const hint = /try: (clawgate .*)$/m.exec(paired.stdout)?.[1];
    assert.equal(hint, `clawgate call health --state-dir ${dir}`);
    // Exactly as printed, with no state dir in the environment.
    const words = (hint as string).split(' ').slice(1);
    const health = await new Promise<Run>((resolve) => {
      const child = spawn(process.execPath, [BIN, ...words], { env: { ...process.env, CLAWGATE_URL: '', CLAWGATE_TOKEN: '', CLAWGATE_STATE_DIR: '' } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (c, signal) => resolve({ code: c, signal, stdout, stderr }));
    });
    assert.equal(health.code, 0, health.stderr);
    assert.equal(JSON.parse(health.stdout).ok, true);

    const offline = await clawgate(dir, ['status', '--client', '--offline']);
    assert.match(offline.stdout, /operator: not checked \(--offline\); credential: device token; scopes /);
    assert.doesNotMatch(offline.stdout, /via nothing|not-checked/);

    // A gateway that went away: status says so, with the next step, not a bare socket error.
    const gone = await startTestGateway();
    const goneDir = clientDir();
    const goneCode = await mintCode(gone, { profile: 'operator' });
    assert.equal((await clawgate(goneDir, ['pair', goneCode.setupCode])).code, 0);
    await gone.stop();
    removeDir(gone.stateDir);
    const down = await clawgate(goneDir, ['status', '--client', '--timeout', '3000']);
    assert.match(down.stdout, /operator: unreachable; credential: device token/);
    assert.ok(down.stdout.includes(`no gateway is listening on ${gone.url}`), down.stdout);
    assert.ok(down.stdout.includes('next: start the gateway (`clawgate gateway run` on its host)'), down.stdout);
  });

  test('pair --node with an operator+node code stores both roles under one device', async () => {
    const dir = clientDir();
    const code = await mintCode(tg, { profile: 'operator+node' });
    const paired = await clawgate(dir, ['pair', code.link, '--node', '--json']);
    assert.equal(paired.code, 0, paired.stderr);
    const out = JSON.parse(paired.stdout);
    assert.equal(out.connectedAs, 'node');
    assert.deepEqual(Object.keys(out.roles).sort(), ['node', 'operator']);
    const status = JSON.parse((await clawgate(dir, ['status', '--client', '--json'])).stdout);
    const states = Object.fromEntries(status.gateways[0].roles.map((r: { role: string; state: string }) => [r.role, r.state]));
    assert.deepEqual(states, { operator: 'connected', node: 'connected' });
  });

  test('invalid and used codes: a clear error, exit 1, nothing usable lost', async () => {
    const dir = clientDir();
    const bad = await clawgate(dir, ['pair', 'oc-pair://%%%']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid setup code/);
    assert.match(bad.stderr, /next: .*clawgate qr/);
    const code = await mintCode(tg);
    assert.equal((await clawgate(clientDir(), ['pair', code.setupCode])).code, 0);
    const used = await clawgate(dir, ['pair', code.setupCode]);
    assert.equal(used.code, 1);
    assert.match(used.stderr, /AUTH_BOOTSTRAP_TOKEN_USED/);
    assert.match(used.stderr, /next: /);
    const noCred = await clawgate(clientDir(), ['call', 'health']);
    assert.equal(noCred.code, 1);
    assert.match(noCred.stderr, /clawgate pair/);
  });

  test('a revoked device: call and status say what to do instead of looping', async () => {
    const dir = clientDir();
    const code = await mintCode(tg);
    assert.equal((await clawgate(dir, ['pair', code.setupCode])).code, 0);
    const [rec] = await records(dir);
    await ownerCall(tg, 'device.token.revoke', { deviceId: rec!.deviceId, role: 'operator' });
    const call = await clawgate(dir, ['call', 'health']);
    assert.equal(call.code, 1);
    assert.match(call.stderr, /AUTH_DEVICE_TOKEN_MISMATCH/);
    assert.match(call.stderr, /next: Pair this device again/);
    const status = JSON.parse((await clawgate(dir, ['status', '--client', '--json'])).stdout);
    const op = status.gateways[0].roles[0];
    assert.equal(op.state, 'paused');
    assert.equal(op.reason, 'device-token-rejected');
    // Pairing again with a fresh code recovers the same identity.
    const again = await clawgate(dir, ['pair', (await mintCode(tg)).setupCode, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).deviceId, rec!.deviceId);
  });
});

describe('crash safety of the hand-off', () => {
  const points = ['setup-saved', 'hello-received', 'before-rename:tokens', 'tokens-stored', 'before-rename:bootstrap-clear', 'bootstrap-cleared'];
  for (const point of points) {
    test(`killed at ${point}: still holds a usable credential, and the next command completes the hand-off`, async () => {
      const dir = clientDir();
      const code = await mintCode(tg, { profile: 'operator+node' });
      const crashed = await clawgate(dir, ['pair', code.setupCode], { CLAWGATE_TEST_CRASH_AT: point });
      assert.equal(crashed.signal, 'SIGKILL', `the process died at ${point} (exit ${crashed.code}, ${crashed.stderr})`);
      const [rec] = await records(dir);
      assert.ok(rec, 'the record survived');
      assert.ok(rec.bootstrap || (rec.tokens.operator && rec.tokens.node), `bootstrap or both role tokens remain at ${point}`);
      if (point === 'before-rename:tokens') {
        assert.ok(
          readdirSync(join(dir, 'client', 'gateways')).some((f) => f.endsWith('.tmp')),
          'the interrupted write left only a temp file',
        );
        assert.equal(rec.tokens.operator, undefined);
      }
      // Restart: any command with the stored credentials recovers.
      const call = await clawgate(dir, ['call', 'health', '--json']);
      assert.equal(call.code, 0, `recovered after ${point}: ${call.stderr}`);
      const [done] = await records(dir);
      assert.ok(done?.tokens.operator && done.tokens.node, 'both role tokens durable');
      assert.equal(done.bootstrap, undefined, 'bootstrap cleared after the hand-off completed');
      assert.ok(!readdirSync(join(dir, 'client', 'gateways')).some((f) => f.endsWith('.tmp')), 'stale temp files swept');
    });
  }
});
