/**
 * The single-file build of the CLI (scripts/bundle.mjs → dist/clawgate.mjs): `clawgate gateway
 * run` starts from it when it is fresh, the bundled gateway completes a device handshake (signed
 * device, shared token, then its device token) and serves the Control UI assets it finds relative
 * to dist/, and a stale bundle (older than the tsc output) is never used.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { type GatewayProcess, spawnGateway } from './helpers/process.js';
import { waitFor } from './helpers/wait.js';

const ROOT = process.cwd();
const BUNDLE = join(ROOT, 'dist', 'clawgate.mjs');
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

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'clawgate-bundle-'));
  dirs.push(d);
  return d;
}

/** The `build` field of the gateway's "gateway started" log line (stderr may trail the stdout "listening" line). */
function buildOf(gw: GatewayProcess): Promise<string> {
  return waitFor(() => startedBuild(gw), 'the "gateway started" log line');
}

function startedBuild(gw: GatewayProcess): string | undefined {
  for (const line of gw.err().split('\n')) {
    try {
      const rec = JSON.parse(line) as { msg?: string; build?: string };
      if (rec.msg === 'gateway started') return rec.build;
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

test('the build writes one file holding ws and TypeBox (only better-sqlite3 stays a package import)', () => {
  assert.ok(existsSync(BUNDLE));
  const text = readFileSync(BUNDLE, 'utf8');
  const packageImports = [...text.matchAll(/(?:^|[;\n])import\s*[\w${}\s,*]*from\s*"([^"]+)"/g)].map((m) => m[1]).filter((s) => !s?.startsWith('node:'));
  assert.deepEqual([...new Set(packageImports)], ['better-sqlite3']);
  assert.ok(text.includes('WebSocketServer'), 'ws is inside the bundle');
  // The CLI-only verbs stay tsc modules next to it, and resolve from where the bundle lives.
  const lazy = [...new Set([...text.matchAll(/import\("([^"]+)"\)/g)].map((m) => m[1] as string))];
  assert.ok(lazy.length > 0);
  for (const spec of lazy) {
    assert.match(spec, /^\.\/src\/cli\/[a-z-]+\.js$/);
    assert.ok(existsSync(join(ROOT, 'dist', spec)), spec);
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
