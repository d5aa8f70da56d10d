/**
 * Reading a `clawgate node run` state dir (identity.json + credentials.json) into the SDK's
 * credential store, so the companion — and every client command — uses the node host's device
 * identity and every role token it holds (a node host paired with an `operator+node` code keeps
 * an operator token nobody could use before). The old files are copied, never moved or changed:
 * a `clawgate node run` of an older version on the same dir keeps working.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CredentialStore, GatewayRecord, Role, RoleToken } from '@clawgate/client';
import { normalizeGatewayUrl } from '@clawgate/client';
import { identityFromJson } from '../client/connection.js';
import { IDENTITY_FILE, NODE_CREDENTIALS_FILE, NodeState } from '../node-host/state.js';

export type MigrationResult = { migrated: false; why: string } | { migrated: true; url: string; deviceId: string; roles: Role[] };

/** Does `dir` hold a node host's state (its own identity file)? */
export function hasNodeHostState(dir: string): boolean {
  return existsSync(join(dir, IDENTITY_FILE));
}

export async function migrateNodeHostState(dir: string, store: CredentialStore, nowMs: number): Promise<MigrationResult> {
  if (!hasNodeHostState(dir)) return { migrated: false, why: 'no node host state' };
  const state = new NodeState(dir);
  // Throws on a file that is not readable: an identity is never silently replaced.
  const ident = state.loadIdentityIfPresent();
  if (!ident) return { migrated: false, why: 'no node host state' };
  const creds = state.readCredentials();
  const url = creds.gatewayUrl ?? creds.bootstrap?.urls[0];
  if (!url) return { migrated: false, why: `${join(dir, NODE_CREDENTIALS_FILE)} names no gateway yet` };
  const target = normalizeGatewayUrl(url);
  const identity = identityFromJson(ident);
  const tokens: Partial<Record<Role, RoleToken>> = {};
  for (const role of ['operator', 'node'] as const) {
    const t = creds.tokens[role];
    if (t) tokens[role] = { token: t.deviceToken, scopes: [...t.scopes], storedAtMs: nowMs, ...(t.issuedAtMs ? { issuedAtMs: t.issuedAtMs } : {}) };
  }
  let outcome: MigrationResult = { migrated: false, why: 'the store already holds a record for this gateway' };
  await store.update(
    target.key,
    (cur) => {
      // Migrated before (or paired some other way): the store's record is the live one from then on.
      if (cur) return cur;
      const rec: GatewayRecord = {
        version: 1,
        key: target.key,
        url: target.url,
        deviceId: identity.deviceId,
        identity: { alg: 'ed25519', privateKeyPem: ident.privateKeyPem },
        tokens,
        createdAtMs: nowMs,
        ...(creds.tlsFingerprint ? { tlsFingerprint: creds.tlsFingerprint } : {}),
        ...(creds.gatewayKey ? { gatewayKey: creds.gatewayKey } : {}),
        ...(creds.bootstrap
          ? {
              bootstrap: {
                token: creds.bootstrap.bootstrapToken,
                setAtMs: nowMs,
                ...(creds.bootstrap.expiresAtMs ? { expiresAtMs: creds.bootstrap.expiresAtMs } : {}),
              },
            }
          : {}),
      };
      outcome = { migrated: true, url: target.url, deviceId: identity.deviceId, roles: Object.keys(tokens) as Role[] };
      return rec;
    },
    { label: 'migrate-node-host' },
  );
  return outcome;
}
