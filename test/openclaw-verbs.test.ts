/**
 * The OpenClaw CLI's everyday verbs (openclaw@2026.9.6 on Node 24, from
 * scripts/openclaw-cache.sh) against a real clawgate gateway: devices remove / rename /
 * join-code, cron list / add / run / runs / rm, logs, channels status, status --all and
 * nodes approve. Each test asserts what the verb did, not only its exit code. The CLI gets its
 * gateway and secret from its environment or its config file, never from argv.
 *
 * On loopback with a gateway secret the real CLI connects without its device key, so what it
 * may do is what that secret is worth: read verbs run on the gateway token, admin verbs on a
 * gateway that opts in to "the token is admin on the gateway host" (the CLI cannot make clawgate's
 * owner proof, and a bearer owner credential is refused). The pairing-only case (`devices remove|rename`) needs the CLI's own device:
 * the CLI talks to a TLS gateway at wss://0.0.0.0 (a non-loopback name for this host, so it
 * sends its device key), and the owner approves its pairing requests explicitly.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ConnectError, connectGateway, GatewayRequestError, generateIdentity } from '../src/client/connection.js';
import { ManualClock } from '../src/core/env.js';
import { LogRing } from '../src/core/log-ring.js';
import { certFacts, ensureSelfSignedCert } from '../src/server/tls.js';
import { asOwner as ownerOf, removeDir, startTestGateway, TEST_OWNER, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { openclawEnv, openclawPaths } from './helpers/openclaw.js';
import { WebhookTarget } from './helpers/webhook.js';

const run = promisify(execFile);
let oc: { node: string; cli: string };
const dirs: string[] = [];

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** A fresh OpenClaw install (its own HOME, state dir and device key), optionally with a config file. */
function ocHome(config?: unknown): string {
  const home = mkdtempSync(join(tmpdir(), 'clawgate-ocv-'));
  dirs.push(home);
  if (config !== undefined) {
    mkdirSync(join(home, 'state'), { recursive: true });
    writeFileSync(join(home, 'state', 'openclaw.json'), JSON.stringify(config), { mode: 0o600 });
  }
  return home;
}

