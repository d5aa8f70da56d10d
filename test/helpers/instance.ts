/**
 * A clawgate instance as a real child process (`clawgate gateway run --store postgres`), so a
 * test can run several against one database and SIGKILL one of them.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gatewayIdentityFromPem, generateGatewayKeyPem } from '../../src/core/gateway-identity.js';
import { spawnGateway } from './process.js';

export const CLUSTER_TOKEN = 'cgs_cluster-shared-token';
export const CLUSTER_OWNER = 'cgo_cluster-owner-credential';
/** Every instance of a cluster holds the same gateway key (like the credentials), so a client behind the balancer verifies one key. */
const CLUSTER_KEY_PEM = generateGatewayKeyPem();
export const CLUSTER_GATEWAY_KEY = gatewayIdentityFromPem(CLUSTER_KEY_PEM).fingerprint;
/** connectGateway options for the cluster's owner: the proof, for the shared key. */
export const asClusterOwner = { owner: CLUSTER_OWNER, gatewayKey: CLUSTER_GATEWAY_KEY };

export interface Instance {
  name: string;
  url: string;
  stateDir: string;
  proc: ChildProcess;
  /** Everything the process wrote to stderr (JSON log lines). */
  log(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
  /** SIGKILL: no shutdown, no flush, no goodbye. */
  kill(): Promise<void>;
}

/**
 * A state dir holding the credentials every instance of the cluster shares (behind a load
 * balancer a client must not care which instance it reached), and a config without loopback
 * auto-approval, so pairing needs an operator even though the tests connect from 127.0.0.1.
 */
export function clusterStateDir(gateway: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'clawgate-inst-'));
  const creds = { version: 1, token: CLUSTER_TOKEN, owner: CLUSTER_OWNER, createdAtMs: 0 };
  writeFileSync(join(dir, 'credentials.json'), JSON.stringify(creds), { mode: 0o600 });
  writeFileSync(join(dir, 'gateway-key.pem'), CLUSTER_KEY_PEM, { mode: 0o600 });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ gateway: { autoApproveLocal: false, ...gateway } }));
  return dir;
}

export async function startInstance(name: string, postgresUrl: string, stateDir = clusterStateDir()): Promise<Instance> {
  const gw = await spawnGateway(['--state-dir', stateDir, '--config', join(stateDir, 'config.json'), '--store', 'postgres', '--postgres-url', postgresUrl], {
    startupTimeoutMs: 20_000,
  }).catch((err: Error) => {
    throw new Error(`instance ${name}: ${err.message}`);
  });
  return {
    name,
    url: gw.url,
    stateDir,
    proc: gw.child,
    log: gw.err,
    async stop() {
      await gw.stop();
    },
    kill: gw.kill,
  };
}

export function removeStateDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Instances A and B on one database, started at once: the migration lock makes exactly one of
 * them create the schema. Their state dirs are added to `dirs` (for the caller's cleanup) first.
 */
export function startInstancesAB(postgresUrl: string, dirs: string[], gateway: Record<string, unknown> = {}): Promise<[Instance, Instance]> {
  const dirA = clusterStateDir(gateway);
  const dirB = clusterStateDir(gateway);
  dirs.push(dirA, dirB);
  return Promise.all([startInstance('A', postgresUrl, dirA), startInstance('B', postgresUrl, dirB)]);
}
