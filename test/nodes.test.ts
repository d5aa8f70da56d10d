/**
 * Nodes over real sockets and the real SQLite store: a raw test client plays the node host
 * (it answers `node.invoke.request` events itself), operators are real SDK connections or the
 * real `clawgate` CLI process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connectGateway, type DeviceIdentity, type GatewayConnection, GatewayRequestError, generateIdentity } from '../src/client/connection.js';
import { asOwner, cli, ownerAuth, removeDir, startTestGateway, TEST_TOKEN, type TestGateway, type TestGatewayOptions } from './helpers/gateway.js';
import { connectAsNode, type Frame, type NodeConnectOptions, RawClient } from './helpers/raw.js';

const HOST_COMMANDS = ['system.run', 'system.which'];
const REMOTE = { 'x-forwarded-for': '198.51.100.77' };

type NodeOpts = Partial<NodeConnectOptions> & { headers?: Record<string, string> };

/** A node host with this test file's defaults: the shared token, `system` with the host-level commands. */
async function connectNode(tg: TestGateway, identity: DeviceIdentity, o: NodeOpts = {}): Promise<{ node: RawClient; res: Frame | null }> {
  const node = await RawClient.open(tg.url, o.headers);
  const res = await connectAsNode(node, identity, {
    ...o,
    auth: o.auth ?? { token: TEST_TOKEN },
    caps: o.caps ?? ['system'],
    commands: o.commands ?? HOST_COMMANDS,
  });
  return { node, res };
}

/** The payload of a frame that must have arrived. */
function pl<T>(f: Frame | null | undefined): T {
  assert.ok(f, 'expected a frame');
  return f.payload as T;
}

type Handler = (req: { id: string; nodeId: string; command: string; paramsJSON?: string; timeoutMs: number }) => unknown;

/** Answer every node.invoke.request with `handler`'s result (undefined = never answer). */
function serve(node: RawClient, handler: Handler): void {
  let n = 0;
  node.ws.on('message', (data) => {
    const f = JSON.parse(data.toString()) as Frame;
    if (f.type !== 'event' || f.event !== 'node.invoke.request') return;
    const req = f.payload as Parameters<Handler>[0];
    const out = handler(req);
    if (out === undefined) return;
    node.send({ type: 'req', id: `r${++n}`, method: 'node.invoke.result', params: { id: req.id, nodeId: req.nodeId, ...(out as object) } });
  });
}

function owner(tg: TestGateway): Promise<GatewayConnection> {
  return connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
}

/**
 * A local operator device holding exactly `scopes`, paired by the owner credential (the shared
 * token alone is worth read+write, so it cannot stand for a pairing operator).
 */
function operatorWith(tg: TestGateway, scopes: string[]): Promise<GatewayConnection> {
  return connectGateway({ url: tg.url, identity: generateIdentity(), ...asOwner(tg), client: { id: 'cli', mode: 'cli' }, scopes });
}

async function failure(p: Promise<unknown>): Promise<{ code: string; detail: string; details: Record<string, unknown>; message: string }> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GatewayRequestError, `expected a gateway error, got ${err}`);
    const details = (err.error.details ?? {}) as Record<string, unknown>;
    return { code: err.error.code, detail: String(details.code), details, message: err.error.message };
  }
  assert.fail('expected the request to fail');
}

async function pendingFor(tg: TestGateway, nodeId: string): Promise<{ requestId: string; commands: string[]; requiredApproveScopes: string[] }> {
  const op = await owner(tg);
  try {
    const list = await op.request<{ pending: Array<{ requestId: string; nodeId: string; commands: string[]; requiredApproveScopes: string[] }> }>(
      'node.pair.list',
      {},
    );
    const p = list.pending.find((x) => x.nodeId === nodeId);
    assert.ok(p, 'surface request listed');
    return p;
  } finally {
    await op.close();
  }
}

