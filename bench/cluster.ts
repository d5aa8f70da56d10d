/**
 * Two clawgate instances (A, B: real `gateway run --store postgres` processes) on one throwaway
 * PostgreSQL cluster, and the latencies that cross between them:
 *
 * - revoke: operator on A sends device.token.revoke → the device's socket on B sees its close;
 * - approve: operator on A sends device.pair.approve → the device waiting on B gets hello-ok;
 * - invoke: operator on A → node.invoke → node connected to B → result back on A.
 *
 *   npm run build && node dist/bench/cluster.js [--n 100]
 *
 * Prints a table and writes bench/results/cluster.json. Needs the PostgreSQL server binaries
 * (scripts/system-deps.sh installs them). `npm run bench -- --cluster` runs the same rows
 * (`clusterRows`) and records them in the main report.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { ownerAuth } from '../test/helpers/gateway.js';
import { asClusterOwner, CLUSTER_OWNER, CLUSTER_TOKEN, clusterStateDir, type Instance, removeStateDir, startInstance } from '../test/helpers/instance.js';
import { startPgCluster } from '../test/helpers/pg-cluster.js';
import { deviceParams, type Frame, RawClient } from '../test/helpers/raw.js';
import { type Summary, summarize } from './stats.js';

function operator(inst: Instance): Promise<GatewayConnection> {
  return connectGateway({ url: inst.url, ...asClusterOwner, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.admin'] });
}

/** The device connects to `deviceOn`; the revoke is sent on the other instance's operator session `op`. */
async function revokeLatency(N: number, deviceOn: Instance, op: GatewayConnection): Promise<Float64Array> {
  const out = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const identity = generateIdentity();
    // The owner credential pairs silently: a device with an operator grant, connected to `deviceOn`.
    const device = await connectGateway({
      url: deviceOn.url,
      identity,
      ...asClusterOwner,
      scopes: ['operator.read'],
      client: { id: 'test', mode: 'test' },
    });
    const closed = device.closed.then(() => performance.now());
    const t0 = performance.now();
    await op.request('device.token.revoke', { deviceId: identity.deviceId, role: 'operator' });
    out[i] = (await closed) - t0;
  }
  return out;
}

async function approveLatency(N: number, b: Instance, opA: GatewayConnection, store: PostgresStore): Promise<Float64Array> {
  const out = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const identity = generateIdentity();
    const waiting = connectGateway({
      url: b.url,
      identity,
      auth: { token: CLUSTER_TOKEN },
      scopes: ['operator.read'],
      client: { id: 'test', mode: 'test' },
      caps: ['device-pairing-wait'],
      timeoutMs: 30_000,
    }).then((c) => ({ c, at: performance.now() }));
    let requestId: string | undefined;
    while (!requestId) {
      requestId = (await store.listPairingRequests(identity.deviceId))[0]?.requestId;
      if (!requestId) await new Promise((r) => setTimeout(r, 5));
    }
    const t0 = performance.now();
    await opA.request('device.pair.approve', { requestId });
    const { c, at } = await waiting;
    out[i] = at - t0;
    await c.close();
  }
  return out;
}

async function invokeLatency(N: number, b: Instance, opA: GatewayConnection): Promise<Float64Array> {
  const identity = generateIdentity();
  const node = await RawClient.open(b.url);
  const challenge = await node.challenge();
  const params = deviceParams({
    identity,
    challenge,
    role: 'node',
    scopes: [],
    client: { id: 'node-host', mode: 'node' },
    auth: ownerAuth(challenge, b.url, CLUSTER_OWNER),
  });
  params.commands = ['echo.bench'];
  params.caps = [];
  const hello = await node.request('c1', 'connect', params);
  if (!hello?.ok) throw new Error(`node connect failed: ${JSON.stringify(hello?.error)}`);
  node.ws.on('message', (data) => {
    const f = JSON.parse(data.toString()) as Frame;
    if (f.type !== 'event' || f.event !== 'node.invoke.request') return;
    const req = f.payload as { id: string; nodeId: string; paramsJSON?: string };
    node.send({
      type: 'req',
      id: `r-${req.id}`,
      method: 'node.invoke.result',
      params: { id: req.id, nodeId: req.nodeId, ok: true, payloadJSON: req.paramsJSON ?? 'null' },
    });
  });
  const pending = await opA.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {});
  const req = pending.pending.find((p) => p.nodeId === identity.deviceId);
  if (!req) throw new Error('no surface request for the bench node');
  await opA.request('node.pair.approve', { requestId: req.requestId });
  await new Promise((r) => setTimeout(r, 200));
  const out = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await opA.request('node.invoke', { nodeId: identity.deviceId, command: 'echo.bench', params: { i } });
    out[i] = performance.now() - t0;
  }
  await node.close();
  return out;
}

export const CLUSTER_ROWS = {
  approve: 'approve on A → hello-ok on B (ms)',
  revoke: 'revoke on A → close on B (ms)',
  invoke: 'node.invoke A → node on B → A (ms)',
} as const;

export interface ClusterResult {
  n: number;
  results: Record<string, Summary | null>;
}

/** Start the PostgreSQL cluster and instances A and B, measure the three crossings `n` times each, stop everything. */
export async function clusterRows(N: number, log: (msg: string) => void = () => {}): Promise<ClusterResult> {
  const cluster = await startPgCluster();
  const dirs: string[] = [];
  const results: Record<string, Summary | null> = {};
  try {
    const url = await cluster.createDatabase();
    dirs.push(clusterStateDir(), clusterStateDir());
    const [a, b] = await Promise.all([startInstance('A', url, dirs[0]), startInstance('B', url, dirs[1])]);
    const store = await PostgresStore.open(url, { maxConnections: 2 });
    try {
      const opA = await operator(a);
      try {
        log(`cluster: ${N} approvals on A → waiting device on B`);
        results[CLUSTER_ROWS.approve] = summarize(await approveLatency(N, b, opA, store));
        log(`cluster: ${N} revocations on A → socket on B`);
        results[CLUSTER_ROWS.revoke] = summarize(await revokeLatency(N, b, opA));
        log(`cluster: ${N} node.invoke A → node on B`);
        results[CLUSTER_ROWS.invoke] = summarize(await invokeLatency(N, b, opA));
      } finally {
        await opA.close();
      }
    } finally {
      await store.close();
      await Promise.all([a.stop(), b.stop()]);
    }
  } finally {
    await cluster.stop();
    for (const d of dirs) removeStateDir(d);
  }
  return { n: N, results };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { n: { type: 'string', default: '100' } } });
  const N = Number(values.n);
  const { results } = await clusterRows(N);
  const rows = Object.entries(results).map(([k, s]) => `${k.padEnd(38)} ${s ? `n=${s.n} median=${s.median} p90=${s.p90} p99=${s.p99} max=${s.max}` : '-'}`);
  process.stdout.write(`${rows.join('\n')}\n`);
  const file = join(process.cwd(), 'bench', 'results', 'cluster.json');
  writeFileSync(file, `${JSON.stringify({ at: new Date().toISOString(), n: N, machine: { cpus: cpus().length, loadavg: loadavg() }, results }, null, 2)}\n`);
  process.stdout.write(`written to ${file}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
}
