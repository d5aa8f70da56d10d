/** Start a real gateway (real socket, real store) for a test, and clean it up afterwards. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { audienceOf } from '@clawgate/protocol/gateway-proof';
import { startGateway } from '../../src/app.js';
import { ConnectError, ownerProofFor } from '../../src/client/connection.js';
import { DEFAULTS, type GatewayConfig } from '../../src/core/config.js';
import type { Clock } from '../../src/core/env.js';
import type { Gateway } from '../../src/core/gateway.js';
import type { AuthLimiter } from '../../src/core/ratelimit.js';
import type { Store } from '../../src/core/store.js';
import type { RunningServer } from '../../src/server/server.js';
import { SqliteStore } from '../../src/store/sqlite/store.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'clawgate.js');

export const TEST_TOKEN = 'cgs_test-shared-token';
export const TEST_OWNER = 'cgo_test-owner-credential';

export interface TestGateway {
  gateway: Gateway;
  server: RunningServer;
  url: string;
  stateDir: string;
  store: Store;
  /** Fingerprint of the gateway key (what `--gateway-key` / ConnectOptions.gatewayKey take). */
  gatewayKey: string;
  stop(): Promise<void>;
  /** Stop and start again on the same state dir (SQLite only). */
  restart(): Promise<TestGateway>;
}

export interface TestGatewayOptions {
  config?: Partial<GatewayConfig>;
  /** `memory`: SQLite `:memory:` (nothing on disk); default: a SQLite file in the state dir. */
  store?: 'sqlite' | 'memory';
  stateDir?: string;
  clock?: Clock;
  port?: number;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** The failed-authentication limiter (default: the gateway's in-memory one). */
  limiter?: AuthLimiter;
}

export async function startTestGateway(opts: TestGatewayOptions = {}): Promise<TestGateway> {
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'clawgate-test-'));
  const store: Store = opts.store === 'memory' ? new SqliteStore(':memory:') : new SqliteStore(join(stateDir, 'clawgate.sqlite'));
  const config: GatewayConfig = { ...DEFAULTS, port: opts.port ?? 0, stateDir, token: TEST_TOKEN, ownerCredential: TEST_OWNER, ...opts.config };
  // The CLI on "the gateway host" finds the owner credential (and the gateway key) in the state dir.
  const credsPath = join(stateDir, 'credentials.json');
  if (!existsSync(credsPath) && config.ownerCredential) {
    const creds = { version: 1, token: config.token ?? TEST_TOKEN, owner: config.ownerCredential, createdAtMs: 0 };
    writeFileSync(credsPath, JSON.stringify(creds), { mode: 0o600 });
  }
  const { gateway, server } = await startGateway({
    config,
    store,
    host: opts.host ?? '127.0.0.1',
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...(opts.limiter ? { limiter: opts.limiter } : {}),
  });
  let stopped = false;
  const tg: TestGateway = {
    gateway,
    server,
    url: server.url,
    stateDir,
    store,
    gatewayKey: gateway.identity?.fingerprint ?? '',
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.close();
    },
    async restart() {
      await tg.stop();
      return startTestGateway({ ...opts, stateDir, port: server.port });
    },
  };
  return tg;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Run the `clawgate` CLI against a test gateway with the owner credential. */
/** Run the real CLI process with `args` and extra environment; a non-zero exit comes back as `code`, never a throw. */
export async function runClawgate(args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    return { stdout: r.stdout, stderr: r.stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout: string; stderr: string; code: number };
    return { stdout: e.stdout, stderr: e.stderr, code: e.code };
  }
}

/** The CLI against a test gateway, as its owner (proven from the state dir's credentials file, never sent). */
export function cli(tg: TestGateway, ...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return runClawgate([...args, '--url', tg.url], { CLAWGATE_STATE_DIR: tg.stateDir });
}

/** `auth` for a raw connect as the owner of `tg`: the proof for this challenge (the credential stays here). */
export function ownerAuth(
  challenge: { nonce: string; gateway?: { publicKey: string } },
  url: string,
  owner = TEST_OWNER,
): { ownerProof: string; ownerAudience: string } {
  const audience = audienceOf(url) ?? '';
  return { ownerProof: ownerProofFor(owner, challenge.nonce, challenge.gateway?.publicKey ?? '', audience), ownerAudience: audience };
}

/** connectGateway options for the owner of a test gateway: the proof, for its verified key. */
export function asOwner(tg: { gatewayKey: string }): { owner: string; gatewayKey: string } {
  return { owner: TEST_OWNER, gatewayKey: tg.gatewayKey };
}

/** Run the CLI and parse its `--json` output; a failed command fails the test with its stderr. */
export async function cliJson<T = unknown>(tg: TestGateway, ...args: string[]): Promise<T> {
  const r = await cli(tg, ...args);
  assert.equal(r.code, 0, `clawgate ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** Expect a connect to be refused with this `details.code` (always followed by close 1008 or another documented code). */
export async function expectRefused(p: Promise<unknown>, detail: string): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected ConnectError, got ${err}`);
    assert.equal(err.detailCode, detail, `detail code (message: ${err.message})`);
    return err;
  }
  assert.fail(`expected the connect to be refused with ${detail}`);
}
