/**
 * The one decision function for every connect (PROTOCOL.md §8 Admission and pairing). Pure: it sees explicit
 * facts, never a socket or the store, and returns what should happen. The caller (core/connect)
 * gathers the facts and carries the decision out. test/admission.test.ts enumerates every
 * combination of facts and fails on any outcome it does not list.
 */
import type { DetailCode } from '@clawgate/protocol/errors';
import type { Role } from '@clawgate/protocol/frames';
import { SHARED_SECRET_SCOPES, scopeSatisfied } from '@clawgate/protocol/scopes';

/**
 * The credential the connect proved, already checked by the caller:
 * - `owner`: the owner credential from the state dir (all authority, never needs pairing);
 * - `shared`: the gateway token or password;
 * - `device-token`: a device token that belongs to this device (for any role it holds);
 * - `bootstrap`: a setup code bound to this device, carrying its profile's roles;
 * - `none`: nothing presented;
 * - `invalid`: something presented that did not verify (the failure detail is given).
 */
export type Credential =
  | { kind: 'owner' }
  | { kind: 'shared' }
  | { kind: 'device-token' }
  | { kind: 'bootstrap'; roles: readonly Role[] }
  | { kind: 'none' }
  | { kind: 'invalid'; failure: DetailCode };

export interface ConnectFacts {
  credential: Credential;
  /** A device block was present and its proof verified. */
  device: boolean;
  role: Role;
  /** Normalized requested scopes. */
  scopes: readonly string[];
  /** The device's current grant for `role`, or null when it holds no such role. */
  grant: { scopes: readonly string[] } | null;
  /** The device holds some other role already (a repair/upgrade rather than a new device). */
  pairedOtherRole: boolean;
  /** Socket peer is loopback and the request carried no forwarded headers. */
  directLocal: boolean;
  /** Device-less loopback helpers (`cli`/`cli`, `gateway-client`/`backend`) keep their scopes. */
  localHelperClient: boolean;
  /** Policy `autoApproveLocal`. */
  autoApproveLocal: boolean;
  /**
   * Policy `gateway.auth.sharedSecretIsAdminOnHost` (off by default): on a direct loopback socket
   * the shared secret is not capped at SHARED_SECRET_SCOPES, as in OpenClaw.
   */
  sharedSecretIsAdminOnHost: boolean;
  /** The client declared cap `device-pairing-wait`. */
  waitForApproval: boolean;
}

export type PendingKind = 'new-device' | 'role-upgrade' | 'scope-upgrade';

export type Decision =
  /** Refuse the connect with this catalogue entry. */
  | { outcome: 'refuse'; detail: DetailCode }
  /** Admit without a device (owner, or shared secret with the given scopes). */
  | { outcome: 'admit-deviceless'; principal: 'owner' | 'shared'; scopes: 'all' | readonly string[] }
  /** Admit the device under its existing grant with these live scopes. */
  | { outcome: 'admit'; scopes: readonly string[] }
  /**
   * Approve the role/scopes now, without a person (a credential proved local authority). When
   * `missing` is not empty the credential could not grant all of it: the session gets the asked
   * scopes the new grant covers, and one pending scope-upgrade records the rest for the owner.
   */
  | { outcome: 'pair-silently'; kind: PendingKind; grantScopes: readonly string[]; missing: readonly string[] }
  /** Admit with the granted part; record one pending scope-upgrade for the rest. */
  | { outcome: 'admit-with-upgrade'; scopes: readonly string[]; missing: readonly string[] }
  /** Record a pending request; refuse with PAIRING_REQUIRED, or keep the socket waiting. */
  | { outcome: 'hold'; kind: PendingKind; wait: boolean }
  /** Approve from the setup code's profile (core/setup-codes.ts checks the profile). */
  | { outcome: 'redeem-bootstrap' };

function union(a: readonly string[], b: readonly string[]): string[] {
  return [...new Set([...a, ...b])].sort();
}

export function decideConnect(f: ConnectFacts): Decision {
  const cred = f.credential;
  if (cred.kind === 'invalid') return { outcome: 'refuse', detail: cred.failure };
  // The shared secret is handed to devices and nodes, so by itself it is worth at most
  // SHARED_SECRET_SCOPES, even from loopback, unless the owner opted in for this host.
  const capped = cred.kind === 'shared' && !(f.sharedSecretIsAdminOnHost && f.directLocal);
  const withinCap = (s: string) => !capped || scopeSatisfied(SHARED_SECRET_SCOPES, s);

  if (!f.device) {
    // Nodes are always devices: their commands must be attributable to a key.
    if (f.role === 'node') return { outcome: 'refuse', detail: 'DEVICE_IDENTITY_REQUIRED' };
    if (cred.kind === 'owner') return { outcome: 'admit-deviceless', principal: 'owner', scopes: 'all' };
    if (cred.kind === 'shared') {
      // Self-declared scopes of a device-less client mean nothing, except for the local helpers
      // that proved the shared secret on a direct loopback socket (and those only up to the cap:
      // without a device there is no request the owner could approve for the rest).
      const keep = f.directLocal && f.localHelperClient;
      return { outcome: 'admit-deviceless', principal: 'shared', scopes: keep ? f.scopes.filter(withinCap) : [] };
    }
    // Device and bootstrap tokens are bound to a key; without the key they prove nothing.
    return { outcome: 'refuse', detail: 'DEVICE_IDENTITY_REQUIRED' };
  }

  if (cred.kind === 'none') return { outcome: 'refuse', detail: 'AUTH_TOKEN_MISSING' };
  if (cred.kind === 'bootstrap') {
    return cred.roles.includes(f.role) ? { outcome: 'redeem-bootstrap' } : { outcome: 'refuse', detail: 'AUTH_BOOTSTRAP_TOKEN_INVALID' };
  }

  // Silent approval needs a credential that proves local authority on a direct loopback socket
  // (or the owner credential anywhere: the owner could approve the request themselves).
  const silent = cred.kind === 'owner' || (f.autoApproveLocal && f.directLocal && cred.kind === 'shared');

  if (!f.grant) {
    const kind: PendingKind = f.pairedOtherRole ? 'role-upgrade' : 'new-device';
    if (silent) {
      const grantScopes = f.scopes.filter(withinCap).sort();
      return { outcome: 'pair-silently', kind, grantScopes, missing: f.scopes.filter((s) => !withinCap(s)) };
    }
    return { outcome: 'hold', kind, wait: f.waitForApproval };
  }

  const granted = new Set(f.grant.scopes);
  const missing = f.scopes.filter((s) => !scopeSatisfied(granted, s));
  if (missing.length === 0) return { outcome: 'admit', scopes: f.scopes };
  const widen = silent ? missing.filter(withinCap) : [];
  if (widen.length > 0) {
    return { outcome: 'pair-silently', kind: 'scope-upgrade', grantScopes: union(f.grant.scopes, widen), missing: missing.filter((s) => !withinCap(s)) };
  }
  const covered = f.scopes.filter((s) => scopeSatisfied(granted, s));
  return { outcome: 'admit-with-upgrade', scopes: covered, missing };
}
