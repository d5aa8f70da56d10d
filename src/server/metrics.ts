/**
 * The Prometheus binding of the gateway's metrics: one prom-client Registry per gateway (a test
 * process runs many gateways), the core's GatewayMetrics interface bound to its counters and
 * histograms, gauges read from the live gateway at scrape time, and a store wrapper that times
 * every store call. Only this module and the server's `/metrics` route know prom-client.
 */
import { createRequire } from 'node:module';
import { ROLES } from '@clawgate/protocol/frames';
import type * as PromClient from 'prom-client';
import type { Gateway } from '../core/gateway.js';
import type { GatewayMetrics } from '../core/metrics.js';
import type { DeliveryAttempt, Store } from '../store/types.js';

/** Latency buckets in seconds: a store call or a close is milliseconds, an approval minutes to days. */
const FAST_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const INVOKE_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const APPROVAL_BUCKETS_S = [1, 5, 15, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600];

export interface PrometheusMetrics {
  readonly registry: PromClient.Registry;
  /** What the core calls. */
  readonly core: GatewayMetrics;
  /** The store, every call timed and its failures counted (by method name). */
  wrapStore(store: Store): Store;
  /** Gauges that read the gateway's live state at scrape time. */
  observe(gateway: Pick<Gateway, 'sessions' | 'store'>): void;
}

/**
 * prom-client, loaded the first time metrics are created: a gateway without `--metrics` never
 * loads it (its module graph is ~45 ms of a cold start). It is CommonJS, so require() loads it
 * synchronously here, and the single-file build leaves it a package import.
 */
let promClient: typeof PromClient | null = null;
function prom(): typeof PromClient {
  promClient ??= createRequire(import.meta.url)('prom-client') as typeof PromClient;
  return promClient;
}

export function createPrometheusMetrics(monotonicMs: () => number = () => performance.now()): PrometheusMetrics {
  const { Counter, Gauge, Histogram, Registry } = prom();
  const registry = new Registry();
  const registers = [registry];
  const connects = new Counter({
    name: 'clawgate_connects_total',
    help: 'Finished WebSocket connects, by outcome (ok, waiting, or the refusal detail code) and the credential presented.',
    labelNames: ['outcome', 'auth_method'] as const,
    registers,
  });
  const approvals = new Histogram({
    name: 'clawgate_pairing_approval_latency_seconds',
    help: 'Time from a pairing request being filed to an operator approving it.',
    buckets: APPROVAL_BUCKETS_S,
    registers,
  });
  const revocations = new Histogram({
    name: 'clawgate_revocation_close_latency_seconds',
    help: 'Time from a revocation or removal being made to the live session it ends being closed, by reason.',
    labelNames: ['reason'] as const,
    buckets: FAST_BUCKETS_S,
    registers,
  });
  const invokes = new Histogram({
    name: 'clawgate_node_invoke_duration_seconds',
    help: 'node.invoke latency by outcome (ok, node_error, or the failure detail code).',
    labelNames: ['outcome'] as const,
    buckets: INVOKE_BUCKETS_S,
    registers,
  });
  const lockouts = new Counter({
    name: 'clawgate_auth_lockouts_total',
    help: 'Addresses locked out after running out their failure budget, by credential kind.',
    labelNames: ['kind'] as const,
    registers,
  });
  const pruned = new Counter({
    name: 'clawgate_retention_pruned_total',
    help: 'Records deleted by the retention prune, by kind.',
    labelNames: ['kind'] as const,
    registers,
  });
  const webhooks = new Counter({
    name: 'clawgate_webhook_deliveries_total',
    help: 'Webhook delivery attempts by outcome (delivered, retry, dead).',
    labelNames: ['outcome'] as const,
    registers,
  });
  const storeLatency = new Histogram({
    name: 'clawgate_store_operation_duration_seconds',
    help: 'Store call latency by operation (the store method).',
    labelNames: ['operation'] as const,
    buckets: FAST_BUCKETS_S,
    registers,
  });
  const storeErrors = new Counter({
    name: 'clawgate_store_errors_total',
    help: 'Store calls that failed, by operation.',
    labelNames: ['operation'] as const,
    registers,
  });

  const core: GatewayMetrics = {
    connect: (outcome, authMethod) => connects.inc({ outcome, auth_method: authMethod }),
    approval: (ms) => approvals.observe(Math.max(0, ms) / 1000),
    revocationClose: (reason, ms) => revocations.observe({ reason }, Math.max(0, ms) / 1000),
    invoke: (outcome, ms) => invokes.observe({ outcome }, Math.max(0, ms) / 1000),
    lockout: (kind) => lockouts.inc({ kind }),
    pruned: (kind, count) => pruned.inc({ kind }, count),
  };

  const wrapStore = (store: Store): Store => {
    const wrapped = new Map<PropertyKey, unknown>();
    return new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function' || typeof prop !== 'string' || prop === 'constructor') return value;
        let fn = wrapped.get(prop);
        if (!fn) {
          const operation = prop;
          fn = (...args: unknown[]) => {
            const started = monotonicMs();
            const done = (ok: boolean) => {
              storeLatency.observe({ operation }, (monotonicMs() - started) / 1000);
              if (!ok) storeErrors.inc({ operation });
            };
            let result: unknown;
            try {
              result = (value as (...a: unknown[]) => unknown).apply(target, args);
            } catch (err) {
              done(false);
              throw err;
            }
            if (result instanceof Promise) {
              return result.then(
                (v) => {
                  done(true);
                  // The delivery worker records every attempt here: its outcome is the webhook metric.
                  if (operation === 'recordDeliveryAttempt' && v !== null) webhooks.inc({ outcome: (args[0] as DeliveryAttempt).outcome });
                  return v;
                },
                (err: unknown) => {
                  done(false);
                  throw err;
                },
              );
            }
            done(true);
            return result;
          };
          wrapped.set(prop, fn);
        }
        return fn;
      },
    });
  };

  const observe = (gw: Pick<Gateway, 'sessions' | 'store'>): void => {
    new Gauge({
      name: 'clawgate_sessions_active',
      help: 'Live authenticated sessions on this instance, by role.',
      labelNames: ['role'] as const,
      registers,
      collect() {
        const counts = new Map<string, number>(ROLES.map((r) => [r, 0]));
        for (const s of gw.sessions.values()) counts.set(s.role, (counts.get(s.role) ?? 0) + 1);
        for (const [role, n] of counts) this.set({ role }, n);
      },
    });
    // Read from the store at scrape time; a store that is away leaves the last value standing
    // (the store error counter and /readyz say why).
    new Gauge({
      name: 'clawgate_pairing_requests_pending',
      help: 'Pairing requests waiting for an operator (all instances sharing the store).',
      registers,
      async collect() {
        try {
          this.set((await gw.store.listPairingRequests()).length);
        } catch {
          // counted by clawgate_store_errors_total
        }
      },
    });
    new Gauge({
      name: 'clawgate_webhook_queue_depth',
      help: 'Webhook deliveries waiting to be sent (pending, including those backing off).',
      registers,
      async collect() {
        try {
          this.set(await gw.store.pendingDeliveryCount());
        } catch {
          // counted by clawgate_store_errors_total
        }
      },
    });
  };

  return { registry, core, wrapStore, observe };
}