function withGateway(opts: TestGatewayOptions, body: (tg: TestGateway) => Promise<void>): () => Promise<void> {
  return async () => {
    const tg = await startTestGateway(opts);
    try {
      await body(tg);
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  };
}

type SurfaceRow = {
  deviceId: string;
  roles: string[];
  nodeSurface?: { commands: string[]; requestId: string; approvedAtMs: number } | null;
  pendingNodeSurface?: { requestId: string; commands: string[]; ts: number } | null;
};

/** The device.pair.list row of one device. */
async function deviceRow(op: GatewayConnection, deviceId: string): Promise<SurfaceRow> {
  const list = await op.request<{ paired: SurfaceRow[] }>('device.pair.list', {});
  const row = list.paired.find((d) => d.deviceId === deviceId);
  assert.ok(row, `device ${deviceId} is listed`);
  for (const d of list.paired.filter((x) => !x.roles.includes('node'))) assert.equal('nodeSurface' in d, false, 'operator-only rows carry no node fields');
  return row;
}

describe('node surface approval', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'] } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('a new surface is recorded and announced; invocations are refused until approval, then routed; approval arrives live', async () => {
    const watcher = await owner(tg);
    const announced = watcher.waitForEvent<{ requestId: string; nodeId: string; commands: string[]; requiredApproveScopes: string[] }>('node.pair.requested');
    const id = generateIdentity();
    const { node, res } = await connectNode(tg, id, { commands: ['system.which', 'system.run', 'canvas.present'], permissions: { 'screen.record': false } });
    assert.equal(res?.ok, true, JSON.stringify(res?.error));
    const hello = pl<{ auth: { role: string; scopes: string[]; deviceToken?: string } }>(res);
    assert.equal(hello.auth.role, 'node');
    assert.deepEqual(hello.auth.scopes, []);
    assert.ok(hello.auth.deviceToken, 'the node gets a node token');

    const ev = await announced;
    assert.equal(ev.nodeId, id.deviceId);
    assert.deepEqual(ev.commands, ['canvas.present', 'system.run', 'system.which']);
    assert.deepEqual(ev.requiredApproveScopes, ['operator.pairing', 'operator.admin']);
    const pending = await pendingFor(tg, id.deviceId);
    assert.equal(pending.requestId, ev.requestId);
    // device.pair.list carries the node fields `openclaw devices list` reads.
    const before = await deviceRow(watcher, id.deviceId);
    assert.equal(before.nodeSurface, null);
    assert.equal(before.pendingNodeSurface?.requestId, ev.requestId);
    assert.deepEqual(before.pendingNodeSurface?.commands, ['canvas.present', 'system.run', 'system.which']);

    // Not routable yet: refused with the request to approve, and never run later.
    const invoked: string[] = [];
    serve(node, (r) => {
      invoked.push(r.command);
      return { ok: true, payloadJSON: JSON.stringify({ bins: { sh: '/bin/sh' }, echo: r.paramsJSON }) };
    });
    const refused = await failure(watcher.request('node.invoke', { nodeId: id.deviceId, command: 'system.which', params: { bins: ['sh'] } }));
    assert.equal(refused.detail, 'NODE_COMMAND_NOT_APPROVED');
    assert.equal(refused.code, 'FORBIDDEN');
    assert.equal(refused.details.requestId, ev.requestId);
    const undeclared = await failure(watcher.request('node.invoke', { nodeId: id.deviceId, command: 'camera.snap' }));
    assert.equal(undeclared.detail, 'NODE_COMMAND_NOT_DECLARED');
    // The node host's inventory publication tells its user what to run.
    const inv = await node.request('n1', 'node.runnerInventory.update', { protocolFeatures: ['x'], workerHost: { enabled: false } });
    assert.equal(inv?.ok, false);
    assert.equal(inv?.error?.details?.code, 'NODE_SURFACE_PENDING');
    assert.match(inv?.error?.message ?? '', new RegExp(`clawgate nodes approve ${ev.requestId}`));

    // An operator with pairing + write (no admin) cannot approve host-level commands.
    const writer = await operatorWith(tg, ['operator.pairing', 'operator.write']);
    const denied = await failure(writer.request('node.pair.approve', { requestId: ev.requestId }));
    assert.equal(denied.detail, 'NODE_APPROVAL_DENIED');
    assert.deepEqual(denied.details.missingScopes, ['operator.admin']);
    await writer.close();

    // The owner approves; the node learns on its open socket.
    const approved = await watcher.request<{ requestId: string; node: { commands: string[] } }>('node.pair.approve', { requestId: ev.requestId });
    assert.deepEqual(approved.node.commands, ['canvas.present', 'system.run', 'system.which']);
    const resolved = await node.event('node.pair.resolved');
    assert.deepEqual({ ...pl<object>(resolved), ts: 0 }, { requestId: ev.requestId, nodeId: id.deviceId, decision: 'approved', ts: 0 });
    assert.equal(node.open, true);

    assert.deepEqual(invoked, [], 'the refused invocation was never delivered');
    const result = await watcher.request<{ ok: boolean; payload: { bins: { sh: string }; echo: string } }>('node.invoke', {
      nodeId: id.deviceId,
      command: 'system.which',
      params: { bins: ['sh'] },
    });
    assert.equal(result.ok, true);
    assert.equal(result.payload.bins.sh, '/bin/sh');
    assert.deepEqual(JSON.parse(result.payload.echo), { bins: ['sh'] });
    assert.deepEqual(invoked, ['system.which']);
    const inv2 = await node.request('n2', 'node.runnerInventory.update', {});
    assert.equal(inv2?.ok, true);

    // Reconnecting with the same surface files nothing new.
    await node.close();
    const again = await connectNode(tg, id, { commands: ['system.which', 'system.run', 'canvas.present'] });
    assert.equal(again.res?.ok, true);
    const list = await watcher.request<{ pending: Array<{ nodeId: string }> }>('node.pair.list', {});
    assert.equal(list.pending.filter((p) => p.nodeId === id.deviceId).length, 0);
    // A wider surface is a new request; the approved commands stay routable meanwhile.
    await again.node.close();
    const wider = await connectNode(tg, id, { commands: ['system.which', 'system.run', 'canvas.present', 'camera.snap'] });
    serve(wider.node, () => ({ ok: true, payloadJSON: '{"bins":{}}' }));
    const p2 = await pendingFor(tg, id.deviceId);
    assert.notEqual(p2.requestId, ev.requestId);
    const row = await deviceRow(watcher, id.deviceId);
    assert.deepEqual(row.nodeSurface?.commands, ['canvas.present', 'system.run', 'system.which']);
    assert.equal(row.nodeSurface?.requestId, ev.requestId);
    assert.equal(row.pendingNodeSurface?.requestId, p2.requestId);
    assert.deepEqual(row.pendingNodeSurface?.commands, ['camera.snap', 'canvas.present', 'system.run', 'system.which']);
    assert.deepEqual(p2.requiredApproveScopes, ['operator.pairing', 'operator.admin']);
    const stillOk = await watcher.request<{ ok: boolean }>('node.invoke', { nodeId: id.deviceId, command: 'system.which', params: {} });
    assert.equal(stillOk.ok, true);
    const newOne = await failure(watcher.request('node.invoke', { nodeId: id.deviceId, command: 'camera.snap' }));
    assert.equal(newOne.detail, 'NODE_COMMAND_NOT_APPROVED');
    assert.equal(newOne.details.requestId, p2.requestId);
    await wider.node.close();
    await watcher.close();
  });

  test('ordinary commands need pairing + write to approve; pairing alone is not enough; rejection is told live', async () => {
    const id = generateIdentity();
    const { node, res } = await connectNode(tg, id, { commands: ['canvas.present'], caps: ['canvas'] });
    assert.equal(res?.ok, true);
    const p = await pendingFor(tg, id.deviceId);
    assert.deepEqual(p.requiredApproveScopes, ['operator.pairing', 'operator.write']);
    const pairingOnly = await operatorWith(tg, ['operator.pairing']);
    const denied = await failure(pairingOnly.request('node.pair.approve', { requestId: p.requestId }));
    assert.equal(denied.detail, 'NODE_APPROVAL_DENIED');
    // operator.pairing may reject.
    await pairingOnly.request('node.pair.reject', { requestId: p.requestId });
    const resolved = await node.event('node.pair.resolved');
    assert.equal(pl<{ decision: string }>(resolved).decision, 'rejected');
    const gone = await failure(pairingOnly.request('node.pair.approve', { requestId: p.requestId }));
    assert.equal(gone.detail, 'UNKNOWN_NODE_REQUEST_ID');
    await pairingOnly.close();
    // A reconnect files it again; pairing + write approves it.
    await node.close();
    const again = await connectNode(tg, id, { commands: ['canvas.present'], caps: ['canvas'] });
    const p2 = await pendingFor(tg, id.deviceId);
    const writer = await operatorWith(tg, ['operator.pairing', 'operator.write']);
    const ok = await writer.request<{ node: { commands: string[] } }>('node.pair.approve', { requestId: p2.requestId });
    assert.deepEqual(ok.node.commands, ['canvas.present']);
    await writer.close();
    await again.node.close();
  });

  test('roles stay apart: a node cannot call operator methods, an operator cannot call node methods, a node cannot answer for another', async () => {
    const a = generateIdentity();
    const b = generateIdentity();
    const na = await connectNode(tg, a, { commands: ['canvas.present'] });
    const nb = await connectNode(tg, b, { commands: ['canvas.present'] });
    const op = await owner(tg);
    await op.request('node.pair.approve', { requestId: (await pendingFor(tg, a.deviceId)).requestId });
    for (const method of ['node.list', 'node.invoke', 'node.pair.approve', 'device.pair.list']) {
      const r = await na.node.request(`x-${method}`, method, {});
      assert.equal(r?.error?.details?.code, 'ROLE_NOT_ALLOWED', method);
    }
    for (const method of ['node.invoke.result', 'node.event', 'node.runnerInventory.update']) {
      const f = await failure(op.request(method, { id: 'x', ok: true, event: 'x' }));
      assert.equal(f.detail, 'ROLE_NOT_ALLOWED', method);
    }
    // Node b sees a's invocation id only if it guesses it; even then its answer is ignored.
    const pending = op.request<{ payload: unknown }>('node.invoke', { nodeId: a.deviceId, command: 'canvas.present', timeoutMs: 5000 });
    const request = await na.node.next((f) => f.event === 'node.invoke.request' && (f.payload as { command: string }).command === 'canvas.present');
    assert.ok(request, 'node a was asked');
    const seenId = (request.payload as { id: string }).id;
    const forged = await nb.node.request('forge', 'node.invoke.result', { id: seenId, nodeId: a.deviceId, ok: true, payloadJSON: '"forged"' });
    assert.deepEqual(forged?.payload, { ok: true, ignored: true });
    na.node.send({ type: 'req', id: 'real', method: 'node.invoke.result', params: { id: seenId, nodeId: a.deviceId, ok: true, payloadJSON: '"real"' } });
    assert.equal((await pending).payload, 'real');
    await op.close();
    await na.node.close();
    await nb.node.close();
  });

  test('a node reports failure: the caller gets NODE_INVOKE_FAILED with the node error; a cancel frame cancels on the node', async () => {
    const id = generateIdentity();
    const { node } = await connectNode(tg, id, { commands: ['system.run', 'slow.cmd'] });
    const op = await owner(tg);
    await op.request('node.pair.approve', { requestId: (await pendingFor(tg, id.deviceId)).requestId });
    serve(node, (r) => (r.command === 'system.run' ? { ok: false, error: { code: 'SYSTEM_RUN_DENIED', message: 'command not in the allowlist' } } : undefined));
    const f = await failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'system.run', params: { command: ['rm', '-rf', '/'] } }));
    assert.equal(f.detail, 'NODE_INVOKE_FAILED');
    assert.deepEqual(f.details.nodeError, { code: 'SYSTEM_RUN_DENIED', message: 'command not in the allowlist' });
    assert.match(f.message, /command not in the allowlist/);
    // A raw operator sends {type:"cancel"} for its in-flight node.invoke.
    const raw = await RawClient.open(tg.url);
    const ch = await raw.challenge();
    assert.equal(
      (
        await raw.request('c1', 'connect', {
          minProtocol: 4,
          maxProtocol: 4,
          client: { id: 'cli', mode: 'cli', version: '1', platform: 'linux' },
          auth: ownerAuth(ch, tg.url),
        })
      )?.ok,
      true,
    );
    raw.send({ type: 'req', id: 'inv', method: 'node.invoke', params: { nodeId: id.deviceId, command: 'slow.cmd', timeoutMs: 10_000 } });
    const sent = pl<{ id: string }>(await node.next((x) => x.event === 'node.invoke.request' && (x.payload as { command: string }).command === 'slow.cmd'));
    raw.send({ type: 'cancel', id: 'inv' });
    assert.equal((await raw.response('inv'))?.error?.details?.code, 'NODE_INVOKE_CANCELLED');
    const cancel = pl<{ id: string; reason: string }>(await node.event('node.invoke.cancel'));
    assert.deepEqual([cancel.id, cancel.reason], [sent.id, 'caller-cancelled']);
    await raw.close();
    await op.close();
    await node.close();
  });

  test('a device cannot approve its own node surface without operator.admin', async () => {
    const id = generateIdentity();
    // The operator half holds pairing + write (the owner paired it: the shared token alone is worth
    // read+write); the node half pairs silently with the shared token on loopback.
    const self = await connectGateway({
      url: tg.url,
      identity: id,
      ...asOwner(tg),
      client: { id: 'test', mode: 'test' },
      scopes: ['operator.pairing', 'operator.write'],
    });
    const { node } = await connectNode(tg, id, { commands: ['canvas.present'] });
    const p = await pendingFor(tg, id.deviceId);
    const f = await failure(self.request('node.pair.approve', { requestId: p.requestId }));
    assert.equal(f.detail, 'NODE_APPROVAL_DENIED');
    assert.match(f.message, /its own node surface/);
    await self.close();
    await node.close();
  });

  test('node.event is accepted and reaches operators; skills/pluginTools publications are accepted', async () => {
    const id = generateIdentity();
    const { node } = await connectNode(tg, id, { commands: [] });
    const op = await owner(tg);
    const got = op.waitForEvent<{ nodeId: string; event: string; payload: { cpuCount: number } }>('node.event');
    const r = await node.request('e1', 'node.event', { event: 'node.host.stats', payloadJSON: '{"cpuCount":2}' });
    assert.equal(r?.ok, true);
    const ev = await got;
    assert.equal(ev.nodeId, id.deviceId);
    assert.equal(ev.payload.cpuCount, 2);
    assert.equal((await node.request('e2', 'node.skills.update', { skills: [] }))?.ok, true);
    assert.equal((await node.request('e3', 'node.pluginTools.update', { tools: [] }))?.ok, true);
    await op.close();
    await node.close();
  });

  test('a remote node (through a trusted proxy) is device-approved, gets a node token, and reconnects with it alone', async () => {
    const id = generateIdentity();
    const first = await connectNode(tg, id, { headers: REMOTE });
    assert.equal(first.res?.ok, false);
    assert.equal(first.res?.error?.details?.code, 'PAIRING_REQUIRED');
    const requestId = first.res?.error?.details?.requestId as string;
    // The failure this issue ends: a device pairing id given to the node surface approval
    // is refused with a pointer to the right command.
    const op = await owner(tg);
    const mixUp = await failure(op.request('node.pair.approve', { requestId }));
    assert.equal(mixUp.detail, 'NODE_REQUEST_IS_DEVICE_REQUEST');
    assert.deepEqual(mixUp.details.devicePairingRequest, { requestId, deviceId: id.deviceId, role: 'node' });
    // The message alone names the command (a client that prints only `message` still helps).
    assert.match(mixUp.message, new RegExp(`approve it with openclaw devices approve ${requestId} \\(or clawgate devices approve ${requestId}\\)`));
    await op.close();
    const approved = await cli(tg, 'devices', 'approve', requestId, '--json');
    assert.equal(approved.code, 0, approved.stderr);
    const second = await connectNode(tg, id, { headers: REMOTE });
    assert.equal(second.res?.ok, true, JSON.stringify(second.res?.error));
    const auth = pl<{ auth: { role: string; scopes: string[]; deviceToken?: string } }>(second.res).auth;
    assert.equal(auth.role, 'node');
    assert.ok(auth.deviceToken, 'hello-ok carries a node device token');
    await second.node.close();
    const third = await connectNode(tg, id, { headers: REMOTE, auth: { deviceToken: auth.deviceToken as string } });
    assert.equal(third.res?.ok, true, JSON.stringify(third.res?.error));
    // Its surface request is there and approvable by id (remote address recorded).
    const p = await pendingFor(tg, id.deviceId);
    const ok = await cli(tg, 'nodes', 'approve', p.requestId, '--json');
    assert.equal(ok.code, 0, ok.stderr);
    const resolved = await third.node.event('node.pair.resolved');
    assert.equal(pl<{ requestId: string }>(resolved).requestId, p.requestId);
    await third.node.close();
  });

  test('devices rotate --role node: the live node alone gets the new token pushed, then 4001; the old token stops working; offline the token is withheld', async () => {
    const id = generateIdentity();
    const { node, res } = await connectNode(tg, id);
    const token = pl<{ auth: { deviceToken: string } }>(res).auth.deviceToken;
    const op = await owner(tg);
    const rotated = await cli(tg, 'devices', 'rotate', '--device', id.deviceId, '--role', 'node', '--json');
    assert.equal(rotated.code, 0, rotated.stderr);
    const out = JSON.parse(rotated.stdout) as { role: string; tokenDelivery: string; token?: string };
    assert.deepEqual([out.role, out.tokenDelivery, out.token], ['node', 'pushed-live', undefined]);
    assert.equal((await node.closed).code, 4001);
    const pushedAt = node.frames.findIndex((f) => f.type === 'event' && f.event === 'device.token.rotated');
    assert.ok(pushedAt >= 0, 'the node received the new token on its socket');
    const pushed = pl<{ deviceId: string; role: string; deviceToken: string }>(node.frames[pushedAt]);
    assert.deepEqual([pushed.deviceId, pushed.role], [id.deviceId, 'node']);
    assert.ok(pushed.deviceToken !== token && pushed.deviceToken.startsWith('cgd1_'));
    // The operator connected meanwhile saw no such event (a round trip flushes what was sent to it).
    await op.request('health', {});
    assert.equal(op.events.filter((e) => e.event === 'device.token.rotated').length, 0);
    await op.close();

    const stale = await connectNode(tg, id, { auth: { deviceToken: token } });
    assert.equal(stale.res?.error?.details?.code, 'AUTH_DEVICE_TOKEN_MISMATCH');
    const byPushed = await connectNode(tg, id, { auth: { deviceToken: pushed.deviceToken } });
    assert.equal(pl<{ auth: { role: string; method: string } }>(byPushed.res).auth.method, 'device-token');
    await byPushed.node.close();

    // Offline: withheld; the next connect with the shared token mints a fresh one.
    const offline = await cli(tg, 'devices', 'rotate', '--device', id.deviceId, '--role', 'node', '--json');
    assert.equal((JSON.parse(offline.stdout) as { tokenDelivery: string }).tokenDelivery, 'withheld-cross-device');
    const fresh = await connectNode(tg, id);
    const next = pl<{ auth: { deviceToken?: string; role: string } }>(fresh.res).auth;
    assert.equal(next.role, 'node');
    assert.ok(next.deviceToken && next.deviceToken !== token && next.deviceToken !== pushed.deviceToken, 'a new node token');
    await fresh.node.close();
  });

  test('protocol v3 nodes connect and get the same surface handling', async () => {
    const id = generateIdentity();
    const { node, res } = await connectNode(tg, id, { protocol: 3, commands: ['system.which'] });
    assert.equal(res?.ok, true, JSON.stringify(res?.error));
    assert.equal(pl<{ protocol: number }>(res).protocol, 3);
    const p = await pendingFor(tg, id.deviceId);
    assert.deepEqual(p.commands, ['system.which']);
    await node.close();
  });

  test('node.pair.remove drops the node role and its surface; a reconnect starts over', async () => {
    const id = generateIdentity();
    const { node } = await connectNode(tg, id, { commands: ['canvas.present'] });
    const op = await owner(tg);
    await op.request('node.pair.approve', { requestId: (await pendingFor(tg, id.deviceId)).requestId });
    assert.ok(await tg.store.getNodeSurface(id.deviceId));
    const removed = await op.request<{ nodeId: string }>('node.pair.remove', { nodeId: id.deviceId });
    assert.equal(removed.nodeId, id.deviceId);
    assert.equal((await node.closed).code, 4001);
    assert.equal(await tg.store.getNodeSurface(id.deviceId), null);
    assert.equal(await tg.store.getGrant(id.deviceId, 'node'), null);
    const back = await connectNode(tg, id, { commands: ['canvas.present'] });
    assert.equal(back.res?.ok, true);
    const f = await failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'canvas.present' }));
    assert.equal(f.detail, 'NODE_COMMAND_NOT_APPROVED', 'the old approval did not come back');
    await back.node.close();
    await op.close();
  });
});