/** Run the real CLI from `home`; a failure comes back as a non-zero `code`, never a throw. */
async function openclaw(home: string, args: string[], env: Record<string, string> = {}): Promise<Ran> {
  try {
    const r = await run(oc.node, [oc.cli, ...args], { env: openclawEnv(home, env), timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; message: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: `${e.stderr ?? ''}\n${e.message}` };
  }
}

function ok(r: Ran, what: string): Ran {
  assert.equal(r.code, 0, `${what} exited ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}

/** The first top-level JSON value the CLI printed (it may print notices before it). */
function json<T>(stdout: string): T {
  const start = stdout.search(/^[{[]/m);
  assert.ok(start >= 0, `no JSON in output: ${stdout}`);
  return JSON.parse(stdout.slice(start)) as T;
}

const REMOTE = { 'x-forwarded-for': '198.51.100.41' };

describe('OpenClaw everyday verbs on loopback (gateway token; admin work through the documented token-is-admin-on-host opt-in)', () => {
  let tg: TestGateway;
  let target: WebhookTarget;
  const asShared = () => ({ OPENCLAW_GATEWAY_URL: tg.url, OPENCLAW_GATEWAY_TOKEN: TEST_TOKEN });
  // The real CLI cannot make clawgate's owner proof; admin verbs run on a gateway that opts in to
  // OpenClaw's "the token is admin on the gateway host" (direct loopback only).
  const asOwner = () => ({ OPENCLAW_GATEWAY_URL: tg.url, OPENCLAW_GATEWAY_TOKEN: TEST_TOKEN });
  const owner = () => connectGateway({ url: tg.url, ...ownerOf(tg), client: { id: 'cli', mode: 'cli' } });

  before(async () => {
    oc = openclawPaths();
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'], sharedSecretIsAdminOnHost: true } });
    target = await WebhookTarget.start();
  });
  after(async () => {
    await tg.stop();
    await target.close();
    removeDir(tg.stateDir);
    for (const d of dirs) removeDir(d);
  });

  test('openclaw devices join-code: a single-use join URL whose payload is a live node setup code, and openclaw connect joins with it', async () => {
    const r = ok(await openclaw(ocHome(), ['devices', 'join-code', '--json'], asOwner()), 'devices join-code');
    const out = json<{ joinUrl: string; command: string }>(r.stdout);
    const base = tg.url.replace(/^ws:/, 'http:');
    assert.match(out.joinUrl, new RegExp(`^${base}/j/[A-Za-z0-9_-]{22}$`));
    assert.equal(out.command, `npx openclaw connect ${out.joinUrl}`);
    const first = await fetch(out.joinUrl);
    assert.equal(first.status, 200);
    assert.match(first.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(first.headers.get('cache-control'), 'no-store');
    const payload = (await first.json()) as { url: string; bootstrapToken: string; expiresAtMs: number };
    assert.equal(payload.url, tg.url);
    // Exactly once: the second fetch answers like an unknown code.
    const second = await fetch(out.joinUrl);
    assert.equal(second.status, 404);
    assert.deepEqual(await second.json(), { error: 'not_found' });
    // The payload is a real node setup code: a new node redeems it.
    const node = await connectGateway({
      url: payload.url,
      identity: generateIdentity(),
      role: 'node',
      client: { id: 'node-host', mode: 'node' },
      auth: { bootstrapToken: payload.bootstrapToken },
    });
    assert.equal(node.hello.auth.role, 'node');
    await node.close();
    // The gateway's own log never shows the join code.
    const code = out.joinUrl.slice(out.joinUrl.lastIndexOf('/') + 1);
    const logs = ok(await openclaw(ocHome(), ['logs', '--json', '--limit', '500'], asShared()), 'logs');
    assert.ok(!logs.stdout.includes(code), 'the join code is not in the log');
    assert.ok(!logs.stdout.includes(payload.bootstrapToken), 'the bootstrap token is not in the log');

    // The printed command itself: `openclaw connect <joinUrl>` fetches the payload and runs a node host on it.
    const again = json<{ joinUrl: string }>(ok(await openclaw(ocHome(), ['devices', 'join-code', '--json'], asOwner()), 'devices join-code').stdout);
    const nodeHome = ocHome();
    const child = spawn(oc.node, [oc.cli, 'connect', again.joinUrl, '--display-name', 'joined-node'], {
      env: openclawEnv(nodeHome),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    try {
      const joined = () => [...tg.gateway.sessions.values()].find((x) => x.role === 'node' && x.client.displayName === 'joined-node');
      const deadline = Date.now() + 90_000;
      while (!joined()) {
        assert.ok(Date.now() < deadline, `openclaw connect never joined; output:\n${output}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const grant = await tg.store.getGrant(joined()?.deviceId as string, 'node');
      assert.equal(grant?.approvedVia, 'bootstrap');
      assert.equal((await fetch(again.joinUrl)).status, 404, 'the join URL was used up by openclaw connect');
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });

  test('openclaw cron add (OpenClaw job schema) / list / run / runs / rm: a system event posted into the main session', async () => {
    const home = ocHome();
    const added = json<{ id: string; payload: { kind: string; text: string }; sessionTarget: string }>(
      ok(await openclaw(home, ['cron', 'add', '--name', 'standup', '--every', '1h', '--system-event', 'standup in 5 minutes', '--json'], asOwner()), 'cron add')
        .stdout,
    );
    const job = await tg.store.getCronJob(added.id);
    assert.deepEqual(job?.action, { kind: 'chat', sessionKey: 'main', text: 'standup in 5 minutes' });
    assert.deepEqual(job?.schedule, { kind: 'every', everyMs: 3_600_000 });
    assert.deepEqual(added.payload, { kind: 'systemEvent', text: 'standup in 5 minutes' });
    assert.equal(added.sessionTarget, 'main');

    // A disabled clawgate job, to see what --all changes.
    const o = await owner();
    const off = await o.request<{ job: { jobId: string } }>('cron.add', {
      name: 'paused',
      schedule: { kind: 'cron', expr: '0 9 * * 1' },
      action: { kind: 'send', channel: 'nowhere', content: 'x' },
      enabled: false,
    });
    await o.close();
    const listed = json<{ jobs: Array<{ id: string; name: string }> }>(ok(await openclaw(home, ['cron', 'list', '--json'], asShared()), 'cron list').stdout);
    assert.deepEqual(
      listed.jobs.map((j) => j.id),
      [added.id],
    );
    const all = json<{ jobs: Array<{ id: string }> }>(ok(await openclaw(home, ['cron', 'list', '--all', '--json'], asShared()), 'cron list --all').stdout);
    assert.deepEqual(new Set(all.jobs.map((j) => j.id)), new Set([added.id, off.job.jobId]));

    const ran = json<{ ok: boolean; ran: boolean; runId: string; run: { status: string } }>(
      ok(await openclaw(home, ['cron', 'run', added.id, '--json'], asOwner()), 'cron run').stdout,
    );
    assert.equal(ran.ok, true);
    assert.equal(ran.run.status, 'ok');
    const main = await tg.store.getChatSession('main');
    assert.ok(main, 'the run created the main session');
    assert.deepEqual(
      (await tg.store.listChatMessages(main.sessionId)).map((m) => m.text),
      ['standup in 5 minutes'],
    );
    const runs = json<{ entries: Array<{ runId: string; status: string; deliveryStatus: string }> }>(
      ok(await openclaw(home, ['cron', 'runs', added.id, '--json'], asShared()), 'cron runs').stdout,
    );
    assert.deepEqual(
      runs.entries.map((e) => [e.runId, e.status, e.deliveryStatus]),
      [[ran.runId, 'ok', 'not-requested']],
    );

    // enable / disable / edit send OpenClaw's {id, patch}.
    ok(await openclaw(home, ['cron', 'disable', added.id, '--json'], asOwner()), 'cron disable');
    assert.equal((await tg.store.getCronJob(added.id))?.enabled, false);
    ok(await openclaw(home, ['cron', 'enable', added.id, '--json'], asOwner()), 'cron enable');
    assert.equal((await tg.store.getCronJob(added.id))?.enabled, true);
    ok(await openclaw(home, ['cron', 'edit', added.id, '--system-event', 'standup in 1 minute', '--json'], asOwner()), 'cron edit');
    assert.deepEqual((await tg.store.getCronJob(added.id))?.action, { kind: 'chat', sessionKey: 'main', text: 'standup in 1 minute' });

    const removed = json<{ removed: boolean }>(ok(await openclaw(home, ['cron', 'rm', added.id, '--json'], asOwner()), 'cron rm').stdout);
    assert.equal(removed.removed, true);
    assert.equal(await tg.store.getCronJob(added.id), null);

    // What clawgate cannot run is refused by name, with what it can do instead.
    const agent = await openclaw(home, ['cron', 'add', '--name', 'digest', '--every', '1h', '--message', 'summarise the day', '--json'], asOwner());
    assert.notEqual(agent.code, 0);
    assert.match(agent.stdout + agent.stderr, /cron action agentTurn is not available: clawgate runs no agent and no host command/);
    assert.equal((await tg.store.listCronJobs()).filter((j) => j.name === 'digest').length, 0);
  });

  test('openclaw logs: the gateway log through logs.tail, follows a cursor, and never shows a secret', async () => {
    // Through the logger the composition root built: a line carrying secrets in every way it could.
    tg.gateway.log.warn(`verbs probe with ${TEST_OWNER} inline`, { password: TEST_TOKEN, note: 'oc-pair://abcdefghijklmnopqrstuvwxyz0123456789' });
    const home = ocHome();
    const r = ok(await openclaw(home, ['logs', '--json', '--limit', '200'], asShared()), 'logs');
    const records = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string; message?: string; level?: string; raw?: string; cursor?: number; sourceKind?: string });
    const meta = records.find((x) => x.type === 'meta');
    assert.equal(meta?.sourceKind, 'memory');
    const probe = records.find((x) => x.type === 'log' && x.message?.startsWith('verbs probe'));
    assert.ok(probe, `the probe line is shown:\n${r.stdout}`);
    assert.equal(probe.level, 'warn');
    assert.equal(probe.message, 'verbs probe with [redacted] inline');
    for (const secret of [TEST_TOKEN, TEST_OWNER, 'oc-pair://abcdefghij']) assert.ok(!r.stdout.includes(secret), `${secret} is not in the output`);
    assert.match(probe.raw ?? '', /"password":"\[redacted\]"/);

    // The cursor the CLI keeps: after it, only what was logged since.
    const o = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, scopes: ['operator.read'], client: { id: 'cli', mode: 'cli' } });
    const c = await o.request<{ cursor: number }>('logs.tail', {});
    tg.gateway.log.info('after the cursor');
    const next = await o.request<{ lines: string[]; reset: boolean }>('logs.tail', { cursor: c.cursor });
    assert.equal(next.reset, false);
    assert.deepEqual(
      next.lines.map((l) => (JSON.parse(l) as { message: string }).message),
      ['after the cursor'],
    );
    // Anyone else's unknown parameter is still refused by the catalogue.
    for (const [method, params] of [
      ['logs.tail', { follow: true }],
      ['cron.list', { includeDisabled: true, bogus: 1 }],
      ['channels.status', { probe: false, verbose: true }],
      ['diagnostics.stability', { since: 0 }],
    ] as const) {
      await assert.rejects(
        o.request(method, params),
        (e: unknown) => e instanceof GatewayRequestError && e.detailCode === 'INVALID_PARAMS' && /Unexpected property/.test(e.message),
        method,
      );
    }
    await o.close();
  });

  test('openclaw channels status: the webhook channels and what their deliveries did', async () => {
    const o = await owner();
    await o.request('channels.add', { type: 'webhook', name: 'ops', url: target.url });
    await o.request('send', { channel: 'ops', content: 'hello ops' });
    await target.waitFor(1);
    await o.close();
    const home = ocHome();
    // The outbox marks the delivery delivered right after the target answered.
    let status: { channelAccounts: { webhook: Array<{ accountId: string; healthState: string; lastOutboundAt: number | null; baseUrl: string }> } };
    const deadline = Date.now() + 60_000;
    for (;;) {
      status = json(ok(await openclaw(home, ['channels', 'status', '--json'], asShared()), 'channels status').stdout);
      const acct = status.channelAccounts.webhook.find((a) => a.accountId === 'ops');
      if (acct?.lastOutboundAt) break;
      assert.ok(Date.now() < deadline, `the delivery never showed as delivered: ${JSON.stringify(status)}`);
    }
    const ops = status.channelAccounts.webhook.find((a) => a.accountId === 'ops');
    assert.equal(ops?.healthState, 'ok');
    // A read-only caller sees the webhook's origin, never its secret path.
    assert.equal(ops?.baseUrl, `${new URL(target.url).origin}/…`);
  });

  test('openclaw status --all reaches the gateway and reads its stability diagnostics and channel status', async () => {
    // `status` reads the gateway from the config file (its auth token included), as an installed CLI does.
    const home = ocHome({ gateway: { mode: 'local', port: tg.server.port, auth: { mode: 'token', token: TEST_TOKEN } } });
    const r = ok(await openclaw(home, ['status', '--all']), 'status --all');
    assert.match(r.stdout, /ws:\/\/127\.0\.0\.1:\d+ \(local loopback\) · reachable/);
    assert.match(r.stdout, /Inbound delivery telemetry: received 0 · dispatch 0\/0/);
    assert.match(r.stdout, /Channel issues \(none\)/);
    assert.doesNotMatch(r.stdout, /unknown method/);
  });

  test('openclaw nodes approve <device request id>: the message names the devices command, which then works', async () => {
    const id = generateIdentity();
    let requestId = '';
    try {
      await connectGateway({
        url: tg.url,
        identity: id,
        role: 'node',
        client: { id: 'node-host', mode: 'node', displayName: 'verbs-node' },
        auth: { token: TEST_TOKEN },
        headers: REMOTE,
      });
      assert.fail('expected PAIRING_REQUIRED');
    } catch (err) {
      assert.ok(err instanceof ConnectError && err.detailCode === 'PAIRING_REQUIRED', String(err));
      requestId = String((err.error?.details as { requestId?: string } | undefined)?.requestId);
    }
    const home = ocHome();
    const pending = json<Array<{ requestId: string; kind: string }>>(
      ok(await openclaw(home, ['nodes', 'pending', '--json'], asOwner()), 'nodes pending').stdout,
    );
    assert.ok(pending.some((p) => p.requestId === requestId && p.kind === 'device-pairing'));
    const r = await openclaw(home, ['nodes', 'approve', requestId], asOwner());
    assert.notEqual(r.code, 0);
    assert.match(
      r.stdout + r.stderr,
      new RegExp(`${requestId} is a device pairing request \\(role node\\), not a node command request: approve it with openclaw devices approve ${requestId}`),
    );
    assert.doesNotMatch(r.stdout + r.stderr, /Unknown node pairing requestId/);
    ok(await openclaw(home, ['devices', 'approve', requestId, '--json'], asOwner()), 'devices approve');
    assert.ok(await tg.store.getGrant(id.deviceId, 'node'));
  });
});

