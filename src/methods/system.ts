/** Gateway-level read methods: health, status, presence, identity. */

import { ADMIN, READ } from '@clawgate/protocol/scopes';
import { Type as T } from '@sinclair/typebox';
import type { Gateway } from '../core/gateway.js';
import { GATEWAY_VERSION } from '../core/gateway.js';
import { hasScope } from '../core/principal.js';

const Empty = T.Object({}, { additionalProperties: false });

/** What these methods use of the gateway (nothing else reaches them). */
export type SystemMethodDeps = Pick<Gateway, 'methods' | 'store' | 'clock' | 'config' | 'sessions' | 'startedAtMs' | 'bootId' | 'identity'>;

export function registerSystemMethods(gw: SystemMethodDeps): void {
  gw.methods.add({
    name: 'health',
    role: 'operator',
    scope: READ,
    params: T.Object({ probe: T.Optional(T.Boolean()) }, { additionalProperties: false }),
    handler: async () => {
      const started = gw.clock.now();
      // Touch the store so health reports a broken database instead of a happy process.
      await gw.store.getMeta('schema');
      return {
        ok: true,
        ts: gw.clock.now(),
        durationMs: gw.clock.now() - started,
        uptimeMs: gw.clock.now() - gw.startedAtMs,
        store: gw.store.kind,
        connections: gw.sessions.size,
      };
    },
  });
  gw.methods.add({
    name: 'status',
    role: 'operator',
    scope: READ,
    params: Empty,
    handler: async ({ principal }) => {
      const base = { version: GATEWAY_VERSION, bootId: gw.bootId, uptimeMs: gw.clock.now() - gw.startedAtMs, connections: gw.sessions.size };
      if (!hasScope(principal, ADMIN)) return base;
      // Sensitive operational detail only for admins.
      return {
        ...base,
        stateDir: gw.config.stateDir,
        store: gw.store.kind,
        bind: gw.config.bind,
        port: gw.config.port,
        autoApproveLocal: gw.config.autoApproveLocal,
      };
    },
  });
  gw.methods.add({
    name: 'system-presence',
    role: 'operator',
    scope: READ,
    params: Empty,
    handler: async () =>
      [...gw.sessions.values()].map((s) => ({
        connId: s.connId,
        role: s.role,
        deviceId: s.deviceId ?? null,
        clientId: s.client.id,
        clientMode: s.client.mode,
        displayName: s.client.displayName ?? null,
        platform: s.client.platform,
        address: s.address,
        connectedAtMs: s.connectedAtMs,
      })),
  });
  gw.methods.add({
    name: 'gateway.identity.get',
    role: 'operator',
    scope: READ,
    params: Empty,
    handler: async () => ({ gatewayId: await gw.store.getMeta('gateway.id'), version: GATEWAY_VERSION, bootId: gw.bootId }),
  });
}
