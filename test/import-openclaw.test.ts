/**
 * Switching from a real OpenClaw gateway (openclaw@2026.9.6) to clawgate without re-pairing:
 * the real gateway pairs the real CLI (silently, as it does for the local CLI when it runs with a
 * runtime token) and a real `openclaw node run` (through a setup code the CLI minted); it is
 * stopped, `clawgate import openclaw` takes over its state dir, clawgate starts on the same
 * port, and both come back with the tokens OpenClaw gave them — a call by the CLI, an invoke on
 * the node, no approval. Then a rotation of the node's token by an operator must not strand the
 * real node host, which ignores the pushed `device.token.rotated` (the rotation grace).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { promisify } from 'node:util';
import { openSnapshot } from '../src/cli/sqlite-snapshot.js';
import { ConnectError, connectGateway, identityFromJson } from '../src/client/connection.js';
import { SqliteStore } from '../src/store/sqlite/store.js';
import { removeDir } from './helpers/gateway.js';
import { freePort } from './helpers/net.js';
import { openclawEnv, openclawPaths } from './helpers/openclaw.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const oc = openclawPaths();
const dirs: string[] = [];
const children: ChildProcess[] = [];

after(async () => {
  for (const c of children) await stop(c);
  for (const d of dirs) removeDir(d);
});

function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A long-running child in its own process group, its output collected for failure messages. */
function start(cmd: string, args: string[], env: Record<string, string>) {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.push(child);
  let log = '';
  child.stdout?.on('data', (d) => (log += d));
  child.stderr?.on('data', (d) => (log += d));
  return { child, log: () => log };
}