describe('node.invoke routing limits', () => {
  test(
    'timeout, caller cancel, node disconnect, concurrency and size limits',
    withGateway({ config: { nodeLimits: { maxInflightPerNode: 2, maxParamsBytes: 1000, maxResultBytes: 2000 } } }, async (tg) => {
      const id = generateIdentity();
      const { node } = await connectNode(tg, id, { commands: ['slow.cmd', 'big.cmd'] });
      const op = await owner(tg);
      await op.request('node.pair.approve', { requestId: (await pendingFor(tg, id.deviceId)).requestId });
      serve(node, (r) => (r.command === 'big.cmd' ? { ok: true, payloadJSON: JSON.stringify('x'.repeat(3000)) } : undefined));

      // Timeout: the caller gets NODE_INVOKE_TIMEOUT and the node is told to cancel.
      const t = await failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'slow.cmd', timeoutMs: 200 }));
      assert.equal(t.detail, 'NODE_INVOKE_TIMEOUT');
      assert.equal(t.details.timeoutMs, 200);
      const sent = pl<{ id: string }>(await node.event('node.invoke.request'));
      const timeoutCancel = pl<{ id: string; reason: string }>(await node.event('node.invoke.cancel'));
      assert.deepEqual([timeoutCancel.id, timeoutCancel.reason], [sent.id, 'timeout']);
      assert.equal(t.details.invokeId, sent.id);

      // Size limits both ways.
      const bigParams = await failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'slow.cmd', params: { s: 'y'.repeat(2000) } }));
      assert.equal(bigParams.detail, 'NODE_PAYLOAD_TOO_LARGE');
      const bigResult = await failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'big.cmd' }));
      assert.equal(bigResult.detail, 'NODE_PAYLOAD_TOO_LARGE');

      // Concurrency: two in flight, the third is refused at once (not queued).
      const one = failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'slow.cmd', timeoutMs: 10_000 }));
      const two = failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'slow.cmd', timeoutMs: 10_000 }));
      // Both are in flight once the node has been asked twice.
      const slowAsked = (f: Frame) => f.event === 'node.invoke.request' && (f.payload as { command: string }).command === 'slow.cmd';
      assert.ok(await node.next(slowAsked));
      assert.ok(await node.next(slowAsked));
      const busy = await failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'slow.cmd', timeoutMs: 10_000 }));
      assert.equal(busy.detail, 'NODE_BUSY');
      assert.equal(busy.code, 'UNAVAILABLE');

      // Node disconnect fails everything in flight at once with a clear code.
      await node.close();
      assert.equal((await one).detail, 'NODE_DISCONNECTED');
      assert.equal((await two).detail, 'NODE_DISCONNECTED');
      const offline = await failure(op.request('node.invoke', { nodeId: id.deviceId, command: 'slow.cmd' }));
      assert.equal(offline.detail, 'NODE_NOT_CONNECTED');
      const unknown = await failure(op.request('node.invoke', { nodeId: 'f'.repeat(64), command: 'slow.cmd' }));
      assert.equal(unknown.detail, 'UNKNOWN_NODE');

      // The caller going away cancels its invocation on the node.
      const back = await connectNode(tg, id, { commands: ['slow.cmd', 'big.cmd'] });
      const caller = await owner(tg);
      void caller.request('node.invoke', { nodeId: id.deviceId, command: 'slow.cmd', timeoutMs: 10_000 }).catch(() => {});
      const req = await back.node.event('node.invoke.request');
      await caller.close();
      const cancel = await back.node.event('node.invoke.cancel');
      assert.equal(pl<{ id: string }>(cancel).id, pl<{ id: string }>(req).id);
      assert.equal(tg.gateway.nodes.byNode(id.deviceId)?.inflight.size, 0);
      await back.node.close();
      await op.close();
    }),
  );

  test(
    'invoking an admin-only command needs operator.admin',
    withGateway({}, async (tg) => {
      const id = generateIdentity();
      const { node } = await connectNode(tg, id, { commands: ['fs.listDir'] });
      const op = await owner(tg);
      await op.request('node.pair.approve', { requestId: (await pendingFor(tg, id.deviceId)).requestId });
      const writer = await operatorWith(tg, ['operator.write']);
      const f = await failure(writer.request('node.invoke', { nodeId: id.deviceId, command: 'fs.listDir', params: {} }));
      assert.equal(f.detail, 'MISSING_SCOPE');
      assert.equal(f.details.missingScope, 'operator.admin');
      await writer.close();
      await op.close();
      await node.close();
    }),
  );
});

