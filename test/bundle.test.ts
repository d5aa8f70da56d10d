/**
 * The single-file build of the CLI (scripts/bundle.mjs → dist/clawgate.cjs and its V8 code cache
 * dist/clawgate.code-cache): `clawgate gateway run` starts from it when it is fresh, with the
 * code cache and without reading any other JavaScript file than bin/ (no module resolution, no
 * ES module loader); the bundled gateway completes a device handshake (signed device, shared
 * token, then its device token), serves the Control UI assets it finds relative to dist/, and
 * still imports the CLI modules it leaves out; a cache made from another bundle is not used; a
 * stale bundle (older than the tsc output) is never used.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { startPgCluster } from './helpers/pg-cluster.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';
import { waitFor } from './helpers/wait.js';

const ROOT = process.cwd();
const BUNDLE = join(ROOT, 'dist', 'clawgate.cjs');
const CODE_CACHE = join(ROOT, 'dist', 'clawgate.code-cache');
const MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

const dirs: string[] = [];
const procs: Array<Pick<GatewayProcess, 'kill'>> = [];

before(() => {
  // Build it here too: the test must exercise the bundle of this very tsc output.
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'bundle.mjs')], { cwd: ROOT, stdio: 'ignore' });
});

after(async () => {
  for (const p of procs) await p.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Run `clawgate gateway run` that is expected to exit before listening; its code and stderr. */
function spawnGatewayExpectingExit(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(ROOT, 'bin', 'clawgate.js'), 'gateway', 'run', '--port', '0', ...args], { timeout: 20_000 }, (err, _stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      if (err && code === null) reject(err);
      else resolve({ code, stderr });
    });
  });
}

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'clawgate-bundle-'));
  dirs.push(d);
  return d;
}

interface Started {
  build?: string;
  codeCache?: string;
}

/** The gateway's "gateway started" log line (stderr may trail the stdout "listening" line). */
function startedLine(gw: GatewayProcess): Promise<Started> {
  return waitFor(() => started(gw), 'the "gateway started" log line');
}

async function buildOf(gw: GatewayProcess): Promise<string | undefined> {
  return (await startedLine(gw)).build;
}

