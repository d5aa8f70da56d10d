/**
 * PostgreSQL faults under two real clawgate instances (A and B, `gateway run --store postgres`
 * child processes) on a throwaway cluster of their own: the server restarted while devices
 * wait and operators approve, every backend of both instances terminated (pools, listeners,
 * the cron leader's lock connection), the server paused past the client timeouts, and a node
 * invocation routed to an instance that was SIGKILLed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { ConnectError, connectGateway, type DeviceIdentity, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { storeFault } from '../src/store/faults.js';
import { CLUSTER_CHANNEL, LEADER_APP_NAME } from '../src/store/postgres/bus.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { verifyAuditChain } from '../src/store/shared.js';
import { ownerAuth } from './helpers/gateway.js';
import { asClusterOwner, CLUSTER_OWNER, CLUSTER_TOKEN, type Instance, removeStateDir, startInstance, startInstancesAB } from './helpers/instance.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { connectAsNode, type Frame, RawClient } from './helpers/raw.js';
import { waitFor, withDeadline } from './helpers/wait.js';

let cluster: PgCluster;
let url: string;
let a: Instance;
let b: Instance;
let store: PostgresStore;
const dirs: string[] = [];
const TEST_APP_NAME = 'faults-test';

before(async () => {
  cluster = await startPgCluster();
  // Short client bounds (the defaults are 15 s and 5 s), so the pause test need not wait long.
  url = `${await cluster.createDatabase()}?query_timeout=4000&connect_timeout=3`;
  [a, b] = await startInstancesAB(url, dirs);
  // Named, so terminating the instances' backends leaves the test's own connections alone.
  store = await PostgresStore.open(`${url}&application_name=${TEST_APP_NAME}`, { maxConnections: 2 });
});

after(async () => {
  cluster?.resume();
  await store?.close().catch(() => {});
  await Promise.all([a?.stop(), b?.stop()]);
  await cluster?.stop();
  for (const d of dirs) removeStateDir(d);
});

function operator(inst: Instance): Promise<GatewayConnection> {
  return connectGateway({ url: inst.url, ...asClusterOwner, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] });
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
    timeoutMs: 120_000,
  });
}

function pendingFor(deviceId: string): Promise<string> {
  return waitFor(async () => (await store.listPairingRequests(deviceId))[0]?.requestId, `a pending request for ${deviceId}`, {
    timeoutMs: 20_000,
    intervalMs: 50,
  });
}

function detailCode(err: unknown): string | undefined {
  return (err as { error?: { details?: { code?: string } } | null }).error?.details?.code;
}

/** Retry `fn` until it succeeds: the instances' pools reconnect on their own, on first use. */
function eventually<T>(fn: () => Promise<T>, what: string, timeoutMs = 30_000): Promise<T> {
  let last = '';
  return waitFor(
    () =>
      fn().then(
        (v) => ({ v }),
        (err) => {
          last = String(err);
          return false as const;
        },
      ),
    what,
    { timeoutMs, intervalMs: 200, detail: () => last },
  ).then((r) => r.v);
}

/** Device on B admitted after an operator on A approved it: the whole cross-instance path works. */
async function pairAcross(from: Instance, to: Instance): Promise<void> {
  const identity = generateIdentity();
  const waiting = waitingDevice(to, identity);
  const requestId = await pendingFor(identity.deviceId);
  const op = await eventually(() => operator(from), `an operator session on ${from.name}`);
  try {
    await eventually(() => op.request('device.pair.approve', { requestId }), `the approval on ${from.name}`);
  } finally {
    await op.close();
  }
  const device = await waiting;
  assert.equal(device.hello.type, 'hello-ok');
  await device.close();
}

async function approvalsOf(deviceId: string): Promise<number> {
  return (await store.listAudit()).filter((e) => e.action === 'pairing.approved' && e.subject === deviceId).length;
}

/** Which instance holds the automations lock now, judging by the last leadership line of each log. */
function holder(): Instance | undefined {
  return [a, b].find((i) => {
    const log = i.log();
    const gained = log.lastIndexOf('cluster leadership gained');
    return gained >= 0 && gained > log.lastIndexOf('cluster leadership lost');
  });
}

async function lockHeld(): Promise<boolean> {
  const r = await store.pool.query(
    `SELECT 1 FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = $1 AND s.datname = current_database()`,
    [LEADER_APP_NAME],
  );
  return r.rows.length > 0;
}

