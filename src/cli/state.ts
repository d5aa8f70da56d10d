/**
 * The state dir: `--state-dir` > CLAWGATE_STATE_DIR > ~/.clawgate. Holds the SQLite database,
 * the credentials file (gateway token + owner credential, mode 0600), the gateway key
 * (`gateway-key.pem`) and `gateway.json`, the address the running gateway listens on. That file
 * is only a hint where to dial: it outlives a crashed gateway, and whatever answers there must
 * still prove the gateway key before the CLI sends anything.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Random } from '../core/env.js';
import { generateSecret } from '../core/secrets.js';

export function resolveStateDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? env.CLAWGATE_STATE_DIR ?? join(homedir(), '.clawgate');
}

export function ensureStateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

export interface Credentials {
  version: 1;
  /** Shared gateway token (clients pass it as auth.token). */
  token: string;
  /** Owner credential: full authority for the CLI on this host; proven (auth.ownerProof), never sent. */
  owner: string;
  /** Shared gateway password (auth.password), when one was imported (`clawgate import openclaw`); --password wins. */
  password?: string | undefined;
  /** Set when `token` was taken over from another gateway (a chosen secret, not a generated one). */
  tokenImportedFrom?: string | undefined;
  createdAtMs: number;
}

export const CREDENTIALS_FILE = 'credentials.json';

/** Write a file atomically with mode 0600 (temp file + rename, so a crash never leaves half a secret). */
export function writeSecretFile(path: string, content: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

export function readCredentials(dir: string): Credentials | null {
  const path = join(dir, CREDENTIALS_FILE);
  if (!existsSync(path)) return null;
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as Credentials;
  if (
    parsed.version !== 1 ||
    typeof parsed.token !== 'string' ||
    typeof parsed.owner !== 'string' ||
    (parsed.password !== undefined && typeof parsed.password !== 'string')
  ) {
    throw new Error(`${path} is not a clawgate credentials file; move it away and restart to generate a new one`);
  }
  return parsed;
}

/** Load the credentials, generating them on first start. */
export function loadOrCreateCredentials(dir: string, random: Random, nowMs: number): { creds: Credentials; created: boolean } {
  const existing = readCredentials(dir);
  if (existing) return { creds: existing, created: false };
  const creds: Credentials = { version: 1, token: generateSecret('cgs', random), owner: generateSecret('cgo', random), createdAtMs: nowMs };
  writeSecretFile(join(dir, CREDENTIALS_FILE), `${JSON.stringify(creds, null, 2)}\n`);
  return { creds, created: true };
}

/** Where a chosen gateway token came from: a place `clawgate gateway token` can read it back, or one it cannot. */
export type TokenSource =
  | { kind: 'file'; path: string }
  | { kind: 'config'; path: string }
  | { kind: 'env'; name: string }
  | { kind: 'stdin' }
  | { kind: 'argv' };

export interface RuntimeInfo {
  url: string;
  pid: number;
  startedAtMs: number;
  /** SHA-256 fingerprint of the certificate when the gateway serves TLS itself (local CLI pins it). */
  tlsFingerprint?: string;
  /** The configured public URL, if any. */
  publicUrl?: string;
  /** The URL clients on other hosts use (the public URL, else a LAN address for a wildcard bind). */
  advertisedUrl?: string;
  /** Where the gateway token it accepts came from, when it is not the generated one (never the token itself). */
  tokenSource?: TokenSource;
}

export function writeRuntimeInfo(dir: string, info: RuntimeInfo): void {
  writeSecretFile(join(dir, 'gateway.json'), `${JSON.stringify(info)}\n`);
}

export function readRuntimeInfo(dir: string): RuntimeInfo | null {
  try {
    return JSON.parse(readFileSync(join(dir, 'gateway.json'), 'utf8')) as RuntimeInfo;
  } catch {
    return null;
  }
}

/** Remove `gateway.json` on a clean stop, unless another gateway process has replaced it meanwhile. */
export function removeRuntimeInfo(dir: string, pid: number): void {
  if (readRuntimeInfo(dir)?.pid !== pid) return;
  try {
    unlinkSync(join(dir, 'gateway.json'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Owner credentials are generated as `cgo_…`; such a value is proven, never sent as a token. */
export function isOwnerCredential(secret: string): boolean {
  return secret.startsWith('cgo_');
}
