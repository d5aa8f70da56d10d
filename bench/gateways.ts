/**
 * The gateways a run measures, each started fresh on a free loopback port with its own state
 * dir and timed from spawn() to its readiness endpoint answering 200:
 *
 * - `clawgate`: `node bin/clawgate.js gateway run` (proc.ts `spawnGateway`);
 * - `openclaw`: the real `openclaw@2026.9.6 gateway run` under Node 24, from
 *   scripts/openclaw-cache.sh, with its own HOME / OPENCLAW_STATE_DIR and auto-update off;
 * - `floor`: bench/floor.ts, the least any gateway must do per connect on this machine.
 *
 * `strict` starts a gateway that pairs nothing silently (approval-latency runs).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pickFreePort, type SpawnedGateway, spawnGateway, spawnReady } from './proc.js';

const GATEWAY_KINDS = ['clawgate', 'openclaw', 'floor'] as const;
export type GatewayKind = (typeof GATEWAY_KINDS)[number];

export interface LaunchOptions {
  root: string;
  /** Extra node flags (clawgate only: profiling). */
  nodeArgs?: string[];
  /** Nothing pairs silently, not even loopback + shared token. */
  strict?: boolean;
  keepStateDir?: boolean;
}

export interface Launcher {
  kind: GatewayKind;
  /** What exactly runs, for the JSON report. */
  describe(): Record<string, unknown>;
  start(opts: LaunchOptions): Promise<SpawnedGateway>;
  /** Whether the gateway has device pairing (approval, revocation). */
  pairing: boolean;
}

export const clawgateLauncher: Launcher = {
  kind: 'clawgate',
  pairing: true,
  describe: () => ({
    command: 'node bin/clawgate.js gateway run --bind loopback --port <free> --state-dir <fresh> --config <gateway.auth.sharedSecretIsAdminOnHost: true>',
    node: process.version,
  }),
  start: (o) =>
    spawnGateway({
      root: o.root,
      nodeArgs: o.nodeArgs,
      keepStateDir: o.keepStateDir,
      // Like for like with OpenClaw, whose token is admin on its own host: the bench's device-less
      // admin sessions (approve, revoke) use the shared token through the documented opt-in.
      config: { gateway: { auth: { sharedSecretIsAdminOnHost: true }, ...(o.strict ? { autoApproveLocal: false } : {}) } },
    }),
};

interface OpenclawPaths {
  node24: string;
  openclaw: string;
}

let openclawPaths: OpenclawPaths | null = null;

/** Install (once, cached) Node 24 + openclaw@2026.9.6 and return their paths. */
function resolveOpenclaw(root: string): OpenclawPaths {
  if (openclawPaths) return openclawPaths;
  const out = execFileSync('bash', [join(root, 'scripts', 'openclaw-cache.sh')], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const node24 = /^NODE24=(.+)$/m.exec(out)?.[1];
  const openclaw = /^OPENCLAW=(.+)$/m.exec(out)?.[1];
  if (!node24 || !openclaw) throw new Error(`scripts/openclaw-cache.sh printed no NODE24=/OPENCLAW= lines:\n${out}`);
  openclawPaths = { node24, openclaw };
  return openclawPaths;
}

const openclawLauncher: Launcher = {
  kind: 'openclaw',
  pairing: true,
  describe: () => ({
    package: 'openclaw@2026.9.6',
    command: 'openclaw gateway run --port <free> --bind loopback --token <random> --allow-unconfigured',
    node: openclawPaths ? execFileSync(openclawPaths.node24, ['--version'], { encoding: 'utf8' }).trim() : null,
    env: 'own HOME and OPENCLAW_STATE_DIR (fresh temp dirs), OPENCLAW_NO_AUTO_UPDATE=1',
    strictConfig: '{gateway:{nodes:{pairing:{autoApproveLocal:false,sshVerify:false}}}} via OPENCLAW_CONFIG_PATH (approval runs only)',
  }),
  async start(o) {
    const { node24, openclaw } = resolveOpenclaw(o.root);
    const port = await pickFreePort();
    const stateDir = mkdtempSync(join(tmpdir(), 'openclaw-bench-'));
    const home = join(stateDir, 'home');
    const ocState = join(stateDir, 'state');
    mkdirSync(home, { recursive: true });
    mkdirSync(ocState, { recursive: true });
    const token = randomBytes(24).toString('hex');
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OPENCLAW_') && !k.startsWith('CLAWGATE_')) env[k] = v;
    Object.assign(env, { HOME: home, OPENCLAW_STATE_DIR: ocState, OPENCLAW_NO_AUTO_UPDATE: '1' });
    if (o.strict) {
      // Gateway "B" of the reference captures: every pairing needs an explicit approval.
      const file = join(stateDir, 'openclaw.json');
      writeFileSync(file, JSON.stringify({ gateway: { nodes: { pairing: { autoApproveLocal: false, sshVerify: false } } } }));
      env.OPENCLAW_CONFIG_PATH = file;
    }
    return spawnReady({
      kind: 'openclaw',
      command: node24,
      args: [openclaw, 'gateway', 'run', '--port', String(port), '--bind', 'loopback', '--token', token, '--allow-unconfigured'],
      env,
      cwd: stateDir,
      port,
      stateDir,
      readyPath: '/readyz',
      keepStateDir: o.keepStateDir,
      readyTimeoutMs: 120_000,
      pollMs: 20,
      token: () => token,
    });
  },
};

export const floorLauncher: Launcher = {
  kind: 'floor',
  pairing: false,
  describe: () => ({
    command: 'node dist/bench/floor.js --port <free> --token <random>',
    does: 'ws server: challenge, one Ed25519 verify, one hash-map lookup (device token or device id), minimal hello-ok',
    node: process.version,
  }),
  async start(o) {
    const port = await pickFreePort();
    const stateDir = mkdtempSync(join(tmpdir(), 'floor-bench-'));
    // Hex: a base64url token may begin with '-', which an argument parser takes for an option.
    const token = randomBytes(24).toString('hex');
    return spawnReady({
      kind: 'floor',
      command: process.execPath,
      args: [join(o.root, 'dist', 'bench', 'floor.js'), '--port', String(port), '--token', token],
      env: { ...process.env },
      cwd: o.root,
      port,
      stateDir,
      readyPath: '/readyz',
      keepStateDir: o.keepStateDir,
      token: () => token,
    });
  },
};

export const LAUNCHERS: Record<GatewayKind, Launcher> = { clawgate: clawgateLauncher, openclaw: openclawLauncher, floor: floorLauncher };
