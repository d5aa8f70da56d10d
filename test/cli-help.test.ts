/**
 * The CLI explains itself, driven as a user drives it (real `clawgate` processes): `--help` and
 * `clawgate help <command>` for every command of the registry, an unknown flag answered with the
 * closest valid one, a refused connection answered with what to do, devices named by name or id
 * prefix, and hints that run as printed.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { allCommands } from '../src/cli/registry.js';
import { resolveRef } from '../src/cli/resolve.js';
import { type ConnectError, connectGateway, generateIdentity } from '../src/client/connection.js';
import { pairedDevices } from './helpers/client.js';
import { cli, removeDir, startTestGateway, TEST_TOKEN } from './helpers/gateway.js';
import { importGraph } from './helpers/import-graph.js';
import { freePort } from './helpers/net.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI with a clean environment (no URL, token or state dir inherited from the shell running the tests). */
function clawgate(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return promisify(execFile)(process.execPath, [BIN, ...args], {
    env: { ...process.env, CLAWGATE_URL: '', CLAWGATE_TOKEN: '', CLAWGATE_STATE_DIR: '', ...env },
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

function scratch(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-help-'));
  t.after(() => removeDir(dir));
  return dir;
}

test('every command and subcommand of the registry answers --help with its usage, flags and an example (exit 0)', async () => {
  const commands = allCommands();
  assert.ok(commands.length > 40, `the registry lists every command (${commands.length})`);
  for (const { path, spec } of commands) {
    const r = await clawgate([...path, '--help']);
    assert.equal(r.code, 0, `clawgate ${path.join(' ')} --help: ${r.stderr}`);
    assert.match(r.stdout, /^Usage:$/m, `clawgate ${path.join(' ')} --help shows the usage`);
    assert.ok(r.stdout.includes(`clawgate ${path.join(' ')}`), `clawgate ${path.join(' ')} --help names the command`);
    assert.match(r.stdout, /^Examples?:\n {2}clawgate /m, `clawgate ${path.join(' ')} --help shows an example`);
    if (spec.run) {
      for (const flag of Object.keys(Object.assign({}, ...(spec.flags ?? []).map((g) => g.flags)))) {
        assert.ok(r.stdout.includes(`--${flag}`), `clawgate ${path.join(' ')} --help lists --${flag}`);
      }
    }
  }
});

test('`clawgate help` lists every command of the registry', async () => {
  const overview = await clawgate(['help']);
  assert.equal(overview.code, 0);
  for (const { path } of allCommands().filter((c) => c.path.length === 1)) assert.ok(overview.stdout.includes(`clawgate ${path[0]} `), `clawgate ${path[0]}`);
});

test('`clawgate help <command> [sub]` prints the same help as `--help`; -h too', async () => {
  for (const words of [['cron', 'add'], ['node', 'run'], ['gateway', 'run'], ['pair'], ['call'], ['devices']]) {
    const viaHelp = await clawgate(['help', ...words]);
    const viaFlag = await clawgate([...words, '--help']);
    const viaShort = await clawgate([...words, '-h']);
    assert.equal(viaHelp.code, 0, viaHelp.stderr);
    assert.equal(viaHelp.stdout, viaFlag.stdout, `help ${words.join(' ')}`);
    assert.equal(viaShort.stdout, viaFlag.stdout, `${words.join(' ')} -h`);
  }
  // Defaults are shown: the flag, and what applies without it.
  const run = await clawgate(['gateway', 'run', '--help']);
  assert.match(run.stdout, /--port <n>\s+.*\(default: CLAWGATE_PORT, else 18789\)/);
  assert.match(run.stdout, /--bind loopback\|lan\|<address>/);
  const unknown = await clawgate(['help', 'devices', 'frobnicate']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command: devices frobnicate/);
});

test('an unknown flag names itself, the closest valid flag and the usage (exit 2), not the parser’s raw text', async () => {
  for (const [args, typed, closest] of [
    [['cron', 'add', '--name', 'x', '--jsn'], '--jsn', '--json'],
    [['devices', 'list', '--stat-dir', '/tmp/x'], '--stat-dir', '--state-dir'],
    [['gateway', 'run', '--tokn-file', 'f'], '--tokn-file', '--token-file'],
    [['node', 'run', '--exec-polcy', 'deny'], '--exec-polcy', '--exec-policy'],
    [['pair', '--code-fil', 'f'], '--code-fil', '--code-file'],
  ] as const) {
    const r = await clawgate([...args]);
    assert.equal(r.code, 2, `clawgate ${args.join(' ')}`);
    assert.ok(r.stderr.includes(`unknown flag ${typed}`), r.stderr);
    assert.ok(r.stderr.includes(`the closest valid flag is ${closest}`), r.stderr);
    assert.match(r.stderr, /^usage:\n {2}clawgate /m, r.stderr);
    assert.doesNotMatch(r.stderr, /To specify a positional argument/);
  }
  const sub = await clawgate(['devices', 'aprove', 'x']);
  assert.equal(sub.code, 2);
  assert.match(sub.stderr, /unknown command: devices aprove \(did you mean `clawgate devices approve`\?\)/);
});

test('no gateway listening: the error names the URL and says how to start one or where else to point (exit 1)', async (t) => {
  const stateDir = scratch(t);
  const port = await freePort();
  const url = `ws://127.0.0.1:${port}`;
  for (const args of [
    ['devices', 'list'],
    ['call', 'health'],
    ['nodes', 'list', '--json'],
  ]) {
    const r = await clawgate([...args, '--url', url, '--state-dir', stateDir], { CLAWGATE_TOKEN: TEST_TOKEN });
    assert.equal(r.code, 1, `clawgate ${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.includes(`error: no gateway is listening on ${url}`), r.stderr);
    assert.ok(r.stderr.includes(`next: start it with \`clawgate gateway run --state-dir ${stateDir}\` or pass --url`), r.stderr);
    assert.doesNotMatch(r.stderr, /^error: connect ECONNREFUSED/m);
  }
});

test('a device is named by its id, a unique id prefix or its name; an ambiguous name lists the candidates', async () => {
  const tg = await startTestGateway();
  const conns = [];
  try {
    for (let i = 0; i < 3; i++)
      conns.push(
        await connectGateway({
          url: tg.url,
          identity: generateIdentity(),
          auth: { token: TEST_TOKEN },
          client: { id: 'test', mode: 'test' },
          scopes: ['operator.read'],
        }),
      );
    const [a, b, c] = (await pairedDevices(tg)).map((d) => d.deviceId) as [string, string, string];
    // By id prefix.
    const renamed = await cli(tg, 'devices', 'rename', a.slice(0, 10), 'build-box');
    assert.equal(renamed.code, 0, renamed.stderr);
    assert.match(renamed.stdout, new RegExp(`renamed ${a} to build-box`));
    // By name, any case.
    const rotated = await cli(tg, 'devices', 'rotate', '--device', 'BUILD-BOX', '--role', 'operator', '--json');
    assert.equal(rotated.code, 0, rotated.stderr);
    // Two devices with one name: refused, both ids listed, nothing changed.
    assert.equal((await cli(tg, 'devices', 'rename', b, 'twin')).code, 0);
    assert.equal((await cli(tg, 'devices', 'rename', c, 'twin')).code, 0);
    const ambiguous = await cli(tg, 'devices', 'remove', 'twin');
    assert.equal(ambiguous.code, 1);
    assert.match(ambiguous.stderr, /more than one device is named twin/);
    assert.ok(ambiguous.stderr.includes(b) && ambiguous.stderr.includes(c), ambiguous.stderr);
    assert.equal((await pairedDevices(tg)).length, 3, 'nothing was removed');
    const removed = await cli(tg, 'devices', 'remove', 'build-box');
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual((await pairedDevices(tg)).map((d) => d.deviceId).sort(), [b, c].sort());
  } finally {
    for (const conn of conns) await conn.close();
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('resolveRef: exact id, name, unique prefix; an ambiguous prefix or a short one is not guessed', () => {
  const cands = [
    { id: 'abcdef0123', names: ['laptop'] },
    { id: 'abcdef9999', names: ['phone'] },
    { id: '1234567890', names: [null] },
  ];
  assert.deepEqual(resolveRef(cands, 'abcdef0123'), { kind: 'found', id: 'abcdef0123' });
  assert.deepEqual(resolveRef(cands, 'Phone'), { kind: 'found', id: 'abcdef9999' });
  assert.deepEqual(resolveRef(cands, '1234567'), { kind: 'found', id: '1234567890' });
  const amb = resolveRef(cands, 'abcdef');
  assert.equal(amb.kind, 'ambiguous');
  assert.deepEqual(amb.kind === 'ambiguous' ? amb.candidates.map((c) => c.id) : [], ['abcdef0123', 'abcdef9999']);
  assert.deepEqual(resolveRef(cands, '12345'), { kind: 'none' }, 'five characters are too few to be a prefix');
});

test('the CLI is a leaf: only its dispatcher imports the registry and main.ts, and nothing outside src/cli imports the CLI', () => {
  const graph = importGraph(fileURLToPath(new URL('../../src', import.meta.url)));
  assert.ok(graph.has('cli/main.ts') && graph.has('cli/registry.ts'), `read the sources (${graph.size} modules)`);
  const importers = (target: string) => [...graph].filter(([file, deps]) => file !== target && deps.includes(target)).map(([file]) => file);
  assert.deepEqual(importers('cli/main.ts'), [], 'commands share helpers through common modules, never main.ts');
  assert.deepEqual(importers('cli/registry.ts'), ['cli/main.ts'], 'only the dispatcher reads the registry');
  const outside = [...graph].filter(([file, deps]) => !file.startsWith('cli/') && deps.some((d) => d.startsWith('cli/'))).map(([file]) => file);
  assert.deepEqual(outside, [], 'the gateway, node host and UI do not import the CLI');
});

test('devices approve and reject take a device (id prefix) as well as a request id', async () => {
  const tg = await startTestGateway({ config: { autoApproveLocal: false } });
  try {
    const ask = async () => {
      const identity = generateIdentity();
      await assert.rejects(
        connectGateway({ url: tg.url, identity, auth: { token: TEST_TOKEN }, client: { id: 'test', mode: 'test' }, scopes: ['operator.read'] }),
        (err: ConnectError) => err.detailCode === 'PAIRING_REQUIRED',
      );
      return identity.deviceId;
    };
    const [a, b] = [await ask(), await ask()];
    const approved = await cli(tg, 'devices', 'approve', a.slice(0, 12), '--json');
    assert.equal(approved.code, 0, approved.stderr);
    assert.equal((JSON.parse(approved.stdout) as { approved: Array<{ deviceId: string }> }).approved[0]?.deviceId, a);
    const rejected = await cli(tg, 'devices', 'reject', b.slice(0, 12));
    assert.equal(rejected.code, 0, rejected.stderr);
    const list = JSON.parse((await cli(tg, 'devices', 'list', '--json')).stdout) as { pending: unknown[]; paired: Array<{ deviceId: string }> };
    assert.deepEqual(list.pending, []);
    assert.deepEqual(
      list.paired.map((d) => d.deviceId),
      [a],
    );
  } finally {
    await tg.stop();
    removeDir(tg.stateDir);
  }
});

test('a self-signed certificate the client does not know: the error says to pin it with --tls-fingerprint', async (t) => {
  const gatewayDir = scratch(t);
  const procs: Array<Pick<GatewayProcess, 'kill'>> = [];
  t.after(() => Promise.all(procs.map((p) => p.kill())));
  const gw = await spawnGateway(['--tls'], { env: { CLAWGATE_STATE_DIR: gatewayDir }, onSpawn: (p) => procs.push(p) });
  const url = `wss://127.0.0.1:${gw.port}`;
  const r = await clawgate(['call', 'health', '--url', url, '--state-dir', scratch(t)], { CLAWGATE_TOKEN: TEST_TOKEN });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`^error: the certificate at ${url.replace(/[.]/g, '\\.')} is not trusted by this machine \\([A-Z_]+\\)$`, 'm'));
  assert.match(r.stderr, /^next: .*pass --tls-fingerprint <sha256>/m);
});
