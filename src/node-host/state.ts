/**
 * The node host's state dir (`--state-dir` > CLAWGATE_NODE_STATE_DIR > ~/.clawgate-node), separate
 * from a gateway's so one machine can run both:
 *
 *   identity.json        Ed25519 key pair (the device id derives from it) + a stable instance id
 *   credentials.json     gateway URL, per-role device tokens, and a not-yet-redeemed setup code
 *   exec-allowlist.json  what `system.run` may start (exec-policy.ts)
 *
 * Secret files are mode 0600 and written atomically (temp + rename). Tokens and the bootstrap
 * credential live in one file, so the write that stores the device token is the same rename
 * that drops the setup code: a crash leaves one or the other, never neither.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { type Static, Type as T } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { type DeviceIdentity, generateIdentity, identityFromJson, identityToJson } from '../client/connection.js';
import type { Random } from '../core/env.js';
import { writeFileDurably } from '../platform/durable-file.js';
import { processAlive } from '../platform/process.js';

export function resolveNodeStateDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? env.CLAWGATE_NODE_STATE_DIR ?? join(homedir(), '.clawgate-node');
}

const IdentityFile = T.Object({
  version: T.Literal(1),
  deviceId: T.String(),
  publicKey: T.String(),
  privateKeyPem: T.String({ minLength: 1 }),
  instanceId: T.String({ minLength: 1 }),
});
const checkIdentity = TypeCompiler.Compile(IdentityFile);

const StoredToken = T.Object({ deviceToken: T.String({ minLength: 1 }), scopes: T.Array(T.String()), issuedAtMs: T.Optional(T.Number()) });
const CredentialsFile = T.Object({
  version: T.Literal(1),
  gatewayUrl: T.Optional(T.String()),
  /** Device tokens by role (`node`, and `operator` when a setup code granted both). */
  tokens: T.Record(T.String(), StoredToken),
  bootstrap: T.Optional(
    T.Object({ bootstrapToken: T.String({ minLength: 1 }), urls: T.Array(T.String(), { minItems: 1 }), expiresAtMs: T.Optional(T.Number()) }),
  ),
  /** Remote gateways: the gateway certificate's SHA-256 fingerprint from the setup code, pinned on every connect. */
  tlsFingerprint: T.Optional(T.String({ pattern: '^[0-9a-f]{64}$' })),
  /**
   * The gateway identity key this node trusts (SHA-256 of the raw Ed25519 key, 64 lowercase hex):
   * from the setup code, or learned at the first connect whose challenge it signed. Every connect
   * checks the challenge signature against it before any credential is sent.
   */
  gatewayKey: T.Optional(T.String({ pattern: '^[0-9a-f]{64}$' })),
});
export type NodeCredentials = Static<typeof CredentialsFile>;
const checkCredentials = TypeCompiler.Compile(CredentialsFile);

export const IDENTITY_FILE = 'identity.json';
export const LOCK_FILE = 'node.lock';
export const NODE_CREDENTIALS_FILE = 'credentials.json';

