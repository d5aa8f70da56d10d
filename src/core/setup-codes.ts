/**
 * Setup codes: profiles, minting, verification of a presented bootstrap token, and
 * the catalogue entry for every refusal. Redemption itself is one store transaction
 * (Store.redeemSetupCode); the gateway carries it out in its `redeem-bootstrap` path.
 *
 * Rules:
 * - a code hands out the roles of its profile: `operator` (default scopes operator.read,
 *   operator.write, operator.approvals), `node`, or `operator+node`; never operator.pairing,
 *   and so never operator.admin either (admin satisfies every operator scope, pairing included);
 * - it lives 10 minutes unless minted with another TTL, and is redeemed once: the first
 *   redemption binds it to the redeeming key. The same key may redeem it again within
 *   SETUP_REPEAT_GRACE_MS (a lost hello-ok); it then gets fresh tokens for the same grants and
 *   the tokens of the earlier redemption stop working. Any other key is refused;
 * - a wrong secret for a known id counts against that code: SETUP_FAILURE_BUDGET of them burn it.
 *   Wrong or unknown tokens also count against the client address (FailureLimiter 'bootstrap').
 *   Only a caller holding the right secret learns why a code is refused (expired, used,
 *   revoked, burned); everyone else gets AUTH_BOOTSTRAP_TOKEN_INVALID.
 */
import type { DetailCode } from '@clawgate/protocol/errors';
import type { Role } from '@clawgate/protocol/frames';
import { ADMIN, isKnownScope, normalizeScopes, PAIRING } from '@clawgate/protocol/scopes';
import { encodeSetupCode, setupLink } from '@clawgate/protocol/setup-code';
import type { SetupStatus, SetupView } from '@clawgate/protocol/views';
import { checkRedemption } from '../store/setup-shared.js';
import type { SetupCodeRecord, SetupProfile, SetupProfileName, SetupRefusal, Store } from '../store/types.js';
import type { Clock, Random } from './env.js';
import type { VerifiedDevice } from './identity.js';
import { mintToken, parseToken, secretMatchesHash } from './secrets.js';

/** The wire views live in the protocol module; re-exported for the gateway code that builds them. */
export type { SetupStatus, SetupView };

export const DEFAULT_SETUP_TTL_MS = 10 * 60_000;
export const MIN_SETUP_TTL_MS = 10_000;
export const MAX_SETUP_TTL_MS = 24 * 3600_000;
/** How long after its first redemption the same key may redeem a code again. */
export const SETUP_REPEAT_GRACE_MS = 10 * 60_000;
/** Wrong secrets for one code id before the code is burned. */
export const SETUP_FAILURE_BUDGET = 20;

export const SETUP_PROFILES: readonly SetupProfileName[] = ['operator', 'node', 'operator+node'];
export const DEFAULT_SETUP_SCOPES: readonly string[] = ['operator.approvals', 'operator.read', 'operator.write'];

const PROFILE_ROLES: Record<SetupProfileName, Role[]> = { operator: ['operator'], node: ['node'], 'operator+node': ['operator', 'node'] };

/** Build a profile from a name and optional operator scopes, or say what is wrong with them. */
export function resolveSetupProfile(name: string | undefined, scopes: readonly string[] | undefined): SetupProfile | { problem: string } {
  const profileName = (name ?? 'operator') as SetupProfileName;
  if (!SETUP_PROFILES.includes(profileName)) return { problem: `profile must be one of ${SETUP_PROFILES.join(', ')}, got ${name}` };
  const roles = PROFILE_ROLES[profileName];
  if (!roles.includes('operator')) {
    if (scopes && scopes.length > 0) return { problem: `scopes apply to the operator role only; profile ${profileName} has none` };
    return { name: profileName, roles: [...roles], scopes: [] };
  }
  const asked = (scopes ?? []).map((s) => s.trim()).filter(Boolean);
  for (const s of asked) {
    if (s === PAIRING) {
      return { problem: `${PAIRING} is never handed out by a setup code: pair the device with a code, then approve a scope upgrade for it` };
    }
    if (s === ADMIN) {
      return { problem: `${ADMIN} is never handed out by a setup code (it includes ${PAIRING}): approve a scope upgrade for the paired device instead` };
    }
    if (!isKnownScope(s)) return { problem: `unknown operator scope: ${s}` };
  }
  return { name: profileName, roles: [...roles], scopes: normalizeScopes(asked.length > 0 ? asked : DEFAULT_SETUP_SCOPES) };
}

export function setupStatus(c: SetupCodeRecord, nowMs: number): SetupStatus {
  if (c.redeemedAtMs !== undefined) return 'redeemed';
  if (c.burnedAtMs !== undefined) return 'burned';
  if (c.revokedAtMs !== undefined) return 'revoked';
  return nowMs >= c.expiresAtMs ? 'expired' : 'active';
}

export function viewSetupCode(c: SetupCodeRecord, nowMs: number): SetupView {
  return {
    setupId: c.setupId,
    status: setupStatus(c, nowMs),
    label: c.label ?? null,
    profile: c.profile.name,
    roles: [...c.profile.roles],
    scopes: [...c.profile.scopes],
    url: c.url,
    createdAtMs: c.createdAtMs,
    createdBy: c.createdBy,
    expiresAtMs: c.expiresAtMs,
    failures: c.failures,
    redeemedAtMs: c.redeemedAtMs ?? null,
    redeemCount: c.redeemCount,
    deviceId: c.deviceId ?? null,
    deviceName: c.deviceName ?? null,
    redeemedRole: c.redeemedRole ?? null,
    revokedAtMs: c.revokedAtMs ?? null,
    burnedAtMs: c.burnedAtMs ?? null,
  };
}

