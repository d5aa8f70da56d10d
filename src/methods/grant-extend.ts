/**
 * Time-bound grants: `device.grant.extend` moves the end of a role's time-bound grant. Who may
 * extend is who could have approved it (core/management-policy.ts): operator.pairing within the
 * caller's own scopes, a node role needs operator.admin, and never a device for itself — a
 * time-bound device must not keep itself alive.
 */

import { GatewayError } from '@clawgate/protocol/errors';
import { ROLES, type Role } from '@clawgate/protocol/frames';
import { PAIRING } from '@clawgate/protocol/scopes';
import { Type as T } from '@sinclair/typebox';
import { parseDuration } from '../core/approval-policy.js';
import type { Gateway } from '../core/gateway.js';
import { managementDenial } from '../core/management-policy.js';

export type GrantExtendMethodDeps = Pick<Gateway, 'methods' | 'store' | 'clock' | 'policies' | 'broadcast'>;

export function registerGrantExtendMethods(gw: GrantExtendMethodDeps): void {
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
      // Extending is approving the same grant again for longer: whoever could approve it may
      // (core/management-policy.ts), so never a device for itself, and a node role needs admin.
      const why = managementDenial(principal, { action: 'approve', request: { deviceId: p.deviceId, role: p.role, scopes: grant.scopes } });
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
