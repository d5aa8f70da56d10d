/**
 * `dashboard.link`: mint a one-time owner sign-in link for the Control UI (`clawgate dashboard`).
 * Only the owner may mint one: the link signs a browser in with the owner's authority.
 */

import { GatewayError } from '@clawgate/protocol/errors';
import { ADMIN } from '@clawgate/protocol/scopes';
import { Type as T } from '@sinclair/typebox';
import { DASHBOARD_LINK_TTL_MS, MAX_DASHBOARD_LINK_TTL_MS, mintDashboardLink } from '../core/dashboard-link.js';
import type { Gateway } from '../core/gateway.js';

/** What these methods use of the gateway (nothing else reaches them). */
export type DashboardMethodDeps = Pick<Gateway, 'methods' | 'store' | 'clock' | 'random'>;

export function registerDashboardMethods(gw: DashboardMethodDeps): void {
  gw.methods.add({
    name: 'dashboard.link',
    role: 'operator',
    scope: ADMIN,
    advertised: false,
    params: T.Object({ ttlMs: T.Optional(T.Integer({ minimum: 10_000, maximum: MAX_DASHBOARD_LINK_TTL_MS })) }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      if (principal.kind !== 'owner') {
        return new GatewayError('MANAGEMENT_DENIED', {
          vars: { action: 'dashboard link', why: 'a sign-in link carries owner authority, so only the owner credential may mint one' },
        });
      }
      const { ttlMs } = params as { ttlMs?: number };
      const link = await mintDashboardLink(gw, ttlMs ?? DASHBOARD_LINK_TTL_MS, principal.actor);
      // The token travels in the URL fragment: browsers never send it to a server or a proxy log.
      return { linkId: link.linkId, token: link.token, expiresAtMs: link.expiresAtMs, fragment: `#login=${link.token}` };
    },
  });
}
