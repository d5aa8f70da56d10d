/**
 * Proofs that say which machine a node is, from a real second network: a network namespace
 * (veth, its own address) running a real `sshd` and real `clawgate node run` processes, so the
 * gateway sees a non-loopback peer and connects back to it with the system `ssh`.
 * - `ssh`: the node host's identity over SSH matches → approved by the rule, the waiting node
 *   admitted live; another identity, an unreachable port or an unknown host key → the request
 *   stays pending for a person (and the failed proof is audited);
 * - `address`: a first-time scopeless node from the CIDR is approved at once; an operator
 *   request from the same address is not.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { parseApprovalsConfig } from '../src/core/approval-policy.js';
import { systemRandom } from '../src/core/env.js';
import { NodeState } from '../src/node-host/state.js';
import { ownerCall } from './helpers/client.js';
import { cli, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { createVethNetns } from './helpers/netns.js';
import { skipUnlessPresent } from './helpers/strict.js';
import { waitFor } from './helpers/wait.js';

const BIN = join(process.cwd(), 'bin', 'clawgate.js');
const execFileAsync = promisify(execFile);
const SSHD = '/usr/sbin/sshd';
const SSH_PORT = 2222;
const STEP_MS = 30_000;

function sh(file: string, ...args: string[]): string {
  return execFileSync(file, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

interface Net {
  tag: string;
  hostAddr: string;
  nodeAddr: string;
  destroy(): void;
}

/** A namespace whose only link is a veth to this host: 10.79.N.1 (host) ↔ 10.79.N.2 (namespace). */
function createNet(): Net {
  const ns = createVethNetns(`cgap${process.pid % 100_000}`, 79);
  return { tag: ns.tag, hostAddr: ns.hostAddr, nodeAddr: ns.remoteAddr, destroy: ns.destroy };
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function keygen(path: string): string {
  sh('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'clawgate-test', '-f', path);
  return readFileSync(`${path}.pub`, 'utf8').trim();
}

class Proc {
  out = '';
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d) => (this.out += d));
    child.stderr?.on('data', (d) => (this.out += d));
  }
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await gone;
  }
}

interface AuditEntry {
  actor: string;
  action: string;
  subject?: string;
  data?: Record<string, unknown>;
}

const usable =
  process.getuid?.() === 0 &&
  (() => {
    try {
      sh('ip', '-V');
      sh(SSHD, '-V');
      return true;
    } catch {
      return false;
    }
  })();

const MISSING = usable ? null : 'needs root, ip and openssh-server (scripts/system-deps.sh)';