describe("OpenClaw devices remove / rename from the CLI's own pairing-only device", () => {
  let tg: TestGateway;
  let fingerprint: string;
  let port: number;

  before(async () => {
    oc = openclawPaths();
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-ocv-tls-'));
    const made = ensureSelfSignedCert(stateDir);
    const certPem = readFileSync(made.certPath, 'utf8');
    fingerprint = certFacts(certPem).fingerprint;
    // Nothing is approved without the owner: the CLI's device waits for an explicit approval.
    tg = await startTestGateway({
      stateDir,
      config: { autoApproveLocal: false, tls: { certPem, keyPem: readFileSync(made.keyPath, 'utf8'), certPath: made.certPath, selfSigned: true } },
    });
    port = tg.server.port;
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
    for (const d of dirs) removeDir(d);
  });

  const owner = () => connectGateway({ url: tg.url, tlsFingerprint: fingerprint, ...ownerOf(tg), client: { id: 'cli', mode: 'cli' } });

  /** A device paired by the owner with these scopes. */
  async function pairedDevice(scopes: string[], displayName: string): Promise<string> {
    const id = generateIdentity();
    const c = await connectGateway({
      url: tg.url,
      tlsFingerprint: fingerprint,
      identity: id,
      ...ownerOf(tg),
      scopes,
      client: { id: 'test', mode: 'test', displayName },
    });
    await c.close();
    const granted = (await tg.store.getGrant(id.deviceId, 'operator'))?.scopes ?? [];
    for (const s of scopes) assert.ok(granted.includes(s), `${displayName} holds ${s}`);
    return id.deviceId;
  }

  /**
   * The CLI at wss://0.0.0.0 (this host under a name the CLI does not treat as loopback, so it
   * sends its device key) with the gateway token; each pairing or scope request it files is
   * approved by the owner, then the command runs again.
   */
  async function fromCliDevice(home: string, args: string[]): Promise<Ran> {
    const env = { OPENCLAW_GATEWAY_URL: `wss://0.0.0.0:${port}`, OPENCLAW_GATEWAY_TOKEN: TEST_TOKEN };
    for (let attempt = 0; ; attempt++) {
      const r = await openclaw(home, args, env);
      const pending = await tg.store.listPairingRequests();
      if (r.code === 0 || pending.length === 0 || attempt === 3) return r;
      const o = await owner();
      for (const p of pending) await o.request('device.pair.approve', { requestId: p.requestId });
      await o.close();
    }
  }

  test('rename and remove another device with operator.pairing only; an admin device is protected', async () => {
    const phone = await pairedDevice(['operator.read', 'operator.write'], 'phone');
    const admin = await pairedDevice(['operator.admin'], 'admin laptop');
    const home = ocHome({ gateway: { mode: 'remote', remote: { url: `wss://0.0.0.0:${port}`, tlsFingerprint: fingerprint } } });
    // `cron list` creates the CLI's device key (the devices commands only read one) and pairs it for reading.
    ok(await fromCliDevice(home, ['cron', 'list', '--json']), 'cron list');

    const renamed = json<{ deviceId: string; label: string }>(
      ok(await fromCliDevice(home, ['devices', 'rename', '--device', phone, '--name', 'kitchen phone', '--json']), 'devices rename').stdout,
    );
    assert.deepEqual(renamed, { deviceId: phone, label: 'kitchen phone' });
    assert.equal((await tg.store.getDevice(phone))?.label, 'kitchen phone');

    const removed = json<{ deviceId: string }>(ok(await fromCliDevice(home, ['devices', 'remove', phone, '--json']), 'devices remove').stdout);
    assert.equal(removed.deviceId, phone);
    assert.equal(await tg.store.getDevice(phone), null);

    // The CLI's device did all that with pairing (and read) only: no admin was ever approved.
    const cli = (await tg.store.listDevices()).find((d) => d.deviceId !== admin && d.clientId === 'cli');
    assert.ok(cli, 'the CLI is a paired device');
    assert.deepEqual((await tg.store.getGrant(cli.deviceId, 'operator'))?.scopes, ['operator.pairing', 'operator.read']);

    // A mistyped id: the message (all the CLI prints) says where the ids are.
    const unknown = await fromCliDevice(home, ['devices', 'remove', 'no-such-device', '--json']);
    assert.notEqual(unknown.code, 0);
    assert.match(
      unknown.stdout + unknown.stderr,
      /unknown deviceId: no-such-device \(openclaw devices list or clawgate devices list shows the paired devices\)/,
    );

    const refused = await fromCliDevice(home, ['devices', 'remove', admin, '--json']);
    assert.notEqual(refused.code, 0);
    assert.match(
      refused.stdout + refused.stderr,
      new RegExp(`device removal denied: device ${admin} holds operator.admin; removing it needs operator.admin too`),
    );
    assert.ok(await tg.store.getDevice(admin), 'the admin device is still there');
  });

  test('a session signed in with its own device token manages only its own device, as in the reference', async () => {
    const other = await pairedDevice(['operator.read'], 'tablet');
    const id = generateIdentity();
    const first = await connectGateway({
      url: tg.url,
      tlsFingerprint: fingerprint,
      identity: id,
      ...ownerOf(tg),
      scopes: ['operator.pairing'],
      client: { id: 'test', mode: 'test' },
    });
    const deviceToken = first.hello.auth.deviceToken as string;
    assert.ok(deviceToken);
    await first.close();
    const bound = await connectGateway({
      url: tg.url,
      tlsFingerprint: fingerprint,
      identity: id,
      auth: { deviceToken },
      scopes: ['operator.pairing'],
      client: { id: 'test', mode: 'test' },
    });
    for (const [method, params] of [
      ['device.pair.remove', { deviceId: other }],
      ['device.pair.rename', { deviceId: other, label: 'x' }],
    ] as const) {
      await assert.rejects(
        bound.request(method, params),
        (e: unknown) => e instanceof GatewayRequestError && e.detailCode === 'MANAGEMENT_DENIED' && /signed in with its own device token/.test(e.message),
      );
    }
    assert.ok(await tg.store.getDevice(other));
    // Its own device it may rename.
    await bound.request('device.pair.rename', { deviceId: id.deviceId, label: 'me' });
    assert.equal((await tg.store.getDevice(id.deviceId))?.label, 'me');
    await bound.close();
  });
});