describe('PostgreSQL faults under two instances', () => {
  test('PostgreSQL restarted while devices wait on B and an operator approves on A: refusals are STORE_UNAVAILABLE, every approval lands once, every device is admitted', async () => {
    const ids = [generateIdentity(), generateIdentity(), generateIdentity(), generateIdentity()];
    // A device whose admission meets the outage (approved just before it, admitted while the
    // server goes down) is told to try again later (1013) and is admitted when it does, as any
    // client reconnecting with backoff would be.
    const waiting = ids.map((id) =>
      waitingDevice(b, id).catch(async (err: unknown) => {
        assert.ok(err instanceof ConnectError && err.closeCode === 1013 && detailCode(err) === 'STORE_UNAVAILABLE', String(err));
        return eventually(() => waitingDevice(b, id), 'the reconnect of a device told to try again later');
      }),
    );
    const requestIds = await Promise.all(ids.map((id) => pendingFor(id.deviceId)));
    const opA = await operator(a);
    const downOutcomes: unknown[] = [];
    let refusedConnect: unknown;
    try {
      // Two approvals go in before the restart, two while the server is down, all retried after.
      await opA.request('device.pair.approve', { requestId: requestIds[0] });
      const racing = opA.request('device.pair.approve', { requestId: requestIds[1] }).catch((err: unknown) => err);
      await cluster.restart(async () => {
        for (const requestId of requestIds.slice(2)) {
          downOutcomes.push(await opA.request('device.pair.approve', { requestId }).catch((err: unknown) => err));
        }
        refusedConnect = await operator(b).then(
          (c) => c.close().then(() => null),
          (err: unknown) => err,
        );
      });
      const raced = await racing;
      // Each approval is retried until it is answered: approved now, or already approved.
      for (const requestId of requestIds.slice(1)) {
        await eventually(async () => {
          try {
            await opA.request('device.pair.approve', { requestId });
          } catch (err) {
            if (detailCode(err) !== 'UNKNOWN_REQUEST_ID') throw err;
          }
        }, `approval of ${requestId}`);
      }
      for (const o of downOutcomes) assert.equal(detailCode(o), 'STORE_UNAVAILABLE', `an approval while the server is down: ${String(o)}`);
      if (raced instanceof Error) assert.ok(['STORE_UNAVAILABLE', 'UNKNOWN_REQUEST_ID'].includes(detailCode(raced) ?? ''), String(raced));
      assert.ok(refusedConnect instanceof ConnectError, `a connect while the server is down is refused: ${String(refusedConnect)}`);
      assert.equal(detailCode(refusedConnect), 'STORE_UNAVAILABLE');
      assert.equal((refusedConnect as ConnectError).closeCode, 1013);
    } finally {
      await opA.close();
    }
    // Every waiting device is admitted on B, though B's event connection was down for some approvals.
    const devices = await withDeadline(Promise.all(waiting), 'every waiting device admitted', 60_000);
    for (const d of devices) {
      assert.equal(d.hello.type, 'hello-ok');
      await d.close();
    }
    for (const id of ids) assert.equal(await approvalsOf(id.deviceId), 1, `one approval of ${id.deviceId}`);
    assert.equal(verifyAuditChain(await store.listAudit()), null);
    // Both instances serve again, each way round.
    await pairAcross(a, b);
    await pairAcross(b, a);
  });

  test('an approval committed on A while B is cut off from its event connection still admits the device waiting on B', async () => {
    const identity = generateIdentity();
    const waiting = waitingDevice(b, identity);
    const requestId = await pendingFor(identity.deviceId);
    const pid = b.proc.pid as number;
    // B frozen, its listening backend terminated: the NOTIFY of the approval reaches no one.
    process.kill(pid, 'SIGSTOP');
    try {
      await store.pool.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'clawgate-listen'",
      );
      const opA = await operator(a);
      try {
        await opA.request('device.pair.approve', { requestId });
      } finally {
        await opA.close();
      }
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const device = await withDeadline(waiting, 'the device admitted after B resynced', 60_000);
    assert.equal(device.hello.type, 'hello-ok');
    await device.close();
    assert.equal(await approvalsOf(identity.deviceId), 1);
  });

  test('a waiting connect whose admission meets a database outage is told to try again later (1013, STORE_UNAVAILABLE), not left waiting, and is admitted when it does', async () => {
    const identity = generateIdentity();
    const waiting = waitingDevice(b, identity).then(
      () => null,
      (err: unknown) => err,
    );
    const requestId = await pendingFor(identity.deviceId);
    const pid = b.proc.pid as number;
    // B frozen while A approves: the notification waits in B's socket until B runs again, and by
    // then the database is down, so B hears of the approval but cannot admit the device.
    process.kill(pid, 'SIGSTOP');
    let outcome: unknown;
    try {
      // A listener of our own: once it has the approval's notification, the server has handed it
      // to every listening backend, B's included, before the restart below can cut them off.
      const listener = new pg.Client({ connectionString: url });
      await listener.connect();
      const heard = new Promise<void>((resolve) =>
        listener.on('notification', (m) => {
          if (m.payload?.includes('resolve-waiters') && m.payload.includes(requestId)) resolve();
        }),
      );
      listener.on('error', () => {});
      await listener.query(`LISTEN ${CLUSTER_CHANNEL}`);
      const opA = await operator(a);
      try {
        await opA.request('device.pair.approve', { requestId });
        await withDeadline(heard, 'the approval notified', 10_000);
      } finally {
        await opA.close();
        await listener.end().catch(() => {});
      }
      await cluster.restart(async () => {
        process.kill(pid, 'SIGCONT');
        outcome = await withDeadline(waiting, 'an answer to the waiting connect', 30_000).catch((err: Error) => {
          throw new Error(`${err.message}\nB:\n${b.log().slice(-3000)}`);
        });
      });
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.ok(outcome instanceof ConnectError, String(outcome));
    assert.equal(outcome.closeCode, 1013);
    assert.equal(detailCode(outcome), 'STORE_UNAVAILABLE');
    const device = await eventually(() => waitingDevice(b, identity), 'the device admitted on its retry');
    assert.equal(device.hello.type, 'hello-ok');
    await device.close();
    assert.equal(await approvalsOf(identity.deviceId), 1);
  });

  test('a backend terminated between two statements of a write transaction fails that write as a database fault, and the process lives on', async () => {
    const s = await PostgresStore.open(`${url}&application_name=${TEST_APP_NAME}`, { maxConnections: 1 });
    try {
      let client: pg.PoolClient | undefined;
      s.pool.on('acquire', (c) => {
        client = c;
      });
      let backendPid: number | undefined;
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const writing = s
        .write(async (tx) => {
          backendPid = (await tx.one<{ pid: number }>('SELECT pg_backend_pid() AS pid'))?.pid;
          await gate;
          await tx.one('SELECT 1');
        })
        .then(
          () => null,
          (err: unknown) => err,
        );
      const pid = await waitFor(() => backendPid, 'the transaction under way');
      const c = client as pg.PoolClient;
      const ended = new Promise<void>((r) => c.once('end', () => r()));
      await store.pool.query('SELECT pg_terminate_backend($1)', [pid]);
      // The client has heard of it (an 'error' event nobody listened to would have killed this process).
      await ended;
      release();
      const err = await writing;
      assert.ok(err, 'the write failed');
      assert.ok(storeFault(err), `a database fault, not a bug: ${String(err)}`);
      // And the store works on, with a fresh connection.
      assert.equal(typeof (await s.schemaVersion()), 'number');
    } finally {
      await s.close();
    }
  });

  test('every backend of both instances terminated: pools and listeners come back, and the cron lock is always re-taken, by the old leader too', async (t) => {
    await waitFor(() => holder(), 'a cron leader', { timeoutMs: 20_000 });
    const op = await operator(a);
    let jobId: string;
    try {
      await op.request('sessions.create', { key: 'faults-cron' });
      const job = await op.request<{ job: { jobId: string } }>('cron.add', {
        name: 'every second',
        schedule: { kind: 'every', everyMs: 1_000 },
        action: { kind: 'chat', sessionKey: 'faults-cron', text: 'tick' },
      });
      jobId = job.job.jobId;
    } finally {
      await op.close();
    }
    const runs = async () => (await store.listCronRuns(jobId, 1000)).length;
    const runsGrow = async (what: string) => {
      const from = await runs();
      await waitFor(async () => (await runs()) >= from + 2, what, { timeoutMs: 30_000, intervalMs: 200 });
    };
    await runsGrow('cron running');

    // Terminate everything the instances hold open on this database, from a connection of our own.
    const killer = new pg.Client({ connectionString: url });
    await killer.connect();
    try {
      const r = await killer.query(
        'SELECT pg_terminate_backend(pid) AS ok, application_name FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> $1',
        [TEST_APP_NAME],
      );
      t.diagnostic(`terminated ${r.rows.length} backends: ${[...new Set(r.rows.map((x) => x.application_name || 'pool'))].join(', ')}`);
      assert.ok(
        r.rows.some((x) => x.application_name === LEADER_APP_NAME),
        "the cron leader's lock connection was among them",
      );
    } finally {
      await killer.end();
    }
    await waitFor(() => lockHeld(), 'the cron lock taken again', { timeoutMs: 20_000, intervalMs: 100 });
    await runsGrow('cron running after the terminations');
    await pairAcross(a, b);
    await pairAcross(b, a);

    // Stop whoever leads now: the other must take over, whether or not it led before.
    const current = await waitFor(() => holder(), 'the current leader', { timeoutMs: 20_000 });
    const other = current === a ? b : a;
    const gains = () => other.log().split('cluster leadership gained').length - 1;
    const gainsBefore = gains();
    await current.stop();
    try {
      const leadership = (i: Instance) =>
        i
          .log()
          .split('\n')
          .filter((l) => l.includes('leadership'))
          .join('\n');
      await waitFor(() => gains() > gainsBefore, `${other.name} leading`, {
        timeoutMs: 20_000,
        intervalMs: 100,
        detail: () => `${current.name}:\n${leadership(current)}\n${other.name}:\n${leadership(other)}`,
      });
      await runsGrow(`cron running on ${other.name}`);
    } finally {
      if (current === a) a = await startInstance('A', url, a.stateDir);
      else b = await startInstance('B', url, b.stateDir);
    }
  });

  test('PostgreSQL paused past the client timeouts: a request fails with STORE_UNAVAILABLE instead of hanging, and both instances serve again once it resumes', async () => {
    const opA = await operator(a);
    try {
      cluster.pause();
      let failed: unknown;
      try {
        failed = await withDeadline(
          opA.request('device.pair.list', {}, 60_000).then(
            () => null,
            (err: unknown) => err,
          ),
          'an answer while the server is paused',
          50_000,
        );
      } finally {
        cluster.resume();
      }
      assert.equal(detailCode(failed), 'STORE_UNAVAILABLE', String(failed));
      assert.match((failed as Error).message, /timed out/);
      await eventually(() => opA.request('device.pair.list', {}), 'A answering again');
    } finally {
      await opA.close();
    }
    await pairAcross(a, b);
    await pairAcross(b, a);
  });

  test('a node.invoke routed to an instance that was SIGKILLed ends with NODE_DISCONNECTED once its presence expires, and later ones with NODE_NOT_CONNECTED', async (t) => {
    const identity = generateIdentity();
    const node = await RawClient.open(a.url);
    const opB = await operator(b);
    try {
      const hello = await connectAsNode(node, identity, {
        name: 'doomed-node',
        auth: (ch) => ownerAuth(ch, a.url, CLUSTER_OWNER),
        caps: ['system'],
        commands: ['system.which'],
      });
      assert.equal(hello?.ok, true, JSON.stringify(hello?.error));
      const requestId = await waitFor(
        async () =>
          (await opB.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {})).pending.find(
            (p) => p.nodeId === identity.deviceId,
          )?.requestId,
        'the node surface request',
      );
      await opB.request('node.pair.approve', { requestId });
      // The node never answers: the call can only end through the router noticing A is gone.
      const asked = new Promise<void>((resolve) =>
        node.ws.on('message', (data) => {
          const f = JSON.parse(data.toString()) as Frame;
          if (f.type === 'event' && f.event === 'node.invoke.request') resolve();
        }),
      );
      await waitFor(
        async () =>
          (await opB.request<{ nodes: Array<{ nodeId: string; connected: boolean }> }>('node.list', {})).nodes.find((n) => n.nodeId === identity.deviceId)
            ?.connected,
        'B to see the node on A',
      );
      const invoking = opB
        .request('node.invoke', { nodeId: identity.deviceId, command: 'system.which', params: { bins: ['sh'] }, timeoutMs: 600_000 }, 700_000)
        .then(
          () => null,
          (err: unknown) => err,
        );
      await asked;
      const killedAtMs = Date.now();
      await a.kill();
      // Without the liveness check this call waits out its 600 s timeout.
      const inFlight = await withDeadline(invoking, 'the in-flight invoke to end', 60_000);
      t.diagnostic(`the in-flight invoke ended ${Date.now() - killedAtMs} ms after A was killed`);
      assert.equal(detailCode(inFlight), 'NODE_DISCONNECTED', String(inFlight));
      const after = await opB.request('node.invoke', { nodeId: identity.deviceId, command: 'system.which', params: {} }).catch((err: unknown) => err);
      assert.equal(detailCode(after), 'NODE_NOT_CONNECTED', String(after));
    } finally {
      await node.close();
      await opB.close();
      if (a.proc.exitCode !== null || a.proc.signalCode !== null) a = await startInstance('A', url, a.stateDir);
    }
  });
});
