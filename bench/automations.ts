/**
 * Automations through a real clawgate process (SQLite store, loopback): `chat.send` round trips,
 * `send` round trips (the outbox write), and webhook delivery, from `send` to the local listener
 * receiving the POST, one at a time and with concurrent senders.
 *
 *   npm run build && node dist/bench/automations.js [--sequential 500] [--concurrency 8] [--duration-s 5]
 *
 * Prints a table and writes bench/results/automations.json.
 */
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { connectGateway, type GatewayConnection } from '../src/client/connection.js';
import { closedLoop, machineInfo, ownerCredential, roundTripArgs } from './harness.js';
import { spawnGateway } from './proc.js';
import { Samples } from './stats.js';

const { sequentialN, concurrency, durationMs } = roundTripArgs(500);
const root = process.cwd();

async function main(): Promise<void> {
  // The webhook target: answers 204 and reports each body's marker to whoever waits for it.
  const waiting = new Map<string, () => void>();
  let received = 0;
  const hook = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      received++;
      res.writeHead(204).end();
      const marker = (JSON.parse(text) as { content: string }).content;
      waiting.get(marker)?.();
      waiting.delete(marker);
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
  const hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;

  const gw = await spawnGateway({ root });
  const owner = ownerCredential(gw.stateDir);
  let op: GatewayConnection | null = null;
  try {
    op = await connectGateway({ url: gw.url, ...owner, client: { id: 'cli', mode: 'cli' } });
    const o = op;
    await o.request('channels.add', { type: 'webhook', name: 'bench', url: hookUrl });
    await o.request('sessions.create', { key: 'bench' });
    let seq = 0;
    const delivered = (marker: string) => new Promise<void>((resolve) => waiting.set(marker, resolve));

    for (let i = 0; i < 100; i++) await o.request('chat.send', { sessionKey: 'bench', text: 'warm-up' });
    const chat = new Samples(sequentialN);
    for (let i = 0; i < sequentialN; i++) {
      const t = performance.now();
      await o.request('chat.send', { sessionKey: 'bench', text: `m${i}` });
      chat.push(performance.now() - t);
    }

    for (let i = 0; i < 50; i++) {
      const m = `w${++seq}`;
      const d = delivered(m);
      await o.request('send', { channel: 'bench', content: m });
      await d;
    }
    const accept = new Samples(sequentialN);
    const endToEnd = new Samples(sequentialN);
    for (let i = 0; i < sequentialN; i++) {
      const m = `s${++seq}`;
      const d = delivered(m);
      const t = performance.now();
      await o.request('send', { channel: 'bench', content: m });
      accept.push(performance.now() - t);
      await d;
      endToEnd.push(performance.now() - t);
    }

    const load = new Samples(4096);
    let sent = 0;
    const before = received;
    const elapsedS = await closedLoop(concurrency, durationMs, async () => {
      const m = `c${++seq}`;
      const d = delivered(m);
      const t = performance.now();
      await o.request('send', { channel: 'bench', content: m });
      await d;
      load.push(performance.now() - t);
      sent++;
    });
    const result = {
      machine: machineInfo(),
      chatSend: { n: sequentialN, latencyMs: chat.summary() },
      sendAccepted: { n: sequentialN, latencyMs: accept.summary() },
      sendToWebhook: { n: sequentialN, latencyMs: endToEnd.summary() },
      concurrent: {
        concurrency,
        durationS: Math.round(elapsedS * 100) / 100,
        deliveriesPerS: Math.round(sent / elapsedS),
        receivedByWebhook: received - before,
        latencyMs: load.summary(),
      },
    };
    writeFileSync(join(root, 'bench', 'results', 'automations.json'), `${JSON.stringify(result, null, 2)}\n`);
    const line = (name: string, s: ReturnType<Samples['summary']>) =>
      `  ${name.padEnd(26)} median ${s?.median} ms  p90 ${s?.p90} ms  p99 ${s?.p99} ms  max ${s?.max} ms`;
    process.stdout.write(
      [
        `automations through clawgate (SQLite, loopback), sequential n=${sequentialN}`,
        line('chat.send round trip', result.chatSend.latencyMs),
        line('send round trip (outbox)', result.sendAccepted.latencyMs),
        line('send → webhook received', result.sendToWebhook.latencyMs),
        `  concurrent ${concurrency} senders for ${result.concurrent.durationS} s: ${result.concurrent.deliveriesPerS} deliveries/s end to end, median ${result.concurrent.latencyMs?.median} ms  p99 ${result.concurrent.latencyMs?.p99} ms`,
        '  written to bench/results/automations.json',
        '',
      ].join('\n'),
    );
  } finally {
    await op?.close();
    await gw.stop();
    hook.close();
    hook.closeAllConnections();
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
