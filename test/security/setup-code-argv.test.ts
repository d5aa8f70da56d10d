/**
 * A setup code carries a bootstrap token, and a command line is readable by every local user
 * (/proc/<pid>/cmdline). `clawgate pair` and `clawgate node run` take the code from a 0600 file,
 * standard input or CLAWGATE_SETUP_CODE, and these tests read the running process's own
 * cmdline to show the token is not there. The argv form still works but warns; a code file
 * others may read is refused before anything is sent.
 *
 * Also here: what the stored client record or a gateway supplies reaches `status --client` and
 * `node run` output escaped, and a gateway that does not sign its challenge (a real OpenClaw
 * gateway, scripted) gets hints naming OpenClaw's own commands.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { FileCredentialStore, GatewayClient, MemoryCredentialStore, nodePlatform, setSharedToken } from '@clawgate/client';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { WebSocketServer } from 'ws';
import { mintCode } from '../helpers/client.js';
import { fileScope } from '../helpers/file-scope.js';
import { cli, type TestGateway } from '../helpers/gateway.js';
import { readNodeCredentials } from '../helpers/node-state.js';
import { waitFor } from '../helpers/wait.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');
/** How long a condition may take before the test gives up (a deadline, not a timing claim). */
const DEADLINE_MS = 30_000;

const { cleanup, dir, gateway } = fileScope();

interface Proc {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exit: Promise<number | null>;
}

/** A real clawgate process (no inherited setup code or node token); killed at the end of the file whatever happens. */
function clawgate(args: string[], env: Record<string, string> = {}, stdin?: string): Proc {
  const child = spawn(process.execPath, [BIN, ...args], {
    stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, CLAWGATE_NODE_TOKEN: '', CLAWGATE_SETUP_CODE: '', ...env },
  });
  if (stdin !== undefined) child.stdin?.end(stdin);
  let out = '';
  let err = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (err += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exit;
    }
  });
  return { child, out: () => out, err: () => err, exit };
}

/** The command line of a running process, as every local user can read it. */
function cmdlineOf(pid: number): string {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
}

/**
 * A TCP relay to the gateway that holds every connection until `release()`: the client process
 * is then provably alive (connecting), so its cmdline can be read before it pairs and exits.
 */
