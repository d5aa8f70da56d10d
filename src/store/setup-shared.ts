/**
 * Pure setup-code rules every adapter applies inside its redemption transaction, so memory,
 * SQLite and PostgreSQL decide exactly alike. The gateway uses the same check to
 * report a refusal before it gets to the store.
 */
import type { Role } from '@clawgate/protocol/frames';
import { normalizeScopes } from '@clawgate/protocol/scopes';
import type { NewToken, SetupCodeRecord, SetupProfile, SetupRefusal } from './types.js';

export type RedemptionCheck = { ok: true; repeat: boolean } | { ok: false; reason: SetupRefusal };

/**
 * May `device` redeem `code` at `atMs`? A code is redeemable once, until it expires; after that
 * only the key it was bound to may redeem it again, within `graceMs` of the first redemption,
 * and only while the grants it created are unchanged (`epochOf` gives the device's current
 * epoch per role; omit it to skip that part, as the gateway's early check does).
 */
export function checkRedemption(
  code: SetupCodeRecord | null,
  device: { deviceId: string; publicKey: string },
  atMs: number,
  graceMs: number,
  epochOf?: (role: Role) => number | undefined,
): RedemptionCheck {
  if (!code) return { ok: false, reason: 'unknown' };
  if (code.burnedAtMs !== undefined) return { ok: false, reason: 'burned' };
  if (code.revokedAtMs !== undefined) return { ok: false, reason: 'revoked' };
  if (code.redeemedAtMs !== undefined) {
    const sameKey = code.deviceId === device.deviceId && code.publicKey === device.publicKey;
    const inGrace = atMs - code.redeemedAtMs <= graceMs;
    const unchanged = !epochOf || code.profile.roles.every((r) => epochOf(r) !== undefined && epochOf(r) === code.grantEpochs?.[r]);
    return sameKey && inGrace && unchanged ? { ok: true, repeat: true } : { ok: false, reason: 'used' };
  }
  if (atMs >= code.expiresAtMs) return { ok: false, reason: 'expired' };
  return { ok: true, repeat: false };
}

/** The scopes a role's grant holds after redemption: the current grant widened by the profile. */
export function redeemedGrantScopes(profile: SetupProfile, role: Role, current: readonly string[] | undefined): string[] {
  const add = role === 'operator' ? profile.scopes : [];
  return normalizeScopes([...(current ?? []), ...add]);
}

/** The roles a redemption of `code` grants. The gateway mints a token for each, so a missing one is a bug. */
export function redeemedRoles(code: SetupCodeRecord, tokens: Partial<Record<Role, NewToken>>): Role[] {
  for (const r of code.profile.roles) if (!tokens[r]) throw new Error(`redeemSetupCode: no token for role ${r}`);
  return code.profile.roles;
}

/** Does one more wrong guess against `code` burn it? Only the failure that reaches `budget` burns, and only once. */
export function failureBurns(code: SetupCodeRecord, budget: number): boolean {
  return code.burnedAtMs === undefined && code.failures + 1 >= budget;
}
