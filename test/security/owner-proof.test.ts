/**
 * Owner authority is proven, never sent. Whatever answers where the CLI dials (a process that
 * took the port while the gateway was down, a relay, a host named by --url) gets neither the
 * owner credential nor a proof it can use; the gateway refuses the credential as a bearer token.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requestGatewayProof } from '@clawgate/protocol/gateway-proof';
import WebSocket from 'ws';
import { connectGateway } from '../../src/client/connection.js';
import { gatewayIdentityFromPem, generateGatewayKeyPem } from '../../src/core/gateway-identity.js';
import { readGatewayKeyFingerprint } from '../../src/server/gateway-key.js';
import { asOwner, expectRefused, ownerAuth, removeDir, runClawgate, startTestGateway, TEST_OWNER, TEST_TOKEN } from '../helpers/gateway.js';
import { freePort } from '../helpers/net.js';
import { createVethNetns } from '../helpers/netns.js';
import { plainParams, RawClient } from '../helpers/raw.js';
import { startRecorder } from '../helpers/recorder.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

async function waitFor(cond: () => boolean, what: string, deadlineMs = 20_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A real `clawgate gateway run` process (it records gateway.json, as a user's gateway does). */
async function runGateway(stateDir: string, port: number): Promise<{ child: ChildProcess; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [BIN, 'gateway', 'run', '--port', String(port), '--state-dir', stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await waitFor(() => out.includes('listening on'), 'the gateway to listen');
  return { child, exited };
}

function firstChallenge(url: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(requestGatewayProof(url));
    ws.once('message', (data) => {
      resolve((JSON.parse(data.toString()) as { payload: Record<string, unknown> }).payload);
      ws.close();
    });
    ws.once('error', reject);
  });
}

/** A challenge signed by a key that is not the gateway's (a squatter's own). */
function strangerChallenge(): { challenge: Record<string, unknown>; fingerprint: string } {
  const identity = gatewayIdentityFromPem(generateGatewayKeyPem());
  const nonce = crypto.randomUUID();
  const ts = Date.now();
  return { challenge: { nonce, ts, gateway: identity.proveChallenge(nonce, ts) }, fingerprint: identity.fingerprint };
}

describe('a port squatter (another user) while the gateway is down', () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-squat-'));
  let port = 0;
  let owner = '';
  let recorded: Record<string, unknown> = {};
  let gw: { child: ChildProcess; exited: Promise<number | null> } | null = null;
  let captured: Record<string, unknown> | null = null;

  before(async () => {
    port = await freePort();
    gw = await runGateway(stateDir, port);
    owner = (JSON.parse(readFileSync(join(stateDir, 'credentials.json'), 'utf8')) as { owner: string }).owner;
    recorded = await firstChallenge(`ws://127.0.0.1:${port}`);
    // Killed, not stopped: the recorded address stays behind, pointing at a free port.
    gw.child.kill('SIGKILL');
    await gw.exited;
    gw = null;
  });
  after(async () => {
    if (gw) {
      gw.child.kill('SIGKILL');
      await gw.exited;
    }
    removeDir(stateDir);
  });

  test('(a) receives no credential and no proof: the CLI sends nothing and says why', async () => {
    assert.ok(existsSync(join(stateDir, 'gateway.json')), 'a killed gateway leaves gateway.json behind');
    const stranger = strangerChallenge();
    for (const [what, challenge, expect] of [
      [
        'an unsigned challenge',
        { nonce: crypto.randomUUID(), ts: Date.now() },
        /did not prove it is your gateway: the server did not prove a gateway identity/,
      ],
      [
        'a challenge signed by its own key',
        stranger.challenge,
        new RegExp(`did not prove it is your gateway \\(key ${stranger.fingerprint}, expected [0-9a-f]{64}\\)`),
      ],
    ] as const) {
      const squatter = await startRecorder('127.0.0.1', port, challenge, (argv) => [...NOBODY, ...argv]);
      try {
        const r = await runClawgate(['devices', 'list', '--state-dir', stateDir]);
        assert.notEqual(r.code, 0, `${what}: the CLI must fail`);
        assert.match(r.stderr, expect, what);
        assert.match(r.stderr, /nothing was sent/);
        assert.ok(squatter.lines().includes('CONN'), `${what}: the CLI did dial the squatter (gateway.json)`);
        assert.deepEqual(squatter.frames(), [], `${what}: the squatter received no frame`);
        assert.ok(!squatter.lines().join('\n').includes(owner));
      } finally {
        await squatter.stop();
      }
    }
  });

  test('(b) a squatter replaying a recorded real challenge gets a proof it cannot use', async () => {
    const squatter = await startRecorder('127.0.0.1', port, recorded, (argv) => [...NOBODY, ...argv]);
    try {
      const r = await runClawgate(['devices', 'list', '--state-dir', stateDir]);
      assert.notEqual(r.code, 0);
      const frames = squatter.frames();
      assert.equal(frames.length, 1, 'the real key verified, so the CLI answered the replayed challenge');
      assert.ok(!(frames[0] as string).includes(owner), 'the owner credential itself never travels');
      captured = (JSON.parse(frames[0] as string) as { params: Record<string, unknown> }).params;
    } finally {
      await squatter.stop();
    }
    gw = await runGateway(stateDir, port);
    // The squatter replays what it captured on a fresh connection to the real gateway.
    const replay = await RawClient.open(`ws://127.0.0.1:${port}`);
    await replay.challenge();
    const res = await replay.request('c1', 'connect', captured);
    assert.equal(res?.ok, false, 'a captured answer opens nothing');
    assert.equal((res?.error?.details as { code?: string } | undefined)?.code, 'AUTH_OWNER_PROOF_INVALID');
    await replay.closed;
    // The owner, meanwhile, still gets in, and the clean stop forgets the address.
    const ok = await runClawgate(['devices', 'list', '--json', '--state-dir', stateDir]);
    assert.equal(ok.code, 0, ok.stderr);
    gw.child.kill('SIGTERM');
    assert.equal(await gw.exited, 0);
    gw = null;
    assert.equal(existsSync(join(stateDir, 'gateway.json')), false);
  });
});