describe('ssh and address proofs from a network namespace with a real sshd', { skip: skipUnlessPresent(MISSING) }, () => {
  let net: Net;
  let sshd: Proc;
  let dir: string;
  let sshCfg: { user: string; knownHostsFile: string; identityFile: string; port: number };
  const procs: Proc[] = [];
  const gateways: TestGateway[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'clawgate-approvals-ssh-'));
    net = createNet();
    const hostPub = keygen(join(dir, 'host_key'));
    const clientPub = keygen(join(dir, 'client_key'));
    writeFileSync(join(dir, 'authorized_keys'), `${clientPub}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'known_hosts'), `[${net.nodeAddr}]:${SSH_PORT} ${hostPub.split(' ').slice(0, 2).join(' ')}\n`);
    const otherPub = keygen(join(dir, 'other_host_key'));
    writeFileSync(join(dir, 'known_hosts_wrong'), `[${net.nodeAddr}]:${SSH_PORT} ${otherPub.split(' ').slice(0, 2).join(' ')}\n`);
    writeFileSync(
      join(dir, 'sshd_config'),
      [
        `ListenAddress ${net.nodeAddr}`,
        `Port ${SSH_PORT}`,
        `HostKey ${join(dir, 'host_key')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin prohibit-password',
        'StrictModes no',
        'UsePAM no',
        '',
      ].join('\n'),
    );
    // sshd's privilege separation directory (the packaged service makes it at boot).
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    sshd = new Proc(spawn('ip', ['netns', 'exec', net.tag, SSHD, '-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'pipe', 'pipe'] }));
    procs.push(sshd);
    await waitFor(() => portOpen(net.nodeAddr, SSH_PORT), 'sshd listening in the namespace', { detail: () => sshd.out });
    sshCfg = { user: 'root', knownHostsFile: join(dir, 'known_hosts'), identityFile: join(dir, 'client_key'), port: SSH_PORT };
    writeFileSync(join(dir, 'token'), `${TEST_TOKEN}\n`, { mode: 0o600 });
  });

  after(async () => {
    for (const p of procs.reverse()) await p.stop();
    for (const g of gateways) {
      await g.stop();
      removeDir(g.stateDir);
    }
    net?.destroy();
    if (dir) removeDir(dir);
  });

  /** A node state dir with its identity made (what `clawgate node identity` reads). */
  function nodeState(label: string): { dir: string; deviceId: string; publicKey: string } {
    const d = join(dir, label);
    const { identity } = NodeState.open(d).loadOrCreateIdentity(systemRandom);
    return { dir: d, deviceId: identity.deviceId, publicKey: identity.publicKey };
  }

  async function gatewayWith(approvals: unknown): Promise<TestGateway> {
    const tg = await startTestGateway({ host: net.hostAddr, config: { autoApproveLocal: false, approvals: parseApprovalsConfig(approvals) } });
    gateways.push(tg);
    return tg;
  }

  /** `clawgate node run` inside the namespace (the gateway sees 10.79.N.2), with the gateway token. */
  function runNode(tg: TestGateway, stateDir: string): Proc {
    const p = new Proc(
      spawn(
        'ip',
        [
          'netns',
          'exec',
          net.tag,
          process.execPath,
          BIN,
          'node',
          'run',
          '--url',
          `ws://${net.hostAddr}:${tg.server.port}`,
          '--token-file',
          join(dir, 'token'),
          '--state-dir',
          stateDir,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CLAWGATE_NODE_TOKEN: '' } },
      ),
    );
    procs.push(p);
    return p;
  }

  const identityCommand = (stateDir: string) => `${process.execPath} ${BIN} node identity --json --state-dir ${stateDir}`;

  async function devices(tg: TestGateway) {
    return ownerCall<{
      pending: Array<{ requestId: string; deviceId: string; role: string; remoteIp: string }>;
      paired: Array<{ deviceId: string; connected: boolean; grants: Array<{ role: string; approvedBy: string | null }> }>;
    }>(tg, 'device.pair.list');
  }
  async function audit(tg: TestGateway, action: string, deviceId: string): Promise<AuditEntry[]> {
    const r = await ownerCall<{ entries: AuditEntry[] }>(tg, 'audit.list', { limit: 10_000 });
    return r.entries.filter((e) => e.action === action && e.subject === deviceId);
  }

  test('clawgate node identity prints the device id and public key of the node state dir (and never creates one)', async () => {
    const node = nodeState('identity-cmd');
    const out = JSON.parse(sh(process.execPath, BIN, 'node', 'identity', '--json', '--state-dir', node.dir));
    assert.deepEqual(out, { deviceId: node.deviceId, publicKey: node.publicKey });
    assert.throws(() => sh(process.execPath, BIN, 'node', 'identity', '--json', '--state-dir', join(dir, 'none-here')), /no node identity/);
  });

  test('ssh proof: the node host answers with exactly this identity → approved by the rule, the waiting node admitted live', async () => {
    const node = nodeState('node-ssh-ok');
    const tg = await gatewayWith({
      policies: [{ name: 'homelab-nodes', match: { proof: 'ssh', role: 'node' }, action: 'approve' }],
      ssh: { ...sshCfg, command: identityCommand(node.dir) },
    });
    const p = runNode(tg, node.dir);
    const paired = await waitFor(
      async () => (await devices(tg)).paired.find((d) => d.deviceId === node.deviceId && d.connected),
      'the node approved over SSH and connected',
      { timeoutMs: STEP_MS, detail: () => p.out },
    );
    assert.equal(paired.grants.find((g) => g.role === 'node')?.approvedBy, 'rule:homelab-nodes');
    const [approved] = await audit(tg, 'pairing.approved', node.deviceId);
    assert.equal(approved?.actor, 'rule:homelab-nodes');
    assert.equal(approved?.data?.proof, 'ssh');
    assert.deepEqual(approved?.data?.evidence, { host: net.nodeAddr, sshUser: 'root' });
    // The node never reconnected for it: the socket that waited is the one admitted.
    assert.equal((await audit(tg, 'pairing.requested', node.deviceId)).length, 1);
  });

  for (const [label, tweak, why] of [
    ['another identity on the host', (other: string) => ({ command: identityCommand(other) }), /another device identity/],
    ['the host unreachable (nothing on the port)', () => ({ port: SSH_PORT + 1 }), /ssh to .* failed/],
    ['a host key that is not the known one', () => ({ knownHostsFile: join(dir, 'known_hosts_wrong') }), /ssh to .* failed/],
  ] as const) {
    test(`ssh proof with ${label}: the request stays pending for a person, the failed proof is audited`, async () => {
      const node = nodeState(`node-${label.replace(/\W+/g, '-')}`);
      const other = nodeState(`other-${label.replace(/\W+/g, '-')}`);
      const tg = await gatewayWith({
        policies: [{ name: 'homelab-nodes', match: { proof: 'ssh', role: 'node' }, action: 'approve' }],
        ssh: { ...sshCfg, command: identityCommand(node.dir), ...tweak(other.dir) },
      });
      const p = runNode(tg, node.dir);
      const failed = await waitFor(async () => (await audit(tg, 'pairing.proof-failed', node.deviceId))[0], 'the failed proof in the audit log', {
        timeoutMs: STEP_MS,
        detail: () => p.out,
      });
      assert.equal(failed.data?.rule, 'homelab-nodes');
      assert.match(String(failed.data?.reason), why);
      const list = await devices(tg);
      const pending = list.pending.find((r) => r.deviceId === node.deviceId);
      assert.ok(pending, 'still pending');
      assert.equal(pending.remoteIp, net.nodeAddr);
      assert.equal(
        list.paired.some((d) => d.deviceId === node.deviceId),
        false,
      );
      // Falls through to the normal flow: a person approves it and the waiting node gets in.
      const r = await cli(tg, 'devices', 'approve', pending.requestId);
      assert.equal(r.code, 0, r.stderr);
      const paired = await waitFor(async () => (await devices(tg)).paired.find((d) => d.deviceId === node.deviceId && d.connected), 'the node admitted', {
        timeoutMs: STEP_MS,
      });
      assert.equal(paired.grants[0]?.approvedBy, 'owner');
    });
  }

  test('address proof: a first-time node from the CIDR is approved at once; an operator from the same address is not', async () => {
    const node = nodeState('node-address');
    const tg = await gatewayWith({
      policies: [{ name: 'lan-nodes', match: { proof: 'address', cidrs: [`${net.nodeAddr}/32`], role: 'node' }, action: 'approve', ttl: '12h' }],
    });
    const p = runNode(tg, node.dir);
    const paired = await waitFor(
      async () => (await devices(tg)).paired.find((d) => d.deviceId === node.deviceId && d.connected),
      'the node approved by address',
      {
        timeoutMs: STEP_MS,
        detail: () => p.out,
      },
    );
    assert.equal(paired.grants[0]?.approvedBy, 'rule:lan-nodes');
    const [approved] = await audit(tg, 'pairing.approved', node.deviceId);
    assert.equal(approved?.data?.proof, 'address');
    assert.deepEqual(approved?.data?.evidence, { address: net.nodeAddr });
    assert.equal(typeof approved?.data?.expiresAtMs, 'number', 'the rule ttl bounds the grant');
    // An operator device from the very same address: a normal pending request.
    // Asynchronously: the gateway answering it runs in this process.
    const client = await execFileAsync('ip', [
      'netns',
      'exec',
      net.tag,
      process.execPath,
      join(process.cwd(), 'dist', 'test', 'helpers', 'netns-client.js'),
      JSON.stringify({ url: `ws://${net.hostAddr}:${tg.server.port}`, token: TEST_TOKEN }),
    ]);
    const out = JSON.parse(client.stdout) as { ok: boolean; detail: string | null; deviceId: string };
    assert.equal(out.ok, false);
    assert.equal(out.detail, 'PAIRING_REQUIRED');
    assert.ok((await devices(tg)).pending.some((r) => r.deviceId === out.deviceId));
  });
});
