/**
 * The CLI as a device of a remote gateway: real `clawgate` processes in a network namespace (a
 * real non-loopback peer) against a real gateway. A remote `call` with the gateway token files a
 * pairing request and prints its id, confirmation code and the approve command; approving it
 * (with the command exactly as printed, on the gateway host) lets the waiting command finish, and
 * later commands reuse the stored device token without a shared secret or a new request.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ownerCall, tempDir } from './helpers/client.js';
import { removeDir, runClawgate, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { createVethNetns } from './helpers/netns.js';
import { skipUnlessPresent } from './helpers/strict.js';
import { waitFor } from './helpers/wait.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');

function _ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

interface Netns {
  tag: string;
  hostAddr: string;
  destroy(): void;
}

/** A namespace whose only route is a veth to this host (10.66.N.2 → 10.66.N.1), or why it cannot be made. */
function createNetns(): Netns | string {
  try {
    const ns = createVethNetns(`devcli${process.pid % 100_000}`, 66);
    return { tag: ns.tag, hostAddr: ns.hostAddr, destroy: ns.destroy };
  } catch (err) {
    return `ip netns is unavailable here (${(err as Error).message.split('\n')[0]})`;
  }
}

const made = createNetns();
const ns = typeof made === 'string' ? null : made;

interface Remote {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
}

/** The CLI on the remote machine: inside the namespace, its own state dir, no owner credential. */
function remoteCli(stateDir: string, args: string[]): Remote {
  const child = spawn('ip', ['netns', 'exec', (ns as Netns).tag, process.execPath, BIN, ...args, '--state-dir', stateDir], {
    env: Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !['CLAWGATE_URL', 'CLAWGATE_TOKEN', 'CLAWGATE_STATE_DIR', 'CLAWGATE_GATEWAY_KEY'].includes(k)),
    ),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => (stdout += d));
  child.stderr?.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

async function remoteRun(stateDir: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = remoteCli(stateDir, args);
  const code = await r.exited;
  return { code, stdout: r.stdout(), stderr: r.stderr() };
}

/** The id, confirmation code and approve command the CLI printed for its pairing request. */
function printedRequest(stderr: string): { requestId: string; confirmationCode: string; approve: string } | undefined {
  const id = /request id: +(\S+)/.exec(stderr)?.[1];
  const code = /confirmation code: +(\d{6})/.exec(stderr)?.[1];
  const approve = /approve it on the gateway host: (.+)/.exec(stderr)?.[1];
  return id && code && approve ? { requestId: id, confirmationCode: code, approve } : undefined;
}

interface PendingView {
  requestId: string;
  deviceId: string;
  confirmationCode: string;
}

async function pending(tg: TestGateway): Promise<PendingView[]> {
  return (await ownerCall<{ pending: PendingView[] }>(tg, 'device.pair.list')).pending;
}

/** Run an approve command exactly as printed, on the gateway host (its state dir holds the owner credential). */
async function runPrinted(tg: TestGateway, printed: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const [bin, ...argv] = printed.trim().split(/\s+/);
  assert.equal(bin, 'clawgate', `a clawgate command: ${printed}`);
  return runClawgate(argv, { CLAWGATE_STATE_DIR: tg.stateDir, CLAWGATE_URL: tg.url, CLAWGATE_TOKEN: '' });
}