function started(gw: GatewayProcess): Started | undefined {
  for (const line of gw.err().split('\n')) {
    try {
      const rec = JSON.parse(line) as Started & { msg?: string };
      if (rec.msg === 'gateway started') return rec;
    } catch {
      // not a JSON log line
    }
  }
  return undefined;
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

test('the build writes one function expression holding ws, TypeBox and better-sqlite3, and a code cache made from it', () => {
  assert.ok(existsSync(BUNDLE));
  const text = readFileSync(BUNDLE, 'latin1');
  // The loader compiles the file as it is and calls it with the CommonJS wrapper's parameters.
  assert.ok(text.startsWith('(function (exports, require, module, __filename, __dirname, $cgimp) {'));
  assert.ok(
    readFileSync(BUNDLE).every((byte) => byte < 0x80),
    'ASCII only: read as Latin-1',
  );
  // Only optional packages are required by name at run time; better-sqlite3's JavaScript is
  // inside, its native addon is required by path from the installed package.
  const packages = [...text.matchAll(/\brequire\("([^"]+)"\)/g)]
    .map((m) => m[1] as string)
    .filter((s) => !s.startsWith('node:') && !builtinModules.includes(s));
  assert.deepEqual([...new Set(packages)].sort(), ['bufferutil', 'pg-native', 'utf-8-validate']);
  assert.ok(text.includes('require.resolve("better-sqlite3/package.json")'));
  assert.ok(text.includes('WebSocketServer'), 'ws is inside the bundle');
  assert.ok(text.includes('better_sqlite3.node'), "better-sqlite3's JavaScript is inside the bundle");
  // No import() is left (code from a code cache cannot run it): the CLI verbs left out are
  // imported through the loader and resolve from where the bundle lives.
  assert.doesNotMatch(text, /\bimport\(/);
  const lazy = [...new Set([...text.matchAll(/\$cgimp\("([^"]+)"\)/g)].map((m) => m[1] as string))];
  assert.ok(lazy.length > 0);
  for (const spec of lazy) {
    assert.match(spec, /^\.\/src\/cli\/[a-z-]+\.js$/);
    assert.ok(existsSync(join(ROOT, 'dist', spec)), spec);
  }
  // The cache names the bundle it was made from by its SHA-256.
  const cache = readFileSync(CODE_CACHE);
  assert.ok(cache.length > 32);
  assert.deepEqual(cache.subarray(0, 32), createHash('sha256').update(readFileSync(BUNDLE)).digest());
});

test('gateway run from the bundle reads no JavaScript file but bin/, and never starts the ES module loader', async () => {
  const dir = stateDir();
  // NODE_DEBUG=module,esm: Node's own trace of every file its loaders load.
  const gw = await spawnGateway(['--state-dir', dir], { env: { NODE_DEBUG: 'module,esm' }, onSpawn: (p) => procs.push(p) });
  try {
    const line = await startedLine(gw);
    assert.deepEqual({ build: line.build, codeCache: line.codeCache }, { build: 'single-file', codeCache: 'used' });
    const ready = await httpGet(`http://127.0.0.1:${gw.port}/readyz`);
    assert.equal(ready.status, 200);
    const loaded = [...gw.err().matchAll(/^MODULE \d+: load "([^"]+)"/gm)].map((m) =>
      (m[1] as string).replace(/^.*\/node_modules\//, 'node_modules/').replace(`${ROOT}/`, ''),
    );
    assert.deepEqual(loaded, [
      'bin/clawgate.js',
      'bin/single-file.js',
      'node_modules/better-sqlite3/package.json',
      'node_modules/better-sqlite3/build/Release/better_sqlite3.node',
    ]);
    assert.doesNotMatch(gw.err(), /^ESM \d+:/m);
  } finally {
    await gw.stop();
  }
});

test("gateway run on PostgreSQL from the bundle reads no pg file from node_modules and never loads Node's fetch implementation", async () => {
  const cluster = await startPgCluster();
  try {
    const url = await cluster.createDatabase();
    const dir = stateDir();
    // Node's own modules (undici behind fetch/Response among them) are listed in
    // process.moduleLoadList: a preloaded script writes it down when the gateway exits.
    const report = join(dir, 'internal-modules.json');
    const preload = join(dir, 'record-internal-modules.cjs');
    writeFileSync(
      preload,
      `process.once('exit', () => require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify(process.moduleLoadList)));\n`,
    );
    const gw = await spawnGateway(['--state-dir', dir, '--store', 'postgres', '--postgres-url', url], {
      env: { NODE_DEBUG: 'module,esm', NODE_OPTIONS: `--require ${preload}` },
      onSpawn: (p) => procs.push(p),
    });
    try {
      assert.equal((await startedLine(gw)).build, 'single-file');
      assert.equal((await httpGet(`http://127.0.0.1:${gw.port}/readyz`)).status, 200);
      const loaded = [...gw.err().matchAll(/^MODULE \d+: load "([^"]+)"/gm)].map((m) => m[1] as string);
      assert.ok(loaded.some((f) => f.endsWith('/bin/single-file.js')));
      assert.deepEqual(
        loaded.filter((f) => /[\\/]node_modules[\\/]pg/.test(f)),
        [],
      );
    } finally {
      assert.equal(await gw.stop(), 0);
    }
    const internal = JSON.parse(readFileSync(report, 'utf8')) as string[];
    assert.ok(internal.includes('NativeModule net'), 'the list names the built-ins the gateway loaded');
    assert.deepEqual(
      internal.filter((m) => /undici/.test(m)),
      [],
    );
  } finally {
    await cluster.stop();
  }
});

test('clawgate gateway run starts from the bundle and a device pairs and reconnects with its device token', async () => {
  const dir = stateDir();
  const gw = await spawnGateway(['--state-dir', dir], { onSpawn: (p) => procs.push(p) });
  try {
    assert.equal(await buildOf(gw), 'single-file');
    const token = (JSON.parse(readFileSync(join(dir, 'credentials.json'), 'utf8')) as { token: string }).token;
    const identity = generateIdentity();
    const first = await connectGateway({ url: gw.url, identity, auth: { token }, scopes: ['operator.read'], client: { id: 'test', mode: 'test' } });
    const deviceToken = first.hello.auth.deviceToken;
    assert.equal(typeof deviceToken, 'string');
    await first.close();
    const again = await connectGateway({ url: gw.url, identity, auth: { deviceToken }, scopes: ['operator.read'], client: { id: 'test', mode: 'test' } });
    assert.equal((await again.request<{ ok: boolean }>('health')).ok, true);
    await again.close();
    // The Control UI assets are found relative to dist/ (the bundle's own location).
    const ui = await httpGet(`http://127.0.0.1:${gw.port}/`);
    assert.equal(ui.status, 200);
    assert.match(ui.body, /<html/i);
  } finally {
    await gw.stop();
  }
});

test('the bundled CLI still imports the modules it leaves out (a failure is reported by cli/gateway-session.js)', async () => {
  const dir = stateDir();
  const missing = join(dir, 'missing.pem');
  // A certificate that cannot be read fails inside gateway run; main() then imports
  // ./src/cli/gateway-session.js (left out of the bundle) to report it.
  const gw = await spawnGatewayExpectingExit(['--state-dir', join(dir, 'state'), '--tls-cert', missing, '--tls-key', missing]);
  assert.equal(gw.code, 1);
  assert.match(gw.stderr, /^error: cannot read the TLS certificate .*missing\.pem/m);
  assert.doesNotMatch(gw.stderr, /ERR_VM_DYNAMIC_IMPORT|clawgate: /);
});

test('a code cache made from another bundle is not used: the gateway compiles the bundle and serves', async () => {
  const cache = readFileSync(CODE_CACHE);
  try {
    const other = Buffer.from(cache);
    other[0] = (other[0] as number) ^ 0xff;
    writeFileSync(CODE_CACHE, other);
    const gw = await spawnGateway(['--state-dir', stateDir()], { onSpawn: (p) => procs.push(p) });
    const line = await startedLine(gw);
    assert.deepEqual({ build: line.build, codeCache: line.codeCache }, { build: 'single-file', codeCache: 'rejected' });
    assert.equal((await httpGet(`http://127.0.0.1:${gw.port}/readyz`)).status, 200);
    await gw.stop();
  } finally {
    writeFileSync(CODE_CACHE, cache);
  }
});

test('a bundle older than the tsc output is not used, and CLAWGATE_NO_BUNDLE=1 opts out', async () => {
  const st = statSync(BUNDLE);
  const mainMtime = statSync(MAIN).mtime;
  try {
    utimesSync(BUNDLE, st.atime, new Date(mainMtime.getTime() - 60_000));
    const stale = await spawnGateway(['--state-dir', stateDir()], { onSpawn: (p) => procs.push(p) });
    assert.equal(await buildOf(stale), 'modules');
    await stale.stop();
  } finally {
    utimesSync(BUNDLE, st.atime, st.mtime);
  }
  const optOut = await spawnGateway(['--state-dir', stateDir()], { env: { CLAWGATE_NO_BUNDLE: '1' }, onSpawn: (p) => procs.push(p) });
  assert.equal(await buildOf(optOut), 'modules');
  await optOut.stop();
});
