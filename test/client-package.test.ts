/**
 * @clawgate/client as a package: `npm pack` of packages/client gives a tarball that installs into
 * an empty project without fetching any package of ours (the protocol modules it needs travel
 * inside it), where a TypeScript consumer type-checks against the shipped declarations, runs in
 * Node and pairs with a real gateway, and the browser entry loads in Chromium as plain ES
 * modules, without a bundler.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { mintCode } from './helpers/client.js';
import { removeDir, startTestGateway, type TestGateway } from './helpers/gateway.js';

const run = promisify(execFile);
const repo = process.cwd();
const sdkDir = join(repo, 'packages', 'client');
const tsc = join(repo, 'node_modules', '.bin', 'tsc');
const CHROMIUM = process.env.CLAWGATE_CHROMIUM ?? '/usr/bin/chromium';

let work: string;
let consumer: string;
let installed: string;
let tarball: string;
let packedFiles: string[];

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string, prefix = ''): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p, `${prefix}${name}/`) : [`${prefix}${name}`];
  });
}

before(async () => {
  assert.ok(existsSync(join(sdkDir, 'dist', 'index.js')), 'the SDK is not built: run `npm run build` first');
  work = mkdtempSync(join(tmpdir(), 'clawgate-sdk-pack-'));
  const packed = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: sdkDir });
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  assert.ok(info);
  tarball = join(work, info.filename);
  packedFiles = info.files.map((f) => f.path);
  consumer = join(work, 'consumer');
  mkdirSync(consumer);
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'sdk-consumer', private: true, type: 'module' }));
  // --offline: nothing comes from a registry. Our own packages are all inside the SDK's tarball;
  // its two third-party dependencies are packed from this checkout's node_modules, as a mirror would serve them.
  const thirdParty: string[] = [];
  for (const dep of ['ws', '@sinclair/typebox']) {
    const p = await run('npm', ['pack', '--json', '--pack-destination', work, join(repo, 'node_modules', dep)], { cwd: work });
    thirdParty.push(join(work, (JSON.parse(p.stdout) as Array<{ filename: string }>)[0]?.filename as string));
  }
  await run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball, ...thirdParty], { cwd: consumer });
  installed = join(consumer, 'node_modules', '@clawgate', 'client');
});

after(() => {
  if (work) removeDir(work);
});

test('the tarball holds the built entry points, their declarations and the protocol modules they import, and no source', () => {
  for (const f of [
    'dist/index.js',
    'dist/index.d.ts',
    'dist/node.js',
    'dist/node.d.ts',
    'dist/browser.js',
    'dist/browser.d.ts',
    'dist/protocol/setup-code.js',
  ]) {
    assert.ok(packedFiles.includes(f), `${f} is missing from ${packedFiles.join(', ')}`);
  }
  assert.deepEqual(
    packedFiles.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')),
    [],
    'TypeScript sources are not shipped',
  );
  const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  assert.deepEqual(
    Object.keys(manifest.dependencies ?? {}).filter((d) => d.startsWith('@clawgate/')),
    [],
    'no dependency on a package of ours that a registry would have to serve',
  );
  assert.equal(existsSync(join(consumer, 'node_modules', '@clawgate', 'protocol')), false);
  const byName = filesUnder(join(installed, 'dist')).filter((f) => readFileSync(join(installed, 'dist', f), 'utf8').includes('@clawgate/protocol'));
  assert.deepEqual(byName, [], 'every import of the protocol points inside the package');
});

test('a TypeScript consumer type-checks against the shipped declarations, and a wrong call does not', async () => {
  const compilerOptions = {
    strict: true,
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    outDir: 'out',
    types: ['node'],
    typeRoots: [join(repo, 'node_modules', '@types')],
  };
  writeFileSync(
    join(consumer, 'consumer.ts'),
    [
      "import { type ClientState, FileCredentialStore, GatewayClient, decodeSetupCode, nodePlatform, pairWithSetupCode } from '@clawgate/client';",
      'const [code, dir] = process.argv.slice(2) as [string, string];',
      'const decoded = decodeSetupCode(code);',
      'if (!decoded.ok) throw new Error(decoded.problem);',
      'const client: GatewayClient = await pairWithSetupCode(new FileCredentialStore(dir), nodePlatform(), code, { displayName: "consumer" });',
      "const health = await client.request<{ ok: boolean }>('health', {});",
      'const state: ClientState = client.state;',
      'console.log(JSON.stringify({ url: decoded.payload.url, status: state.status, healthOk: health.ok }));',
      'client.close();',
      '',
    ].join('\n'),
  );
  writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['consumer.ts'] }));
  await run(tsc, ['-p', 'tsconfig.json'], { cwd: consumer }).catch((err: { stdout?: string }) => assert.fail(`tsc rejected the consumer:\n${err.stdout}`));
  assert.ok(existsSync(join(consumer, 'out', 'consumer.js')));

  // The declarations are real types, not `any`: a call with the wrong shape is a compile error.
  writeFileSync(join(consumer, 'wrong.ts'), "import { GatewayClient } from '@clawgate/client';\nnew GatewayClient({ url: 42 });\n");
  writeFileSync(join(consumer, 'tsconfig.wrong.json'), JSON.stringify({ compilerOptions: { ...compilerOptions, noEmit: true }, files: ['wrong.ts'] }));
  const wrong = await run(tsc, ['-p', 'tsconfig.wrong.json'], { cwd: consumer }).then(
    () => null,
    (err: { stdout?: string }) => err.stdout ?? '',
  );
  assert.ok(wrong !== null, 'tsc accepted a GatewayClient built with a numeric url');
  assert.match(wrong, /wrong\.ts/);
});

test('the installed SDK pairs with a real gateway from Node and makes a call', async (t) => {
  const tg: TestGateway = await startTestGateway();
  t.after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });
  const out = join(consumer, 'out', 'consumer.js');
  assert.ok(existsSync(out), 'the type-check test compiles the consumer first');
  const code = await mintCode(tg, { profile: 'operator' });
  const store = join(work, 'store');
  const r = await run(process.execPath, [out, code.setupCode, store], { cwd: consumer });
  const res = JSON.parse(r.stdout) as { url: string; status: string; healthOk: boolean };
  assert.equal(res.status, 'connected');
  assert.equal(res.healthOk, true);
  assert.equal(res.url, code.gatewayUrl);
  assert.ok(readdirSync(join(store, 'gateways')).length > 0, 'the device token is stored');
});

test('the installed browser entry loads in Chromium as plain ES modules and decodes a setup code', async (t) => {
  const dist = join(installed, 'dist');
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>installed sdk</title>');
      return;
    }
    const file = normalize(join(dist, path));
    if (!file.startsWith(`${dist}/`) || !file.endsWith('.js') || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((r) => server.close(r)));
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  const tg = await startTestGateway();
  t.after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });
  const code = await mintCode(tg, { profile: 'operator' });
  const seen = await page.evaluate(async (setupCode) => {
    const sdk = await import('/browser.js' as string);
    return {
      client: typeof sdk.GatewayClient,
      store: typeof sdk.IndexedDbCredentialStore,
      url: sdk.decodeSetupCode(setupCode).payload?.url as string,
    };
  }, code.setupCode);
  assert.deepEqual(seen, { client: 'function', store: 'function', url: code.gatewayUrl });
  assert.deepEqual(pageErrors, []);
});
