/**
 * Who may manage pairing and tokens (PROTOCOL.md §Device management): one pure decision per
 * action, answering with the reason a caller is refused (or null when it may go ahead).
 * - the owner and operator.admin may manage any device and any role;
 * - operator.pairing callers may approve operator requests within their own scopes, never
 *   their own escalation, and never a node role (that needs admin);
 * - a device may rotate/revoke only its own operator token, within its own scopes;
 * - remove/rename: a session that signed in with its device token (or a setup code) speaks only
 *   for its own device, and not for its node role; any other operator.pairing session (a shared
 *   secret, with or without a device key) may remove or rename other devices, as in the
 *   reference, except that removing a device that holds operator.admin needs operator.admin.
 * That the caller holds operator.pairing at all is checked by dispatch before any of this.
 * The whole table is enumerated by test/management-policy.test.ts.
 */
import type { Role } from '@clawgate/protocol/frames';
import { ADMIN, uncoveredScopes } from '@clawgate/protocol/scopes';
import { isAdmin, type Principal } from './principal.js';

/** The facts of a caller the policy reads. */
export type ManagementCaller = Pick<Principal, 'kind' | 'scopes' | 'deviceId' | 'deviceBound'>;

/** A pending request as the policy sees it. */
export interface RequestFacts {
  deviceId: string;
  role: Role;
  scopes: readonly string[];
}

/** A grant as the policy sees it. */
export interface GrantFacts {
  role: Role;
  scopes: readonly string[];
}

export type ManagementAction =
  | { action: 'approve'; request: RequestFacts }
  | { action: 'reject'; request: RequestFacts }
  | { action: 'rotate' | 'revoke'; deviceId: string; role: Role; scopes: readonly string[] | null; grant: GrantFacts }
  | { action: 'remove' | 'rename'; deviceId: string; grants: readonly GrantFacts[] };

/** Why `caller` may not do `what` (null = allowed). */
export function managementDenial(caller: ManagementCaller, what: ManagementAction): string | null {
  switch (what.action) {
    case 'approve':
      return approvalDenial(caller, what.request);
    case 'reject':
      return rejectionDenial(caller, what.request);
    case 'rotate':
    case 'revoke':
      return tokenDenial(caller, what.action, what.deviceId, what.role, what.scopes, what.grant);
    case 'remove':
    case 'rename':
      return deviceManagementDenial(caller, what.action, what.deviceId, what.grants);
  }
}

/** Why `caller` may not approve `req` (null = allowed). */
export function approvalDenial(caller: ManagementCaller, req: RequestFacts): string | null {
  if (isAdmin(caller)) return null;
  if (caller.deviceId === req.deviceId) return 'a device cannot approve its own request';
  if (req.role !== 'operator') return `approving role ${req.role} needs ${ADMIN}`;
  const beyond = uncoveredScopes([...caller.scopes], req.scopes);
  if (beyond.length > 0) return `the request asks for ${beyond.join(', ')}, which this session does not hold`;
  return null;
}

/**
 * Why `caller` may not reject `req` (null = allowed). Rejecting takes nothing from anyone but
 * the asker, so any pairing session may reject an operator request; a device session rejecting
 * another device's node request needs admin.
 */
export function rejectionDenial(caller: ManagementCaller, req: RequestFacts): string | null {
  if (!isAdmin(caller) && caller.kind === 'device' && caller.deviceId !== req.deviceId && req.role !== 'operator') {
    return `rejecting a ${req.role} request needs ${ADMIN}`;
  }
  return null;
}

/**
 * Why `caller` may not rotate/revoke `role` of `deviceId` (null = allowed). A device session
 * may manage only its own operator token; a device-less shared-secret session is not bound to
 * a device. Either way the caller can neither mint nor keep alive more than it holds: a rotation
 * target must lie within the caller's scopes, and revoking a token that carries write or admin
 * needs that scope too (a pairing-only session cannot cut off an administrator).
 */
export function tokenDenial(
  caller: ManagementCaller,
  action: 'rotate' | 'revoke',
  deviceId: string,
  role: Role,
  scopes: readonly string[] | null,
  grant: GrantFacts,
): string | null {
  if (isAdmin(caller)) return null;
  if (caller.kind === 'device' && caller.deviceId !== deviceId) return `managing another device's token needs ${ADMIN}`;
  if (role !== 'operator') return `managing a ${role} token needs ${ADMIN}`;
  const target = scopes ?? grant.scopes;
  const guarded = action === 'rotate' ? target : target.filter((s) => s === ADMIN || s === 'operator.write');
  const beyond = uncoveredScopes([...caller.scopes], guarded);
  if (beyond.length > 0) return `the token carries ${beyond.join(', ')}, which this session does not hold`;
  return null;
}

/**
 * Why `caller` may not remove or rename `deviceId` (null = allowed). The reference confines only
 * sessions authenticated by their own device token to their own device; a pairing session on a
 * shared secret manages the pairing table (that is what `openclaw devices remove|rename` does).
 * Removal revokes every token of the device, so, as for revocation, a session without admin
 * cannot cut off an administrator by removing its device.
 */
export function deviceManagementDenial(caller: ManagementCaller, action: 'remove' | 'rename', deviceId: string, grants: readonly GrantFacts[]): string | null {
  if (isAdmin(caller)) return null;
  const verb = action === 'remove' ? 'removing' : 'renaming';
  // Automations act for nobody in particular: they never manage another device, whatever they hold.
  if (caller.kind === 'internal' && caller.deviceId !== deviceId) return `${verb} another device needs ${ADMIN}; automations never manage devices`;
  if (caller.deviceBound && caller.deviceId !== deviceId) {
    return `this session signed in with its own device token, so it manages only its own device; ${verb} another device needs ${ADMIN} (or connect with the gateway token from a device approved for operator.pairing)`;
  }
  if (caller.deviceBound && grants.some((g) => g.role !== 'operator')) {
    return `this device also holds a node role; ${verb} it needs ${ADMIN}`;
  }
  if (action === 'remove' && grants.some((g) => g.role === 'operator' && g.scopes.includes(ADMIN))) {
    return `device ${deviceId} holds ${ADMIN}; removing it needs ${ADMIN} too (a pairing-only session cannot cut off an administrator)`;
  }
  return null;
}