describe('node surface requests survive a restart (SQLite)', () => {
  test(
    'the pending request keeps its id across a restart and is approvable by it; the reconnecting node is routable',
    withGateway({}, async (first) => {
      const id = generateIdentity();
      const { node } = await connectNode(first, id, { commands: ['system.which'] });
      const before = await pendingFor(first, id.deviceId);
      await node.close();
      const tg = await first.restart();
      try {
        const after = await pendingFor(tg, id.deviceId);
        assert.equal(after.requestId, before.requestId);
        // A reconnect with the same surface refreshes the same request.
        const again = await connectNode(tg, id, { commands: ['system.which'] });
        assert.equal((await pendingFor(tg, id.deviceId)).requestId, before.requestId);
        const approved = await cli(tg, 'nodes', 'approve', before.requestId, '--json');
        assert.equal(approved.code, 0, approved.stderr);
        assert.equal(pl<{ requestId: string }>(await again.node.event('node.pair.resolved')).requestId, before.requestId);
        serve(again.node, () => ({ ok: true, payloadJSON: '{"bins":{"sh":"/usr/bin/sh"}}' }));
        const out = await cli(tg, 'nodes', 'invoke', '--node', 'test-node', '--command', 'system.which', '--params', '{"bins":["sh"]}', '--json');
        assert.equal(out.code, 0, out.stderr);
        assert.equal((JSON.parse(out.stdout) as { payload: { bins: { sh: string } } }).payload.bins.sh, '/usr/bin/sh');
        await again.node.close();
      } finally {
        await tg.stop();
      }
    }),
  );
});