describe('the CLI is a device of a remote gateway', { skip: skipUnlessPresent(typeof made === 'string' ? made : null) }, () => {
  let tg: TestGateway;
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  let tokenFile = '';
  function clientDir(): string {
    const d = tempDir('clawgate-devcli-');
    dirs.push(d);
    return d;
  }

  before(async () => {
    tg = await startTestGateway({ host: (ns as Netns).hostAddr });
    const d = clientDir();
    tokenFile = join(d, 'gateway-token');
    writeFileSync(tokenFile, `${TEST_TOKEN}\n`, { mode: 0o600 });
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
    for (const d of dirs) removeDir(d);
    ns?.destroy();
  });

  test('remote call with the gateway token: a pending request with id and confirmation code; approved as printed, the same command finishes and later commands reuse the stored token', async () => {
    const dir = clientDir();
    const first = remoteCli(dir, ['call', 'health', '--json', '--url', tg.url, '--token-file', tokenFile, '--gateway-key', tg.gatewayKey]);
    children.push(first.child);
    const printed = await waitFor(() => printedRequest(first.stderr()), 'the CLI to print its pairing request');
    assert.match(first.stderr(), /waiting for the approval/);
    // The gateway holds exactly that request, with the same confirmation code the approver sees.
    const [req] = (await pending(tg)).filter((p) => p.requestId === printed.requestId);
    assert.ok(req, `request ${printed.requestId} is pending on the gateway`);
    assert.equal(req.confirmationCode, printed.confirmationCode);
    assert.equal(printed.approve, `clawgate devices approve ${printed.requestId}`);
    // The device key lives in the state dir, readable by its owner only.
    const files = readdirSync(join(dir, 'client', 'gateways')).filter((f) => f.endsWith('.json'));
    assert.equal(files.length, 1);
    assert.equal(statSync(join(dir, 'client', 'gateways', files[0] as string)).mode & 0o777, 0o600);

    const approved = await runPrinted(tg, printed.approve);
    assert.equal(approved.code, 0, approved.stderr);
    assert.equal(await first.exited, 0, first.stderr());
    assert.equal(JSON.parse(first.stdout()).ok, true);

    // No shared secret from here on: the stored device token, no new request.
    const status = await remoteRun(dir, ['call', 'status', '--json', '--url', tg.url]);
    assert.equal(status.code, 0, status.stderr);
    const sessions = await remoteRun(dir, ['sessions', 'list', '--json']);
    assert.equal(sessions.code, 0, `sessions with the only stored gateway: ${sessions.stderr}`);
    const devices = await remoteRun(dir, ['devices', 'list', '--json']);
    assert.equal(devices.code, 0, `an admin command as the paired CLI device: ${devices.stderr}`);
    const client = await remoteRun(dir, ['status', '--client', '--json']);
    assert.equal(client.code, 0, client.stderr);
    const op = JSON.parse(client.stdout).gateways[0].roles.find((r: { role: string }) => r.role === 'operator');
    assert.equal(op.state, 'connected');
    assert.equal(op.credential, 'device-token');
    assert.ok(op.scopes.includes('operator.admin'), `the approved scopes: ${op.scopes}`);
    assert.equal((await pending(tg)).length, 0, 'later commands filed no new request');
    const again = await remoteRun(dir, ['call', 'health', '--url', tg.url, '--token-file', tokenFile]);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stderr, /pairing requested/, 'the stored device token wins over the token file');
    assert.equal((await pending(tg)).length, 0);
  });

  test('--no-wait: exit 3 with the request printed (and as JSON); after the approval the same command works', async () => {
    const dir = clientDir();
    const args = ['call', 'health', '--url', tg.url, '--token-file', tokenFile, '--gateway-key', tg.gatewayKey, '--no-wait'];
    const r = await remoteRun(dir, [...args, '--json']);
    assert.equal(r.code, 3, r.stderr);
    const printed = printedRequest(r.stderr);
    assert.ok(printed, r.stderr);
    assert.match(r.stderr, /not approved yet \(--no-wait\)/);
    assert.deepEqual(JSON.parse(r.stdout), { status: 'pending', requestId: printed.requestId, confirmationCode: printed.confirmationCode });
    assert.equal((await runPrinted(tg, printed.approve)).code, 0);
    const done = await remoteRun(dir, args);
    assert.equal(done.code, 0, done.stderr);
    const later = await remoteRun(dir, ['call', 'health', '--url', tg.url]);
    assert.equal(later.code, 0, `the device token was stored: ${later.stderr}`);
  });

  test('a revoked CLI device: a clear message and the next step; with the gateway token it asks again', async () => {
    const dir = clientDir();
    const args = ['call', 'health', '--url', tg.url, '--token-file', tokenFile, '--gateway-key', tg.gatewayKey, '--no-wait'];
    const r = await remoteRun(dir, args);
    const printed = printedRequest(r.stderr);
    assert.ok(printed, r.stderr);
    assert.equal((await runPrinted(tg, printed.approve)).code, 0);
    assert.equal((await remoteRun(dir, args)).code, 0);
    const deviceId = (await ownerCall<{ paired: Array<{ deviceId: string }> }>(tg, 'device.pair.list')).paired.find((p) =>
      r.stderr.includes(p.deviceId),
    )?.deviceId;
    assert.ok(deviceId, 'the printed device id is paired');
    await ownerCall(tg, 'device.token.revoke', { deviceId, role: 'operator' });

    const refused = await remoteRun(dir, ['call', 'health', '--url', tg.url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /refused this CLI's device token \(revoked, rotated, or the device was removed\) \[AUTH_DEVICE_TOKEN_MISMATCH\]/);
    assert.match(refused.stderr, /next: Pair this device again: .*clawgate pair --code-file.*or run this command again with the gateway token/);
    // Following the next step: the gateway token files a new request for the same device.
    const asked = await remoteRun(dir, args);
    assert.equal(asked.code, 3, asked.stderr);
    const again = printedRequest(asked.stderr);
    assert.ok(again && again.requestId !== printed.requestId, asked.stderr);
    assert.ok((await pending(tg)).some((p) => p.requestId === again.requestId && p.deviceId === deviceId));
  });
});
