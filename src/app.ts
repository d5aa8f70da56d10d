/** Composition root: build a gateway from a config and a store, register every method domain. */

import { networkInterfaces } from 'node:os';
import { ApprovalNotifier } from './automations/approval-notifier.js';
import { Automations } from './automations/service.js';
import type { Timers } from './automations/timers.js';
import type { HttpPost } from './automations/webhook.js';
import type { SshProbe } from './core/approval-engine.js';
import type { ClusterBus } from './core/cluster.js';
import type { GatewayConfig } from './core/config.js';
import { type Clock, type Random, systemClock, systemRandom } from './core/env.js';
import { Gateway } from './core/gateway.js';
import type { GatewayIdentity } from './core/gateway-identity.js';
import { LogRing, teeLogger } from './core/log-ring.js';
import { type Logger, silentLogger } from './core/logger.js';
import type { AuthLimiter } from './core/ratelimit.js';
import { registerApprovalMethods } from './methods/approvals.js';
import { registerAutomationMethods } from './methods/automations.js';
import { registerDashboardMethods } from './methods/dashboard.js';
import { registerDeviceMethods } from './methods/devices.js';
import { registerGrantExtendMethods } from './methods/grant-extend.js';
import { registerLogMethods } from './methods/logs.js';
import { registerNodeMethods } from './methods/nodes.js';
import { registerSetupMethods, setAdvertisedUrl } from './methods/setup.js';
import { registerSystemMethods } from './methods/system.js';
import { AuditAnchorWriter } from './server/audit-anchor.js';
import { loadOrCreateGatewayIdentity } from './server/gateway-key.js';
import { createPrometheusMetrics, type PrometheusMetrics } from './server/metrics.js';
import { type RunningServer, startServer } from './server/server.js';
import { runSshProbe } from './server/ssh-probe.js';
import type { Store } from './store/types.js';

export interface AppOptions {
  config: GatewayConfig;
  store: Store;
  clock?: Clock;
  random?: Random;
  log?: Logger;
  /** Host to listen on (already resolved from `bind`). */
  host: string;
  /** Several instances on one store (PostgreSQL): cross-instance events and a shared failure budget. */
  bus?: ClusterBus | undefined;
  limiter?: AuthLimiter | undefined;
  /** Automations: injected timers and HTTP client (tests); default the real ones. */
  timers?: Timers;
  post?: HttpPost;
  /** The gateway's signing identity; default: the state dir's `gateway-key.pem`, made on first start. */
  identity?: GatewayIdentity | undefined;
  /** The SSH proof of approval policies; default: the system `ssh`. */
  sshProbe?: SshProbe | undefined;
}

/** The automations of each gateway built here (one per gateway). */
const automationsOf = new WeakMap<Gateway, Automations>();
/** The metrics registry of each gateway built with metrics enabled (one registry per gateway). */
const metricsOf = new WeakMap<Gateway, PrometheusMetrics>();

/** The gateway's Prometheus metrics, or null when `gateway.metrics.enabled` is off. */
export function prometheusMetrics(gw: Gateway): PrometheusMetrics | null {
  return metricsOf.get(gw) ?? null;
}

export function automations(gw: Gateway): Automations {
  const a = automationsOf.get(gw);
  if (!a) throw new Error('gateway was not built by createGateway');
  return a;
}

export function createGateway(opts: Omit<AppOptions, 'host'>): Gateway {
  const clock = opts.clock ?? systemClock;
  // Every line the gateway logs is also kept (scrubbed of secrets) for `logs.tail`.
  // Read at each line: the configured secrets may change while the gateway runs.
  let built: Gateway | undefined;
  const ring = new LogRing(clock, () => {
    const c = built?.config ?? opts.config;
    return [c.token, c.password, c.ownerCredential].filter((s): s is string => typeof s === 'string');
  });
  // Metrics on: every store call is timed here, at the root, so no adapter knows about it.
  const prom = opts.config.metrics?.enabled ? createPrometheusMetrics() : null;
  const gw = new Gateway({
    store: prom ? prom.wrapStore(opts.store) : opts.store,
    metrics: prom?.core,
    config: opts.config,
    clock,
    random: opts.random ?? systemRandom,
    log: teeLogger(opts.log ?? silentLogger, ring),
    bus: opts.bus,
    limiter: opts.limiter,
    sshProbe: opts.sshProbe ?? runSshProbe,
    identity: opts.identity ?? (opts.config.stateDir ? loadOrCreateGatewayIdentity(opts.config.stateDir).identity : undefined),
  });
  built = gw;
  registerSystemMethods(gw);
  registerDeviceMethods(gw);
  registerGrantExtendMethods(gw);
  registerSetupMethods(gw);
  registerDashboardMethods(gw);
  registerNodeMethods(gw);
  registerLogMethods(gw, ring);
  const auto = new Automations(gw, {
    ...(opts.timers ? { timers: opts.timers } : {}),
    ...(opts.post ? { post: opts.post } : {}),
    ...(opts.config.automations?.webhook ? { webhook: opts.config.automations.webhook } : {}),
    ...(opts.config.automations?.channels ? { channels: opts.config.automations.channels } : {}),
  });
  registerAutomationMethods(gw, auto);
  automationsOf.set(gw, auto);
  registerApprovalMethods(gw);
  const notifier = new ApprovalNotifier(gw, opts.config.approvalNotify ?? [], () => auto.deliveries.kick());
  notifier.start();
  gw.onStop(() => notifier.idle());
  if (prom) {
    prom.observe(gw);
    metricsOf.set(gw, prom);
  }
  gw.onStop(() => auto.stop());
  return gw;
}

