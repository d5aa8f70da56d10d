/**
 * Credential checks of a connect: the owner proof, the shared token and password, the device
 * proof, a dashboard sign-in link, a device token (with the rotation grace) and a setup code.
 * Every presented secret is checked in constant time and counted against the address's failure
 * budget; the result is one value (what was proven, or why the connect is refused right away)
 * for the admission decision (admission.ts). No session, no store write beyond the audit log,
 * the failure budget and the single-use marks of links and grace tokens.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { type DetailCode, GatewayError } from '@clawgate/protocol/errors';
import type { ConnectParams, Role } from '@clawgate/protocol/frames';
import { ownerProofPayload } from '@clawgate/protocol/gateway-proof';
import type { Credential } from './admission.js';
import type { GatewayConfig } from './config.js';
import { consumeDashboardLink, isDashboardLinkToken } from './dashboard-link.js';
import type { Clock, Random } from './env.js';
import type { GatewayIdentity } from './gateway-identity.js';
import { type VerifiedDevice, verifyDeviceProof } from './identity.js';
import type { Logger } from './logger.js';
import type { GatewayMetrics } from './metrics.js';
import type { AuthLimiter, CredentialKind } from './ratelimit.js';
import { claimRotationGrace } from './rotation-grace.js';
import { deviceTokenKey, parseToken, SharedSecret, secretMatchesHash } from './secrets.js';
import { verifyBootstrapToken } from './setup-codes.js';
import type { SetupCodeRecord, Store, TokenRecord } from './store.js';

/** The gateway's own secrets, held as constant-time comparers (never as plain strings to compare). */
export class GatewaySecrets {
  readonly sharedToken: SharedSecret | null;
  readonly sharedPassword: SharedSecret | null;
  readonly owner: SharedSecret | null;
  /** The owner credential as the HMAC key of owner proofs (it is never compared as a bearer secret). */
  readonly ownerKey: Buffer | null;

  constructor(config: Pick<GatewayConfig, 'token' | 'password' | 'ownerCredential'>) {
    this.sharedToken = config.token ? new SharedSecret(config.token) : null;
    this.sharedPassword = config.password ? new SharedSecret(config.password) : null;
    this.owner = config.ownerCredential ? new SharedSecret(config.ownerCredential) : null;
    this.ownerKey = config.ownerCredential ? Buffer.from(config.ownerCredential, 'utf8') : null;
  }
}

export interface CredentialDeps {
  store: Store;
  clock: Clock;
  random: Random;
  log: Logger;
  limiter: AuthLimiter;
  metrics: Pick<GatewayMetrics, 'lockout'>;
  secrets: GatewaySecrets;
  identity: GatewayIdentity | null;
  /** audienceOf() every URL a client may dial to reach this gateway directly. */
  ownAudiences(): ReadonlySet<string>;
  /** Dashboard sign-in links being (or already) claimed in this process (owned by the composition root). */
  dashboardLinkClaims: Set<string>;
  /** Whether a session of this instance was admitted with the token (rotation grace). */
  tokenSeen(deviceId: string, tokenId: string): boolean;
}

export interface CredentialInput {
  params: ConnectParams;
  role: Role;
  nonce: string;
  address: string;
}

/** What a connect's credentials proved, for the decision and for admission. */
export interface ProvenCredentials {
  ok: true;
  credential: Credential;
  device: VerifiedDevice | null;
  /** The device token record the connect proved (credential `device-token`). */
  tokenRecord: TokenRecord | null;
  presentedDeviceToken: string | undefined;
  /** The shared secret that admitted the connect (credential `shared`), else null. */
  sharedVia: 'token' | 'password' | null;
  /** The setup code whose secret this connect proved (credential `bootstrap`). */
  setup?: SetupCodeRecord | undefined;
  /** Extra details of a setup-code refusal (its `reason`). */
  bootstrapDetails?: Record<string, unknown> | undefined;
  /** Admitted within the rotation grace: mint the successor and hand it out in hello-ok. */
  reissueToken: boolean;
}

