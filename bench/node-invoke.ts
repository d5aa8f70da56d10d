/**
 * node.invoke round trips through a real clawgate process: operator → gateway → node →
 * gateway → operator, over loopback WebSockets. The node answers from the same process as the
 * operator (an echo), so the numbers are the gateway's routing cost plus two socket hops each way.
 *
 *   npm run build && node dist/bench/node-invoke.js [--sequential 2000] [--concurrency 8] [--duration-s 5]
 *
 * Prints a table and writes bench/results/node-invoke.json.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { spawnGateway } from './proc.js';
import { Samples } from './stats.js';

const { values } = parseArgs({
  options: {
    sequential: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '8' },
    'duration-s': { type: 'string', default: '5' },
  },
});
const sequentialN = Number(values.sequential);
const concurrency = Number(values.concurrency);
const durationMs = Number(values['duration-s']) * 1000;
const root = process.cwd();

async function main(): Promise<void> {
  const gw = await spawnGateway({ root });
  const owner = (JSON.parse(readFileSync(join(gw.stateDir, 'credentials.json'), 'utf8')) as { owner: string }).owner;
  let op: GatewayConnection | null = null;
  let node: GatewayConnection | null = null;
  try {
    node = await connectGateway({
      url: gw.url,
      role: 'node',
      identity: generateIdentity(),
      auth: { token: gw.token },
      client: { id: 'node-host', mode: 'node', displayName: 'bench-node' },
      commands: ['bench.echo'],
    });
    const n = node;
    let answered = 0;
    n.onEvent((event, payload) => {
      if (event !== 'node.invoke.request') return;
      const p = payload as { id: string; nodeId: string; paramsJSON?: string };
      answered++;
      n.request('node.invoke.result', { id: p.id, nodeId: p.nodeId, ok: true, payloadJSON: p.paramsJSON ?? 'null' }).catch(() => {});
    });
    op = await connectGateway({ url: gw.url, auth: { token: owner }, client: { id: 'cli', mode: 'cli' } });
    const o = op;
    const list = await o.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {});
    const req = list.pending[0];
    if (!req) throw new Error('no surface request filed');
    await o.request('node.pair.approve', { requestId: req.requestId });
    const invoke = () => o.request('node.invoke', { nodeId: req.nodeId, command: 'bench.echo', params: { x: 1 } });

    for (let i = 0; i < 200; i++) await invoke(); // warm-up
    const seq = new Samples(sequentialN);
    for (let i = 0; i < sequentialN; i++) {
      const t = performance.now();
      await invoke();
      seq.push(performance.now() - t);
    }

    const load = new Samples(4096);
    let done = 0;
    let errors = 0;
    const end = performance.now() + durationMs;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const t = performance.now();
          try {
            await invoke();
            load.push(performance.now() - t);
            done++;
          } catch {
            errors++;
          }
        }
      }),
    );
    const elapsedS = (performance.now() - t0) / 1000;
    const result = {
      machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', node: process.version },
      sequential: { n: sequentialN, latencyMs: seq.summary() },
      concurrent: { concurrency, durationS: Math.round(elapsedS * 100) / 100, invokesPerS: Math.round(done / elapsedS), errors, latencyMs: load.summary() },
      answeredByNode: answered,
    };
    writeFileSync(join(root, 'bench', 'results', 'node-invoke.json'), `${JSON.stringify(result, null, 2)}\n`);
    const s = result.sequential.latencyMs;
    const c = result.concurrent.latencyMs;
    process.stdout.write(
      [
        'node.invoke round trip (operator → clawgate → node → clawgate → operator, loopback)',
        `  sequential   n=${sequentialN}  median ${s?.median} ms  p90 ${s?.p90} ms  p99 ${s?.p99} ms  max ${s?.max} ms`,
        `  concurrent   ${concurrency} callers for ${result.concurrent.durationS} s: ${result.concurrent.invokesPerS} invokes/s, errors ${errors}, median ${c?.median} ms  p99 ${c?.p99} ms`,
        '  written to bench/results/node-invoke.json',
        '',
      ].join('\n'),
    );
  } finally {
    await op?.close();
    await node?.close();
    await gw.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
