/**
 * Reading what `clawgate node run` stored, through the SDK store it keeps under
 * `<state-dir>/client/` — in the shape of the node host's own credentials.json, so a test can
 * also write it back as a classic state dir for the migration to pick up.
 */
import { join } from 'node:path';
import { FileCredentialStore } from '@clawgate/client';

export interface ClassicNodeCredentials {
  version: 1;
  gatewayUrl: string;
  tokens: Record<string, { deviceToken: string; scopes: string[]; issuedAtMs?: number }>;
  bootstrap?: { bootstrapToken: string; urls: string[]; expiresAtMs?: number };
  tlsFingerprint?: string;
  gatewayKey?: string;
}

/** The one gateway record of a node state dir and the file holding it; null when nothing is stored. */
export function nodeRecord(stateDir: string) {
  const store = new FileCredentialStore(join(stateDir, 'client'));
  const { records } = store.scan();
  if (records.length > 1) throw new Error(`${stateDir} holds ${records.length} gateway records; a node state dir holds one`);
  const rec = records[0];
  return rec ? { record: rec, file: store.fileFor(rec.key) } : null;
}

export function readNodeCredentials(stateDir: string): ClassicNodeCredentials | null {
  const found = nodeRecord(stateDir);
  if (!found) return null;
  const r = found.record;
  const tokens: ClassicNodeCredentials['tokens'] = {};
  for (const [role, t] of Object.entries(r.tokens)) {
    if (t) tokens[role] = { deviceToken: t.token, scopes: [...t.scopes], ...(t.issuedAtMs ? { issuedAtMs: t.issuedAtMs } : {}) };
  }
  return {
    version: 1,
    gatewayUrl: r.url,
    tokens,
    ...(r.bootstrap
      ? { bootstrap: { bootstrapToken: r.bootstrap.token, urls: [r.url], ...(r.bootstrap.expiresAtMs ? { expiresAtMs: r.bootstrap.expiresAtMs } : {}) } }
      : {}),
    ...(r.tlsFingerprint ? { tlsFingerprint: r.tlsFingerprint } : {}),
    ...(r.gatewayKey ? { gatewayKey: r.gatewayKey } : {}),
  };
}
