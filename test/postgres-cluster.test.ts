/**
 * Two clawgate instances (A and B, real `clawgate gateway run --store postgres` processes) on
 * one throwaway PostgreSQL database, driven by real WebSocket clients: approval reaching a
 * connect waiting on the other instance, revocation closing a socket on the other instance,
 * one setup code redeemed 200 times at once across both, and an instance SIGKILLed in the
 * middle of an approval.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import pg from 'pg';
import { ConnectError, connectGateway, type DeviceIdentity, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { systemRandom } from '../src/core/env.js';
import { mintToken } from '../src/core/secrets.js';
import { CLUSTER_CHANNEL, LISTENER_APP_NAME } from '../src/store/postgres/bus.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { verifyAuditChain } from '../src/store/shared.js';
import { ownerAuth } from './helpers/gateway.js';
import { asClusterOwner, CLUSTER_OWNER, CLUSTER_TOKEN, type Instance, removeStateDir, startInstance, startInstancesAB } from './helpers/instance.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { connectAsNode, type Frame, RawClient } from './helpers/raw.js';
import { approveRequestInStore } from './helpers/store-fixtures.js';
import { waitFor } from './helpers/wait.js';

let cluster: PgCluster;
let url: string;
let a: Instance;
let b: Instance;
const dirs: string[] = [];

before(async () => {
  cluster = await startPgCluster();
  url = await cluster.createDatabase();
  [a, b] = await startInstancesAB(url, dirs);
});

after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await cluster?.stop();
  for (const d of dirs) removeStateDir(d);
});

function operator(inst: Instance, onEvent?: (event: string, payload: unknown) => void): Promise<GatewayConnection> {
  return connectGateway({ url: inst.url, ...asClusterOwner, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'], onEvent });
}

/** A device paired on connect by the owner token, holding operator.read. */
function readerOn(inst: Instance, identity: DeviceIdentity): Promise<GatewayConnection> {
  return connectGateway({ url: inst.url, identity, ...asClusterOwner, scopes: ['operator.read'], client: { id: 'test', mode: 'test' } });
}

/** Revoke the device's operator token straight in the database, as an instance's revocation commits it. */
async function revokeBehindTheGateways(store: PostgresStore, deviceId: string): Promise<void> {
  const atMs = Date.now();
  await store.revokeToken(deviceId, 'operator', atMs, { atMs, actor: 'owner', action: 'token.revoked', subject: deviceId });
}

/** A new device asking to pair, keeping its socket open until an operator decides. */
function waitingDevice(inst: Instance, identity: DeviceIdentity): Promise<GatewayConnection> {
  return connectGateway({
    url: inst.url,
    identity,
    auth: { token: CLUSTER_TOKEN },
    scopes: ['operator.read'],
    client: { id: 'test', mode: 'test', displayName: 'waiting-device' },
    caps: ['device-pairing-wait'],
    timeoutMs: 20_000,
  });
}

/** Wait until `pred` holds for an event seen on `conn`. */
function nextEvent<T>(conn: GatewayConnection, name: string, pred: (p: T) => boolean = () => true, timeoutMs = 10_000): Promise<T> {
  const seen = conn.events.find((e) => e.event === name && pred(e.payload as T));
  if (seen) return Promise.resolve(seen.payload as T);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${name} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = conn.onEvent((e, p) => {
      if (e === name && pred(p as T)) {
        clearTimeout(timer);
        off();
        resolve(p as T);
      }
    });
  });
}

function pl<T>(f: Frame | null | undefined): T {
  assert.ok(f, 'expected a frame');
  return f.payload as T;
}

function pendingFor(store: PostgresStore, deviceId: string, timeoutMs = 10_000): Promise<string> {
  return waitFor(async () => (await store.listPairingRequests(deviceId))[0]?.requestId, `a pending request for ${deviceId}`, { timeoutMs, intervalMs: 20 });
}