describe('the gateway side', () => {
  test('(c) an owner proof through a transparent relay on another port is refused (audience)', async (t) => {
    const tg = await startTestGateway();
    const sockets = new Set<Socket>();
    const relay = createServer((client) => {
      const upstream = connect(tg.server.port, '127.0.0.1');
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => s.destroy());
        s.on('close', () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    t.after(async () => {
      for (const s of sockets) s.destroy();
      relay.close();
      await tg.stop();
      removeDir(tg.stateDir);
    });
    const relayUrl = `ws://127.0.0.1:${(relay.address() as { port: number }).port}`;
    // The relay passes the real gateway's signed challenge through, so the key verifies …
    const r = await runClawgate(['devices', 'list', '--url', relayUrl, '--state-dir', tg.stateDir]);
    assert.notEqual(r.code, 0, 'the owner proof through the relay must not admit');
    assert.match(r.stderr, /AUTH_OWNER_AUDIENCE_MISMATCH/);
    await expectRefused(connectGateway({ url: relayUrl, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } }), 'AUTH_OWNER_AUDIENCE_MISMATCH');
    // … but the proof names the relay's address. Dialed directly, the same credential works.
    const direct = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    assert.equal(direct.hello.auth.method, 'owner');
    await direct.close();
  });

  test('(d) the owner credential as a bearer auth.token is refused; wrong proofs are rate limited as kind owner', async (t) => {
    const tg = await startTestGateway({ config: { rateLimit: { maxFailures: 3, windowMs: 60_000, lockoutMs: 60_000, maxKeys: 100 } } });
    t.after(async () => {
      await tg.stop();
      removeDir(tg.stateDir);
    });
    const err = await expectRefused(
      connectGateway({ url: tg.url, auth: { token: TEST_OWNER }, client: { id: 'cli', mode: 'cli' } }),
      'AUTH_OWNER_CREDENTIAL_SENT',
    );
    assert.match(err.message, /owner credential is never sent/);
    assert.match(String(err.error?.details?.nextStep), /clawgate CLI on the gateway host/);
    // The trail says the credential travelled (so it can be treated as exposed).
    const until = Date.now() + 10_000;
    while (!(await tg.store.listAudit({ limit: 100 })).some((e) => e.action === 'auth.owner-credential-sent')) {
      if (Date.now() > until) assert.fail('no audit entry auth.owner-credential-sent');
      await new Promise((r) => setTimeout(r, 20));
    }
    // The shared token keeps working in the same slot.
    const shared = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' } });
    assert.notEqual(shared.hello.auth.method, 'owner');
    await shared.close();

    // A proof by a wrong credential: refused, counted, then locked (the right one too, meanwhile).
    for (let i = 0; i < 3; i++) {
      const bad = await RawClient.open(tg.url);
      const ch = await bad.challenge();
      const res = await bad.request('c1', 'connect', plainParams({ auth: ownerAuth(ch, tg.url, `cgo_wrong-${i}`) }));
      assert.equal((res?.error?.details as { code?: string } | undefined)?.code, 'AUTH_OWNER_PROOF_INVALID');
      await bad.closed;
    }
    await expectRefused(connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } }), 'AUTH_RATE_LIMITED');
    // A shared-token client from the same address is not locked out by the owner bucket.
    const stillShared = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, client: { id: 'cli', mode: 'cli' } });
    await stillShared.close();
  });
});

