/**
 * Setup codes name the gateway's identity key, and every clawgate client checks the challenge
 * signature before it sends any secret. A process squatting on the code's address (the gateway
 * stopped, something else listening) gets no connect frame, no bootstrap token and — after
 * pairing — no device token; a genuine gateway behind a plain relay still pairs, because the
 * signature is end to end.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ClientError, FileCredentialStore, GatewayClient, nodePlatform, pairWithSetupCode, setSharedToken } from '@clawgate/client';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { WebSocketServer } from 'ws';
import { type GatewayIdentity, gatewayIdentityFromPem, generateGatewayKeyPem } from '../../src/core/gateway-identity.js';
import { readGatewayKeyFingerprint } from '../../src/server/gateway-key.js';
import { mintCode } from '../helpers/client.js';
import { fileScope } from '../helpers/file-scope.js';
import { cli, TEST_TOKEN } from '../helpers/gateway.js';
import { readNodeCredentials } from '../helpers/node-state.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const platform = nodePlatform();
const fast = { backoff: { baseMs: 40, maxMs: 400 } };
/** How long a condition may take before the test gives up (a deadline, not a timing claim). */
const DEADLINE_MS = 30_000;

const { cleanup, dir, gateway } = fileScope();

/** How the squatter answers: another key's valid signature, no proof at all, or the real public key with a signature it cannot make. */
type SquatMode = 'other-key' | 'unsigned' | 'copied-key';

interface Squatter {
  url: string;
  /** Every text frame any client sent it. */
  frames: string[];
  connections: number;
  /** The fingerprint of the key it signs with (other-key mode). */
  fingerprint: string;
}

/**
 * A WebSocket server on `port` that sends a connect.challenge like a gateway's and records
 * everything it receives. `realPublicKey` is the genuine gateway's key (copied-key mode).
 */
async function squat(port: number, mode: SquatMode, realPublicKey: string): Promise<Squatter> {
  const impostor: GatewayIdentity = gatewayIdentityFromPem(generateGatewayKeyPem());
  const wss = new WebSocketServer({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', () => resolve());
    wss.once('error', reject);
  });
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  );
  const s: Squatter = { url: `ws://127.0.0.1:${port}`, frames: [], connections: 0, fingerprint: impostor.fingerprint };
  wss.on('connection', (ws) => {
    s.connections++;
    ws.on('error', () => {});
    ws.on('message', (data) => {
      s.frames.push(data.toString());
      // A client that did talk is stopped for good (a refusal every client pauses on), so a
      // regression ends the test with the leak on record instead of a client retrying forever.
      const error = { code: 'INVALID_REQUEST', message: 'squatter', details: { code: 'PROTOCOL_MISMATCH' } };
      const id = (JSON.parse(data.toString()) as { id?: string }).id ?? 'connect';
      ws.send(JSON.stringify({ type: 'res', id, ok: false, error }));
      ws.close(1008, 'squatter');
    });
    const nonce = `squat-${s.connections}`;
    const ts = Date.now();
    const proof = impostor.proveChallenge(nonce, ts);
    const payload =
      mode === 'unsigned'
        ? { nonce, ts }
        : mode === 'other-key'
          ? { nonce, ts, gateway: proof }
          : { nonce, ts, gateway: { v: 1, publicKey: realPublicKey, signature: proof.signature } };
    ws.send(JSON.stringify({ type: 'event', event: 'connect.challenge', payload }));
  });
  return s;
}

/** Assert the squatter learned nothing: no connect frame, and none of the secrets anywhere in what it received. */
function assertNothingSent(s: Squatter, secrets: string[]): void {
  assert.ok(s.connections >= 1, 'the client did dial the squatter');
  assert.deepEqual(
    s.frames.map((f) => (JSON.parse(f) as { method?: string }).method ?? '(frame)'),
    [],
    'not one frame, let alone a connect, reached the squatter',
  );
  const all = s.frames.join('\n');
  for (const secret of secrets) assert.ok(!all.includes(secret), 'a secret reached the squatter');
}