describe('two instances on one PostgreSQL database', () => {
  test('a device waiting for approval on B is admitted when an operator approves it on A', async () => {
    const opA = await operator(a);
    try {
      const identity = generateIdentity();
      const waiting = waitingDevice(b, identity);
      // The request was filed on B; the operator connected to A hears of it.
      const requested = await nextEvent<{ requestId: string; deviceId: string }>(opA, 'device.pair.requested', (p) => p.deviceId === identity.deviceId);
      const res = await opA.request<{ approved: Array<{ requestId: string }> }>('device.pair.approve', { requestId: requested.requestId });
      assert.equal(res.approved[0]?.requestId, requested.requestId);
      const device = await waiting;
      try {
        assert.equal(device.hello.type, 'hello-ok');
        assert.deepEqual(device.hello.auth.scopes, ['operator.read']);
        assert.ok(device.hello.auth.deviceToken, 'a token is issued at admission');
        // The resolution is seen on A too (it was made there) and the device is live on B.
        await nextEvent<{ requestId: string; decision: string }>(opA, 'device.pair.resolved', (p) => p.requestId === requested.requestId);
        assert.equal((await device.request<{ ok: boolean }>('health')).ok, true);
        // An operator on A sees the device as connected, though its socket is on B.
        const connectedOnA = async () =>
          (await opA.request<{ paired: Array<{ deviceId: string; connected: boolean }> }>('device.pair.list', {})).paired.find(
            (d) => d.deviceId === identity.deviceId,
          )?.connected;
        await waitFor(async () => (await connectedOnA()) === true, 'A to list the device as connected', { timeoutMs: 5_000, intervalMs: 50 });
        await device.close();
        await waitFor(async () => (await connectedOnA()) === false, 'A to list the device as gone once it disconnected from B', {
          timeoutMs: 5_000,
          intervalMs: 50,
        });
      } finally {
        await device.close();
      }
    } finally {
      await opA.close();
    }
  });

  test('a revocation made on B closes the device socket held by A', async (t) => {
    // Its own device (paired on B by the owner credential), not the previous test's.
    const identity = generateIdentity();
    const pairing = await readerOn(b, identity);
    const paired = { identity, token: pairing.hello.auth.deviceToken as string };
    assert.ok(paired.token, 'a token is issued at admission');
    await pairing.close();
    const device = await connectGateway({
      url: a.url,
      identity: paired.identity,
      auth: { deviceToken: paired.token },
      scopes: ['operator.read'],
      client: { id: 'test', mode: 'test' },
    });
    const opB = await operator(b);
    try {
      const closed = device.closed.then((c) => ({ ...c, atMs: performance.now() }));
      const startMs = performance.now();
      await opB.request('device.token.revoke', { deviceId: paired.identity.deviceId, role: 'operator' });
      const c = await closed;
      assert.equal(c.code, 4001);
      assert.match(c.reason, /revoked/);
      // Measured and reported, never asserted: the target (< 250 ms) is checked by bench.
      t.diagnostic(`revoke on B -> close on A: ${(c.atMs - startMs).toFixed(1)} ms (including the revoke round trip)`);
      // And the revoked token no longer opens anything on either instance.
      for (const inst of [a, b]) {
        await assert.rejects(
          connectGateway({
            url: inst.url,
            identity: paired.identity,
            auth: { deviceToken: paired.token },
            scopes: ['operator.read'],
            client: { id: 'test', mode: 'test' },
          }),
          (err: ConnectError) => err instanceof ConnectError && err.detailCode !== undefined,
        );
      }
    } finally {
      await opB.close();
      await device.close();
    }
  });

  test('a revocation committed by a process that tells no one closes the socket through the database trigger', async () => {
    const identity = generateIdentity();
    const device = await readerOn(a, identity);
    // Exactly what B's revocation commits, with no gateway event afterwards (B died after its commit).
    const store = await PostgresStore.open(url, { maxConnections: 1 });
    try {
      await revokeBehindTheGateways(store, identity.deviceId);
      const closed = await Promise.race([device.closed, new Promise<null>((r) => setTimeout(() => r(null), 5_000).unref())]);
      assert.ok(closed, 'A closed the socket');
      assert.equal(closed.code, 4001);
      assert.match(closed.reason, /revoked/);
    } finally {
      await store.close();
      await device.close();
    }
  });

  test('a revocation whose notification was lost still closes the socket once the instance resyncs', async () => {
    const identity = generateIdentity();
    const device = await readerOn(a, identity);
    const store = await PostgresStore.open(url, { maxConnections: 1 });
    try {
      // Triggers off on this one connection (superuser in the throwaway cluster): no NOTIFY at all.
      await store.pool.query('SET session_replication_role = replica');
      await revokeBehindTheGateways(store, identity.deviceId);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(device.ws.readyState, device.ws.OPEN, 'nothing told A');
      // The instances' listening connections drop, as in a database failover; on reconnect they resync.
      await store.pool.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [LISTENER_APP_NAME]);
      const closed = await Promise.race([device.closed, new Promise<null>((r) => setTimeout(() => r(null), 10_000).unref())]);
      assert.ok(closed, 'A closed the socket after its resync');
      assert.equal(closed.code, 4001);
      assert.match(closed.reason, /revoked/);
    } finally {
      await store.close();
      await device.close();
    }
  });

  test('200 concurrent redemptions of one setup code spread over A and B: exactly one succeeds', async () => {
    const opA = await operator(a);
    let token: string;
    let setupId: string;
    try {
      const m = await opA.request<{ setupCode: string; setupId: string }>('device.pair.setupCode', { profile: 'operator' });
      const decoded = decodeSetupCode(m.setupCode);
      assert.ok(decoded.ok);
      token = decoded.payload.bootstrapToken;
      setupId = m.setupId;
    } finally {
      await opA.close();
    }
    const identities = Array.from({ length: 200 }, () => generateIdentity());
    const outcomes = await Promise.allSettled(
      identities.map((identity, i) =>
        connectGateway({
          url: (i % 2 ? a : b).url,
          identity,
          auth: { bootstrapToken: token },
          scopes: ['operator.read'],
          client: { id: 'test', mode: 'test' },
          timeoutMs: 30_000,
        }),
      ),
    );
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    assert.equal(won.length, 1, 'exactly one redemption succeeds');
    const refusals = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => (o.reason as ConnectError).detailCode);
    assert.equal(refusals.length, 199);
    assert.ok(
      refusals.every((d) => d === 'AUTH_BOOTSTRAP_TOKEN_USED'),
      `every loser is told the code is used: ${[...new Set(refusals)].join(', ')}`,
    );
    await (won[0] as PromiseFulfilledResult<GatewayConnection>).value.close();
    const store = await PostgresStore.open(url, { maxConnections: 1 });
    try {
      const code = await store.getSetupCode(setupId);
      assert.equal(code?.redeemCount, 1);
      const redeemed = (await store.listAudit()).filter((e) => e.action === 'setup.redeemed' && (e.data as { setupId?: string }).setupId === setupId);
      assert.equal(redeemed.length, 1);
    } finally {
      await store.close();
    }
  });

  test('an approval committed by an instance that died before telling the others still admits the waiting device', async () => {
    const store = await PostgresStore.open(url, { maxConnections: 1 });
    try {
      const identity = generateIdentity();
      const waiting = waitingDevice(b, identity);
      const requestId = await pendingFor(store, identity.deviceId);
      const r = await store.getPairingRequest(requestId);
      assert.ok(r);
      // Exactly what A's approval commits, with no event sent afterwards.
      await approveRequestInStore(store, r);
      const device = await waiting;
      assert.equal(device.hello.type, 'hello-ok');
      assert.deepEqual(device.hello.auth.scopes, ['operator.read']);
      await device.close();
    } finally {
      await store.close();
    }
  });

  test('an operator on A invokes a command on a node connected to B and gets the result', async () => {
    const opA = await operator(a);
    const identity = generateIdentity();
    const node = await RawClient.open(b.url);
    try {
      const requested = nextEvent<{ requestId: string; nodeId: string }>(opA, 'node.pair.requested', (p) => p.nodeId === identity.deviceId);
      const hello = await connectAsNode(node, identity, {
        name: 'rack-node',
        auth: (ch) => ownerAuth(ch, b.url, CLUSTER_OWNER),
        caps: ['system'],
        commands: ['system.which', 'canvas.present'],
      });
      assert.equal(hello?.ok, true, JSON.stringify(hello?.error));
      // The node host answers invocations on its socket to B.
      const seen: Array<{ command: string; paramsJSON?: string }> = [];
      node.ws.on('message', (data) => {
        const f = JSON.parse(data.toString()) as Frame;
        if (f.type !== 'event' || f.event !== 'node.invoke.request') return;
        const req = f.payload as { id: string; nodeId: string; command: string; paramsJSON?: string };
        seen.push(req);
        const bin = (JSON.parse(req.paramsJSON ?? '{}') as { bins?: string[] }).bins ?? [];
        node.send({
          type: 'req',
          id: `r-${req.id}`,
          method: 'node.invoke.result',
          params: { id: req.id, nodeId: req.nodeId, ok: true, payloadJSON: JSON.stringify({ bins: Object.fromEntries(bin.map((x) => [x, `/usr/bin/${x}`])) }) },
        });
      });

      // The surface request filed on B is announced on A and approved there; B's live node follows.
      const req = await requested;
      const resolvedOnNode = node.event('node.pair.resolved', 10_000);
      await opA.request('node.pair.approve', { requestId: req.requestId });
      assert.equal(pl<{ decision: string }>(await resolvedOnNode).decision, 'approved');

      // node.list on A describes the node held by B as connected, with what B routes for it.
      const listed = (
        await opA.request<{ nodes: Array<{ nodeId: string; connected: boolean; commands: string[]; declaredCommands: string[] | null }> }>('node.list', {})
      ).nodes.find((n) => n.nodeId === identity.deviceId);
      assert.equal(listed?.connected, true);
      assert.deepEqual(listed?.commands, ['canvas.present', 'system.which']);
      assert.deepEqual(listed?.declaredCommands, ['canvas.present', 'system.which']);

      const out = await opA.request<{ ok: boolean; nodeId: string; command: string; payload: { bins: Record<string, string> } }>('node.invoke', {
        nodeId: identity.deviceId,
        command: 'system.which',
        params: { bins: ['sh'] },
      });
      assert.equal(out.ok, true);
      assert.equal(out.nodeId, identity.deviceId);
      assert.deepEqual(out.payload, { bins: { sh: '/usr/bin/sh' } });
      assert.equal(seen.length, 1, 'the node ran it once');

      // A refusal made on B comes back to A with its catalogue shape intact.
      await assert.rejects(opA.request('node.invoke', { nodeId: identity.deviceId, command: 'system.run', params: {} }), (err: Error) => {
        assert.equal((err as unknown as { error: { details: { code: string } } }).error.details.code, 'NODE_COMMAND_NOT_DECLARED');
        return true;
      });

      // Once the node is gone from B, A says so instead of waiting.
      await node.close();
      const deadline = Date.now() + 5_000;
      for (;;) {
        try {
          await opA.request('node.invoke', { nodeId: identity.deviceId, command: 'system.which', params: {} });
        } catch (err) {
          const code = (err as { error?: { details?: { code?: string } } }).error?.details?.code;
          if (code === 'NODE_NOT_CONNECTED') break;
          if (Date.now() > deadline) throw err;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await node.close();
      await opA.close();
    }
  });

  test('a node token rotated on A is minted and pushed by B, which holds the node socket; the secret never goes over NOTIFY', async (t) => {
    const identity = generateIdentity();
    const nodeOpts = { identity, role: 'node' as const, scopes: [], client: { id: 'node-host', mode: 'node' } };
    const node = await connectGateway({ url: b.url, ...nodeOpts, ...asClusterOwner });
    const first = node.hello.auth.deviceToken as string;
    assert.match(first, /^cgd1_/);
    const listener = new pg.Client({ connectionString: url });
    await listener.connect();
    const notified: string[] = [];
    listener.on('notification', (m) => notified.push(m.payload ?? ''));
    await listener.query(`LISTEN ${CLUSTER_CHANNEL}`);
    const opA = await operator(a);
    try {
      const startMs = performance.now();
      const closedAt = node.closed.then((c) => ({ ...c, atMs: performance.now() }));
      const res = await opA.request<{ tokenDelivery: string; token?: string }>('device.token.rotate', { deviceId: identity.deviceId, role: 'node' });
      assert.equal(res.tokenDelivery, 'pushed-live', 'A knows B holds a live node socket');
      assert.equal(res.token, undefined);
      const closed = await Promise.race([closedAt, new Promise<null>((r) => setTimeout(() => r(null), 5_000).unref())]);
      assert.ok(closed, 'B closed the node socket');
      // Measured and reported, not a timed assertion.
      t.diagnostic(`rotate on A -> token pushed and socket closed on B: ${(closed.atMs - startMs).toFixed(1)} ms`);
      assert.equal(closed.code, 4001);
      const ev = node.events.find((e) => e.event === 'device.token.rotated')?.payload as { deviceId: string; role: string; deviceToken: string } | undefined;
      assert.ok(ev, 'B pushed the new token before closing');
      assert.deepEqual([ev.deviceId, ev.role], [identity.deviceId, 'node']);
      assert.match(ev.deviceToken, /^cgd1_/);
      assert.equal(opA.events.filter((e) => e.event === 'device.token.rotated').length, 0);

      for (let i = 0; i < 100 && !notified.some((t) => t.includes('token-retired')); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(
        notified.some((t) => t.includes('token-retired')),
        `A told the other instances which device and role: ${notified.join(' | ')}`,
      );
      const rows = (await listener.query('SELECT body FROM cluster_events')).rows as Array<{ body: string }>;
      for (const text of [...notified, ...rows.map((r) => r.body)]) {
        assert.ok(!text.includes(ev.deviceToken) && !text.includes(first), `no token secret on the bus: ${text}`);
      }

      for (const inst of [a, b]) {
        await assert.rejects(
          connectGateway({ url: inst.url, ...nodeOpts, auth: { deviceToken: first } }),
          (err: ConnectError) => err instanceof ConnectError && err.detailCode === 'AUTH_DEVICE_TOKEN_MISMATCH',
        );
      }
      const again = await connectGateway({ url: a.url, ...nodeOpts, auth: { deviceToken: ev.deviceToken } });
      assert.equal(again.hello.auth.method, 'device-token');
      await again.close();
    } finally {
      await listener.end();
      await opA.close();
      await node.close();
    }
  });

  test('a node token replaced (not retired) by a process that tells no one: the socket closes through the trigger with no token pushed, and the replacement works', async () => {
    const identity = generateIdentity();
    const nodeOpts = { identity, role: 'node' as const, scopes: [], client: { id: 'node-host', mode: 'node' } };
    const node = await connectGateway({ url: a.url, ...nodeOpts, ...asClusterOwner });
    // What a self-rotation elsewhere commits: the old token gone and a new one live at once.
    const replacement = mintToken('device', systemRandom);
    const store = await PostgresStore.open(url, { maxConnections: 1 });
    try {
      await store.rotateToken(identity.deviceId, 'node', { tokenId: replacement.id, secretHash: replacement.secretHash }, null, Date.now(), {
        atMs: Date.now(),
        actor: 'owner',
        action: 'token.rotated',
        subject: identity.deviceId,
      });
      const closed = await Promise.race([node.closed, new Promise<null>((r) => setTimeout(() => r(null), 5_000).unref())]);
      assert.ok(closed, 'A closed the socket');
      assert.equal(closed.code, 4001);
      assert.equal(node.events.filter((e) => e.event === 'device.token.rotated').length, 0, 'a live token exists: nothing minted or pushed');
      assert.equal((await store.listTokens(identity.deviceId)).map((t) => t.tokenId).join(), replacement.id, 'still exactly the replacement');
      const again = await connectGateway({ url: a.url, ...nodeOpts, auth: { deviceToken: replacement.token } });
      assert.equal(again.hello.auth.method, 'device-token');
      await again.close();
    } finally {
      await store.close();
      await node.close();
    }
  });

  test('wrong-credential guesses spread over A and B count against one shared budget', async () => {
    // Passwords are used by nothing else here, so this budget is this test's alone. The default
    // policy locks a key after 10 wrong guesses within a minute.
    const guess = (inst: Instance, i: number) =>
      connectGateway({ url: inst.url, auth: { password: `wrong-${i}` }, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.read'] });
    for (let i = 0; i < 10; i++) {
      await assert.rejects(guess(i % 2 ? a : b, i), (err: ConnectError) => {
        assert.equal(err.detailCode, 'AUTH_PASSWORD_NOT_CONFIGURED', `guess ${i + 1} is still judged, not limited`);
        return true;
      });
    }
    for (const inst of [a, b]) {
      await assert.rejects(guess(inst, 99), (err: ConnectError) => {
        assert.equal(err.detailCode, 'AUTH_RATE_LIMITED', `instance ${inst.name} knows the budget is spent`);
        assert.ok((err.error?.retryAfterMs ?? 0) > 0);
        return true;
      });
    }
  });

  test('killing A in the middle of an approval loses nothing: pending or approved, never half-done', async (t) => {
    const store = await PostgresStore.open(url, { maxConnections: 2 });
    try {
      // Kill A at a few different moments after the approve request left the operator.
      for (const delayMs of [0, 3, 6, 10, 15, 25, 40]) {
        const identity = generateIdentity();
        const waiting = waitingDevice(b, identity);
        waiting.catch(() => {});
        const requestId = await pendingFor(store, identity.deviceId);
        const opA = await operator(a);
        opA.closed.then(
          () => {},
          () => {},
        );
        opA.request('device.pair.approve', { requestId }).catch(() => {});
        await new Promise((r) => setTimeout(r, delayMs));
        await a.kill();
        await opA.close().catch(() => {});

        const pending = await store.getPairingRequest(requestId);
        const grant = await store.getGrant(identity.deviceId, 'operator');
        const approvedAudit = (await store.listAudit()).filter(
          (e) => e.action === 'pairing.approved' && (e.data as { requestId?: string }).requestId === requestId,
        );
        if (pending) {
          assert.equal(grant, null, 'still pending: no grant');
          assert.equal(approvedAudit.length, 0, 'still pending: no approval in the audit log');
        } else {
          assert.ok(grant, 'approved: the grant exists');
          assert.deepEqual(grant.scopes, ['operator.read']);
          assert.equal(approvedAudit.length, 1, 'approved: exactly one audit entry');
        }
        assert.equal(verifyAuditChain(await store.listAudit()), null);

        // Whatever the moment, the waiting device on B ends up admitted: by B's reconcile when A
        // committed but died before telling B, or by an approval on B when A died first.
        a = await startInstance('A', url, a.stateDir);
        if (pending) {
          const opB = await operator(b);
          try {
            await opB.request('device.pair.approve', { requestId });
          } finally {
            await opB.close();
          }
        }
        const device = await waiting;
        assert.equal(device.hello.type, 'hello-ok');
        await device.close();
        t.diagnostic(`kill after ${delayMs} ms: request was ${pending ? 'still pending' : 'approved'}`);
      }
    } finally {
      await store.close();
    }
  });

  test('presence crosses instances: an operator on B sees a device come and go on A, and "still connected" counts sessions on both', async () => {
    type Change = { deviceId: string; connId: string; state: string; deviceConnected: boolean };
    const watcher = await operator(b);
    const identity = generateIdentity();
    const change = (state: string, connId: string) =>
      nextEvent<{ changes: Change[] }>(watcher, 'device.presence', (p) => p.changes.some((c) => c.connId === connId && c.state === state)).then(
        (p) => p.changes.find((c) => c.connId === connId && c.state === state) as Change,
      );
    const onA = await readerOn(a, identity);
    const upA = await change('connected', onA.hello.server.connId);
    assert.deepEqual([upA.deviceId, upA.deviceConnected], [identity.deviceId, true]);
    const onB = await readerOn(b, identity);
    await change('connected', onB.hello.server.connId);
    await onA.close();
    const downA = await change('disconnected', onA.hello.server.connId);
    assert.equal(downA.deviceConnected, true, 'A saw the session B still holds (shared presence table)');
    await onB.close();
    const downB = await change('disconnected', onB.hello.server.connId);
    assert.equal(downB.deviceConnected, false);
    await watcher.close();
  });

  test('a chat message sent on B reaches a subscriber of the session connected to A', async () => {
    const opA = await operator(a);
    const opB = await operator(b);
    try {
      await opB.request('sessions.create', { key: 'cluster-chat' });
      await opA.request('sessions.subscribe', { sessionKey: 'cluster-chat' });
      const got = nextEvent<{ sessionKey: string; message: { text: string } }>(opA, 'chat', (p) => p.sessionKey === 'cluster-chat');
      await opB.request('chat.send', { sessionKey: 'cluster-chat', text: 'hello from B' });
      assert.equal((await got).message.text, 'hello from B');
    } finally {
      await opA.close();
      await opB.close();
    }
  });

  test('webhook deliveries sent through both instances are each attempted by one worker at a time', async () => {
    // A receiver that fails every delivery's first attempt, so retries go through the workers' timers.
    const attempts = new Map<string, number>();
    const server = createHttpServer((req, res) => {
      const key = String(req.headers['idempotency-key'] ?? '');
      req.resume();
      req.on('end', () => {
        const n = (attempts.get(key) ?? 0) + 1;
        attempts.set(key, n);
        res.statusCode = n === 1 ? 500 : 204;
        res.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const opA = await operator(a);
    const opB = await operator(b);
    try {
      await opA.request('channels.add', { type: 'webhook', name: 'cluster-hook', url: `http://127.0.0.1:${port}/hook` });
      const sent = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          (i % 2 ? opA : opB).request<{ delivery: { deliveryId: string } }>('send', { channel: 'cluster-hook', content: `m${i}` }),
        ),
      );
      assert.equal(sent.length, 20);
      const deadline = Date.now() + 20_000;
      while ([...attempts.values()].filter((n) => n >= 2).length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      // Give a duplicate attempt (if any) time to show up.
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal(attempts.size, 20, 'every delivery reached the receiver');
      assert.deepEqual(
        [...attempts.values()].sort(),
        Array.from({ length: 20 }, () => 2),
        'each delivery: one failed attempt, one retry, nothing twice',
      );
      const list = await opB.request<{ deliveries: Array<{ status: string }> }>('channels.deliveries', { channel: 'cluster-hook' });
      assert.ok(list.deliveries.every((d) => d.status === 'delivered'));
    } finally {
      await opA.close();
      await opB.close();
      server.close();
    }
  });

  test('cron runs on one instance only (one run per due time), and the other takes over when the leader is killed', async (t) => {
    const leaderOf = () => [a, b].find((i) => i.log().includes('cluster leadership gained'));
    const deadline = Date.now() + 10_000;
    while (!leaderOf() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const leader = leaderOf();
    assert.ok(leader, 'one instance leads the automations');
    const follower = leader === a ? b : a;
    assert.ok(!follower.log().includes('cluster leadership gained'), 'and only one');

    // The job is created on the follower: the leader learns of it from the store.
    const op = await operator(follower);
    let jobId: string;
    try {
      await op.request('sessions.create', { key: 'cluster-cron' });
      const job = await op.request<{ job: { jobId: string } }>('cron.add', {
        name: 'every second',
        schedule: { kind: 'every', everyMs: 1_000 },
        action: { kind: 'chat', sessionKey: 'cluster-cron', text: 'tick' },
      });
      jobId = job.job.jobId;
    } finally {
      await op.close();
    }
    const store = await PostgresStore.open(url, { maxConnections: 1 });
    try {
      const runsAfter = async (minRuns: number, timeoutMs: number) => {
        const until = Date.now() + timeoutMs;
        for (;;) {
          const runs = await store.listCronRuns(jobId, 1000);
          if (runs.length >= minRuns || Date.now() > until) return runs;
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      const first = await runsAfter(3, 10_000);
      assert.ok(first.length >= 3, `the job ran (${first.length} runs)`);
      const dues = first.map((r) => r.dueAtMs);
      assert.equal(new Set(dues).size, dues.length, 'no due time ran twice');

      // Kill the leader: the follower takes the lock when PostgreSQL drops the dead session.
      const killedAtMs = Date.now();
      if (leader === a) {
        await a.kill();
      } else {
        await b.kill();
      }
      const before = first.length;
      const later = await runsAfter(before + 3, 15_000);
      assert.ok(later.length >= before + 3, `runs continued after the leader died (${later.length - before} more)`);
      const resumed = later.filter((r) => r.startedAtMs > killedAtMs).map((r) => r.startedAtMs);
      t.diagnostic(`cron resumed ${Math.min(...resumed) - killedAtMs} ms after the leader was killed`);
      const allDues = later.map((r) => r.dueAtMs);
      assert.equal(new Set(allDues).size, allDues.length, 'still no due time ran twice');
      assert.ok(follower.log().includes('cluster leadership gained'), 'the follower leads now');
    } finally {
      await store.close();
      if (leader === a) a = await startInstance('A', url, a.stateDir);
      else b = await startInstance('B', url, b.stateDir);
    }
  });
});

/**
 * A pair of instances whose periodic re-check of waiting connects is a day away: whatever
 * finishes a waiting connect here is the database's announcement of the decided request (sent
 * in the deciding transaction) and the store read it triggers, not the re-check.
 */
describe('a decided pairing request reaches the waiting connect through the database, not the periodic re-check', () => {
  let c: Instance;
  let d: Instance;
  let dbUrl: string;
  let store: PostgresStore;
  before(async () => {
    dbUrl = await cluster.createDatabase();
    [c, d] = await startInstancesAB(dbUrl, dirs, { postgres: { waiterReconcileMs: 86_400_000 } });
    store = await PostgresStore.open(dbUrl, { maxConnections: 2 });
  });
  after(async () => {
    await store?.close();
    await Promise.all([c?.stop(), d?.stop()]);
  });

  /** Exactly what an approval commits, with no cluster event sent afterwards. */
  async function approveBehindTheGateways(requestId: string): Promise<void> {
    const r = await store.getPairingRequest(requestId);
    assert.ok(r, 'the request is pending');
    await approveRequestInStore(store, r);
  }

  test('an approval committed by a process that tells no one admits the device waiting on an instance', async () => {
    const identity = generateIdentity();
    const waiting = waitingDevice(d, identity);
    await approveBehindTheGateways(await pendingFor(store, identity.deviceId));
    const device = await waiting;
    try {
      assert.equal(device.hello.type, 'hello-ok');
      assert.deepEqual(device.hello.auth.scopes, ['operator.read']);
      assert.ok(device.hello.auth.deviceToken, 'a token is issued at admission');
      assert.equal((await device.request<{ ok: boolean }>('health')).ok, true);
    } finally {
      await device.close();
    }
  });

  test('an approval made through instance C admits the device waiting on instance D', async () => {
    const opC = await operator(c);
    try {
      const identity = generateIdentity();
      const waiting = waitingDevice(d, identity);
      const requestId = await pendingFor(store, identity.deviceId);
      await opC.request('device.pair.approve', { requestId });
      const device = await waiting;
      assert.equal(device.hello.type, 'hello-ok');
      await device.close();
    } finally {
      await opC.close();
    }
  });

  test('a rejection committed by a process that tells no one refuses the waiting device', async () => {
    const identity = generateIdentity();
    const waiting = waitingDevice(d, identity);
    const requestId = await pendingFor(store, identity.deviceId);
    const atMs = Date.now();
    assert.equal(
      await store.deletePairingRequest(requestId, { atMs, actor: 'owner', action: 'pairing.rejected', subject: identity.deviceId, data: { requestId } }),
      true,
    );
    await assert.rejects(waiting, (err: ConnectError) => err.closeCode === 1008 && /pairing rejected/.test(err.closeReason));
  });

  test('announcements decide nothing by themselves: forged ones leave the device waiting, the committed approval admits it', async () => {
    const identity = generateIdentity();
    const waiting = waitingDevice(d, identity);
    let settled = false;
    void waiting.then(
      () => (settled = true),
      () => (settled = true),
    );
    const requestId = await pendingFor(store, identity.deviceId);
    // Anyone who can reach the database can NOTIFY: claims of an approval, a rejection and a
    // removal, while the request is in fact still pending.
    const forger = new pg.Client({ connectionString: dbUrl });
    await forger.connect();
    try {
      for (const e of [
        { type: 'resolve-waiters', requestId, decision: 'approved' },
        { type: 'resolve-waiters', requestId, decision: 'rejected' },
        { type: 'pairing-request-gone', requestId },
      ]) {
        await forger.query('SELECT pg_notify($1, $2)', [CLUSTER_CHANNEL, JSON.stringify({ o: 'forged', e })]);
      }
    } finally {
      await forger.end();
    }
    // D reads the store for each (no grant, request pending) and keeps the connect waiting; an
    // operator on C sees the request still pending after D handled the claims.
    const opC = await operator(c);
    try {
      await waitFor(
        async () => (await opC.request<{ pending: Array<{ requestId: string }> }>('device.pair.list', {})).pending.some((p) => p.requestId === requestId),
        'the request still pending',
      );
    } finally {
      await opC.close();
    }
    assert.equal(settled, false, 'the forged claims finished nothing');
    await approveBehindTheGateways(requestId);
    const device = await waiting;
    assert.equal(device.hello.type, 'hello-ok');
    assert.deepEqual(device.hello.auth.scopes, ['operator.read']);
    await device.close();
  });
});
