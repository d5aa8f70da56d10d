/**
 * Time-bound grants: `device.grant.extend` moves the end of a role's time-bound grant. Who may
 * extend is who could have approved it: operator.pairing within the caller's own scopes (a node
 * role needs operator.admin), and never a device for itself — a time-bound device must not keep
 * itself alive.
 */
import { Type as T } from '@sinclair/typebox';
import { parseDuration } from '../core/approval-policy.js';
import type { Gateway } from '../core/gateway.js';
import { isAdmin, type Principal } from '../core/principal.js';
import { GatewayError } from '../protocol/errors.js';
import { ROLES, type Role } from '../protocol/frames.js';
import { ADMIN, PAIRING, uncoveredScopes } from '../protocol/scopes.js';
import type { GrantRecord } from '../store/types.js';

function extendDenial(caller: Principal, deviceId: string, role: Role, grant: GrantRecord): string | null {
  if (isAdmin(caller)) return null;
  if (caller.deviceId === deviceId) return 'a device cannot extend its own grant';
  if (role !== 'operator') return `extending role ${role} needs ${ADMIN}`;
  const beyond = uncoveredScopes([...caller.scopes], grant.scopes);
  if (beyond.length > 0) return `the grant carries ${beyond.join(', ')}, which this session does not hold`;
  return null;
}

/** The part of the gateway these methods use. */
export type ApprovalMethodDeps = Pick<Gateway, 'methods' | 'store' | 'clock' | 'policies' | 'broadcast'>;

export function registerApprovalMethods(gw: ApprovalMethodDeps): void {
  gw.methods.add({
    name: 'device.grant.extend',
    role: 'operator',
    scope: PAIRING,
    params: T.Object(
      {
        deviceId: T.String({ pattern: '^[0-9a-f]{64}$' }),
        role: T.Union(ROLES.map((r) => T.Literal(r))),
        ttl: T.String({ maxLength: 32 }),
      },
      { additionalProperties: false },
    ),
    handler: async ({ principal, params }) => {
      const p = params as { deviceId: string; role: Role; ttl: string };
      const ttlMs = parseDuration(p.ttl);
      if (ttlMs === null)
        return new GatewayError('INVALID_PARAMS', {
          vars: { method: 'device.grant.extend', problem: 'ttl must be a duration like "8h", "30m" or "7d" (1s to 366d)' },
        });
      const grant = await gw.store.getGrant(p.deviceId, p.role);
      if (!grant) {
        if (!(await gw.store.getDevice(p.deviceId))) return new GatewayError('UNKNOWN_DEVICE', { vars: { deviceId: p.deviceId } });
        return new GatewayError('ROLE_NOT_GRANTED', { vars: { deviceId: p.deviceId, role: p.role } });
      }
      const why = extendDenial(principal, p.deviceId, p.role, grant);
      if (why) return new GatewayError('MANAGEMENT_DENIED', { vars: { action: 'grant extension', why } });
      const now = gw.clock.now();
      // From now, not from the old end: "extend by 8h" on a grant about to lapse means 8 more hours of use.
      const expiresAtMs = now + ttlMs;
      const next =
        grant.expiresAtMs != null && grant.expiresAtMs > now
          ? await gw.store.extendGrant(p.deviceId, p.role, expiresAtMs, {
              atMs: now,
              actor: principal.actor,
              action: 'grant.extended',
              subject: p.deviceId,
              data: { role: p.role, previousExpiresAtMs: grant.expiresAtMs, expiresAtMs, ttlMs },
            })
          : null;
      if (!next) return new GatewayError('GRANT_NOT_TIME_BOUND', { vars: { deviceId: p.deviceId, role: p.role } });
      gw.policies.expiry.announceChange(p.deviceId, p.role, expiresAtMs);
      gw.broadcast('device.pair.changed', { deviceId: p.deviceId, change: 'grant-extended', role: p.role, expiresAtMs });
      return { deviceId: p.deviceId, role: p.role, scopes: next.scopes, expiresAtMs, scopesAfterExpiry: next.scopesAfterExpiry ?? [] };
    },
  });
}