describe('the log ring behind logs.tail', () => {
  const line = (ring: LogRing, msg: string) => ring.append('info', msg);
  const messages = (lines: string[]) => lines.map((l) => (JSON.parse(l) as { message: string }).message);

  test("cursor semantics follow the reference's file cursor: tail, follow, reset, skip, limit", () => {
    const ring = new LogRing(new ManualClock(0), () => []);
    for (const m of ['a', 'b', 'c']) line(ring, m);
    const all = ring.tail({});
    assert.deepEqual(messages(all.lines), ['a', 'b', 'c']);
    assert.equal(all.cursor, ring.size);
    assert.equal(all.reset, false);
    assert.equal(all.truncated, false);
    // Following: nothing new, then exactly the new line.
    assert.deepEqual(ring.tail({ cursor: all.cursor }).lines, []);
    line(ring, 'd');
    assert.deepEqual(messages(ring.tail({ cursor: all.cursor }).lines), ['d']);
    // A cursor past the end (a restarted gateway) resets to the tail.
    const past = ring.tail({ cursor: ring.size + 100 });
    assert.equal(past.reset, true);
    assert.deepEqual(messages(past.lines), ['a', 'b', 'c', 'd']);
    // More than maxBytes behind: skip ahead and say how much was skipped.
    const oneLine = Buffer.byteLength(ring.tail({}).lines[0] as string) + 1;
    const skipped = ring.tail({ cursor: 0, maxBytes: oneLine });
    assert.equal(skipped.reset, true);
    assert.equal(skipped.truncated, true);
    assert.equal(skipped.skippedBytes, ring.size - oneLine);
    assert.deepEqual(messages(skipped.lines), ['d']);
    // The line limit keeps the newest lines.
    const limited = ring.tail({ limit: 2 });
    assert.equal(limited.truncated, true);
    assert.deepEqual(messages(limited.lines), ['c', 'd']);
  });

  test('a full ring drops its oldest lines; a cursor into them skips to what is kept', () => {
    const ring = new LogRing(new ManualClock(0), () => [], 400);
    for (let i = 0; i < 20; i++) line(ring, `line ${i}`);
    const kept = ring.tail({});
    assert.ok(kept.firstCursor > 0, 'old lines were dropped');
    assert.equal(kept.truncated, true);
    assert.equal(messages(kept.lines).at(-1), 'line 19');
    assert.ok(!messages(kept.lines).includes('line 0'));
    const old = ring.tail({ cursor: 0 });
    assert.equal(old.reset, true);
    assert.equal(old.skippedBytes, kept.firstCursor);
    assert.deepEqual(old.lines, kept.lines);
  });

  test('no secret is kept: configured literals, secret-named fields and secret formats are redacted', () => {
    const ring = new LogRing(new ManualClock(0), () => ['my-own-gateway-password']);
    ring.append('info', 'connect with my-own-gateway-password', {
      token: 'anything',
      nested: { deviceToken: 'x', text: 'cgd1_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' },
      owner: `cgo_${'Z'.repeat(43)}`,
      tokenId: '0123456789abcdef',
    });
    const text = ring.tail({}).lines[0] as string;
    for (const secret of ['my-own-gateway-password', 'anything', 'cgd1_0123456789abcdef_AAAA', `cgo_${'Z'.repeat(10)}`])
      assert.ok(!text.includes(secret), `${secret} in ${text}`);
    const o = JSON.parse(text) as { message: string; token: string; nested: { deviceToken: string }; tokenId: string };
    assert.equal(o.message, 'connect with [redacted]');
    assert.equal(o.token, '[redacted]');
    assert.equal(o.nested.deviceToken, '[redacted]');
    // A token's public id is not a secret.
    assert.equal(o.tokenId, '0123456789abcdef');
  });
});
