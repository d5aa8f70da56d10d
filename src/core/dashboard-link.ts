/**
 * One-time owner sign-in links for the Control UI (`clawgate dashboard`). The owner CLI mints a
 * `cgl1_<id>_<secret>` token; the browser presents it once as `auth.token` together with its
 * device key, and is admitted as the owner (so its key is paired silently and it receives a
 * device token). Only SHA-256 of the secret is kept, in the store's meta table (so every
 * adapter and every instance sharing a store sees it), with its expiry and use.
 *
 * Single use: within a process a link is claimed synchronously before any await (in a claim set
 * the composition root owns, one per gateway), so two racing sign-ins cannot both pass; the
 * consumed mark is then written to the store.
 */

import type { Clock, Random } from './env.js';
import { hashSecret, mintToken, parseToken, secretMatchesHash } from './secrets.js';
import type { Store } from './store.js';
import { SIGN_IN_LINK_META_PREFIX } from './store-retention.js';

export const DASHBOARD_LINK_TTL_MS = 2 * 60_000;
export const MAX_DASHBOARD_LINK_TTL_MS = 15 * 60_000;

interface StoredLink {
  hash: string;
  createdAtMs: number;
  expiresAtMs: number;
  createdBy: string;
  usedAtMs?: number;
}

const metaKey = (id: string) => `${SIGN_IN_LINK_META_PREFIX}${id}`;
/** What minting and consuming links need: the store (links live in its meta table, uses in its audit log), time and randomness. */
export interface DashboardLinkDeps {
  store: Pick<Store, 'getMeta' | 'setMeta' | 'appendAudit'>;
  clock: Clock;
  random: Random;
}

export async function mintDashboardLink(gw: DashboardLinkDeps, ttlMs: number, actor: string): Promise<{ linkId: string; token: string; expiresAtMs: number }> {
  const minted = mintToken('dashboard', gw.random);
  const now = gw.clock.now();
  const rec: StoredLink = { hash: minted.secretHash.toString('hex'), createdAtMs: now, expiresAtMs: now + ttlMs, createdBy: actor };
  await gw.store.setMeta(metaKey(minted.id), JSON.stringify(rec));
  await gw.store.appendAudit({ atMs: now, actor, action: 'dashboard.link.created', subject: minted.id, data: { expiresAtMs: rec.expiresAtMs } });
  return { linkId: minted.id, token: minted.token, expiresAtMs: rec.expiresAtMs };
}

/** Is this a sign-in link token at all (by shape)? */
export function isDashboardLinkToken(token: string): boolean {
  return parseToken('dashboard', token) !== null;
}

/**
 * Consume a link: true exactly once for a live, matching link. `set` holds the ids being (or
 * already) claimed in this process; the caller owns it, one per gateway.
 */
export async function consumeDashboardLink(gw: DashboardLinkDeps, set: Set<string>, token: string, address: string, deviceId: string): Promise<boolean> {
  const parsed = parseToken('dashboard', token);
  if (!parsed) return false;
  if (set.has(parsed.id)) {
    hashSecret(parsed.secret); // same work either way
    return false;
  }
  set.add(parsed.id);
  let keep = false;
  try {
    const text = await gw.store.getMeta(metaKey(parsed.id));
    const rec = text ? (JSON.parse(text) as StoredLink) : null;
    const matches = rec ? secretMatchesHash(parsed.secret, Buffer.from(rec.hash, 'hex')) : false;
    const now = gw.clock.now();
    if (!rec || !matches) return false;
    // A matching secret that is used or expired stays claimed: it can never succeed again.
    keep = true;
    if (rec.usedAtMs !== undefined || now >= rec.expiresAtMs) return false;
    rec.usedAtMs = now;
    await gw.store.setMeta(metaKey(parsed.id), JSON.stringify(rec));
    await gw.store.appendAudit({ atMs: gw.clock.now(), actor: 'owner', action: 'dashboard.link.used', subject: parsed.id, data: { address, deviceId } });
    return true;
  } finally {
    if (!keep) set.delete(parsed.id);
  }
}
