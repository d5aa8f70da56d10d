/**
 * `clawgate companion`: one device that is an operator and a node side by side. The companion
 * runs as a real process inside a network namespace of its own (a veth pair with 10.x
 * addresses, so the gateway sees a foreign address and approves nothing silently), against a
 * real gateway; operators act with the real CLI on the gateway host.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ClientState, GatewayClient } from '@clawgate/client';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { inCompanionTerms } from '../src/companion/companion.js';
import { parseControlRequest } from '../src/companion/control.js';
import { SideLifecycle } from '../src/companion/lifecycle.js';
import { parseSshTarget, SshForward } from '../src/companion/ssh.js';
import { cli, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { createVethNetns, type VethNetns } from './helpers/netns.js';
import { readNodeCredentials } from './helpers/node-state.js';
import { STRICT } from './helpers/strict.js';
import { waitFor } from './helpers/wait.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const STEP_MS = 20_000;

// --- the companion's own network ------------------------------------------------------------

interface Link {
  gatewayHost: string;
  nodeAddr: string;
  url(port: number): string;
  command(argv: string[]): [string, string[]];
  destroy(): void;
}

function _ip(...args: string[]): string {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

function createLink(): Link | null {
  let ns: VethNetns;
  try {
    ns = createVethNetns(`cgcomp${process.pid % 10_000}`, 78);
  } catch (err) {
    if (STRICT) throw err;
    process.stderr.write(`# companion tests: no network namespace (${(err as Error).message.split('\n')[0]}); running on loopback\n`);
    return null;
  }
  const { tag, hostAddr } = ns;
  return {
    gatewayHost: hostAddr,
    nodeAddr: ns.remoteAddr,
    url: (port) => `ws://${hostAddr}:${port}`,
    command: (argv) => ['ip', ['netns', 'exec', tag, ...argv]],
    destroy: ns.destroy,
  };
}

/** The pid of the `ssh` child of process `parent`, from /proc. */
function sshChildOf(parent: number): string | undefined {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .find((e) => {
      try {
        const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
        const close = stat.lastIndexOf(')');
        return stat.slice(stat.indexOf('(') + 1, close) === 'ssh' && Number(stat.slice(close + 2).split(' ')[1]) === parent;
      } catch {
        return false;
      }
    });
}

// --- a companion process ----------------------------------------------------------------------