export interface MintOptions {
  profile: SetupProfile;
  url: string;
  urls?: string[] | undefined;
  tlsFingerprint?: string | undefined;
  /** The gateway identity key's fingerprint: every code carries it when the gateway has a key. */
  gatewayKey?: string | undefined;
  label?: string | undefined;
  ttlMs: number;
  /** Actor for the record and the audit entry. */
  createdBy: string;
}

export interface MintedSetupCode {
  record: SetupCodeRecord;
  setupCode: string;
  link: string;
}

/** Mint a code: a fresh bootstrap token whose secret only the returned code carries. */
export async function mintSetupCode(deps: { store: Store; clock: Clock; random: Random }, o: MintOptions): Promise<MintedSetupCode> {
  const now = deps.clock.now();
  const token = mintToken('bootstrap', deps.random);
  const expiresAtMs = now + o.ttlMs;
  // Encode first: a URL the code cannot carry must fail before anything is stored.
  const setupCode = encodeSetupCode({
    url: o.url,
    urls: o.urls,
    bootstrapToken: token.token,
    expiresAtMs,
    tlsFingerprint: o.tlsFingerprint,
    gatewayKey: o.gatewayKey,
  });
  const record = await deps.store.createSetupCode({
    setupId: token.id,
    secretHash: token.secretHash,
    profile: o.profile,
    label: o.label,
    url: o.url,
    createdAtMs: now,
    expiresAtMs,
    createdBy: o.createdBy,
    audit: {
      atMs: now,
      actor: o.createdBy,
      action: 'setup.minted',
      subject: token.id,
      data: { profile: o.profile.name, roles: o.profile.roles, scopes: o.profile.scopes, expiresAtMs, url: o.url, label: o.label ?? null },
    },
  });
  return { record, setupCode, link: setupLink(setupCode) };
}

export type BootstrapCheck =
  | { ok: true; code: SetupCodeRecord; repeat: boolean }
  | {
      ok: false;
      detail: DetailCode;
      /** A wrong or unknown secret: counts against the client address. */
      guess: boolean;
      details: Record<string, unknown>;
    };

/** The catalogue entry and details for a refusal of a code whose secret was right (or unknown). */
export function setupRefusal(reason: SetupRefusal): { detail: DetailCode; details: Record<string, unknown> } {
  switch (reason) {
    case 'unknown':
      return { detail: 'AUTH_BOOTSTRAP_TOKEN_INVALID', details: { reason: 'invalid' } };
    case 'expired':
      return { detail: 'AUTH_BOOTSTRAP_TOKEN_EXPIRED', details: { reason: 'expired' } };
    case 'used':
      return { detail: 'AUTH_BOOTSTRAP_TOKEN_USED', details: { reason: 'used' } };
    case 'revoked':
      return { detail: 'AUTH_BOOTSTRAP_TOKEN_REVOKED', details: { reason: 'revoked' } };
    case 'burned':
      return { detail: 'AUTH_BOOTSTRAP_TOKEN_REVOKED', details: { reason: 'burned' } };
  }
}

/**
 * Check a presented bootstrap token for a verified device. A wrong secret for a known id is
 * counted against that code (and may burn it); the caller counts every guess against the address.
 */
export async function verifyBootstrapToken(
  deps: { store: Store; clock: Clock },
  presented: string,
  device: VerifiedDevice,
  address: string,
): Promise<BootstrapCheck> {
  const invalid: BootstrapCheck = { ok: false, detail: 'AUTH_BOOTSTRAP_TOKEN_INVALID', guess: true, details: { reason: 'invalid' } };
  const parsed = parseToken('bootstrap', presented);
  if (!parsed) return invalid;
  const code = await deps.store.getSetupCode(parsed.id);
  if (!code) return invalid;
  if (!secretMatchesHash(parsed.secret, code.secretHash)) {
    const now = deps.clock.now();
    await deps.store.recordSetupFailure(code.setupId, now, SETUP_FAILURE_BUDGET, {
      atMs: now,
      actor: 'gateway',
      action: 'setup.burned',
      subject: code.setupId,
      data: { failures: SETUP_FAILURE_BUDGET, lastAddress: address },
    });
    return invalid;
  }
  const check = checkRedemption(code, device, deps.clock.now(), SETUP_REPEAT_GRACE_MS);
  if (!check.ok) return { ok: false, guess: false, ...setupRefusal(check.reason) };
  return { ok: true, code, repeat: check.repeat };
}

/** Details of the refusal when the code is fine but does not grant the role asked for. */
export function roleRefusalDetails(code: SetupCodeRecord, role: Role): Record<string, unknown> {
  const allowed = code.profile.roles;
  return {
    reason: 'role-not-in-profile',
    requestedRole: role,
    allowedRoles: [...allowed],
    nextStep: `This setup code grants role ${allowed.join(' and ')}, not ${role}: connect with role ${allowed[0]}, or mint a code whose profile includes ${role} (\`clawgate qr --profile ${role === 'node' ? 'operator+node' : 'operator'}\`).`,
  };
}
