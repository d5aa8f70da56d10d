/**
 * `device.explain` (what a device holds, what is pending, whether a call would pass) and
 * `approval.link.open` (the one-time link of an approval notification, redeemed by a signed-in
 * Control UI). PROTOCOL.md §Approvals.
 */

import { GatewayError } from '@clawgate/protocol/errors';
import { ADMIN, PAIRING } from '@clawgate/protocol/scopes';
import { Type as T } from '@sinclair/typebox';
import { openRequestLink } from '../core/approval-notify.js';
import { explainDevice } from '../core/explain.js';
import type { Gateway } from '../core/gateway.js';

/** What these methods use of the gateway. */
export type ApprovalMethodDeps = Pick<
  Gateway,
  'methods' | 'store' | 'clock' | 'random' | 'config' | 'broadcast' | 'audit' | 'expirePending' | 'connectedDeviceIds' | 'policies'
>;

export function registerApprovalMethods(gw: ApprovalMethodDeps): void {
  gw.methods.add({
    name: 'device.explain',
    role: 'operator',
    scope: ADMIN,
    params: T.Object(
      {
        target: T.String({ minLength: 1, maxLength: 256 }),
        method: T.Optional(T.String({ minLength: 1, maxLength: 128 })),
        params: T.Optional(T.Record(T.String(), T.Unknown())),
      },
      { additionalProperties: false },
    ),
    handler: async ({ params }) => {
      const p = params as { target: string; method?: string; params?: Record<string, unknown> };
      return explainDevice(gw, p.target, p.method, p.params);
    },
  });

  gw.methods.add({
    name: 'approval.link.open',
    role: 'operator',
    // Only a signed-in session that can decide pairing requests: the link itself proves nothing.
    scope: PAIRING,
    params: T.Object({ token: T.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const res = await openRequestLink(gw, (params as { token: string }).token);
      if (!res.ok) return new GatewayError('APPROVAL_LINK_INVALID', { vars: { reason: res.reason }, details: { reason: res.reason } });
      await gw.audit(principal.actor, 'approval.link.opened', res.requestId, { kind: res.kind });
      const pending =
        res.kind === 'device' ? (await gw.store.getPairingRequest(res.requestId)) !== null : (await gw.store.getNodeSurfaceRequest(res.requestId)) !== null;
      return { requestId: res.requestId, kind: res.kind, pending };
    },
  });
}