// --- a non-local address: a network namespace behind a veth --------------------------------

function _ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** A namespace reachable at 10.88.N.2 from this host (10.88.N.1), or why it cannot be made. */
function createNetns(): { tag: string; remote: string; destroy(): void } | string {
  try {
    const ns = createVethNetns(`cgop${process.pid % 100_000}`, 88);
    return { tag: ns.tag, remote: ns.remoteAddr, destroy: ns.destroy };
  } catch (err) {
    return `ip netns is unavailable here (${(err as Error).message.split('\n')[0]})`;
  }
}

test('(e) --url to a non-local address without --gateway-key sends nothing', async (t) => {
  const ns = createNetns();
  if (typeof ns === 'string') {
    t.skip(ns);
    return;
  }
  const local = await startTestGateway();
  const fresh = mkdtempSync(join(tmpdir(), 'clawgate-remote-cli-'));
  t.after(async () => {
    ns.destroy();
    await local.stop();
    removeDir(local.stateDir);
    removeDir(fresh);
  });
  const stranger = strangerChallenge();
  const port = 18_000 + (process.pid % 1000);
  const remote = await startRecorder(ns.remote, port, stranger.challenge, (argv) => ['ip', 'netns', 'exec', ns.tag, ...argv]);
  t.after(() => remote.stop());
  const url = `ws://${ns.remote}:${port}`;

  // A shared token from a state dir that knows no gateway key: nothing is sent to a remote host.
  const bare = await runClawgate(['call', 'health', '--url', url, '--token', TEST_TOKEN, '--state-dir', fresh]);
  assert.notEqual(bare.code, 0);
  assert.match(
    bare.stderr,
    new RegExp(`no gateway key is known for it\\); nothing was sent\\. if that is your gateway, pass --gateway-key ${stranger.fingerprint}`),
  );
  // The owner's state dir (its own gateway's key): the remote proves another key, so no proof goes out.
  const asLocalOwner = await runClawgate(['devices', 'list', '--url', url, '--state-dir', local.stateDir]);
  assert.notEqual(asLocalOwner.code, 0);
  assert.match(asLocalOwner.stderr, /did not prove it is your gateway/);
  assert.deepEqual(remote.frames(), [], 'the remote host received no frame');
  assert.equal(remote.lines().filter((l) => l === 'CONN').length, 2, 'both commands reached it over the veth');

  // Control: with the key passed explicitly the shared token does go (so the recorder does see frames).
  const pinned = await runClawgate(['call', 'health', '--url', url, '--token', TEST_TOKEN, '--gateway-key', stranger.fingerprint, '--state-dir', fresh]);
  assert.notEqual(pinned.code, 0, 'the recorder answers no hello');
  await waitFor(() => remote.frames().length === 1, 'the pinned connect to arrive');
  assert.ok((remote.frames()[0] as string).includes(TEST_TOKEN));
});

test('clawgate gateway key prints the state dir key fingerprint (plain and --json)', async (t) => {
  const tg = await startTestGateway();
  t.after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });
  const plain = await runClawgate(['gateway', 'key', '--state-dir', tg.stateDir]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(plain.stdout.trim(), tg.gatewayKey);
  assert.equal(readGatewayKeyFingerprint(tg.stateDir), tg.gatewayKey);
  const json = JSON.parse((await runClawgate(['gateway', 'key', '--json', '--state-dir', tg.stateDir])).stdout) as { fingerprint: string };
  assert.equal(json.fingerprint, tg.gatewayKey);
  const none = mkdtempSync(join(tmpdir(), 'clawgate-nokey-'));
  t.after(() => removeDir(none));
  writeFileSync(join(none, 'placeholder'), '');
  const missing = await runClawgate(['gateway', 'key', '--state-dir', none]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no gateway key/);
});
