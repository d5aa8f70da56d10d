/**
 * `clawgate node run` as a real process behind a real clawgate process, over loopback:
 *
 *   * start-up: spawn of `clawgate node run` → its `connected to …` line (fresh state dir, so
 *     the key is generated and the node paired silently on loopback);
 *   * round trips operator → gateway → node host → gateway → operator of `system.which` (no
 *     process started) and `system.run echo` (one process per call), one at a time.
 *
 *   npm run build && node dist/bench/node-host.js [--n 300] [--starts 3]
 *
 * Prints a table and writes bench/results/node-host.json.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connectGateway, type GatewayConnection } from '../src/client/connection.js';
import { machineInfo, ownerCredential } from './harness.js';
import { type SpawnedGateway, spawnGateway } from './proc.js';
import { Samples } from './stats.js';

const { values } = parseArgs({ options: { n: { type: 'string', default: '300' }, starts: { type: 'string', default: '3' } } });
const n = Number(values.n);
const starts = Number(values.starts);
const root = process.cwd();
const BIN = join(root, 'bin', 'clawgate.js');

interface NodeProc {
  child: ChildProcess;
  stateDir: string;
  /** spawn → `connected to` line, milliseconds. */
  connectedMs: number;
}

function startNode(gw: SpawnedGateway, name: string): Promise<NodeProc> {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-bench-node-'));
  const t0 = performance.now();
  const child = spawn(
    process.execPath,
    [BIN, 'node', 'run', '--url', gw.url, '--state-dir', stateDir, '--name', name, '--exec-policy', 'full'],
    // The token in the environment, not on argv (readable by every local user).
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLAWGATE_NODE_TOKEN: gw.token } },
  );
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`node host did not connect within 30 s:\n${buf}`)), 30_000);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`node host exited with ${code}:\n${buf}`)));
    child.stdout?.on('data', (c: Buffer) => {
      buf += c.toString();
      if (/^connected to /m.test(buf)) {
        clearTimeout(timer);
        resolve({ child, stateDir, connectedMs: performance.now() - t0 });
      }
    });
  });
}

async function stopNode(p: NodeProc): Promise<void> {
  p.child.removeAllListeners('exit');
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  await exited;
  rmSync(p.stateDir, { recursive: true, force: true });
}

async function roundTrips(op: GatewayConnection, nodeId: string, command: string, params: unknown): Promise<Samples> {
  const invoke = () => op.request<{ payload: unknown }>('node.invoke', { nodeId, command, params });
  for (let i = 0; i < 20; i++) await invoke(); // warm-up
  const s = new Samples(n);
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await invoke();
    s.push(performance.now() - t);
  }
  return s;
}

async function main(): Promise<void> {
  const gw = await spawnGateway({ root });
  const owner = ownerCredential(gw.stateDir);
  let op: GatewayConnection | null = null;
  const nodes: NodeProc[] = [];
  try {
    const startup = new Samples(starts);
    for (let i = 0; i < starts; i++) {
      const p = await startNode(gw, `bench-start-${i}`);
      startup.push(p.connectedMs);
      await stopNode(p);
    }
    const node = await startNode(gw, 'bench-node');
    nodes.push(node);
    op = await connectGateway({ url: gw.url, ...owner, client: { id: 'cli', mode: 'cli' } });
    const nodeId = (JSON.parse(readFileSync(join(node.stateDir, 'identity.json'), 'utf8')) as { deviceId: string }).deviceId;
    const list = await op.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {});
    const req = list.pending.find((p) => p.nodeId === nodeId);
    if (!req) throw new Error('no surface request filed for the bench node');
    await op.request('node.pair.approve', { requestId: req.requestId });

    const which = await roundTrips(op, nodeId, 'system.which', { bins: ['sh'] });
    const run = await roundTrips(op, nodeId, 'system.run', { command: ['echo', 'bench'] });
    const result = {
      machine: machineInfo(),
      startupToConnectedMs: startup.summary(),
      systemWhich: { n, latencyMs: which.summary() },
      systemRunEcho: { n, latencyMs: run.summary() },
    };
    writeFileSync(join(root, 'bench', 'results', 'node-host.json'), `${JSON.stringify(result, null, 2)}\n`);
    const w = result.systemWhich.latencyMs;
    const r = result.systemRunEcho.latencyMs;
    const st = result.startupToConnectedMs;
    process.stdout.write(
      [
        'clawgate node run behind clawgate (loopback, real processes)',
        `  start → connected   n=${starts}  median ${st?.median} ms  max ${st?.max} ms`,
        `  system.which        n=${n}  median ${w?.median} ms  p90 ${w?.p90} ms  p99 ${w?.p99} ms`,
        `  system.run echo     n=${n}  median ${r?.median} ms  p90 ${r?.p90} ms  p99 ${r?.p99} ms`,
        '  written to bench/results/node-host.json',
        '',
      ].join('\n'),
    );
  } finally {
    await op?.close();
    for (const p of nodes) await stopNode(p);
    await gw.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