function readJson<S>(path: string, check: { Check(v: unknown): v is S }, what: string): S | null {
  if (!existsSync(path)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path} is not valid JSON (${(err as Error).message}); move it away to start over as ${what}`);
  }
  if (!check.Check(parsed)) throw new Error(`${path} is not a clawgate node ${what} file; move it away to start over`);
  return parsed;
}

export class NodeState {
  constructor(readonly dir: string) {}

  static open(dir: string): NodeState {
    // Owner-only, also when it already existed with a wider mode: it holds the node's key and tokens.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    return new NodeState(dir);
  }

  /**
   * One node host per state dir: two would share a key and both answer for the same device.
   * Returns a release function, or the pid of the live holder. A lock left by a dead process is
   * taken over.
   */
  lock(pid: number = process.pid): { ok: true; release(): void } | { ok: false; holderPid: number } {
    const path = join(this.dir, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, `${pid}\n`);
        closeSync(fd);
        return {
          ok: true,
          release: () => {
            try {
              if (readFileSync(path, 'utf8').trim() === String(pid)) unlinkSync(path);
            } catch {}
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = Number.parseInt(readFileSync(path, 'utf8'), 10);
      if (Number.isInteger(holder) && holder > 0 && holder !== pid && processAlive(holder)) return { ok: false, holderPid: holder };
      unlinkSync(path); // stale: its process is gone
    }
    throw new Error(`could not take ${path}`);
  }

  /** The stored identity file as it is (null when there is none; throws when it is unreadable). */
  loadIdentityIfPresent(): { privateKeyPem: string; instanceId: string } | null {
    return readJson(join(this.dir, IDENTITY_FILE), checkIdentity, 'a new device (identity)');
  }

  /** The node's key pair, created on first run. */
  loadOrCreateIdentity(random: Random): { identity: DeviceIdentity; instanceId: string; created: boolean } {
    const path = join(this.dir, IDENTITY_FILE);
    const existing = readJson(path, checkIdentity, 'a new device (identity)');
    if (existing) return { identity: identityFromJson(existing), instanceId: existing.instanceId, created: false };
    const identity = generateIdentity();
    const instanceId = random.uuid();
    writeFileDurably(path, `${JSON.stringify({ version: 1, ...identityToJson(identity), instanceId }, null, 2)}\n`);
    return { identity, instanceId, created: true };
  }

  /** The node's public identity (never the private key), or null before its first run. */
  readIdentity(): { deviceId: string; publicKey: string } | null {
    const existing = readJson(join(this.dir, IDENTITY_FILE), checkIdentity, 'a new device (identity)');
    if (!existing) return null;
    const { deviceId, publicKey } = identityFromJson(existing);
    return { deviceId, publicKey };
  }

  readCredentials(): NodeCredentials {
    return readJson(join(this.dir, NODE_CREDENTIALS_FILE), checkCredentials, 'credentials') ?? { version: 1, tokens: {} };
  }

  private write(creds: NodeCredentials): void {
    writeFileDurably(join(this.dir, NODE_CREDENTIALS_FILE), `${JSON.stringify(creds, null, 2)}\n`);
  }

  /**
   * Keep a setup code until a device token replaces it (redeeming is not idempotent forever),
   * with the gateway key it names in the same write: the code and its trust anchor arrive together.
   */
  saveBootstrap(bootstrap: NonNullable<NodeCredentials['bootstrap']>, gatewayKey?: string): void {
    const creds = this.readCredentials();
    this.write({ ...creds, gatewayUrl: bootstrap.urls[0], bootstrap, ...(gatewayKey ? { gatewayKey } : {}) });
  }

  /** Pin this gateway identity key from now on. */
  saveGatewayKey(fingerprint: string): void {
    const creds = this.readCredentials();
    if (creds.gatewayKey !== fingerprint) this.write({ ...creds, gatewayKey: fingerprint });
  }

  /** Remote gateways: pin this certificate fingerprint from now on. */
  saveTlsFingerprint(fingerprint: string): void {
    const creds = this.readCredentials();
    if (creds.tlsFingerprint !== fingerprint) this.write({ ...creds, tlsFingerprint: fingerprint });
  }

  saveGatewayUrl(url: string): void {
    const creds = this.readCredentials();
    if (creds.gatewayUrl !== url) this.write({ ...creds, gatewayUrl: url });
  }

  /**
   * Store the tokens a hello-ok carried, and drop the setup code in the same atomic write when
   * this connect redeemed it.
   */
  saveTokens(tokens: Array<{ role: string; deviceToken: string; scopes: string[]; issuedAtMs?: number }>, url: string, redeemed: boolean): void {
    const creds = this.readCredentials();
    const next: NodeCredentials = { ...creds, gatewayUrl: url, tokens: { ...creds.tokens } };
    for (const t of tokens)
      next.tokens[t.role] = { deviceToken: t.deviceToken, scopes: t.scopes, ...(t.issuedAtMs !== undefined ? { issuedAtMs: t.issuedAtMs } : {}) };
    if (redeemed) delete next.bootstrap;
    this.write(next);
  }

  /** Forget a role's token the gateway no longer accepts (revoked, device removed). */
  dropToken(role: string): void {
    const creds = this.readCredentials();
    if (!creds.tokens[role]) return;
    const tokens = { ...creds.tokens };
    delete tokens[role];
    this.write({ ...creds, tokens });
  }
}