async function heldRelay(targetPort: number): Promise<{ url: string; held: () => number; release: () => void }> {
  let released = false;
  const waiting: Array<() => void> = [];
  const sockets = new Set<Socket>();
  const server = createServer((inbound) => {
    inbound.pause();
    const go = () => {
      const outbound = connect(targetPort, '127.0.0.1');
      for (const s of [inbound, outbound]) {
        sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => sockets.delete(s));
      }
      inbound.pipe(outbound).pipe(inbound);
      inbound.resume();
    };
    sockets.add(inbound);
    if (released) go();
    else waiting.push(go);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return {
    url: `ws://127.0.0.1:${(server.address() as { port: number }).port}`,
    held: () => waiting.length,
    release: () => {
      released = true;
      for (const go of waiting.splice(0)) go();
    },
  };
}

/** A fresh code for `profile`, pointing at `url`, and the bootstrap token inside it. */
async function code(tg: TestGateway, profile: string, url?: string): Promise<{ setupCode: string; link: string; bootstrapToken: string }> {
  const minted = await mintCode(tg, { profile, ...(url ? { publicUrl: url } : {}) });
  const decoded = decodeSetupCode(minted.setupCode);
  assert.ok(decoded.ok);
  return { setupCode: minted.setupCode, link: minted.link, bootstrapToken: decoded.payload.bootstrapToken };
}

/** `text` in a 0600 file (or `mode`). */
function codeFile(text: string, mode = 0o600): string {
  const path = join(dir('clawgate-code-'), 'setup-code');
  writeFileSync(path, `${text}\n`, { mode });
  chmodSync(path, mode);
  return path;
}

/** Whether any of `chars` appears raw in `text`. */
function hasRaw(text: string, chars: string): boolean {
  return [...chars].some((ch) => text.includes(ch));
}

/** No part of the secret on the command line: neither it nor any 8-character piece of it. */
function assertNotOnCmdline(cmdline: string, secrets: string[]): void {
  for (const s of secrets) {
    for (let i = 0; i + 8 <= s.length; i += 4) assert.ok(!cmdline.includes(s.slice(i, i + 8)), `a piece of a secret is on the command line: ${cmdline}`);
  }
}

/** Spawn `clawgate pair` through a held relay, read its cmdline while it waits, release it and expect it to pair. */
async function pairHeld(
  args: (url: string, c: { setupCode: string; link: string }) => string[],
  env: (c: { setupCode: string; link: string }) => Record<string, string> = () => ({}),
) {
  const tg = await gateway();
  const relay = await heldRelay(tg.server.port);
  const c = await code(tg, 'operator', relay.url);
  const stateDir = dir('clawgate-pair-');
  const p = clawgate(['pair', ...args(relay.url, c), '--state-dir', stateDir, '--json'], env(c));
  await waitFor(() => relay.held() > 0 || p.child.exitCode !== null, 'the pair process to dial the gateway', {
    timeoutMs: DEADLINE_MS,
    detail: () => p.out() + p.err(),
  });
  assert.equal(p.child.exitCode, null, `pair exited before connecting:\n${p.out()}${p.err()}`);
  const cmdline = cmdlineOf(p.child.pid as number);
  relay.release();
  assert.equal(await p.exit, 0, p.out() + p.err());
  const result = JSON.parse(p.out()) as { deviceId: string; connectedAs: string; bootstrapCleared: boolean };
  assert.equal(result.connectedAs, 'operator');
  assert.equal(result.bootstrapCleared, true);
  return { tg, c, cmdline, stateDir, p };
}

describe('setup codes never need the command line', () => {
  test('clawgate pair --code-file <0600 file> pairs, and its cmdline holds no part of the bootstrap token', async () => {
    let path = '';
    const r = await pairHeld((_url, c) => {
      path = codeFile(c.setupCode);
      return ['--code-file', path];
    });
    assert.match(r.cmdline, /pair --code-file/);
    assertNotOnCmdline(r.cmdline, [r.c.bootstrapToken, r.c.setupCode]);
    assert.doesNotMatch(r.p.err(), /warning/);
  });

  test('CLAWGATE_SETUP_CODE=<link> clawgate pair pairs, and its cmdline holds no part of the bootstrap token', async () => {
    const r = await pairHeld(
      () => [],
      (c) => ({ CLAWGATE_SETUP_CODE: c.link }),
    );
    assertNotOnCmdline(r.cmdline, [r.c.bootstrapToken, r.c.setupCode]);
    assert.doesNotMatch(r.p.err(), /warning/);
  });

  test('clawgate pair - (and --code-stdin) read the code from standard input', async () => {
    const tg = await gateway();
    for (const flag of ['-', '--code-stdin']) {
      const c = await code(tg, 'operator');
      const stateDir = dir('clawgate-pair-stdin-');
      const p = clawgate(['pair', flag, '--state-dir', stateDir, '--json'], {}, `${c.setupCode}\n`);
      assert.equal(await p.exit, 0, p.out() + p.err());
      assert.equal((JSON.parse(p.out()) as { connectedAs: string }).connectedAs, 'operator');
      assert.doesNotMatch(p.err(), /warning/);
    }
  });

  test('clawgate node run --code-file <0600 file> pairs and runs, and its cmdline holds no part of the bootstrap token', async () => {
    const tg = await gateway();
    const c = await code(tg, 'node');
    const stateDir = dir('clawgate-node-code-');
    const p = clawgate(['node', 'run', '--code-file', codeFile(c.setupCode), '--state-dir', stateDir, '--name', 'file-node']);
    await waitFor(() => /connected to ws:/.test(p.out()) || p.child.exitCode !== null, 'the node host to connect', {
      timeoutMs: DEADLINE_MS,
      detail: () => p.out() + p.err(),
    });
    assert.equal(p.child.exitCode, null, p.out() + p.err());
    const cmdline = cmdlineOf(p.child.pid as number);
    assert.match(cmdline, /node run --code-file/);
    assertNotOnCmdline(cmdline, [c.bootstrapToken, c.setupCode]);
    assert.doesNotMatch(p.err(), /warning/);
    const creds = readNodeCredentials(stateDir) ?? assert.fail(`no gateway record in ${stateDir}`);
    assert.ok(creds.tokens.node?.deviceToken, 'the node holds its own device token');
    assert.equal(creds.bootstrap, undefined, 'the spent code is gone from disk');
    p.child.kill('SIGTERM');
    assert.equal(await p.exit, 0, p.out() + p.err());
  });

  test('the argv forms still pair but warn, naming the safe forms', async () => {
    const tg = await gateway();
    const c = await code(tg, 'operator');
    const p = clawgate(['pair', c.setupCode, '--state-dir', dir('clawgate-pair-argv-'), '--json']);
    assert.equal(await p.exit, 0, p.out() + p.err());
    assert.match(
      p.err(),
      /warning: clawgate pair <setup-code> puts the setup code \(a bootstrap secret\) on the command line, where every local user can read it/,
    );
    assert.match(p.err(), /use --code-file <path> \(mode 0600\), --code-stdin or CLAWGATE_SETUP_CODE instead/);

    const n = await code(tg, 'node');
    const node = clawgate(['node', 'run', '--pair', n.setupCode, '--state-dir', dir('clawgate-node-argv-')]);
    await waitFor(() => /connected to ws:/.test(node.out()) || node.child.exitCode !== null, 'the node host to connect', {
      timeoutMs: DEADLINE_MS,
      detail: () => node.out() + node.err(),
    });
    // The control: the argv form does put the code where the cmdline check looks.
    assert.throws(() => assertNotOnCmdline(cmdlineOf(node.child.pid as number), [n.bootstrapToken, n.setupCode]));
    assert.match(
      node.err(),
      /warning: --pair <setup-code> puts the setup code .* use --code-file <path> \(mode 0600\), --code-stdin or CLAWGATE_SETUP_CODE instead/,
    );
    node.child.kill('SIGTERM');
    assert.equal(await node.exit, 0, node.out() + node.err());
  });

  test('clawgate qr suggests redeeming the code from a file, never on the command line', async () => {
    const tg = await gateway();
    const operator = await cli(tg, 'qr');
    assert.equal(operator.code, 0, operator.stderr);
    assert.match(operator.stdout, /then clawgate pair --code-file <file> \(or CLAWGATE_SETUP_CODE=<code>\)/);
    const node = await cli(tg, 'qr', '--profile', 'node');
    assert.equal(node.code, 0, node.stderr);
    assert.match(node.stdout, /then clawgate node run --code-file <file>/);
    assert.doesNotMatch(operator.stdout + node.stdout, /clawgate (pair|node run --pair) (?!--code-file)\S/);
  });

  test('a code file group or others may read is refused before anything is sent, and the code stays unspent', async () => {
    const tg = await gateway();
    const c = await code(tg, 'operator+node');
    const path = codeFile(c.setupCode, 0o640);
    const stateDir = dir('clawgate-pair-loose-');
    const p = clawgate(['pair', '--code-file', path, '--state-dir', stateDir]);
    assert.equal(await p.exit, 2, p.out() + p.err());
    assert.match(p.err(), /--code-file: refusing .*: group or others may access it \(mode 0640\); run chmod 600/);
    const nodeDir = dir('clawgate-node-loose-');
    const n = clawgate(['node', 'run', '--code-file', path, '--state-dir', nodeDir]);
    assert.equal(await n.exit, 2, n.out() + n.err());
    assert.match(n.err(), /--code-file: refusing .*: group or others may access it \(mode 0640\)/);
    assert.equal(readNodeCredentials(nodeDir)?.bootstrap, undefined);
    // Still redeemable: nothing reached the gateway.
    chmodSync(path, 0o600);
    const ok = clawgate(['pair', '--code-file', path, '--state-dir', stateDir, '--json']);
    assert.equal(await ok.exit, 0, ok.out() + ok.err());
  });
});

describe('client-supplied strings reach the terminal escaped', () => {
  test('status --client writes a stored display name and gateway-supplied text with ESC and bidi as visible escapes', async () => {
    const tg = await gateway();
    const c = await code(tg, 'operator');
    const stateDir = dir('clawgate-status-esc-');
    const p = clawgate(['pair', '--code-file', codeFile(c.setupCode), '--state-dir', stateDir, '--json']);
    assert.equal(await p.exit, 0, p.out() + p.err());
    const store = new FileCredentialStore(join(stateDir, 'client'));
    const [rec] = await store.list();
    assert.ok(rec);
    const hostile = 'phone\u001b[2J\u001b]0;owned\u0007\u202eevil';
    await store.update(rec.key, (r) => (r ? { ...r, displayName: hostile } : r));
    const s = clawgate(['status', '--client', '--offline', '--state-dir', stateDir]);
    assert.equal(await s.exit, 0, s.out() + s.err());
    assert.ok(!hasRaw(s.out(), '\u001b\u0007\u202e'), `raw control or bidi characters reached the terminal: ${JSON.stringify(s.out())}`);
    assert.ok(s.out().includes('(phone\\u001B[2J\\u001B]0;owned\\u0007\\u202Eevil)'), s.out());
  });
});

/**
 * A gateway that behaves like a real OpenClaw one: a bare `{nonce, ts}` challenge (no `gateway`
 * proof block), NOT_PAIRED/PAIRING_REQUIRED for the first connect of every device, and on a
 * later connect a hello-ok followed by a node command-surface request.
 */
async function openclawLike(requestId: string): Promise<{ url: string; connects: () => number }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  );
  let connects = 0;
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.send(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: { nonce: `n-${connects}`, ts: Date.now() } }));
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as { id: string; method?: string; params?: { device?: { id: string }; role?: string } };
      if (frame.method !== 'connect') return;
      connects++;
      if (connects === 1) {
        const error = {
          code: 'NOT_PAIRED',
          message: 'pairing required: device is not approved yet',
          details: { code: 'PAIRING_REQUIRED', reason: 'not-paired', requestId, pauseReconnect: true, deviceId: frame.params?.device?.id },
        };
        ws.send(JSON.stringify({ type: 'res', id: frame.id, ok: false, error }));
        ws.close(1008, 'pairing required: device is not approved yet');
        return;
      }
      const hello = {
        type: 'hello-ok',
        protocol: 3,
        server: { version: '2026.9.6', connId: `c-${connects}` },
        features: { methods: [], events: [] },
        snapshot: {},
        policy: { maxPayload: 26214400, maxBufferedBytes: 52428800, tickIntervalMs: 30000 },
        auth: { role: frame.params?.role ?? 'node', scopes: [], authMethod: 'token' },
      };
      ws.send(JSON.stringify({ type: 'res', id: frame.id, ok: true, payload: hello }));
      ws.send(
        JSON.stringify({ type: 'event', event: 'node.pair.requested', payload: { nodeId: frame.params?.device?.id, requestId: `${requestId}-surface` } }),
      );
    });
  });
  return { url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, connects: () => connects };
}

