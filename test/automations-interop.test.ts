/**
 * The failure this issue ends, with the real OpenClaw CLI (openclaw@2026.9.6 on Node 24, from
 * scripts/openclaw-cache.sh): on a fresh clawgate, a real OpenClaw client reaches the cron,
 * session and chat methods with no "pairing required", and a cron job it adds runs and
 * announces to a webhook. A missing install is a failure, not a skip.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import type { ChatMessage, CronJob, CronRun } from '../src/core/store.js';
import { removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { openclawGatewayEnv, openclawPaths } from './helpers/openclaw.js';
import { WebhookTarget } from './helpers/webhook.js';

const run = promisify(execFile);
let oc: { node: string; cli: string };
let tg: TestGateway;
let target: WebhookTarget;
const homes: string[] = [];

before(async () => {
  oc = openclawPaths();
  // Channels and cron jobs are admin work; the real CLI cannot make clawgate's owner proof, so this
  // gateway opts in to OpenClaw's "the token is admin on the gateway host".
  tg = await startTestGateway({ config: { sharedSecretIsAdminOnHost: true } });
  target = await WebhookTarget.start();
});

after(async () => {
  await tg.stop();
  await target.close();
  removeDir(tg.stateDir);
  for (const h of homes) removeDir(h);
});

/**
 * `openclaw gateway call <method>` from a fresh OpenClaw install (its own HOME, new device key),
 * with the gateway token by default, or the owner credential for what the token is not worth
 * (admin: channels and cron jobs). The secret travels in its environment, as the docs show.
 */
async function ocCall<T>(method: string, params: unknown, token = TEST_TOKEN): Promise<T> {
  const home = mkdtempSync(join(tmpdir(), 'clawgate-oc-'));
  homes.push(home);
  try {
    const { stdout } = await run(oc.node, [oc.cli, 'gateway', 'call', method, '--params', JSON.stringify(params), '--json'], {
      env: openclawGatewayEnv(home, { url: tg.url, token }),
      timeout: 90_000,
    });
    const start = stdout.search(/^[{[]/m);
    assert.ok(start >= 0, `no JSON in output: ${stdout}`);
    return JSON.parse(stdout.slice(start)) as T;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`openclaw gateway call ${method} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

test('a real OpenClaw client on a fresh gateway: sessions, chat and cron work with no pairing prompt; its cron job announces to a webhook', async () => {
  const created = await ocCall<{ session: { key: string } }>('sessions.create', { key: 'main' });
  assert.equal(created.session.key, 'main');
  const sent = await ocCall<{ message: ChatMessage; duplicate: boolean }>('chat.send', {
    sessionKey: 'main',
    text: 'hello from openclaw',
    idempotencyKey: 'oc-1',
  });
  assert.equal(sent.duplicate, false);
  const history = await ocCall<{ messages: ChatMessage[] }>('chat.history', { sessionKey: 'main' });
  assert.deepEqual(
    history.messages.map((m) => m.text),
    ['hello from openclaw'],
  );

  // Adding a channel or a cron job is admin work: this gateway's opt-in makes the token admin on
  // its own host (test/interop.test.ts shows the refusal without it).
  const cronJob = {
    name: 'announce',
    schedule: { kind: 'every', everyMs: 1000 },
    action: { kind: 'send', channel: 'discord', content: 'scheduled announcement' },
  };
  await ocCall('channels.add', { type: 'webhook', name: 'discord', url: target.url, username: 'openclaw-cron' });
  const added = await ocCall<{ job: CronJob }>('cron.add', cronJob);
  await target.waitFor(1);
  assert.deepEqual(target.received[0]?.body, { content: 'scheduled announcement', username: 'openclaw-cron' });
  const jobs = await ocCall<{ jobs: CronJob[] }>('cron.list', {});
  assert.deepEqual(
    jobs.jobs.map((j) => j.jobId),
    [added.job.jobId],
  );
  const runs = await ocCall<{ runs: CronRun[] }>('cron.runs', { jobId: 'announce' });
  assert.ok(runs.runs.length >= 1 && runs.runs.every((r) => r.status === 'ok'));
  await ocCall('cron.remove', { jobId: 'announce' });

  // Nothing was left pending: no pairing request, no approval needed anywhere.
  assert.deepEqual(await tg.store.listPairingRequests(), []);
  const audit = await tg.store.listAudit();
  assert.ok(audit.some((e) => e.action === 'channel.send' && e.actor === 'internal:cron'));
  assert.ok(!audit.some((e) => e.action === 'pairing.requested'));
});