/** Wait until `cond` holds, failing with `what` past the deadline. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > DEADLINE_MS) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface Proc {
  child: ChildProcess;
  out: () => string;
  exit: Promise<number | null>;
}

/** A real clawgate process; killed at the end of the file whatever happens. */
function clawgate(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLAWGATE_NODE_TOKEN: '', ...env } });
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exit;
    }
  });
  return { child, out: () => out, exit };
}

/** The exit code, or a failure naming what the squatter got if the process talked to it instead of stopping. */
async function exitOrLeak(p: Proc, s: Squatter): Promise<number | null> {
  const leaked = until(() => s.frames.length > 0 || p.child.exitCode !== null, 'the process to exit or talk').then(() => s.frames.length > 0);
  const outcome = await Promise.race([p.exit.then((code) => ({ exited: code })), leaked.then((talked) => (talked ? ('leaked' as const) : null))]);
  if (outcome === 'leaked') {
    p.child.kill('SIGKILL');
    assert.fail(`the process sent ${s.frames.length} frame(s) to the squatter: ${s.frames.map((f) => f.slice(0, 120)).join(' | ')}\n${p.out()}`);
  }
  return outcome ? outcome.exited : p.exit;
}

/** Mint a code, then stop the gateway: its port is free for a squatter. */
async function codeThenStop(
  profile: 'operator' | 'node',
): Promise<{ code: string; bootstrapToken: string; port: number; realKey: string; fingerprint: string }> {
  const tg = await gateway();
  const minted = await mintCode(tg, { profile });
  const decoded = decodeSetupCode(minted.setupCode);
  assert.ok(decoded.ok);
  const identity = tg.gateway.identity;
  assert.ok(identity);
  await tg.stop();
  return {
    code: minted.setupCode,
    bootstrapToken: decoded.payload.bootstrapToken,
    port: tg.server.port,
    realKey: identity.publicKey,
    fingerprint: identity.fingerprint,
  };
}

describe('setup codes carry the gateway key', () => {
  test('every minted code names the state dir key, and clawgate qr shows it', async () => {
    const tg = await gateway();
    const fingerprint = readGatewayKeyFingerprint(tg.stateDir);
    assert.match(fingerprint ?? '', /^[0-9a-f]{64}$/);
    const minted = await mintCode(tg, { profile: 'node' });
    const decoded = decodeSetupCode(minted.link);
    assert.ok(decoded.ok);
    assert.equal(decoded.payload.gatewayKey, fingerprint);

    const json = await cli(tg, 'qr', '--json');
    assert.equal(json.code, 0, json.stderr);
    const shown = JSON.parse(json.stdout) as { setupCode: string; gatewayKey?: string };
    assert.equal(shown.gatewayKey, fingerprint);
    assert.equal((decodeSetupCode(shown.setupCode) as { payload: { gatewayKey?: string } }).payload.gatewayKey, fingerprint);
    const text = await cli(tg, 'qr');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`Key: +SHA-256 ${fingerprint}`));
  });
});