/** A connect refused before any decision: malformed credentials, a locked-out address, a bad device proof. */
export interface RefusedCredentials {
  ok: false;
  error: GatewayError;
}

export type CredentialCheck = ProvenCredentials | RefusedCredentials;

/** The credential a connect presented (the `auth_method` label of the connect metric). */
export function presentedMethod(params: ConnectParams): string {
  const auth = params.auth ?? {};
  if (auth.bootstrapToken !== undefined) return 'bootstrap-token';
  if (auth.deviceToken !== undefined) return 'device-token';
  if (auth.token !== undefined) {
    if (parseToken('device', auth.token) !== null) return 'device-token';
    if (isDashboardLinkToken(auth.token)) return 'dashboard-link';
    return 'token';
  }
  if (auth.password !== undefined) return 'password';
  return params.device ? 'device' : 'none';
}

/** Does `proof` prove the owner credential for this connection's nonce, this gateway's key and `audience`? Constant time. */
function ownerProofHolds(deps: CredentialDeps, proof: string, audience: string, nonce: string): boolean {
  const key = deps.secrets.ownerKey;
  if (!key || !deps.identity) return false;
  const expected = createHmac('sha256', key)
    .update(ownerProofPayload(nonce, deps.identity.publicKey, audience), 'utf8')
    .digest();
  const given = Buffer.from(proof, 'base64url');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

async function isLocked(deps: CredentialDeps, address: string, kind: CredentialKind): Promise<boolean> {
  return (await deps.limiter.retryAfterMs(address, kind)) > 0;
}

async function rateLimited(deps: CredentialDeps, address: string, kind: CredentialKind): Promise<RefusedCredentials> {
  const retryAfterMs = await deps.limiter.retryAfterMs(address, kind);
  return { ok: false, error: new GatewayError('AUTH_RATE_LIMITED', { retryAfterMs, details: { authReason: 'rate_limited', retryAfterMs } }) };
}

async function verifyDeviceToken(store: Store, token: string, deviceId: string): Promise<{ ok: true; token: TokenRecord } | { ok: false }> {
  // A clawgate token by its id, or one imported from OpenClaw by the id derived from it.
  const parsed = deviceTokenKey(token);
  if (!parsed) return { ok: false };
  const rec = await store.getToken(parsed.id);
  // Compare the secret even when the row is unusable, so timing says nothing about which check failed.
  const matches = rec ? secretMatchesHash(parsed.secret, rec.secretHash) : false;
  if (!rec || !matches || rec.deviceId !== deviceId || rec.revokedAtMs !== undefined) return { ok: false };
  return { ok: true, token: rec };
}

/**
 * Check every credential a connect presented, count failures and successes against the
 * address's budget, and say what was proven. Order matters: a failed shared secret refuses the
 * connect, so a valid device token next to it never turns it into an uncounted guess.
 */
export async function checkCredentials(deps: CredentialDeps, input: CredentialInput): Promise<CredentialCheck> {
  const { params, role, nonce, address } = input;
  const auth = params.auth ?? {};
  const { secrets, limiter } = deps;

  // 0. Owner authority is proven, never sent: an HMAC by the owner credential over this
  // connection's nonce, this gateway's key and the address the client dialed.
  let credential: Credential = { kind: 'none' };
  let limitedKind: CredentialKind | null = null;
  let tokenFailure: DetailCode | null = null;
  let dashboardLink: string | null = null;
  /** Which shared secret admitted this connect (what hello-ok.auth.method reports). */
  let sharedVia: 'token' | 'password' | null = null;
  if (auth.ownerProof !== undefined || auth.ownerAudience !== undefined) {
    if (auth.ownerProof === undefined || auth.ownerAudience === undefined) {
      return { ok: false, error: new GatewayError('INVALID_CONNECT_PARAMS', { vars: { problem: 'auth.ownerProof and auth.ownerAudience go together' } }) };
    }
    if (auth.token !== undefined || auth.password !== undefined || auth.deviceToken !== undefined || auth.bootstrapToken !== undefined) {
      return {
        ok: false,
        error: new GatewayError('INVALID_CONNECT_PARAMS', { vars: { problem: 'auth.ownerProof cannot be combined with another credential' } }),
      };
    }
    if (await isLocked(deps, address, 'owner')) return await rateLimited(deps, address, 'owner');
    // An address that is not ours says nothing about the credential, so it costs no attempt.
    if (!deps.ownAudiences().has(auth.ownerAudience)) tokenFailure = 'AUTH_OWNER_AUDIENCE_MISMATCH';
    else if (ownerProofHolds(deps, auth.ownerProof, auth.ownerAudience, nonce)) credential = { kind: 'owner' };
    else {
      tokenFailure = 'AUTH_OWNER_PROOF_INVALID';
      limitedKind = 'owner';
    }
  }

  // 1. Shared secrets (constant-time, rate limited per address+kind).
  const deviceTokenInSlot =
    auth.token !== undefined && parseToken('device', auth.token) !== null && params.device !== undefined && auth.deviceToken === undefined;
  if (auth.token !== undefined) {
    // A device token in the token slot is limited as a device token, not as a shared-secret guess.
    if (!deviceTokenInSlot && (await isLocked(deps, address, 'shared'))) return await rateLimited(deps, address, 'shared');
    if (secrets.owner?.matches(auth.token)) {
      // Whoever holds the owner credential proves it; a bearer copy may have reached a stranger
      // on the way, so it opens nothing, and the log and the audit trail say it travelled.
      tokenFailure = 'AUTH_OWNER_CREDENTIAL_SENT';
      deps.log.warn('the owner credential was sent as a bearer token and refused; treat it as exposed', { address });
      void audit(deps, 'auth.owner-credential-sent', address, {});
    } else if (secrets.sharedToken?.matches(auth.token)) {
      credential = { kind: 'shared' };
      sharedVia = 'token';
    } else if (deviceTokenInSlot) {
      // A device token sent in the token slot: verified below like auth.deviceToken.
    } else if (params.device !== undefined && isDashboardLinkToken(auth.token)) {
      // A one-time owner sign-in link: consumed below, once the device proof holds.
      dashboardLink = auth.token;
    } else {
      tokenFailure = secrets.sharedToken ? 'AUTH_TOKEN_MISMATCH' : 'AUTH_TOKEN_NOT_CONFIGURED';
      limitedKind = 'shared';
    }
  }
  // Every presented shared secret is checked, whatever else came with it: a wrong password next
  // to a valid token is a counted failure, never ignored (else a device token holder could guess
  // passwords for free and read the answer from hello-ok).
  let passwordFailed = false;
  if (auth.password !== undefined) {
    if (await isLocked(deps, address, 'password')) return await rateLimited(deps, address, 'password');
    if (secrets.sharedPassword?.matches(auth.password)) {
      if (credential.kind === 'none' && tokenFailure === null && dashboardLink === null) {
        credential = { kind: 'shared' };
        sharedVia = 'password';
      }
    } else if (tokenFailure === null) {
      tokenFailure = secrets.sharedPassword ? 'AUTH_PASSWORD_MISMATCH' : 'AUTH_PASSWORD_NOT_CONFIGURED';
      limitedKind = 'password';
    } else passwordFailed = true;
  }

  // 2. Device proof.
  let device: VerifiedDevice | null = null;
  if (params.device) {
    const proof = verifyDeviceProof(params, role, nonce, deps.clock.now());
    if (proof instanceof GatewayError) return { ok: false, error: proof };
    device = proof;
  }
  if (dashboardLink !== null && device) {
    if (await consumeDashboardLink(deps, deps.dashboardLinkClaims, dashboardLink, address, device.deviceId)) credential = { kind: 'owner' };
    else {
      tokenFailure = 'AUTH_DASHBOARD_LINK_INVALID';
      limitedKind = 'shared';
    }
  }

  // 3. Device token (auth.deviceToken, or a device token in the token slot).
  let tokenRecord: TokenRecord | null = null;
  let presentedDeviceToken: string | undefined;
  let reissueToken = false;
  const deviceTokenCandidate = auth.deviceToken ?? (tokenFailure === null && credential.kind === 'none' ? auth.token : undefined);
  // A shared secret that failed above refuses the connect: a valid device token must not turn
  // it into an uncounted guess.
  if (credential.kind === 'none' && tokenFailure === null && deviceTokenCandidate !== undefined && device) {
    // The token is read while the budget is checked (one round trip instead of two on a networked
    // store); a locked address is refused before anything the read found is used.
    const [locked, check] = await Promise.all([isLocked(deps, address, 'device-token'), verifyDeviceToken(deps.store, deviceTokenCandidate, device.deviceId)]);
    if (locked) return await rateLimited(deps, address, 'device-token');
    if (check.ok) {
      credential = { kind: 'device-token' };
      tokenRecord = check.token;
      presentedDeviceToken = deviceTokenCandidate;
    } else if (await claimRotationGrace(deps.store, deviceTokenCandidate, device.deviceId, role, deps.clock.now(), (t) => deps.tokenSeen(device.deviceId, t))) {
      // The token a pushed rotation just retired, presented once within the grace by the key that
      // proved itself then: admitted, and the successor goes out in hello-ok (rotation-grace.ts).
      credential = { kind: 'device-token' };
      reissueToken = true;
    } else {
      tokenFailure = 'AUTH_DEVICE_TOKEN_MISMATCH';
      limitedKind = 'device-token';
    }
  }
  // A setup code (bootstrap token) proves something only together with the key it binds to,
  // so without a verified device block it is not even looked at.
  let setup: SetupCodeRecord | undefined;
  let bootstrapDetails: Record<string, unknown> | undefined;
  if (credential.kind === 'none' && auth.bootstrapToken !== undefined && tokenFailure === null && device) {
    if (await isLocked(deps, address, 'bootstrap')) return await rateLimited(deps, address, 'bootstrap');
    const check = await verifyBootstrapToken(deps, auth.bootstrapToken, device, address);
    if (check.ok) {
      credential = { kind: 'bootstrap', roles: check.code.profile.roles };
      setup = check.code;
    } else {
      tokenFailure = check.detail;
      // Only a wrong or unknown secret is a guess; a holder of the real code is told why it is refused.
      limitedKind = check.guess ? 'bootstrap' : null;
      bootstrapDetails = check.details;
    }
  }

  // 4. The failure budget.
  if (tokenFailure) {
    credential = { kind: 'invalid', failure: tokenFailure };
    for (const kind of [limitedKind, passwordFailed ? 'password' : null] as const) {
      if (!kind) continue;
      const lockMs = await limiter.fail(address, kind);
      if (lockMs > 0) {
        deps.metrics.lockout(kind);
        void audit(deps, 'auth.rate-limited', address, { kind, lockoutMs: lockMs });
      }
    }
  } else if (credential.kind !== 'none' && credential.kind !== 'bootstrap') {
    // A setup code never clears the bootstrap counter: one valid code must not buy more guesses.
    const kind =
      credential.kind === 'device-token' ? 'device-token' : auth.ownerProof !== undefined ? 'owner' : sharedVia === 'password' ? 'password' : 'shared';
    await limiter.succeed(address, kind);
  }
  return { ok: true, credential, device, tokenRecord, presentedDeviceToken, sharedVia, setup, bootstrapDetails, reissueToken };
}

async function audit(deps: CredentialDeps, action: string, subject: string, data: Record<string, unknown>): Promise<void> {
  await deps.store.appendAudit({ atMs: deps.clock.now(), actor: 'gateway', action, subject, data });
}