/** SIGTERM the child's process group (OpenClaw's gateway has helpers of its own), SIGKILL if it lingers. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    process.kill(-child.pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {}
  }, 60_000);
  await exited;
  clearTimeout(timer);
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, log: () => string, ms = 180_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; output:\n${log().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The JSON a command printed (after any banner). */
function lastJson<T>(stdout: string): T {
  const at = stdout.search(/^[{[]/m);
  assert.ok(at >= 0, `no JSON in output:\n${stdout}`);
  return JSON.parse(stdout.slice(at)) as T;
}

async function openclaw<T>(home: string, port: number, args: string[]): Promise<T> {
  try {
    const r = await run(oc.node, [oc.cli, ...args, '--json'], { env: openclawEnv(home, { OPENCLAW_GATEWAY_PORT: String(port) }), timeout: 120_000 });
    return lastJson<T>(r.stdout);
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`openclaw ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

async function clawgate(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', HOME: tempDir('clawgate-home-') }, timeout: 120_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** SHA-256 of every file under `dir`, by relative path. */
function fingerprint(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const st = statSync(join(dir, r));
      if (st.isDirectory()) walk(r);
      else if (st.isFile())
        out[r] = createHash('sha256')
          .update(readFileSync(join(dir, r)))
          .digest('hex');
    }
  };
  walk('');
  return out;
}

interface ImportJson {
  ok: boolean;
  dryRun: boolean;
  devices: Array<{ deviceId: string; outcome: string; roles: string[]; tokens: string[]; surface: boolean; notes: string[] }>;
  skipped: unknown[];
  error?: string;
}

interface NodeList {
  nodes: Array<{ nodeId: string; displayName?: string; connected: boolean; connectedAtMs: number | null }>;
}

test('switch from a real OpenClaw gateway: the paired CLI and node host reconnect to clawgate with no approval; rotation never strands the node', async () => {
  const ocHome = tempDir('clawgate-ocgw-');
  const nodeHome = tempDir('clawgate-ocnode-');
  const ocState = join(ocHome, 'state');
  const port = await freePort();
  const url = `ws://127.0.0.1:${port}`;

  // 1. The real OpenClaw gateway, no token configured: it generates one for this run and pairs the
  //    local CLI (same state dir) before it is ready.
  const gw = start(oc.node, [oc.cli, 'gateway', 'run', '--allow-unconfigured', '--port', String(port), '--bind', 'loopback'], openclawEnv(ocHome));
  await waitFor(() => /\] ready\b/.test(gw.log()), 'the OpenClaw gateway to be ready', gw.log);
  const listed = await openclaw<{ paired: Array<{ deviceId: string; clientId: string; scopes: string[] }> }>(ocHome, port, ['devices', 'list']);
  const cliDevice = listed.paired.find((d) => d.clientId === 'cli');
  assert.ok(cliDevice, `the CLI is paired with the OpenClaw gateway: ${JSON.stringify(listed)}`);

  // 2. A node host paired through a setup code the CLI minted.
  const minted = await openclaw<{ setupCode: string }>(ocHome, port, [
    'gateway',
    'call',
    'device.pair.setupCode',
    '--params',
    JSON.stringify({ bootstrapProfile: 'node', publicUrl: url }),
  ]);
  const nodeArgs = [oc.cli, 'node', 'run', '--host', '127.0.0.1', '--port', String(port), '--no-tls', '--display-name', 'oc-import-node'];
  const node = start(oc.node, [...nodeArgs, '--pair', minted.setupCode], openclawEnv(nodeHome));
  const ocDb = join(ocState, 'state', 'openclaw.sqlite');
  const pairedNode = () => {
    // Read through the in-memory snapshot: polling must not touch the files under test either.
    const db = openSnapshot(ocDb);
    try {
      return db.prepare("SELECT device_id, tokens_json FROM device_pairing_paired WHERE role = 'node' AND node_surface_json IS NOT NULL").get() as
        | { device_id: string; tokens_json: string }
        | undefined;
    } finally {
      db.close();
    }
  };
  await waitFor(() => pairedNode() !== undefined, 'the node host to be paired with its surface approved', node.log);
  const nodeRow = pairedNode() as { device_id: string; tokens_json: string };
  const nodeId = nodeRow.device_id;
  const originalNodeToken = (JSON.parse(nodeRow.tokens_json) as { node: { token: string } }).node.token;

  // 3. OpenClaw stops (the node host keeps running and keeps trying to reconnect).
  await stop(gw.child);
  const before = fingerprint(ocState);
  assert.ok(Object.keys(before).some((f) => f.endsWith('openclaw.sqlite')));

  const target = tempDir('clawgate-import-');
  const from = ['--from', ocState, '--state-dir', target, '--json'];

  // --dry-run reports everything and writes nothing.
  const dry = await clawgate(['import', 'openclaw', ...from, '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  const dryReport = lastJson<ImportJson>(dry.stdout);
  assert.equal(dryReport.dryRun, true);
  assert.deepEqual(
    dryReport.devices.map((d) => [d.deviceId, d.outcome, d.tokens]).sort(),
    [
      [cliDevice.deviceId, 'imported', ['operator']],
      [nodeId, 'imported', ['node']],
    ].sort(),
  );
  assert.equal(existsSync(join(target, 'clawgate.sqlite')), false, 'a dry run creates no state');

  // A clawgate state holding a device of its own is refused without --merge, and left as it was.
  const busy = tempDir('clawgate-busy-');
  const busyStore = new SqliteStore(join(busy, 'clawgate.sqlite'));
  await busyStore.approve({
    device: { deviceId: 'f'.repeat(64), publicKey: 'k', meta: {} },
    role: 'operator',
    scopes: ['operator.read'],
    via: 'manual',
    token: null,
    atMs: 1,
    audit: { atMs: 1, actor: 'owner', action: 'device.approved' },
  });
  await busyStore.close();
  const refused = await clawgate(['import', 'openclaw', '--from', ocState, '--state-dir', busy, '--json']);
  assert.equal(refused.code, 1);
  assert.equal(lastJson<ImportJson>(refused.stdout).error, 'not-empty');
  const busyAfter = new SqliteStore(join(busy, 'clawgate.sqlite'));
  assert.equal((await busyAfter.listDevices()).length, 1);
  await busyAfter.close();

  // The import, then a second one: a no-op.
  const first = await clawgate(['import', 'openclaw', ...from]);
  assert.equal(first.code, 0, first.stderr);
  const firstReport = lastJson<ImportJson>(first.stdout);
  const nodeReport = firstReport.devices.find((d) => d.deviceId === nodeId);
  assert.deepEqual(nodeReport && [nodeReport.outcome, nodeReport.roles, nodeReport.tokens, nodeReport.surface], ['imported', ['node'], ['node'], true]);
  const second = await clawgate(['import', 'openclaw', ...from]);
  assert.equal(second.code, 0, second.stderr);
  assert.deepEqual(
    lastJson<ImportJson>(second.stdout).devices.map((d) => d.outcome),
    ['unchanged', 'unchanged'],
  );
  assert.deepEqual(fingerprint(ocState), before, 'the OpenClaw files are byte-identical after dry run, refusal and two imports');

  // No plaintext token in clawgate's state: only hashes.
  const store = new SqliteStore(join(target, 'clawgate.sqlite'));
  assert.equal(readFileSync(join(target, 'clawgate.sqlite')).includes(Buffer.from(originalNodeToken)), false);
  assert.deepEqual((await store.getGrant(cliDevice.deviceId, 'operator'))?.scopes, ['operator.admin', 'operator.read', 'operator.write']);
  const auditBefore = (await store.listAudit()).length;
  await store.close();

  // 4. clawgate on the same port.
  const cg = start(process.execPath, [BIN, 'gateway', 'run', '--port', String(port), '--state-dir', target], {
    PATH: process.env.PATH ?? '',
    HOME: tempDir('clawgate-home-'),
  });
  await waitFor(() => cg.log().includes('"gateway started"'), 'clawgate to start', cg.log);
  const nodes = async () => lastJson<NodeList>((await clawgate(['nodes', 'list', '--state-dir', target, '--json'])).stdout).nodes;
  await waitFor(
    async () => (await nodes()).some((n) => n.nodeId === nodeId && n.connected),
    'the node host to reconnect to clawgate',
    () => node.log() + cg.log(),
  );

  // The CLI, with the device token OpenClaw gave it, and an invoke through it on the node.
  // (The CLI asks for operator.pairing only, so clawgate shows it its own device; the owner sees both.)
  const viaCli = await openclaw<{ pending: unknown[]; paired: Array<{ deviceId: string }> }>(ocHome, port, ['devices', 'list']);
  assert.deepEqual(
    viaCli.paired.map((d) => d.deviceId),
    [cliDevice.deviceId],
  );
  const viaOwner = lastJson<{ pending: unknown[]; paired: Array<{ deviceId: string }> }>(
    (await clawgate(['devices', 'list', '--state-dir', target, '--json'])).stdout,
  );
  assert.deepEqual(viaOwner.paired.map((d) => d.deviceId).sort(), [cliDevice.deviceId, nodeId].sort());
  assert.deepEqual(viaOwner.pending, [], 'nobody had to be approved');
  const invoked = await openclaw<{ ok: boolean; payload: { bins: Record<string, string> } }>(ocHome, port, [
    'nodes',
    'invoke',
    '--node',
    'oc-import-node',
    '--command',
    'system.which',
    '--params',
    JSON.stringify({ bins: ['sh'] }),
  ]);
  assert.equal(invoked.ok, true);
  assert.ok(invoked.payload.bins.sh, `system.which found sh: ${JSON.stringify(invoked)}`);

  // 5. An operator rotates the node's token while it is connected. The real node host ignores the
  //    pushed token and comes back with the old one: within the grace it is let in once and given
  //    the successor in hello-ok, which it stores.
  const connectedBefore = (await nodes()).find((n) => n.nodeId === nodeId)?.connectedAtMs ?? 0;
  const rotated = await clawgate(['devices', 'rotate', '--device', nodeId, '--role', 'node', '--state-dir', target, '--json']);
  assert.equal(rotated.code, 0, rotated.stderr);
  assert.equal(lastJson<{ tokenDelivery: string }>(rotated.stdout).tokenDelivery, 'pushed-live');
  await waitFor(
    async () => (await nodes()).some((n) => n.nodeId === nodeId && n.connected && (n.connectedAtMs ?? 0) > connectedBefore),
    'the node host to reconnect after the rotation',
    () => node.log() + cg.log(),
  );
  const again = await openclaw<{ ok: boolean }>(ocHome, port, [
    'nodes',
    'invoke',
    '--node',
    'oc-import-node',
    '--command',
    'system.which',
    '--params',
    JSON.stringify({ bins: ['sh'] }),
  ]);
  assert.equal(again.ok, true);

  // The node host now holds a clawgate token, and the token OpenClaw gave it is dead.
  const nodeDb = openSnapshot(join(nodeHome, 'state', 'state', 'openclaw.sqlite'));
  let identityPem: string;
  try {
    const stored = nodeDb.prepare("SELECT token FROM device_auth_tokens WHERE role = 'node'").get() as { token: string };
    assert.match(stored.token, /^cgd1_/);
    identityPem = (nodeDb.prepare('SELECT private_key_pem FROM device_identities LIMIT 1').get() as { private_key_pem: string }).private_key_pem;
  } finally {
    nodeDb.close();
  }
  const identity = identityFromJson({ privateKeyPem: identityPem });
  assert.equal(identity.deviceId, nodeId);
  await assert.rejects(
    connectGateway({ url, identity, role: 'node', client: { id: 'node-host', mode: 'node' }, auth: { deviceToken: originalNodeToken }, timeoutMs: 10_000 }),
    (err: unknown) => err instanceof ConnectError && err.detailCode === 'AUTH_DEVICE_TOKEN_MISMATCH',
  );
  const audit = new SqliteStore(join(target, 'clawgate.sqlite'));
  const entries = (await audit.listAudit()).slice(auditBefore);
  await audit.close();
  assert.equal(entries.filter((e) => e.action === 'token.issued' && (e.data as { via?: string } | undefined)?.via === 'rotation-grace').length, 1);
});
