/** Composition root: build a gateway from a config and a store, register every method domain. */

import { networkInterfaces } from 'node:os';
import type { GatewayConfig } from './core/config.js';
import { type Clock, type Random, systemClock, systemRandom } from './core/env.js';
import { Gateway, type Logger, silentLogger } from './core/gateway.js';
import { registerDashboardMethods } from './methods/dashboard.js';
import { registerDeviceMethods } from './methods/devices.js';
import { registerNodeMethods } from './methods/nodes.js';
import { registerSetupMethods, setAdvertisedUrl } from './methods/setup.js';
import { registerSystemMethods } from './methods/system.js';
import { type RunningServer, startServer } from './server/server.js';
import type { Store } from './store/types.js';

export interface AppOptions {
  config: GatewayConfig;
  store: Store;
  clock?: Clock;
  random?: Random;
  log?: Logger;
  /** Host to listen on (already resolved from `bind`). */
  host: string;
}

export function createGateway(opts: Omit<AppOptions, 'host'>): Gateway {
  const gw = new Gateway({
    store: opts.store,
    config: opts.config,
    clock: opts.clock ?? systemClock,
    random: opts.random ?? systemRandom,
    log: opts.log ?? silentLogger,
  });
  registerSystemMethods(gw);
  registerDeviceMethods(gw);
  registerSetupMethods(gw);
  registerDashboardMethods(gw);
  registerNodeMethods(gw);
  return gw;
}

export async function startGateway(opts: AppOptions): Promise<{ gateway: Gateway; server: RunningServer }> {
  const gateway = createGateway(opts);
  if ((await opts.store.getMeta('gateway.id')) === null) {
    await opts.store.setMeta('gateway.id', (opts.random ?? systemRandom).uuid());
  }
  const server = await startServer(gateway, opts.host, opts.config.port);
  setAdvertisedUrl(gateway, { url: opts.config.publicUrl ?? advertisedUrl(server), tlsFingerprint: server.tlsFingerprint });
  gateway.start();
  return { gateway, server };
}

/**
 * The URL setup codes point at when no public URL is configured: the listening URL, or for a
 * wildcard bind the first non-internal IPv4 address of this host (a phone cannot connect to
 * 0.0.0.0).
 */
function advertisedUrl(server: RunningServer): string {
  if (server.host !== '0.0.0.0' && server.host !== '::') return server.url;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4' && !a.internal) {
        const u = new URL(server.url);
        u.hostname = a.address;
        return u.toString().replace(/\/$/, '');
      }
    }
  }
  return server.url;
}