class Proc {
  readonly lines: string[] = [];
  readonly errLines: string[] = [];
  private cursor = 0;
  private readonly waiters = new Set<() => void>();
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    const feed = (into: string[]) => {
      let buf = '';
      return (chunk: Buffer) => {
        buf += chunk.toString();
        const parts = buf.split('\n');
        buf = parts.pop() ?? '';
        into.push(...parts);
        for (const w of this.waiters) w();
      };
    };
    child.stdout?.on('data', feed(this.lines));
    child.stderr?.on('data', feed(this.errLines));
    child.on('error', () => {});
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        for (const w of this.waiters) w();
        resolve(code ?? (signal ? -1 : null));
      }),
    );
  }

  /** The next stdout line (after the previous match) that matches `re`. */
  waitFor(re: RegExp, timeoutMs = STEP_MS): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = this.cursor; i < this.lines.length; i++) {
          const m = re.exec(this.lines[i] as string);
          if (m) {
            this.cursor = i + 1;
            cleanup();
            resolve(m);
            return;
          }
        }
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          cleanup();
          reject(new Error(`companion exited before printing ${re}\n${this.transcript()}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${re}\n${this.transcript()}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Lines printed since `from` (an index into `lines`). */
  since(from: number): string[] {
    return this.lines.slice(from);
  }

  transcript(): string {
    return `--- stdout\n${this.lines.join('\n')}\n--- stderr\n${this.errLines.join('\n')}`;
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

interface SideJson {
  side: string;
  state: string;
  scopes: string[];
  credential: string | null;
  pendingRequestId: string | null;
  confirmationCode: string | null;
  surface?: string;
  surfaceRequestId?: string | null;
  nextStep: string | null;
  message: string | null;
  lastError: { code: string; message: string } | null;
}
interface StatusJson {
  running: boolean;
  deviceId: string | null;
  credentials: { sharedToken: boolean; bootstrapPending: boolean; tokens: Record<string, { scopes: string[] }> };
  operator: SideJson;
  node: SideJson;
}

describe('clawgate companion run: one device, operator and node side by side', () => {
  let link: Link | null;
  let tg: TestGateway;
  const dirs: string[] = [];
  const procs: Proc[] = [];
  const tmp = (label: string) => {
    const d = mkdtempSync(join(tmpdir(), `clawgate-companion-${label}-`));
    dirs.push(d);
    return d;
  };
  const url = () => (link ? link.url(tg.server.port) : tg.url);
  const wrap = (argv: string[]): [string, string[]] => (link ? link.command(argv) : [argv[0] as string, argv.slice(1)]);
  const companion = (args: string[], env: Record<string, string> = {}) => {
    const [file, argv] = wrap([process.execPath, BIN, 'companion', 'run', ...args]);
    const p = new Proc(spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLAWGATE_SETUP_CODE: '', ...env } }));
    procs.push(p);
    return p;
  };
  /** A CLI command as the companion's user (its state dir), on the companion's side of the link. */
  const local = async (stateDir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    const [file, argv] = wrap([process.execPath, BIN, ...args, '--state-dir', stateDir]);
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLAWGATE_TOKEN: '', CLAWGATE_STATE_DIR: '' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? -1)));
    return { code, stdout, stderr };
  };
  const status = async (stateDir: string): Promise<StatusJson> => {
    const r = await local(stateDir, 'companion', 'status', '--json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as StatusJson;
  };
  const mint = async (profile: string): Promise<string> => {
    const minted = await cli(tg, 'qr', '--profile', profile, '--public-url', url(), '--json');
    assert.equal(minted.code, 0, minted.stderr);
    return (JSON.parse(minted.stdout) as { setupCode: string }).setupCode;
  };
  const codeFile = (dir: string, code: string) => {
    const f = join(dir, 'code.txt');
    writeFileSync(f, code, { mode: 0o600 });
    return f;
  };
  const recordOf = (stateDir: string) => {
    const gw = join(stateDir, 'client', 'gateways');
    const files = readdirSync(gw).filter((n) => n.endsWith('.json'));
    assert.equal(files.length, 1, `one gateway record: ${files.join(', ')}`);
    return JSON.parse(readFileSync(join(gw, files[0] as string), 'utf8')) as {
      deviceId: string;
      bootstrap?: unknown;
      sharedToken?: string;
      tokens: Record<string, { token: string; scopes: string[] }>;
    };
  };

  before(async () => {
    link = createLink();
    const stateDir = tmp('gw');
    tg = await startTestGateway({
      stateDir,
      host: link?.gatewayHost ?? '127.0.0.1',
      config: { bind: link?.gatewayHost ?? '127.0.0.1', tickIntervalMs: 2_000 },
    });
  });
  after(async () => {
    for (const p of procs) await p.stop();
    await tg.stop();
    link?.destroy();
    for (const d of dirs) removeDir(d);
  });

  test('one setup code: one device with both roles; operator works while the surface is pending; approve → invoke; rotate each role → both recover without pausing; revoke the node role → operator stays, status names the next step', async () => {
    const stateDir = tmp('main');
    const c = companion(['--pair', codeFile(stateDir, await mint('operator+node')), '--state-dir', stateDir, '--name', 'laptop']);
    await c.waitFor(/^operator: connected to .* as operator \(device ([0-9a-f]{64}), bootstrap-token/);
    const surface = await c.waitFor(/^node: waiting for command approval: request (\S+) — on the gateway host run `clawgate nodes approve \S+`$/);
    const surfaceId = surface[1] as string;

    // One device id holding both roles.
    const listed = await cli(tg, 'devices', 'list', '--json');
    const paired = (JSON.parse(listed.stdout) as { paired: Array<{ deviceId: string; roles: string[] }> }).paired;
    const rec = recordOf(stateDir);
    const mine = paired.filter((d) => d.deviceId === rec.deviceId);
    assert.equal(mine.length, 1, listed.stdout);
    assert.deepEqual(mine[0]?.roles, ['node', 'operator']);
    assert.equal(rec.bootstrap, undefined, 'the setup code is dropped once both role tokens are durable');
    assert.ok(rec.tokens.operator && rec.tokens.node);
    assert.equal(statSync(join(stateDir, 'companion', 'control.sock')).mode & 0o777, 0o600);
    assert.equal(statSync(join(stateDir, 'companion')).mode & 0o777, 0o700);

    // Surface pending: the node cannot be invoked, the operator side already writes.
    let s = await status(stateDir);
    assert.equal(s.running, true);
    assert.equal(s.operator.state, 'connected');
    assert.ok(s.operator.scopes.includes('operator.write'), JSON.stringify(s.operator));
    assert.equal(s.node.state, 'connected');
    assert.equal(s.node.surface, 'pending');
    assert.equal(s.node.surfaceRequestId, surfaceId);
    assert.match(s.node.nextStep ?? '', new RegExp(`clawgate nodes approve ${surfaceId}`));
    assert.equal((await cli(tg, 'sessions', 'create', 'companion-chat')).code, 0);
    const chat = await local(
      stateDir,
      'call',
      'chat.send',
      '--params',
      JSON.stringify({ sessionKey: 'companion-chat', text: 'hello from the companion' }),
      '--url',
      url(),
      '--json',
    );
    assert.equal(chat.code, 0, chat.stderr);
    assert.match(chat.stdout, /hello from the companion/);

    const approved = await cli(tg, 'nodes', 'approve', surfaceId);
    assert.equal(approved.code, 0, approved.stderr);
    await c.waitFor(/^node: command surface approved/);
    const invoke = async () => {
      const r = await cli(
        tg,
        'nodes',
        'invoke',
        '--node',
        rec.deviceId,
        '--command',
        'system.run',
        '--params',
        JSON.stringify({ command: ['echo', 'hi'] }),
        '--json',
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /hi\\n/);
    };
    await invoke();

    // Rotation of each role, pushed live: adopted, no pause on either side.
    for (const role of ['operator', 'node'] as const) {
      const mark = c.lines.length;
      const rotated = await cli(tg, 'devices', 'rotate', '--device', rec.deviceId, '--role', role, '--json');
      assert.equal(rotated.code, 0, rotated.stderr);
      await c.waitFor(new RegExp(`^${role}: connected to .* as ${role} \\(device [0-9a-f]{64}, device-token`));
      await waitFor(() => recordOf(stateDir).tokens[role]?.token !== rec.tokens[role]?.token, `the rotated ${role} token stored`, { timeoutMs: STEP_MS });
      assert.ok(!c.since(mark).some((l) => /paused/.test(l)), c.since(mark).join('\n'));
    }
    await invoke();
    s = await status(stateDir);
    assert.equal(s.operator.state, 'connected');
    assert.equal(s.node.state, 'connected');

    // Revoke the node role: the node side pauses naming the next step; the operator side is untouched.
    const mark = c.lines.length;
    const opGen = s.operator;
    const revoked = await cli(tg, 'devices', 'revoke', '--device', rec.deviceId, '--role', 'node', '--json');
    assert.equal(revoked.code, 0, revoked.stderr);
    await c.waitFor(/^node: paused \(device-token-rejected\)/);
    s = await status(stateDir);
    assert.equal(s.node.state, 'paused');
    assert.match(
      s.node.nextStep ?? '',
      /Pair the node side again: on the gateway host run `clawgate qr --profile operator\+node`.*`clawgate companion pair --code-file <file>`/,
    );
    assert.doesNotMatch(s.node.nextStep ?? '', /resume\(\)/);
    assert.equal(s.operator.state, 'connected');
    assert.deepEqual(s.operator.scopes, opGen.scopes);
    assert.ok(!c.since(mark).some((l) => l.startsWith('operator:')), `the operator side did not move:\n${c.since(mark).join('\n')}`);
    const human = await local(stateDir, 'companion', 'status');
    assert.match(human.stdout, /^node: paused/m);
    assert.match(human.stdout, /^ {2}next: .*companion pair/m);

    // A new setup code through the running companion re-pairs the node side; the operator keeps going.
    const f = codeFile(stateDir, await mint('operator+node'));
    const applied = await local(stateDir, 'companion', 'pair', '--code-file', f);
    assert.equal(applied.code, 0, applied.stderr);
    await c.waitFor(/^node: connected to /);
    assert.equal(recordOf(stateDir).deviceId, rec.deviceId, 'same device id');

    assert.equal(await c.stop(), 0);
    const offline = await status(stateDir);
    assert.equal(offline.running, false);
    assert.ok(offline.credentials.tokens.operator && offline.credentials.tokens.node);
    assert.match(offline.operator.nextStep ?? '', /clawgate companion run/);
  });

  test('companion pair while no companion runs stores the code; a plain companion run redeems it', async () => {
    const stateDir = tmp('offline-pair');
    const stored = await local(stateDir, 'companion', 'pair', '--code-file', codeFile(stateDir, await mint('operator+node')));
    assert.equal(stored.code, 0, stored.stderr);
    assert.match(stored.stdout, /the companion is not running: `clawgate companion run` redeems it/);
    assert.ok(recordOf(stateDir).bootstrap);
    const c = companion(['--state-dir', stateDir]);
    await c.waitFor(/^operator: connected to .*bootstrap-token/);
    await waitFor(() => recordOf(stateDir).bootstrap === undefined && recordOf(stateDir).tokens.node, 'the hand-off done', { timeoutMs: STEP_MS });
    const s = await status(stateDir);
    assert.equal(s.operator.state, 'connected');
    await waitFor(async () => (await status(stateDir)).node.state === 'connected', 'the node side connected', {
      timeoutMs: STEP_MS,
      detail: () => c.transcript(),
    });
    assert.equal(await c.stop(), 0);
  });

  test('a rejected command surface: the node side says so and what to do; the operator side does not move', async () => {
    const stateDir = tmp('reject');
    const c = companion(['--code-file', codeFile(stateDir, await mint('operator+node')), '--state-dir', stateDir]);
    await c.waitFor(/^operator: connected to /);
    const [, surfaceId] = await c.waitFor(/^node: waiting for command approval: request (\S+) /);
    const mark = c.lines.length;
    const rejected = await cli(tg, 'nodes', 'reject', surfaceId as string);
    assert.equal(rejected.code, 0, rejected.stderr);
    await c.waitFor(/^node: command surface rejected on the gateway/);
    const s = await status(stateDir);
    assert.equal(s.node.state, 'connected');
    assert.equal(s.node.surface, 'rejected');
    assert.match(s.node.nextStep ?? '', /companion reconnect node|reconnect the node side/);
    assert.equal(s.operator.state, 'connected');
    assert.ok(!c.since(mark).some((l) => l.startsWith('operator:')), c.since(mark).join('\n'));
    assert.equal(await c.stop(), 0);
  });

  test('an operator-only code with both sides running: the code is kept for the node side until the gateway says it does not grant it, then dropped; the node side names what to do', async () => {
    const stateDir = tmp('op-only');
    const c = companion(['--code-file', codeFile(stateDir, await mint('operator')), '--state-dir', stateDir]);
    await c.waitFor(/^operator: connected to .* as operator/);
    await c.waitFor(/^node: paused \(setup-code-unusable\)/);
    await waitFor(() => recordOf(stateDir).bootstrap === undefined, 'the setup code dropped once no running side can use it', { timeoutMs: STEP_MS });
    const rec = recordOf(stateDir);
    assert.ok(rec.tokens.operator);
    assert.equal(rec.tokens.node, undefined);
    const s = await status(stateDir);
    assert.equal(s.operator.state, 'connected');
    assert.equal(s.node.state, 'paused');
    assert.match(s.node.nextStep ?? '', /does not grant the node role.*clawgate qr --profile operator\+node.*--no-node/);
    assert.equal(await c.stop(), 0);
  });

  for (const point of ['setup-saved', 'hello-received', 'tokens-stored', 'before-rename:bootstrap-clear'] as const) {
    test(`SIGKILL at ${point}: a restart completes the hand-off with the same device id`, async () => {
      const stateDir = tmp('crash');
      const file = codeFile(stateDir, await mint('operator+node'));
      const first = companion(['--code-file', file, '--state-dir', stateDir], { CLAWGATE_TEST_CRASH_AT: point });
      assert.equal(await first.exited, -1, `killed at ${point}\n${first.transcript()}`);
      const before = recordOf(stateDir);
      assert.ok(before.bootstrap, 'the setup code is still stored after the crash');
      // The same command line again, as a service manager would restart it.
      const again = companion(['--code-file', file, '--state-dir', stateDir]);
      await again.waitFor(/^operator: connected to /);
      await again.waitFor(/^node: connected to /);
      await waitFor(() => recordOf(stateDir).bootstrap === undefined, 'the setup code dropped', { timeoutMs: STEP_MS, detail: () => again.transcript() });
      const after = recordOf(stateDir);
      assert.equal(after.deviceId, before.deviceId);
      assert.ok(after.tokens.operator && after.tokens.node);
      const s = await status(stateDir);
      assert.equal(s.operator.state, 'connected');
      assert.equal(s.node.state, 'connected');
      assert.equal(await again.stop(), 0);
    });
  }

  test('--url with a gateway token: each side waits for its own approval showing the request id and the confirmation code; a wrong replacement token is refused and changes nothing', async () => {
    const stateDir = tmp('shared');
    const tokenFile = join(stateDir, 'token');
    writeFileSync(tokenFile, TEST_TOKEN, { mode: 0o600 });
    const c = companion(['--url', url(), '--token-file', tokenFile, '--state-dir', stateDir]);
    const anyLine = (re: RegExp) =>
      waitFor(() => c.lines.map((l) => re.exec(l)).find((m) => m !== null), `a line matching ${re}`, { timeoutMs: STEP_MS, detail: () => c.transcript() });
    const listed = async () =>
      JSON.parse((await cli(tg, 'devices', 'list', '--json')).stdout) as { pending: Array<{ requestId: string; confirmationCode: string }> };
    // Each side waits on its own socket, naming its own request and the code the approver sees.
    for (const side of ['operator', 'node'] as const) {
      const wait = await anyLine(
        new RegExp(`^${side}: waiting for approval: request (\\S+), confirmation code (\\d{6}) — on the gateway host run \`clawgate devices approve \\S+\``),
      );
      const req = (await listed()).pending.find((p) => p.requestId === wait[1]);
      assert.equal(req?.confirmationCode, wait[2], `the approver sees the same code (${side})`);
      const s = await status(stateDir);
      const mine = s[side];
      if (mine.state === 'awaiting-approval') {
        assert.equal(mine.pendingRequestId, wait[1]);
        assert.equal(mine.confirmationCode, wait[2]);
        assert.match(mine.nextStep ?? '', new RegExp(`confirmation code ${wait[2]}`));
      }
      assert.equal((await cli(tg, 'devices', 'approve', wait[1] as string)).code, 0);
      await anyLine(new RegExp(`^${side}: connected to .*shared-token`));
    }
    await waitFor(() => !!recordOf(stateDir).tokens.operator && !!recordOf(stateDir).tokens.node, 'both role tokens stored', { timeoutMs: STEP_MS });
    let s = await status(stateDir);
    const before = recordOf(stateDir);

    const bad = join(stateDir, 'bad');
    writeFileSync(bad, 'cgs_not-the-token', { mode: 0o600 });
    const refused = await local(stateDir, 'companion', 'set-token', '--token-file', bad);
    assert.equal(refused.code, 1, refused.stdout);
    assert.match(refused.stderr, /AUTH_TOKEN_MISMATCH/);
    assert.deepEqual(recordOf(stateDir), before, 'a refused token changes nothing');
    s = await status(stateDir);
    assert.equal(s.operator.state, 'connected');
    assert.equal(s.node.state, 'connected');
    assert.equal(await c.stop(), 0);
  });

  test('companion mcp: an MCP client over stdio reads the status, pauses and resumes one side, and gets a refused token as an error', async () => {
    const stateDir = tmp('mcp');
    const c = companion(['--code-file', codeFile(stateDir, await mint('operator+node')), '--state-dir', stateDir]);
    await c.waitFor(/^operator: connected to /);
    await c.waitFor(/^node: connected to /);
    const [file, argv] = wrap([process.execPath, BIN, 'companion', 'mcp', '--state-dir', stateDir]);
    const transport = new StdioClientTransport({ command: file, args: argv, env: { ...(process.env as Record<string, string>) }, stderr: 'pipe' });
    const client = new Client({ name: 'companion-test', version: '1.0.0' });
    await client.connect(transport);
    try {
      const tools = (await client.listTools()).tools.map((t) => t.name).sort();
      assert.deepEqual(tools, ['apply_setup_code', 'pause_side', 'reconnect', 'resume_side', 'set_shared_token', 'status']);
      const read = async () =>
        JSON.parse(((await client.callTool({ name: 'status', arguments: {} })).content as Array<{ text: string }>)[0]?.text ?? '{}') as StatusJson;
      let s = await read();
      assert.equal(s.operator.state, 'connected');
      assert.equal(s.node.state, 'connected');

      const paused = await client.callTool({ name: 'pause_side', arguments: { side: 'node' } });
      assert.ok(!paused.isError, JSON.stringify(paused));
      s = await read();
      assert.equal(s.node.state, 'stopped');
      assert.equal(s.operator.state, 'connected', 'pausing the node side leaves the operator side alone');

      const resumed = await client.callTool({ name: 'resume_side', arguments: { side: 'node' } });
      assert.ok(!resumed.isError, JSON.stringify(resumed));
      await c.waitFor(/^node: connected to /);

      const bad = await client.callTool({ name: 'set_shared_token', arguments: { token: 'cgs_wrong' } });
      assert.equal(bad.isError, true);
      assert.match((bad.content as Array<{ text: string }>)[0]?.text ?? '', /AUTH_TOKEN_MISMATCH/);
      assert.equal(recordOf(stateDir).sharedToken, undefined);

      const invalid = await client.callTool({ name: 'apply_setup_code', arguments: { code: 'not-a-code' } });
      assert.equal(invalid.isError, true);
      assert.match((invalid.content as Array<{ text: string }>)[0]?.text ?? '', /INVALID_SETUP_CODE/);
      s = await read();
      assert.equal(s.operator.state, 'connected');
    } finally {
      await client.close();
    }
    assert.equal(await c.stop(), 0);
  });

  test("clawgate node run on a state dir `clawgate pair` filled is that device's node side (no second identity); a node host's state dir is read into the store by companion run, its operator token included", async () => {
    // `clawgate pair` with an operator+node code, then `clawgate node run` on the same dir.
    const paired = tmp('pair-then-node');
    const p = await local(paired, 'pair', '--code-file', codeFile(paired, await mint('operator+node')), '--name', 'desk');
    assert.equal(p.code, 0, p.stderr);
    const rec = recordOf(paired);
    assert.ok(rec.tokens.node && rec.tokens.operator);
    const [file, argv] = wrap([process.execPath, BIN, 'node', 'run', '--state-dir', paired, '--name', 'desk']);
    const n = new Proc(spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLAWGATE_SETUP_CODE: '', CLAWGATE_NODE_TOKEN: '' } }));
    procs.push(n);
    await n.waitFor(new RegExp(`^node: connected to .* as node \\(device ${rec.deviceId}, device-token`));
    await n.waitFor(/^node: waiting for command approval: request \S+/);
    assert.ok(!n.lines.some((l) => l.startsWith('operator:')), 'node run runs the node side only');
    assert.equal(readdirSync(paired).includes('identity.json'), false, 'no second identity');
    assert.equal(await n.stop(), 0);

    // A node host paired with an operator+node code: its state dir, read by companion run.
    const legacy = tmp('legacy-node');
    const [f2, a2] = wrap([
      process.execPath,
      BIN,
      'node',
      'run',
      '--code-file',
      codeFile(legacy, await mint('operator+node')),
      '--state-dir',
      legacy,
      '--name',
      'old',
    ]);
    const old = new Proc(spawn(f2, a2, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLAWGATE_SETUP_CODE: '', CLAWGATE_NODE_TOKEN: '' } }));
    procs.push(old);
    const [, deviceId] = await old.waitFor(/^paired: device ([0-9a-f]{64}) holds a node \+ operator token/);
    await old.waitFor(/^connected to /);
    assert.equal(await old.stop(), 0);
    // What an older `clawgate node run` left: its own credentials.json and no SDK store.
    writeFileSync(join(legacy, 'credentials.json'), JSON.stringify(readNodeCredentials(legacy)), { mode: 0o600 });
    removeDir(join(legacy, 'client'));
    const legacyCreds = readFileSync(join(legacy, 'credentials.json'), 'utf8');
    const c = companion(['--state-dir', legacy]);
    await c.waitFor(new RegExp(`^read the node host state in .* \\(device ${deviceId}; tokens: (operator, node|node, operator)\\)`));
    await c.waitFor(new RegExp(`^operator: connected to .* as operator \\(device ${deviceId}, device-token`));
    await c.waitFor(new RegExp(`^node: connected to .* as node \\(device ${deviceId}, device-token`));
    assert.equal(readFileSync(join(legacy, 'credentials.json'), 'utf8'), legacyCreds, 'the node host files are left as they were');
    assert.equal(recordOf(legacy).deviceId, deviceId);
    assert.equal(await c.stop(), 0);
  });

  test("--ssh: a gateway bound to the SSH host's loopback, reached through a supervised forward; an unknown host key is refused, never learned; a killed ssh is restarted and both sides reconnect", async (t) => {
    if (!link) return t.skip('needs a network namespace: the companion must not reach the gateway except through sshd');
    const dir = tmp('ssh');
    // The gateway listens on this host's loopback only: from the companion's namespace only sshd leads there.
    const hidden = await startTestGateway({ stateDir: tmp('ssh-gw'), config: { tickIntervalMs: 2_000 } });
    t.after(() => hidden.stop());
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'client_key')]);
    writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')), { mode: 0o600 });
    const sshPort = 20_000 + (process.pid % 20_000);
    writeFileSync(
      join(dir, 'sshd_config'),
      [
        `Port ${sshPort}`,
        `ListenAddress ${link.gatewayHost}`,
        `HostKey ${join(dir, 'host_key')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        'UsePAM no',
        'StrictModes no',
        'AllowTcpForwarding local',
        'X11Forwarding no',
        '',
      ].join('\n'),
    );
    const sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let sshdLog = '';
    sshd.stderr.on('data', (d) => (sshdLog += d));
    t.after(() => {
      sshd.kill('SIGTERM');
    });
    await waitFor(() => sshdLog.includes('Server listening'), 'sshd listening', { timeoutMs: STEP_MS, detail: () => sshdLog });

    const minted = await cli(hidden, 'qr', '--profile', 'operator+node', '--json');
    assert.equal(minted.code, 0, minted.stderr);
    const code = (JSON.parse(minted.stdout) as { setupCode: string }).setupCode;
    const stateDir = tmp('ssh-companion');
    const user = execFileSync('id', ['-un']).toString().trim();
    const c = companion([
      '--code-file',
      codeFile(stateDir, code),
      '--state-dir',
      stateDir,
      '--ssh',
      `${user}@${link.gatewayHost}:${sshPort}`,
      '--ssh-identity',
      join(dir, 'client_key'),
    ]);
    // Nothing in known_hosts yet: strict host key checking refuses, and the code stays unredeemed.
    await c.waitFor(/^ssh: Host key verification failed\. — the host key of \S+ is not in \S+known_hosts/);
    assert.ok(!c.lines.some((l) => /connected to/.test(l)));
    const hostKey = readFileSync(join(dir, 'host_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ');
    writeFileSync(join(stateDir, 'companion', 'known_hosts'), `[${link.gatewayHost}]:${sshPort} ${hostKey}\n`, { mode: 0o600 });
    await c.waitFor(/^ssh: forward 127\.0\.0\.1:\d+ → 127\.0\.0\.1:\d+ via \S+ is up$/);
    await c.waitFor(/^operator: connected to ws:\/\/127\.0\.0\.1:\d+ as operator/);
    await c.waitFor(/^node: connected to ws:\/\/127\.0\.0\.1:\d+ as node/);
    const deviceId = recordOf(stateDir).deviceId;
    const listed = JSON.parse((await cli(hidden, 'devices', 'list', '--json')).stdout) as { paired: Array<{ deviceId: string; roles: string[] }> };
    assert.deepEqual(listed.paired.find((d) => d.deviceId === deviceId)?.roles, ['node', 'operator']);

    // The ssh process dies: the forward is restarted and both sides come back through it.
    const sshPid = sshChildOf(c.child.pid as number);
    assert.ok(sshPid, 'the companion runs ssh');
    process.kill(Number(sshPid), 'SIGKILL');
    await c.waitFor(/^ssh: .*restarting in \d+ ms$/);
    await c.waitFor(/^ssh: forward .* is up$/);
    await c.waitFor(/^(operator|node): connected to /);
    await c.waitFor(/^(operator|node): connected to /);
    const s = (await status(stateDir)) as StatusJson & { ssh?: { state: string; restarts: number } };
    assert.equal(s.operator.state, 'connected');
    assert.equal(s.node.state, 'connected');
    assert.equal(s.ssh?.state, 'up');
    assert.ok((s.ssh?.restarts ?? 0) >= 2, 'the refused start and the killed ssh were both restarted');

    // While ssh is down, another local process takes the forward's port: it is sent no credential,
    // and when the real forward is back both sides recover by themselves.
    const localPort = (JSON.parse(readFileSync(join(stateDir, 'companion', 'companion.json'), 'utf8')) as { ssh: { localPort: number } }).ssh.localPort;
    const rogueScript = [
      `const { WebSocketServer } = require(${JSON.stringify(join(process.cwd(), 'node_modules', 'ws'))});`,
      `const wss = new WebSocketServer({ host: '127.0.0.1', port: ${localPort} });`,
      "wss.on('listening', () => console.log('LISTENING'));",
      "wss.on('error', (e) => { console.log('ERROR ' + e.code); process.exit(3); });",
      "wss.on('connection', (ws) => { console.log('CONNECTION'); ws.send(JSON.stringify({ type: 'event', event: 'connect.challenge', payload: { nonce: 'rogue-nonce', ts: Date.now() } })); ws.on('message', (m) => console.log('FRAME ' + m)); });",
    ].join('\n');
    let rogue: Proc | null = null;
    for (let attempt = 0; attempt < 3 && !rogue; attempt++) {
      const pid = sshChildOf(c.child.pid as number);
      assert.ok(pid, 'the companion runs ssh');
      process.kill(Number(pid), 'SIGKILL');
      const [rf, ra] = wrap([process.execPath, '-e', rogueScript]);
      const r = new Proc(spawn(rf, ra, { stdio: ['ignore', 'pipe', 'pipe'] }));
      procs.push(r);
      const first = await r.waitFor(/^(LISTENING|ERROR \S+)$/).catch(() => null);
      if (first?.[1] === 'LISTENING') rogue = r;
      else await c.waitFor(/^ssh: forward .* is up$/, 45_000); // ssh was quicker: try again
    }
    assert.ok(rogue, 'a local process took the port while ssh was down');
    await c.waitFor(/^(operator|node): paused \(gateway-key-mismatch\)/, 45_000);
    await c.waitFor(/^(operator|node): paused \(gateway-key-mismatch\)/, 45_000);
    assert.ok(rogue.lines.includes('CONNECTION'), 'the companion did reach the squatter');
    assert.deepEqual(
      rogue.lines.filter((l) => l.startsWith('FRAME')),
      [],
      'not one frame — no credential — went to it',
    );
    await rogue.stop();
    await c.waitFor(/^ssh: forward .* is up$/, 45_000);
    await waitFor(
      async () => {
        const now = await status(stateDir);
        return now.operator.state === 'connected' && now.node.state === 'connected';
      },
      'both sides back through the real forward',
      { timeoutMs: 45_000, detail: () => c.transcript() },
    );
    assert.equal(recordOf(stateDir).deviceId, deviceId);
    assert.equal(await c.stop(), 0);
  });

  test('a second companion on the same state dir is refused; install-service --print writes a systemd unit and a launchd plist', async () => {
    const stateDir = tmp('single');
    const c = companion(['--code-file', codeFile(stateDir, await mint('operator')), '--state-dir', stateDir, '--no-node']);
    await c.waitFor(/^operator: connected to /);
    const off = await status(stateDir);
    assert.equal(off.node.state, 'stopped');
    assert.match(off.node.message ?? '', /--no-node/);
    // The control socket validates what it is sent.
    const garbage = await new Promise<string>((resolve, reject) => {
      const sock = connect(join(stateDir, 'companion', 'control.sock'));
      let got = '';
      sock.on('data', (d) => (got += d));
      sock.on('end', () => resolve(got));
      sock.on('error', reject);
      sock.write('{"op":"pause","side":"everything"}\n');
    });
    assert.equal(JSON.parse(garbage).code, 'CONTROL_REQUEST_INVALID');
    // --pair names where the code is; the code itself on the command line is refused, not used.
    const leaked = await mint('operator');
    const onArgv = companion(['--pair', leaked, '--state-dir', tmp('argv')]);
    assert.equal(await onArgv.exited, 2);
    assert.match(onArgv.errLines.join('\n'), /--pair takes where the setup code is/);
    assert.ok(!onArgv.errLines.join('\n').includes(leaked));
    const second = companion(['--state-dir', stateDir, '--no-node']);
    assert.equal(await second.exited, 1);
    assert.match(second.errLines.join('\n'), /another clawgate companion run \(pid \d+\) is using/);
    assert.equal(await c.stop(), 0);

    const unit = await local(stateDir, 'companion', 'install-service', '--print');
    assert.equal(unit.code, 0, unit.stderr);
    assert.match(unit.stdout, /^\[Service\]$/m);
    assert.match(unit.stdout, /^ExecStart=\S+ \S+clawgate\.js companion run --state-dir \S+$/m);
    assert.doesNotMatch(unit.stdout, /cgb1_|cgs_|cgd1_/);
    const plist = await local(stateDir, 'companion', 'install-service', '--print', '--launchd');
    assert.equal(plist.code, 0, plist.stderr);
    assert.match(plist.stdout, /<string>companion<\/string>\s*<string>run<\/string>/);
  });
});

describe('companion input checks', () => {
  test('node side: an HTTP 403 on the WebSocket upgrade pauses it with the reason instead of retrying for ever', async (t) => {
    const server = createHttpServer((_req, res) => res.end());
    server.on('upgrade', (_req, socket) => {
      socket.on('error', () => {});
      const body = '{"error":{"type":"proxy_attribution_required"}}';
      socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-companion-403-'));
    const tokenFile = join(dir, 'token.txt');
    writeFileSync(tokenFile, 'cgs_anything', { mode: 0o600 });
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const c = new Proc(
      spawn(process.execPath, [BIN, 'companion', 'run', '--url', url, '--token-file', tokenFile, '--state-dir', dir, '--no-operator'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, CLAWGATE_SETUP_CODE: '' },
      }),
    );
    t.after(async () => {
      await c.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      removeDir(dir);
    });
    await c.waitFor(/^node: paused \(upgrade-refused\): the gateway refused the WebSocket upgrade at \S+: .*proxy_attribution_required/);
  });
  test('--ssh targets: user@host[:port] and bracketed IPv6 parse; anything ssh could read as an option is refused', () => {
    assert.deepEqual(parseSshTarget('me@gw.example.com'), { user: 'me', host: 'gw.example.com', port: 22 });
    assert.deepEqual(parseSshTarget('me@10.0.0.5:2222'), { user: 'me', host: '10.0.0.5', port: 2222 });
    assert.deepEqual(parseSshTarget('me@[::1]:2200'), { user: 'me', host: '[::1]', port: 2200 });
    for (const bad of [
      'gw.example.com',
      '-oProxyCommand=x@host',
      'me@-oProxyCommand=x',
      'me@host:0',
      'me@host:70000',
      'me@host:22x',
      'me@[::1',
      'me@ho st',
      'me@',
    ]) {
      assert.ok('problem' in parseSshTarget(bad), bad);
    }
    const args = new SshForward({
      target: { user: 'me', host: 'gw', port: 2222 },
      localPort: 40000,
      remoteHost: '127.0.0.1',
      remotePort: 18789,
      knownHostsFile: '/k',
      out: () => {},
    }).args();
    assert.deepEqual(args.slice(-4), ['-l', 'me', '--', 'gw']);
    for (const o of ['BatchMode=yes', 'StrictHostKeyChecking=yes', 'UserKnownHostsFile=/k', 'ExitOnForwardFailure=yes']) assert.ok(args.includes(o), o);
    assert.ok(args.includes('127.0.0.1:40000:127.0.0.1:18789'));
  });

  test("SDK next steps are said in the companion's terms", () => {
    const sdk =
      'Pair this device again: on the gateway host run `clawgate qr`, then `clawgate pair --code-file <file>` here (or `client.setSharedToken`/`pairWithSetupCode` in the SDK).';
    const said = inCompanionTerms(sdk);
    assert.doesNotMatch(said, /SDK|setSharedToken|resume\(\)/);
    assert.match(said, /`clawgate companion pair --code-file <file>` here\.$/);
    assert.equal(inCompanionTerms('Approve request r1 on the gateway, then call resume().'), 'Approve request r1 on the gateway.');
  });

  test('control requests are validated before anything acts on them', () => {
    assert.deepEqual(parseControlRequest('{"op":"status"}'), { op: 'status' });
    assert.deepEqual(parseControlRequest('{"op":"pause","side":"node"}'), { op: 'pause', side: 'node' });
    for (const bad of [
      'nope',
      '{}',
      '{"op":"pause","side":"all"}',
      '{"op":"apply-setup-code","code":""}',
      '{"op":"set-shared-token","token":"  "}',
      '{"op":"shell"}',
    ]) {
      assert.ok('problem' in parseControlRequest(bad), bad);
    }
    assert.ok('problem' in parseControlRequest(JSON.stringify({ op: 'apply-setup-code', code: 'x'.repeat(4097) })));
  });
});

/** Just enough of a GatewayClient to drive a side's lifecycle by hand (listeners stay callable after close). */
class ScriptedClient {
  state: ClientState = { status: 'idle' };
  readonly stateListeners: Array<(s: ClientState, p: ClientState) => void> = [];
  readonly eventListeners = new Map<string, Array<(e: string, p: unknown) => void>>();
  readonly target = { url: 'ws://127.0.0.1:1', key: 'ws://127.0.0.1:1', secure: false };
  readonly gatewayFlavor = 'clawgate';
  closed = false;
  onState(l: (s: ClientState, p: ClientState) => void) {
    this.stateListeners.push(l);
    return () => undefined;
  }
  on(event: string, l: (e: string, p: unknown) => void) {
    this.eventListeners.set(event, [...(this.eventListeners.get(event) ?? []), l]);
    return () => undefined;
  }
  start() {}
  reconnect() {}
  close() {
    this.closed = true;
  }
  request() {
    return Promise.reject(new Error('not connected'));
  }
  /** What a socket callback would do: tell every listener ever registered. */
  emitState(s: ClientState) {
    const prev = this.state;
    this.state = s;
    for (const l of this.stateListeners) l(s, prev);
  }
  emitEvent(event: string, payload: unknown) {
    for (const l of this.eventListeners.get(event) ?? []) l(event, payload);
  }
}

describe('a side lifecycle ignores its retired clients', () => {
  test("after a pause and resume, the old client's late state and events change nothing", () => {
    const made: ScriptedClient[] = [];
    const lines: string[] = [];
    const side = new SideLifecycle('node', true, {
      createClient: () => {
        const c = new ScriptedClient();
        made.push(c);
        return c as unknown as GatewayClient;
      },
      nextStepFor: () => 'pair again',
      out: (l) => lines.push(l),
      changed: () => {},
      deviceId: () => 'dev-1',
      approveDeviceHint: (id) => `clawgate devices approve ${id}`,
      approveNodeHint: (id) => `clawgate nodes approve ${id}`,
    });
    side.start();
    const [old] = made as [ScriptedClient];
    old.emitState({ status: 'connected', role: 'node', scopes: [], deviceId: 'dev-1', authMethod: 'device-token', credential: 'device-token' });
    side.stop();
    assert.equal(old.closed, true);
    side.reconnect();
    const current = made[1] as ScriptedClient;
    current.emitState({ status: 'connected', role: 'node', scopes: [], deviceId: 'dev-1', authMethod: 'device-token', credential: 'device-token' });
    const before = lines.length;
    // The retired client reports a pause and a surface request late: nothing moves.
    old.emitState({ status: 'paused', reason: 'device-token-rejected', message: 'stale', nextStep: 'x' });
    old.emitEvent('node.pair.requested', { nodeId: 'dev-1', requestId: 'stale-request' });
    const st = side.status();
    assert.equal(st.state, 'connected');
    assert.equal(st.surface, 'unknown');
    assert.equal(st.lastError, null);
    assert.deepEqual(lines.slice(before), []);
    // The current client still moves it.
    current.emitEvent('node.pair.requested', { nodeId: 'dev-1', requestId: 'live-request' });
    assert.equal(side.status().surfaceRequestId, 'live-request');
  });
});
