/**
 * `clawgate import openclaw` on the legacy files older OpenClaw releases kept
 * (`devices/paired.json`, `nodes/paired.json`) and the gateway secrets of `openclaw.json`: what
 * is imported, skipped and why, where the secrets go, and that a real `clawgate gateway run`
 * then admits the devices with their OpenClaw tokens and clients with OpenClaw's token/password.
 * (The database format is proven against the real OpenClaw gateway in import-openclaw.test.ts.)
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { removeDir } from './helpers/gateway.js';
import { freePort } from './helpers/net.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) c.kill('SIGTERM');
  for (const d of dirs) removeDir(d);
});
const temp = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};

async function clawgate(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', HOME: temp('clawgate-home-'), ...env }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

test('legacy paired.json files and openclaw.json secrets: imported, skipped with reasons, and honoured by gateway run', async () => {
  const oc = temp('clawgate-oclegacy-');
  const laptop = generateIdentity();
  const node = generateIdentity();
  const revoked = generateIdentity();
  const laptopToken = randomBytes(32).toString('base64url');
  const nodeToken = randomBytes(32).toString('base64url');
  mkdirSync(join(oc, 'devices'));
  mkdirSync(join(oc, 'nodes'));
  const t0 = 1_790_000_000_000;
  writeFileSync(
    join(oc, 'devices', 'paired.json'),
    JSON.stringify({
      [laptop.deviceId]: {
        publicKey: laptop.publicKey,
        displayName: 'laptop',
        platform: 'darwin',
        clientId: 'cli',
        clientMode: 'cli',
        role: 'operator',
        roles: ['operator'],
        scopes: ['operator.read'],
        approvedScopes: ['operator.read'],
        tokens: { operator: { token: laptopToken, role: 'operator', scopes: ['operator.read'], createdAtMs: t0 } },
        approvedVia: 'manual',
        createdAtMs: t0,
        approvedAtMs: t0,
      },
      [node.deviceId]: {
        publicKey: node.publicKey,
        displayName: 'build box',
        role: 'node',
        roles: ['node'],
        tokens: { node: { token: nodeToken, role: 'node', scopes: [], createdAtMs: t0 } },
        createdAtMs: t0,
        approvedAtMs: t0,
      },
      [revoked.deviceId]: {
        publicKey: revoked.publicKey,
        roles: ['operator'],
        approvedScopes: ['operator.read'],
        tokens: { operator: { token: randomBytes(32).toString('base64url'), role: 'operator', scopes: [], createdAtMs: t0, revokedAtMs: t0 + 1 } },
        createdAtMs: t0,
        approvedAtMs: t0,
      },
      ['a'.repeat(64)]: { publicKey: laptop.publicKey, roles: ['operator'], createdAtMs: t0, approvedAtMs: t0 },
      nonsense: 'not an object',
    }),
  );
  writeFileSync(join(oc, 'nodes', 'paired.json'), JSON.stringify({ [node.deviceId]: { caps: ['system'], commands: ['system.run', 'system.which'] } }));
  writeFileSync(
    join(oc, 'openclaw.json'),
    JSON.stringify({ gateway: { auth: { mode: 'token', token: 'oc-shared-token-for-clients', password: 'oc-password' } } }),
  );
  const before = ['devices/paired.json', 'nodes/paired.json', 'openclaw.json'].map((f) => readFileSync(join(oc, f)));

  const target = temp('clawgate-imported-');
  // The source comes from OPENCLAW_STATE_DIR when --from is not given.
  const res = await clawgate(['import', 'openclaw', '--state-dir', target, '--json'], { OPENCLAW_STATE_DIR: oc });
  assert.equal(res.code, 0, res.stderr);
  const report = JSON.parse(res.stdout) as {
    devices: Array<{ deviceId: string; outcome: string; roles: string[]; tokens: string[]; surface: boolean; notes: string[]; from: string }>;
    skipped: Array<{ deviceId: string; reason: string }>;
    token: string;
    password: string;
  };
  const byId = new Map(report.devices.map((d) => [d.deviceId, d]));
  assert.deepEqual(byId.get(laptop.deviceId) && [byId.get(laptop.deviceId)?.outcome, byId.get(laptop.deviceId)?.tokens], ['imported', ['operator']]);
  assert.equal(byId.get(laptop.deviceId)?.from, 'legacy-json');
  assert.deepEqual(byId.get(node.deviceId) && [byId.get(node.deviceId)?.roles, byId.get(node.deviceId)?.surface], [['node'], true]);
  const rev = byId.get(revoked.deviceId);
  assert.deepEqual([rev?.outcome, rev?.roles, rev?.tokens], ['imported', ['operator'], []]);
  assert.ok(rev?.notes.some((n) => n.includes('revoked')));
  assert.deepEqual(
    report.skipped.map((s) => [s.deviceId, s.reason]).sort(),
    [
      ['a'.repeat(64), 'device id does not match its public key'],
      ['nonsense', 'legacy record is not an object'],
    ].sort(),
  );
  assert.deepEqual([report.token, report.password], ['imported', 'imported']);

  // Secrets went where clawgate keeps its own, readable by the owner only; device tokens nowhere in plaintext.
  const credsPath = join(target, 'credentials.json');
  assert.equal(statSync(credsPath).mode & 0o777, 0o600);
  const creds = JSON.parse(readFileSync(credsPath, 'utf8')) as { token: string; password: string; owner: string };
  assert.deepEqual([creds.token, creds.password], ['oc-shared-token-for-clients', 'oc-password']);
  for (const f of ['clawgate.sqlite', 'credentials.json']) {
    const bytes = readFileSync(join(target, f));
    assert.equal(bytes.includes(Buffer.from(laptopToken)), false, `${f} holds no device token`);
    assert.equal(bytes.includes(Buffer.from(nodeToken)), false, `${f} holds no device token`);
  }
  assert.deepEqual(
    ['devices/paired.json', 'nodes/paired.json', 'openclaw.json'].map((f) => readFileSync(join(oc, f))),
    before,
    'the legacy files are untouched',
  );
  assert.equal(existsSync(join(oc, 'devices', 'paired.json.migrated')), false);

  // A real gateway on the imported state: the devices' OpenClaw tokens and OpenClaw's secrets work.
  const port = await freePort();
  const gw = spawn(process.execPath, [BIN, 'gateway', 'run', '--port', String(port), '--state-dir', target], {
    env: { PATH: process.env.PATH ?? '', HOME: temp('clawgate-home-') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(gw);
  let log = '';
  gw.stderr.on('data', (d) => (log += d));
  gw.stdout.on('data', (d) => (log += d));
  const deadline = Date.now() + 60_000;
  while (!log.includes('"gateway started"')) {
    assert.ok(Date.now() < deadline, `gateway did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const url = `ws://127.0.0.1:${port}`;
  const op = await connectGateway({ url, identity: laptop, client: { id: 'cli', mode: 'cli' }, scopes: ['operator.read'], auth: { deviceToken: laptopToken } });
  assert.deepEqual([op.hello.auth.method, op.hello.auth.role, op.hello.auth.scopes], ['device-token', 'operator', ['operator.read']]);
  await op.close();
  const n = await connectGateway({ url, identity: node, role: 'node', client: { id: 'node-host', mode: 'node' }, auth: { deviceToken: nodeToken } });
  assert.equal(n.hello.auth.role, 'node');
  await n.close();
  for (const auth of [{ token: 'oc-shared-token-for-clients' }, { password: 'oc-password' }]) {
    const c = await connectGateway({ url, client: { id: 'test', mode: 'test' }, scopes: ['operator.read'], auth });
    assert.equal(c.hello.auth.role, 'operator');
    await c.close();
  }

  // No OpenClaw state at all: a clear error, nothing written.
  const empty = temp('clawgate-noopenclaw-');
  const none = await clawgate(['import', 'openclaw', '--from', empty, '--state-dir', join(empty, 'cg')]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no OpenClaw state/);
  assert.equal(existsSync(join(empty, 'cg')), false);
});
