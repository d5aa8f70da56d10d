/** Start a real gateway (real socket, real store) for a test, and clean it up afterwards. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway } from '../../src/app.js';
import { DEFAULTS, type GatewayConfig } from '../../src/core/config.js';
import type { Clock } from '../../src/core/env.js';
import type { Gateway } from '../../src/core/gateway.js';
import type { RunningServer } from '../../src/server/server.js';
import { MemoryStore } from '../../src/store/memory.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import type { Store } from '../../src/store/types.js';

export const TEST_TOKEN = 'cgs_test-shared-token';
export const TEST_OWNER = 'cgo_test-owner-credential';

export interface TestGateway {
  gateway: Gateway;
  server: RunningServer;
  url: string;
  stateDir: string;
  store: Store;
  stop(): Promise<void>;
  /** Stop and start again on the same state dir (SQLite only). */
  restart(): Promise<TestGateway>;
}

export interface TestGatewayOptions {
  config?: Partial<GatewayConfig>;
  store?: 'sqlite' | 'memory';
  stateDir?: string;
  clock?: Clock;
  port?: number;
}

export async function startTestGateway(opts: TestGatewayOptions = {}): Promise<TestGateway> {
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'clawgate-test-'));
  const store: Store = opts.store === 'memory' ? new MemoryStore() : new SqliteStore(join(stateDir, 'clawgate.sqlite'));
  const config: GatewayConfig = { ...DEFAULTS, port: opts.port ?? 0, stateDir, token: TEST_TOKEN, ownerCredential: TEST_OWNER, ...opts.config };
  const { gateway, server } = await startGateway({ config, store, host: '127.0.0.1', ...(opts.clock ? { clock: opts.clock } : {}) });
  let stopped = false;
  const tg: TestGateway = {
    gateway,
    server,
    url: server.url,
    stateDir,
    store,
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