describe('a squatter on the code URL gets nothing', () => {
  for (const mode of ['other-key', 'unsigned', 'copied-key'] as const) {
    test(`SDK pairWithSetupCode, squatter with ${mode}: paused gateway-key-mismatch, no frame, no bootstrap token`, async () => {
      const c = await codeThenStop('operator');
      const s = await squat(c.port, mode, c.realKey);
      const store = new FileCredentialStore(dir('clawgate-squat-sdk-'));
      const err = await pairWithSetupCode(store, platform, c.code, fast).then(
        (client) => {
          client.close();
          return assert.fail('paired with a squatter');
        },
        (e: unknown) => e,
      );
      assert.ok(err instanceof ClientError, String(err));
      assert.equal(err.code, 'CLIENT_PAUSED');
      assert.equal(err.gatewayCode, 'GATEWAY_KEY_MISMATCH');
      assert.match(err.message, new RegExp(`pinned to gateway key ${c.fingerprint}`));
      if (mode === 'other-key') assert.match(err.message, new RegExp(`presented gateway key ${s.fingerprint}, not the expected ${c.fingerprint}`));
      assert.match(err.nextStep ?? '', /fresh setup code/);
      assertNothingSent(s, [c.bootstrapToken]);
      assert.equal(s.connections, 1, 'paused after one socket: no reconnect loop');
      // The code is kept (it was never spent) and the pin is the code's key.
      const [rec] = await store.list();
      assert.equal(rec?.gatewayKey, c.fingerprint);
      assert.equal(rec?.bootstrap?.token, c.bootstrapToken);
    });
  }

  for (const mode of ['other-key', 'unsigned'] as const) {
    test(`clawgate pair (real process), squatter with ${mode}: exit 1 with the reason, no frame, no bootstrap token`, async () => {
      const c = await codeThenStop('operator');
      const s = await squat(c.port, mode, c.realKey);
      const p = clawgate(['pair', c.code, '--timeout', '20000'], { CLAWGATE_STATE_DIR: dir('clawgate-squat-pair-') });
      const code = await exitOrLeak(p, s);
      assert.equal(code, 1, p.out());
      assert.match(p.out(), /GATEWAY_KEY_MISMATCH/);
      assert.match(p.out(), new RegExp(`pinned to gateway key ${c.fingerprint}`));
      if (mode === 'other-key') assert.match(p.out(), new RegExp(s.fingerprint));
      assertNothingSent(s, [c.bootstrapToken]);
    });

    test(`clawgate node run --pair, squatter with ${mode}: exit 1 naming the fingerprints, no frame, no bootstrap token`, async () => {
      const c = await codeThenStop('node');
      const s = await squat(c.port, mode, c.realKey);
      const stateDir = dir('clawgate-squat-node-');
      const p = clawgate(['node', 'run', '--pair', c.code, '--state-dir', stateDir]);
      const code = await exitOrLeak(p, s);
      assert.equal(code, 1, p.out());
      assert.match(p.out(), new RegExp(`pinned to gateway key ${c.fingerprint}`));
      if (mode === 'other-key') assert.match(p.out(), new RegExp(`gateway key ${s.fingerprint}, not the expected ${c.fingerprint}`));
      else assert.match(p.out(), /did not prove a gateway identity/);
      assertNothingSent(s, [c.bootstrapToken]);
      // The pin is in the node's state next to the unspent code.
      const creds = readNodeCredentials(stateDir) ?? assert.fail(`no gateway record in ${stateDir}`);
      assert.equal(creds.gatewayKey, c.fingerprint);
      assert.ok(creds.bootstrap);
    });
  }
});

