/**
 * node.invoke round trips through a real clawgate process: operator → gateway → node →
 * gateway → operator, over loopback WebSockets. The node answers from the same process as the
 * operator (an echo), so the numbers are the gateway's routing cost plus two socket hops each way.
 *
 *   npm run build && node dist/bench/node-invoke.js [--sequential 2000] [--concurrency 8] [--duration-s 5]
 *
 * Prints a table and writes bench/results/node-invoke.json.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type EchoNode, startEchoNode } from './echo-node.js';
import { closedLoop, machineInfo, ownerCredential, roundTripArgs } from './harness.js';
import { spawnGateway } from './proc.js';
import { Samples } from './stats.js';

const { sequentialN, concurrency, durationMs } = roundTripArgs(2000);
const root = process.cwd();

async function main(): Promise<void> {
  const gw = await spawnGateway({ root });
  const owner = ownerCredential(gw.stateDir);
  let echo: EchoNode | null = null;
  try {
    echo = await startEchoNode(gw.url, gw.token, owner);
    const { op, nodeId } = echo;
    const invoke = () => op.request('node.invoke', { nodeId, command: 'bench.echo', params: { x: 1 } });

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
    const elapsedS = await closedLoop(concurrency, durationMs, async () => {
      const t = performance.now();
      try {
        await invoke();
        load.push(performance.now() - t);
        done++;
      } catch {
        errors++;
      }
    });
    const result = {
      machine: machineInfo(),
      sequential: { n: sequentialN, latencyMs: seq.summary() },
      concurrent: { concurrency, durationS: Math.round(elapsedS * 100) / 100, invokesPerS: Math.round(done / elapsedS), errors, latencyMs: load.summary() },
      answeredByNode: echo.answered(),
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
    await echo?.close();
    await gw.stop();
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
