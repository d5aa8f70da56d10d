/**
 * The rotation grace: a device that was connected when someone else rotated its token (so the
 * successor was pushed to it live, PROTOCOL.md §11.1) but did not keep the pushed token — the
 * real `openclaw node run` ignores `device.token.rotated` — may come back once, within
 * ROTATION_GRACE_MS, with the token that was just rotated away, proving its key again. It then
 * receives a fresh successor in hello-ok (`auth.deviceToken`, which real clients store) and the
 * old token is dead for good.
 *
 * Why this keeps §11.1's protection against copied tokens: the grace exists only for a rotation
 * pushed to a live session that proved the device key at that moment, it is short and single
 * use, and it is void as soon as the pushed successor is no longer the role's live token
 * (another rotation, a revocation, a removal). A rotation of an offline device
 * (`withheld-cross-device`) leaves no grace at all: a stolen credentials file still dies there.
 *
 * The record lives in store meta under `token.grace.<deviceId>.<role>`; it holds only token ids
 * and SHA-256 hashes, never a secret.
 */
import type { Role } from '@clawgate/protocol/frames';
import type { Store } from '../store/types.js';
import { deviceTokenKey, secretMatchesHash } from './secrets.js';

/** How long after a pushed rotation the superseded token is still honoured, once. */
export const ROTATION_GRACE_MS = 60_000;

interface GraceRecord {
  successorTokenId: string;
  untilMs: number;
  retired: Array<{ tokenId: string; hash: string }>;
  usedAtMs?: number;
}

const graceKey = (deviceId: string, role: Role) => `token.grace.${deviceId}.${role}`;

/** Remember the tokens a pushed rotation just retired (those the live sessions were admitted with). */
export async function recordRotationGrace(
  store: Store,
  deviceId: string,
  role: Role,
  successorTokenId: string,
  retired: Array<{ tokenId: string; secretHash: Buffer }>,
  nowMs: number,
): Promise<void> {
  const seen = new Set<string>();
  const list = retired.filter((r) => !seen.has(r.tokenId) && seen.add(r.tokenId)).map((r) => ({ tokenId: r.tokenId, hash: r.secretHash.toString('base64') }));
  const rec: GraceRecord = { successorTokenId, untilMs: nowMs + ROTATION_GRACE_MS, retired: list };
  await store.setMeta(graceKey(deviceId, role), JSON.stringify(rec));
}

async function readGrace(store: Store, deviceId: string, role: Role): Promise<GraceRecord | null> {
  const raw = await store.getMeta(graceKey(deviceId, role));
  if (!raw) return null;
  try {
    const rec = JSON.parse(raw) as GraceRecord;
    return typeof rec.successorTokenId === 'string' && Array.isArray(rec.retired) ? rec : null;
  } catch {
    return null;
  }
}

/** Claims in this process, so two racing connects with the same old token cannot both pass. */
const claimed = new Set<string>();

/**
 * Whether `token` is a token of (deviceId, role) retired by a pushed rotation whose grace is
 * still open and unused. A true answer consumes the grace: the caller must re-issue the token.
 * The secret is compared in constant time even when the record does not fit.
 */
export async function claimRotationGrace(
  store: Store,
  token: string,
  deviceId: string,
  role: Role,
  nowMs: number,
  /** Whether this instance saw the successor in use (a session admitted with it, not yet recorded in the store). */
  successorSeen: (tokenId: string) => boolean,
): Promise<boolean> {
  const key = deviceTokenKey(token);
  if (!key) return false;
  const rec = await readGrace(store, deviceId, role);
  if (!rec) return false;
  const hit = rec.retired.find((r) => r.tokenId === key.id);
  const matches = secretMatchesHash(key.secret, hit ? Buffer.from(hit.hash, 'base64') : Buffer.alloc(32));
  if (!hit || !matches || rec.usedAtMs !== undefined || nowMs >= rec.untilMs) return false;
  // Void once the pushed successor is not the live token any more, or the device has used it: a
  // device that kept the pushed token never needs the old one again.
  const live = (await store.listTokens(deviceId)).find((t) => t.role === role && t.revokedAtMs === undefined);
  if (live?.tokenId !== rec.successorTokenId || live.lastUsedAtMs !== undefined || successorSeen(rec.successorTokenId)) return false;
  const claim = `${deviceId}\u0000${role}\u0000${rec.successorTokenId}`;
  if (claimed.has(claim)) return false;
  claimed.add(claim);
  setTimeout(() => claimed.delete(claim), ROTATION_GRACE_MS).unref();
  await store.setMeta(graceKey(deviceId, role), JSON.stringify({ ...rec, usedAtMs: nowMs }));
  return true;
}

/**
 * A device that reconnects with the gateway token (or password) after a pushed rotation whose
 * successor it never picked up gets a token again, as OpenClaw hands one to every such connect:
 * true (and the record consumed) when `liveId` is still that unclaimed successor.
 */
export async function claimUnpickedSuccessor(store: Store, deviceId: string, role: Role, liveId: string, nowMs: number): Promise<boolean> {
  const rec = await readGrace(store, deviceId, role);
  if (!rec || rec.usedAtMs !== undefined || rec.successorTokenId !== liveId) return false;
  const claim = `${deviceId}\u0000${role}\u0000${rec.successorTokenId}`;
  if (claimed.has(claim)) return false;
  claimed.add(claim);
  setTimeout(() => claimed.delete(claim), ROTATION_GRACE_MS).unref();
  await store.setMeta(graceKey(deviceId, role), JSON.stringify({ ...rec, usedAtMs: nowMs }));
  return true;
}