export async function startGateway(opts: AppOptions): Promise<{ gateway: Gateway; server: RunningServer }> {
  const gateway = createGateway(opts);
  if ((await opts.store.getMeta('gateway.id')) === null) {
    await opts.store.setMeta('gateway.id', (opts.random ?? systemRandom).uuid());
  }
  // The audit head is signed with the gateway key into the state dir (docs/security.md §Audit log).
  if (opts.config.stateDir && gateway.identity) {
    const anchor = new AuditAnchorWriter(opts.store, gateway.identity, opts.config.stateDir, gateway.clock, gateway.log);
    await anchor.start();
    gateway.onStop(() => anchor.settled());
  }
  const prom = metricsOf.get(gateway);
  const server = await startServer(gateway, opts.host, opts.config.port, {
    metrics: prom
      ? {
          allowFrom: opts.config.metrics?.allowFrom ?? [],
          render: async () => ({ contentType: prom.registry.contentType, body: await prom.registry.metrics() }),
        }
      : undefined,
  });
  setAdvertisedUrl(gateway, { url: opts.config.publicUrl ?? advertisedUrl(server), tlsFingerprint: server.tlsFingerprint });
  gateway.setOwnUrls(ownUrls(server, opts.config.publicUrl));
  gateway.start();
  // After the server is up: a catch-up cron run may already post to sessions or channels.
  try {
    if (opts.bus) startClusterAutomations(gateway, opts.bus);
    else await automations(gateway).start();
  } catch (err) {
    await server.close();
    throw err;
  }
  return { gateway, server };
}

/** How often the cron leader re-reads the jobs (they may have changed on another instance). */
export const CLUSTER_AUTOMATIONS_RESYNC_MS = 2_000;

/**
 * Several instances (PostgreSQL): cron must run on one instance only, so the scheduler and the
 * delivery worker's timers run on the leader. Any instance still drains deliveries right after
 * it enqueued one; the store leases each due delivery to one worker, so none is sent twice.
 */
function startClusterAutomations(gateway: Gateway, bus: ClusterBus): void {
  const auto = automations(gateway);
  let resync: NodeJS.Timeout | null = null;
  let stopping = false;
  bus.lead(
    'automations',
    () => {
      // Leadership may come back after a broken lock connection; never while the gateway stops.
      if (stopping) return;
      if (resync) clearInterval(resync);
      auto.start().catch((err) => gateway.log.error('automations did not start', { err: String(err) }));
      resync = setInterval(() => {
        void auto.scheduler.changed();
        auto.deliveries.kick();
      }, CLUSTER_AUTOMATIONS_RESYNC_MS);
      resync.unref();
    },
    () => {
      // Another instance takes over; this one must not run cron beside it.
      if (resync) clearInterval(resync);
      void auto.scheduler.stop();
    },
  );
  gateway.onStop(async () => {
    stopping = true;
    if (resync) clearInterval(resync);
  });
}

/**
 * Every URL that reaches this server directly: the listening URL, the public URL, and for a
 * wildcard bind the listening port on each of this host's addresses. Owner proofs must name
 * one of these (a relay on another port or host names its own address, and is refused).
 */
function ownUrls(server: RunningServer, publicUrl: string | undefined): string[] {
  const urls = [server.url, ...(publicUrl ? [publicUrl] : [])];
  if (server.host === '0.0.0.0' || server.host === '::') {
    const scheme = new URL(server.url).protocol;
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) {
        const host = a.address.split('%')[0] as string;
        urls.push(`${scheme}//${host.includes(':') ? `[${host}]` : host}:${server.port}`);
      }
    }
  }
  return urls;
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
