/**
 * The companion's state directory as both its CLI commands (companion.ts) and its MCP server
 * (companion-mcp.ts) read it: where it lives, which gateway it talks to, and its status while
 * running or not — shared here so those two modules do not import each other.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type FileCredentialStore, normalizeGatewayUrl } from '@clawgate/client';
import { type CompanionStatus, credentialSummary } from '../companion/companion.js';
import { askControl, ensurePrivateDir } from '../companion/control.js';
import type { Side, SideStatus } from '../companion/lifecycle.js';
import { clientStore } from './client-store.js';
import { resolveStateDir } from './state.js';

export const CONFIG_FILE = 'companion.json';
export const STATUS_FILE = 'status.json';

export interface CompanionPaths {
  stateDir: string;
  dir: string;
  store: FileCredentialStore;
}

export function companionPaths(stateDirFlag: string | undefined): CompanionPaths {
  const stateDir = resolveStateDir(stateDirFlag);
  const dir = join(stateDir, 'companion');
  ensurePrivateDir(dir);
  return { stateDir, dir, store: clientStore(stateDir) };
}

export interface CompanionConfig {
  url?: string;
  ssh?: { target: string; remoteUrl: string; localPort: number };
}

export function readConfig(dir: string): CompanionConfig {
  try {
    return JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')) as CompanionConfig;
  } catch {
    return {};
  }
}

export function readConfigUrl(dir: string): string | null {
  const v = readConfig(dir);
  return typeof v.url === 'string' ? v.url : null;
}

/** Which gateway: the code's, --url, the one the companion last ran with, or the only stored one. */
export async function pickUrl(paths: CompanionPaths, flag: string | undefined): Promise<string | null> {
  if (flag) return flag;
  const remembered = readConfigUrl(paths.dir);
  if (remembered) return remembered;
  const all = await paths.store.list();
  return all.length === 1 ? (all[0] as { url: string }).url : null;
}

/** What the store (and the last status the companion wrote) says while no companion runs. */
export async function offlineStatus(paths: CompanionPaths): Promise<CompanionStatus> {
  const url = await pickUrl(paths, undefined).catch(() => null);
  const rec = url ? await paths.store.load(normalizeGatewayUrl(url).key) : null;
  let last: Partial<CompanionStatus> = {};
  try {
    last = JSON.parse(readFileSync(join(paths.dir, STATUS_FILE), 'utf8')) as Partial<CompanionStatus>;
  } catch {}
  const side = (s: Side): SideStatus => {
    const prev = last[s];
    const token = rec?.tokens[s];
    return {
      side: s,
      enabled: prev?.enabled ?? true,
      state: 'stopped',
      role: s,
      scopes: token ? [...token.scopes] : [],
      credential: token ? 'device-token' : rec?.sharedToken ? 'shared-token' : rec?.bootstrap ? 'bootstrap-token' : null,
      pendingRequestId: prev?.pendingRequestId ?? null,
      confirmationCode: prev?.confirmationCode ?? null,
      ...(s === 'node' ? { surface: prev?.surface ?? 'unknown', surfaceRequestId: prev?.surfaceRequestId ?? null } : {}),
      lastError: prev?.lastError ?? null,
      nextStep: !rec
        ? 'Pair: `clawgate companion run --code-file <file>` with a code from `clawgate qr --profile operator+node` on the gateway host.'
        : token || rec.sharedToken || rec.bootstrap
          ? 'Start it: `clawgate companion run`.'
          : `No ${s} credential is stored: pair with a setup code (\`clawgate companion pair --code-file <file>\`).`,
      message: prev?.nextStep && prev.state === 'paused' ? `last run: ${prev.message ?? ''}` : 'the companion is not running',
    };
  };
  return {
    running: false,
    pid: null,
    url: rec?.url ?? url ?? '',
    deviceId: rec?.deviceId ?? null,
    credentials: credentialSummary(rec),
    operator: side('operator'),
    node: side('node'),
  };
}

export async function companionStatus(paths: CompanionPaths): Promise<CompanionStatus> {
  const live = (await askControl(paths.dir, { op: 'status' }).catch(() => null)) as CompanionStatus | null;
  return live ?? offlineStatus(paths);
}
