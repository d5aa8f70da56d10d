/**
 * Interop: the real OpenClaw node host (`openclaw node run`, openclaw@2026.9.6 on Node 24 from
 * scripts/openclaw-cache.sh) pairs with clawgate, its command surface is approved with the
 * `clawgate nodes` CLI, and `clawgate nodes invoke … system.which` is executed by the real node
 * host. A missing install is a failure, not a skip.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { cli, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { openclawEnv, openclawJson, openclawPaths } from './helpers/openclaw.js';

const _run = promisify(execFile);

async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, log: () => string, ms = 60_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}; node host output:\n${log()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('real openclaw node host against clawgate', () => {
  let tg: TestGateway;
  let home: string;
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let log = '';
  before(async () => {
    const oc = openclawPaths();
    tg = await startTestGateway();
    home = mkdtempSync(join(tmpdir(), 'clawgate-oc-nodehost-'));
    child = spawn(
      oc.node,
      [oc.cli, 'node', 'run', '--host', '127.0.0.1', '--port', String(tg.server.port), '--no-tls', '--display-name', 'interop-exec-node'],
      {
        env: openclawEnv(home, { OPENCLAW_GATEWAY_TOKEN: TEST_TOKEN }),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stdout?.on('data', (d) => (log += d));
    child.stderr?.on('data', (d) => (log += d));
    exited = new Promise((resolve) => child?.on('exit', () => resolve()));
  });
  after(async () => {
    child?.kill('SIGTERM');
    await exited;
    await tg.stop();
    removeDir(tg.stateDir);
    removeDir(home);
  });

  test('openclaw node run pairs, its surface is approved with clawgate nodes approve, and clawgate nodes invoke system.which / system.run run on it', async () => {
    const nodeSession = () => [...tg.gateway.sessions.values()].find((s) => s.role === 'node' && s.client.id === 'node-host');
    const session = await waitFor(nodeSession, 'the node host to connect', () => log);
    const nodeId = session.deviceId as string;

    // Its declared surface (system.run, system.which, …) waits for an operator.
    const pending = await waitFor(
      async () => {
        const r = await cli(tg, 'nodes', 'pending', '--json');
        assert.equal(r.code, 0, r.stderr);
        return (
          JSON.parse(r.stdout) as { pending: Array<{ requestId: string; nodeId: string; commands: string[]; requiredApproveScopes: string[] }> }
        ).pending.find((p) => p.nodeId === nodeId);
      },
      'the surface request',
      () => log,
    );
    assert.ok(pending.commands.includes('system.which'));
    assert.ok(pending.commands.includes('system.run'));
    assert.deepEqual(pending.requiredApproveScopes, ['operator.pairing', 'operator.admin']);

    const refused = await cli(tg, 'nodes', 'invoke', '--node', 'interop-exec-node', '--command', 'system.which', '--params', '{"bins":["sh"]}', '--json');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /NODE_COMMAND_NOT_APPROVED/);

    const approved = await cli(tg, 'nodes', 'approve', pending.requestId, '--json');
    assert.equal(approved.code, 0, approved.stderr);

    // The node host learns on its open socket and re-publishes its runner inventory (which the
    // gateway refused while the surface was pending): same connection, no reconnect.
    await waitFor(
      async () => ((await tg.store.listAudit()).some((e) => e.action === 'node.surface.approved' && e.subject === nodeId) ? true : undefined),
      'the approval',
      () => log,
    );
    assert.equal(nodeSession()?.connId, session.connId, `the node host stayed on one connection; output:\n${log}`);

    const which = await cli(tg, 'nodes', 'invoke', '--node', 'interop-exec-node', '--command', 'system.which', '--params', '{"bins":["sh"]}', '--json');
    assert.equal(which.code, 0, `${which.stderr}\nnode host output:\n${log}`);
    const result = JSON.parse(which.stdout) as { ok: boolean; nodeId: string; payload: { bins: Record<string, string> } };
    assert.equal(result.ok, true);
    assert.equal(result.nodeId, nodeId);
    assert.match(result.payload.bins.sh ?? '', /\/sh$/, `the real node host looked sh up on its PATH: ${which.stdout}`);
    const run = await cli(tg, 'nodes', 'invoke', '--node', nodeId, '--command', 'system.run', '--params', '{"command":["echo","hi"]}', '--json');
    assert.equal(run.code, 0, `${run.stderr}\nnode host output:\n${log}`);
    const ran = (JSON.parse(run.stdout) as { payload: { exitCode: number; stdout: string; success: boolean } }).payload;
    assert.deepEqual([ran.exitCode, ran.stdout, ran.success], [0, 'hi\n', true], 'the real node host ran echo');
    assert.equal(nodeSession()?.connId, session.connId);
  });
});

describe('real openclaw nodes CLI against clawgate', () => {
  test('openclaw nodes pending / approve / invoke / rename work against clawgate (a node played by the SDK)', async () => {
    const oc = openclawPaths();
    const tg = await startTestGateway({ config: { sharedSecretIsAdminOnHost: true } });
    const home = mkdtempSync(join(tmpdir(), 'clawgate-oc-nodes-'));
    const nodeIdentity = generateIdentity();
    const node = await connectGateway({
      url: tg.url,
      role: 'node',
      identity: nodeIdentity,
      auth: { token: TEST_TOKEN },
      client: { id: 'node-host', mode: 'node', displayName: 'sdk-node' },
      commands: ['system.which'],
    });
    const seen: Array<{ command: string; paramsJSON?: string }> = [];
    node.onEvent((event, payload) => {
      if (event !== 'node.invoke.request') return;
      const p = payload as { id: string; nodeId: string; command: string; paramsJSON?: string };
      seen.push(p);
      node.request('node.invoke.result', { id: p.id, nodeId: p.nodeId, ok: true, payloadJSON: '{"bins":{"sh":"/bin/sh"}}' }).catch(() => {});
    });
    // Approving and invoking need pairing and admin; the real CLI cannot make clawgate's owner
    // proof, so this gateway opts in to "the token is admin on the gateway host".
    const openclaw = (args: string[]) => openclawJson(oc, home, { url: tg.url, token: TEST_TOKEN }, args);
    try {
      const pending = (await openclaw(['nodes', 'pending'])) as Array<{ requestId: string; displayName: string }>;
      assert.equal(pending.length, 1);
      assert.equal(pending[0]?.displayName, 'sdk-node');
      // `openclaw devices list` reads the node surface fields of device.pair.list.
      type Row = { deviceId: string; nodeSurface?: { commands: string[] } | null; pendingNodeSurface?: { requestId: string; commands: string[] } | null };
      const nodeRow = async () => ((await openclaw(['devices', 'list'])) as { paired: Row[] }).paired.find((d) => d.deviceId === nodeIdentity.deviceId);
      const waiting = await nodeRow();
      assert.equal(waiting?.pendingNodeSurface?.requestId, pending[0]?.requestId);
      assert.deepEqual(waiting?.pendingNodeSurface?.commands, ['system.which']);
      const approved = (await openclaw(['nodes', 'approve', pending[0]?.requestId as string])) as { requestId: string };
      assert.equal(approved.requestId, pending[0]?.requestId);
      const surfaced = await nodeRow();
      assert.deepEqual(surfaced?.nodeSurface?.commands, ['system.which']);
      assert.equal(surfaced?.pendingNodeSurface, null);
      const invoked = (await openclaw(['nodes', 'invoke', '--node', 'sdk-node', '--command', 'system.which', '--params', '{"bins":["sh"]}'])) as {
        ok: boolean;
        payload: { bins: { sh: string } };
      };
      assert.equal(invoked.ok, true);
      assert.equal(invoked.payload.bins.sh, '/bin/sh');
      assert.deepEqual(JSON.parse(seen[0]?.paramsJSON ?? 'null'), { bins: ['sh'] });
      const renamed = (await openclaw(['nodes', 'rename', '--node', 'sdk-node', '--name', 'renamed-node'])) as { displayName: string };
      assert.equal(renamed.displayName, 'renamed-node');
    } finally {
      await node.close();
      await tg.stop();
      removeDir(tg.stateDir);
      removeDir(home);
    }
  });
});