describe('hints name the commands of the gateway that answered', () => {
  test('SDK: against a gateway without a proof block (OpenClaw), a pairing-required pause says `openclaw devices approve <id>`', async () => {
    const gw = await openclawLike('6f1c2a9e-req');
    const store = new MemoryCredentialStore();
    const platform = nodePlatform();
    await setSharedToken(store, platform, gw.url, 'oc-shared-token', { validate: false });
    const client = new GatewayClient({ url: gw.url, store, platform, waitForApproval: false, backoff: { baseMs: 40, maxMs: 400 } });
    cleanup.push(() => client.close());
    client.start();
    const s = await client.waitFor((x) => x.status === 'paused', DEADLINE_MS);
    assert.equal(s.status, 'paused');
    assert.equal(client.gatewayFlavor, 'openclaw');
    if (s.status === 'paused') {
      assert.equal(s.reason, 'pairing-required');
      assert.match(s.nextStep, /`openclaw devices approve 6f1c2a9e-req`/);
      assert.doesNotMatch(s.nextStep, /clawgate/);
    }
  });

  test('node host: against a gateway without a proof block (OpenClaw), it prints `openclaw devices approve` and `openclaw nodes approve`, gateway-supplied ids escaped (line breaks too)', async () => {
    const gw = await openclawLike('req\u001b[2J\u202e\nforged: 1');
    const stateDir = dir('clawgate-node-oc-');
    const tokenFile = join(dir('clawgate-node-oc-token-'), 'token');
    writeFileSync(tokenFile, 'oc-shared-token\n', { mode: 0o600 });
    const n = clawgate(['node', 'run', '--url', gw.url, '--token-file', tokenFile, '--state-dir', stateDir, '--name', 'oc-node']);
    await waitFor(() => /waiting for command approval/.test(n.out()) || n.child.exitCode !== null, 'the node host to report both approvals', {
      timeoutMs: DEADLINE_MS,
      detail: () => n.out() + n.err(),
    });
    const all = n.out() + n.err();
    assert.ok(all.includes('on the gateway host run `openclaw devices approve req\\u001B[2J\\u202E\\u000Aforged: 1`'), all);
    assert.ok(all.includes('on the gateway host run `openclaw nodes approve req\\u001B[2J\\u202E\\u000Aforged: 1-surface`'), all);
    assert.doesNotMatch(all, /clawgate (devices|nodes) approve/);
    assert.doesNotMatch(all, /^forged/m, 'a gateway-supplied line break started a line of its own');
    assert.ok(!hasRaw(all, '\u001b\u202e'), `raw control or bidi characters reached the terminal: ${JSON.stringify(all)}`);
    assert.ok(gw.connects() >= 2);
  });
});