describe('after pairing, the pin holds on every reconnect', () => {
  test('SDK: a squatter on the gateway URL gets no device token from a reconnect', async () => {
    const tg = await gateway();
    const store = new FileCredentialStore(dir('clawgate-pin-sdk-'));
    const paired = await pairWithSetupCode(store, platform, (await mintCode(tg, { profile: 'operator' })).setupCode, fast);
    paired.close();
    const [rec] = await store.list();
    const token = rec?.tokens.operator?.token;
    assert.ok(token);
    assert.equal(rec?.gatewayKey, tg.gateway.identity?.fingerprint);
    assert.equal(rec?.bootstrap, undefined, 'the code is spent: only the device token is left to steal');
    await tg.stop();
    const s = await squat(tg.server.port, 'copied-key', tg.gateway.identity?.publicKey as string);
    const again = new GatewayClient({ url: tg.url, store, platform, ...fast });
    cleanup.push(() => again.close());
    await assert.rejects(again.connect(), (e: unknown) => e instanceof ClientError && e.gatewayCode === 'GATEWAY_KEY_MISMATCH');
    assert.equal(again.state.status === 'paused' && again.state.reason, 'gateway-key-mismatch');
    assertNothingSent(s, [token]);
  });

  test('SDK, shared token without a code: the key that answered the first connect is pinned (trust on first use)', async () => {
    const tg = await gateway();
    const store = new FileCredentialStore(dir('clawgate-tofu-sdk-'));
    await setSharedToken(store, platform, tg.url, TEST_TOKEN, { validate: false });
    const first = new GatewayClient({ url: tg.url, store, platform, ...fast });
    cleanup.push(() => first.close());
    await first.connect();
    first.close();
    const [rec] = await store.list();
    assert.equal(rec?.gatewayKey, tg.gateway.identity?.fingerprint, 'learned and pinned at the first admitted connect');
    const token = rec?.tokens.operator?.token;
    assert.ok(token);
    await tg.stop();
    const s = await squat(tg.server.port, 'other-key', '');
    const again = new GatewayClient({ url: tg.url, store, platform, ...fast });
    cleanup.push(() => again.close());
    await assert.rejects(again.connect(), (e: unknown) => e instanceof ClientError && e.gatewayCode === 'GATEWAY_KEY_MISMATCH');
    assertNothingSent(s, [token, TEST_TOKEN]);
  });

  test('node host: after --pair, a restart against a squatter exits 1 naming both fingerprints and sends no device token', async () => {
    const tg = await gateway();
    const stateDir = dir('clawgate-pin-node-');
    const first = clawgate(['node', 'run', '--pair', (await mintCode(tg, { profile: 'node' })).setupCode, '--state-dir', stateDir]);
    await until(() => /connected to ws:/.test(first.out()), `the node host to connect:\n${first.out()}`);
    first.child.kill('SIGTERM');
    assert.equal(await first.exit, 0, first.out());
    const creds = readNodeCredentials(stateDir) ?? assert.fail(`no gateway record in ${stateDir}`);
    const fingerprint = tg.gateway.identity?.fingerprint as string;
    assert.equal(creds.gatewayKey, fingerprint);
    const token = creds.tokens.node?.deviceToken;
    assert.ok(token);

    await tg.stop();
    const s = await squat(tg.server.port, 'other-key', '');
    const second = clawgate(['node', 'run', '--state-dir', stateDir]);
    assert.equal(await exitOrLeak(second, s), 1, second.out());
    assert.match(second.out(), new RegExp(`gateway key ${s.fingerprint}, not the expected ${fingerprint}`));
    assertNothingSent(s, [token]);
  });
});

/** A plain TCP relay (what a TLS-terminating proxy looks like from here): bytes in, bytes out. */
async function relay(targetPort: number): Promise<{ url: string; bytes: () => number }> {
  let bytes = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = connect(targetPort, '127.0.0.1');
    for (const sock of [inbound, outbound]) {
      sockets.add(sock);
      sock.on('error', () => {});
      sock.on('close', () => sockets.delete(sock));
    }
    inbound.on('data', (d: Buffer) => (bytes += d.length));
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return { url: `ws://127.0.0.1:${(server.address() as { port: number }).port}`, bytes: () => bytes };
}

describe('the signature is end to end', () => {
  test('a genuine gateway behind a plain relay pairs the SDK and the node host, and both pin its key', async () => {
    const tg = await gateway();
    const r = await relay(tg.server.port);
    const fingerprint = tg.gateway.identity?.fingerprint as string;

    const store = new FileCredentialStore(dir('clawgate-relay-sdk-'));
    const c = await pairWithSetupCode(store, platform, (await mintCode(tg, { profile: 'operator', publicUrl: r.url })).setupCode, fast);
    assert.equal(c.state.status, 'connected');
    c.close();
    const [rec] = await store.list();
    assert.equal(rec?.url, r.url);
    assert.equal(rec?.gatewayKey, fingerprint);
    assert.ok(r.bytes() > 0, 'the connect went through the relay');

    const stateDir = dir('clawgate-relay-node-');
    const node = clawgate(['node', 'run', '--pair', (await mintCode(tg, { profile: 'node', publicUrl: r.url })).setupCode, '--state-dir', stateDir]);
    await until(() => /connected to ws:/.test(node.out()), `the node host to connect through the relay:\n${node.out()}`);
    node.child.kill('SIGTERM');
    assert.equal(await node.exit, 0, node.out());
    assert.equal(readNodeCredentials(stateDir)?.gatewayKey, fingerprint);
  });
});
