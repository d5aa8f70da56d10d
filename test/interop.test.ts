/**
 * Interop with the real OpenClaw CLI (openclaw@2026.9.6 on Node 24, installed from npm into
 * .cache/openclaw by scripts/openclaw-cache.sh). Each CLI run gets its own HOME and state dir
 * so runs never share an identity. A missing install is a failure, not a skip: CI must prove
 * that real clients work.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { ConnectError, connectGateway, generateIdentity } from '../src/client/connection.js';
import { asOwner, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { openclawEnv, openclawGatewayEnv, openclawPaths } from './helpers/openclaw.js';
import { waitFor } from './helpers/wait.js';

const run = promisify(execFile);

let oc: { node: string; cli: string };
const homes: string[] = [];

/**
 * The real CLI from a fresh install, authenticated the way the docs show (URL and secret in its
 * environment, nothing secret on argv). On loopback with a gateway secret it connects without
 * its device key, so what it may do is what that secret is worth.
 */
async function openclaw(args: string[], gateway: { url: string; token: string }): Promise<{ stdout: string; stderr: string }> {
  const home = mkdtempSync(join(tmpdir(), 'clawgate-oc-'));
  homes.push(home);
  try {
    return await run(oc.node, [oc.cli, ...args], {
      env: openclawGatewayEnv(home, gateway),
      timeout: 90_000,
    });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`openclaw ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

/** The CLI prints some notices before its JSON; take the last top-level JSON value. */
function lastJson<T>(stdout: string): T {
  const start = stdout.search(/^[{[]/m);
  assert.ok(start >= 0, `no JSON in output: ${stdout}`);
  return JSON.parse(stdout.slice(start)) as T;
}

const REMOTE = { 'x-forwarded-for': '198.51.100.40' };

describe('real openclaw CLI against clawgate', () => {
  let tg: TestGateway;
  // Owner work by the real CLI: it cannot make clawgate's owner proof, so this gateway opts in to
  // OpenClaw's "the token is admin on the gateway host" (direct loopback only).
  const owner = () => ({ url: tg.url, token: TEST_TOKEN });
  before(async () => {
    oc = openclawPaths();
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'], sharedSecretIsAdminOnHost: true } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
    for (const h of homes) removeDir(h);
  });

  test('openclaw gateway call health --json', async () => {
    const { stdout } = await openclaw(['gateway', 'call', 'health', '--json'], { url: tg.url, token: TEST_TOKEN });
    const health = lastJson<{ ok: boolean; store: string }>(stdout);
    assert.equal(health.ok, true);
    assert.equal(health.store, 'sqlite');
  });

  test('the gateway token is not the owner: openclaw devices list with it is refused, and the message it prints says what would work', async () => {
    const plain = await startTestGateway();
    try {
      const err = await openclaw(['devices', 'list', '--json'], { url: plain.url, token: TEST_TOKEN }).then(
        () => assert.fail('devices list with the shared token must be refused'),
        (e: Error) => e,
      );
      assert.match(
        err.message,
        /missing scope: operator\.pairing \(the gateway token or password alone grants operator\.read and operator\.write only: run it with the `clawgate` CLI on the gateway host/,
      );
    } finally {
      await plain.stop();
      removeDir(plain.stateDir);
    }
    // With the documented opt-in on the gateway host the same command works.
    const listed = lastJson<{ pending: unknown[] }>((await openclaw(['devices', 'list', '--json'], owner())).stdout);
    assert.ok(Array.isArray(listed.pending));
  });

  test('openclaw devices list / approve / rotate / revoke', async () => {
    // A remote operator device and a remote node file pairing requests.
    const opId = generateIdentity();
    const nodeId = generateIdentity();
    const pend = async (identity: typeof opId, role: 'operator' | 'node') => {
      try {
        await connectGateway({
          url: tg.url,
          identity,
          role,
          client: role === 'node' ? { id: 'node-host', mode: 'node', displayName: 'interop-node' } : { id: 'test', mode: 'test', displayName: 'interop-op' },
          auth: { token: TEST_TOKEN },
          scopes: role === 'node' ? [] : ['operator.read'],
          headers: REMOTE,
        });
      } catch (err) {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.detailCode, 'PAIRING_REQUIRED');
        return (err.error!.details as { requestId: string }).requestId;
      }
      assert.fail('expected PAIRING_REQUIRED');
    };
    const opReq = await pend(opId, 'operator');
    const nodeReq = await pend(nodeId, 'node');

    const listed = lastJson<{ pending: Array<{ requestId: string; deviceId: string }> }>((await openclaw(['devices', 'list', '--json'], owner())).stdout);
    assert.deepEqual(new Set(listed.pending.map((p) => p.requestId)), new Set([opReq, nodeReq]));

    await openclaw(['devices', 'approve', opReq, '--json'], owner());
    await openclaw(['devices', 'approve', nodeReq, '--json'], owner());
    assert.deepEqual((await tg.store.getGrant(opId.deviceId, 'operator'))?.scopes, ['operator.read']);
    assert.ok(await tg.store.getGrant(nodeId.deviceId, 'node'));

    // The node connects with its new token; rotating its role with the real CLI closes that socket.
    const nodeOpts = { url: tg.url, identity: nodeId, role: 'node' as const, client: { id: 'node-host', mode: 'node' }, headers: REMOTE };
    const node = await connectGateway({ ...nodeOpts, auth: { token: TEST_TOKEN } });
    assert.ok(node.hello.auth.deviceToken);
    const rotated = lastJson<{ role: string; tokenDelivery: string }>(
      (await openclaw(['devices', 'rotate', '--device', nodeId.deviceId, '--role', 'node', '--json'], owner())).stdout,
    );
    assert.equal(rotated.role, 'node');
    assert.equal((await node.closed).code, 4001);

    const op = await connectGateway({
      url: tg.url,
      identity: opId,
      client: { id: 'test', mode: 'test' },
      auth: { token: TEST_TOKEN },
      scopes: ['operator.read'],
      headers: REMOTE,
    });
    const revoked = lastJson<{ deviceId: string; role: string; revokedAtMs: number }>(
      (await openclaw(['devices', 'revoke', '--device', opId.deviceId, '--role', 'operator', '--json'], owner())).stdout,
    );
    assert.equal(revoked.deviceId, opId.deviceId);
    assert.equal((await op.closed).code, 4001);
    assert.equal(await tg.store.getGrant(opId.deviceId, 'operator'), null);
  });

  test('openclaw node run --pair <node-profile code> pairs and stays connected, then reconnects with its device token', async () => {
    const owner = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const minted = await owner.request<{ setupCode: string; link: string }>('device.pair.setupCode', { profile: 'node' });
    await owner.close();
    // The code carries clawgate's gatewayKey member; the reference client must pair with it all the same.
    const decoded = decodeSetupCode(minted.setupCode);
    assert.ok(decoded.ok && decoded.payload.gatewayKey === tg.gateway.identity?.fingerprint, 'the code names the gateway key');
    const home = mkdtempSync(join(tmpdir(), 'clawgate-oc-node-'));
    homes.push(home);
    const env = openclawEnv(home);
    const port = String(tg.server.port);
    const nodeSessions = () => [...tg.gateway.sessions.values()].filter((s) => s.role === 'node' && s.client.id === 'node-host');
    const nodeSession = () => nodeSessions()[0];
    const startNode = (args: string[]) => {
      const child = spawn(oc.node, [oc.cli, 'node', 'run', '--host', '127.0.0.1', '--port', port, '--no-tls', '--display-name', 'interop-node-host', ...args], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let log = '';
      child.stdout.on('data', (d) => (log += d));
      child.stderr.on('data', (d) => (log += d));
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      return { child, log: () => log, exited };
    };
    const waitForHost = (cond: () => boolean, what: string, log: () => string) =>
      waitFor(cond, what, { timeoutMs: 60_000, intervalMs: 100, detail: () => `node host output:\n${log()}` });

    const first = startNode(['--pair', minted.link]);
    let firstSession: { connId: string; deviceId?: string | undefined; tokenId?: string | undefined } | undefined;
    try {
      await waitForHost(() => nodeSession() !== undefined, 'the node host to be admitted', first.log);
      const session = nodeSession();
      assert.ok(session?.deviceId);
      firstSession = session;
      const grant = await tg.store.getGrant(session.deviceId, 'node');
      assert.equal(grant?.approvedVia, 'bootstrap');
      // Stays connected (ticks keep the reference client's watchdog quiet).
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(nodeSession()?.connId, session.connId, `node host stayed on one connection; output:\n${first.log()}`);
    } finally {
      first.child.kill('SIGTERM');
      await first.exited;
    }
    // A second run of the same node host state reconnects with the stored device token, not the code.
    const second = startNode([]);
    try {
      // The first host's session may not be closed yet: only a session on a new connection
      // proves the second run got in.
      const fresh = () => nodeSessions().find((s) => s.connId !== firstSession?.connId);
      await waitForHost(() => fresh() !== undefined, 'the node host to reconnect on a new connection', second.log);
      const again = fresh();
      assert.equal(again?.kind, 'device');
      assert.equal(again?.deviceId, firstSession?.deviceId);
      // Logged in with the token the first run was issued: the same token id, none minted since.
      assert.equal(again?.tokenId, firstSession?.tokenId);
      const live = (await tg.store.listTokens(again?.deviceId ?? '')).filter((t) => t.role === 'node' && t.revokedAtMs === undefined);
      assert.deepEqual(
        live.map((t) => t.tokenId),
        [firstSession?.tokenId],
      );
      // It came back with its device token: the code was redeemed exactly once, never again.
      const audit = await tg.store.listAudit();
      assert.equal(audit.filter((e) => e.action === 'setup.redeemed').length, 1);
      assert.equal(audit.filter((e) => e.action === 'setup.redeemed-again').length, 0);
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  });
});