describe('clawgate nodes CLI', () => {
  test(
    'list, pending, approve, describe, rename, invoke, reject and remove with --json; <node> by id or name',
    withGateway({}, async (tg) => {
      const id = generateIdentity();
      const { node } = await connectNode(tg, id, { commands: ['system.which'], name: 'cli-node' });
      serve(node, (r) => ({ ok: true, payloadJSON: JSON.stringify({ bins: { sh: '/bin/sh' }, params: JSON.parse(r.paramsJSON ?? 'null') }) }));

      const pending = await cli(tg, 'nodes', 'pending', '--json');
      assert.equal(pending.code, 0, pending.stderr);
      const req = (JSON.parse(pending.stdout) as { pending: Array<{ requestId: string; nodeId: string }> }).pending.find((p) => p.nodeId === id.deviceId);
      assert.ok(req);
      const refused = await cli(tg, 'nodes', 'invoke', '--node', 'cli-node', '--command', 'system.which', '--params', '{"bins":["sh"]}', '--json');
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /NODE_COMMAND_NOT_APPROVED/);

      // By node name: the CLI approves that node's pending request.
      const approved = await cli(tg, 'nodes', 'approve', 'cli-node', '--json');
      assert.equal(approved.code, 0, approved.stderr);
      assert.equal((JSON.parse(approved.stdout) as { requestId: string }).requestId, req.requestId);
      const unknown = await cli(tg, 'nodes', 'approve', req.requestId, '--json');
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /UNKNOWN_NODE_REQUEST_ID/);

      const list = await cli(tg, 'nodes', 'list', '--json');
      const nodes = (JSON.parse(list.stdout) as { nodes: Array<{ nodeId: string; displayName: string; connected: boolean; commands: string[] }> }).nodes;
      const mine = nodes.find((n) => n.nodeId === id.deviceId);
      assert.deepEqual([mine?.displayName, mine?.connected, mine?.commands], ['cli-node', true, ['system.which']]);

      const described = await cli(tg, 'nodes', 'describe', 'cli-node', '--json');
      assert.equal(described.code, 0, described.stderr);
      assert.equal((JSON.parse(described.stdout) as { nodeId: string }).nodeId, id.deviceId);

      const invoked = await cli(
        tg,
        'nodes',
        'invoke',
        '--node',
        id.deviceId,
        '--command',
        'system.which',
        '--params',
        '{"bins":["sh"]}',
        '--timeout',
        '5000',
        '--json',
      );
      assert.equal(invoked.code, 0, invoked.stderr);
      const payload = (JSON.parse(invoked.stdout) as { payload: { bins: { sh: string }; params: unknown } }).payload;
      assert.equal(payload.bins.sh, '/bin/sh');
      assert.deepEqual(payload.params, { bins: ['sh'] });
      const human = await cli(tg, 'nodes', 'invoke', '--node', 'cli-node', '--command', 'system.which');
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /"sh": "\/bin\/sh"/);

      const renamed = await cli(tg, 'nodes', 'rename', 'cli-node', 'build-box', '--json');
      assert.equal(renamed.code, 0, renamed.stderr);
      const byNewName = await cli(tg, 'nodes', 'describe', 'build-box', '--json');
      assert.equal((JSON.parse(byNewName.stdout) as { displayName: string }).displayName, 'build-box');
      const noSuch = await cli(tg, 'nodes', 'describe', 'no-such-node', '--json');
      assert.equal(noSuch.code, 1);

      // A wider reconnect, rejected from the CLI.
      await node.close();
      const wider = await connectNode(tg, id, { commands: ['system.which', 'system.run'], name: 'cli-node' });
      const p2 = await pendingFor(tg, id.deviceId);
      const rejected = await cli(tg, 'nodes', 'reject', p2.requestId, '--json');
      assert.equal(rejected.code, 0, rejected.stderr);
      assert.equal(pl<{ decision: string }>(await wider.node.event('node.pair.resolved')).decision, 'rejected');

      const removed = await cli(tg, 'nodes', 'remove', 'build-box', '--json');
      assert.equal(removed.code, 0, removed.stderr);
      assert.equal((await wider.node.closed).code, 4001);
      const after = await cli(tg, 'nodes', 'list', '--json');
      assert.equal((JSON.parse(after.stdout) as { nodes: unknown[] }).nodes.length, 0);
      const usage = await cli(tg, 'nodes', 'bogus');
      assert.equal(usage.code, 2);
    }),
  );
});
