/**
 * node.invoke across instances. A node's socket lives on one instance; an operator
 * may be connected to another. The instance holding the node records it in the shared presence
 * table; an invocation for a node not connected here is sent to that instance over the bus, run
 * there by its NodeRegistry (same checks, limits, timeout and cancel as a local call) and the
 * outcome is sent back. Surface approvals made elsewhere reach the node's live session too.
 */
import { CATALOGUE, type DetailCode, GatewayError } from '@clawgate/protocol/errors';
import type { Store } from '../store/types.js';
import type { ClusterBus, ClusterEvent, RemoteNode } from './cluster.js';
import type { Random } from './env.js';
import type { Logger } from './logger.js';
import type { InvokeInput, NodeRegistry, NodeRouting } from './nodes.js';
import type { SessionPrincipal } from './principal.js';

/** Extra time the asking instance waits beyond the invocation's own timeout before giving up. */
export const ROUTED_GRACE_MS = 5_000;
/**
 * While a routed invocation is outstanding the asking instance checks this often that the
 * holding instance still beats: one that died (SIGKILL, power loss) ends the call with
 * NODE_DISCONNECTED once its presence expires (STALE_MS), not after the whole timeout.
 */
export const ROUTED_LIVENESS_CHECK_MS = 1_000;

type Outcome = Extract<ClusterEvent, { type: 'node-invoke-result' }>['outcome'];

/** What routing needs: this instance's nodes, the store (surface decisions), ids and the log. */
export interface ClusterNodeDeps {
  nodes: Pick<NodeRegistry, 'byConn' | 'byNode' | 'limits' | 'invoke' | 'applyDecision'>;
  store: Pick<Store, 'getNodeSurface'>;
  random: Random;
  log: Logger;
}

export class ClusterNodeRouter implements NodeRouting {
  /** Invocations this instance sent elsewhere, by call id. */
  private readonly waiting = new Map<string, (o: Outcome) => void>();
  /** Invocations this instance runs for another, by call id. */
  private readonly serving = new Map<string, AbortController>();

  constructor(
    private readonly gw: ClusterNodeDeps,
    private readonly bus: ClusterBus,
  ) {}

  /**
   * A node session was admitted here: other instances can route to it once this resolves (the
   * gateway awaits it before hello-ok). Other device sessions are announced without waiting.
   */
  async announce(session: SessionPrincipal): Promise<void> {
    if (!session.deviceId) return;
    try {
      const live = session.role === 'node' ? this.gw.nodes.byConn(session.connId) : undefined;
      const detail = live ? { declared: live.declared, caps: live.caps, version: live.version, address: session.address } : undefined;
      await this.bus.announceSession(session.connId, session.deviceId, session.role, session.connectedAtMs, detail);
    } catch (err) {
      // The session still works through this instance; only what the others see is affected.
      this.gw.log.warn('could not record session presence', { deviceId: session.deviceId, err: String(err) });
    }
  }

  withdraw(session: SessionPrincipal): void {
    if (!session.deviceId) return;
    this.bus.withdrawSession(session.connId).catch((err) => this.gw.log.warn('could not clear session presence', { err: String(err) }));
  }

  /** Nodes whose socket is on another live instance (node.list shows them as connected). */
  async remoteNodes(): Promise<Map<string, RemoteNode>> {
    try {
      const all = await this.bus.nodePresence();
      for (const [id, n] of all) if (n.instanceId === this.bus.instanceId) all.delete(id);
      return all;
    } catch (err) {
      this.gw.log.warn('could not read node presence', { err: String(err) });
      return new Map();
    }
  }

  /** Run an invocation on the instance holding the node; null when no live instance holds it. */
  async invoke(input: InvokeInput, signal: AbortSignal): Promise<unknown | null> {
    const target = await this.bus.locateNode(input.nodeId);
    if (!target || target === this.bus.instanceId) return null;
    const callId = this.gw.random.uuid();
    const limits = this.gw.nodes.limits;
    const waitMs = Math.min(input.timeoutMs ?? limits.defaultTimeoutMs, limits.maxTimeoutMs) + ROUTED_GRACE_MS;
    const outcome = await new Promise<Outcome>((resolve) => {
      const finish = (o: Outcome) => {
        clearTimeout(timer);
        clearInterval(watch);
        signal.removeEventListener('abort', onAbort);
        this.waiting.delete(callId);
        resolve(o);
      };
      const onAbort = () => {
        this.publish({ type: 'node-invoke-cancel', to: target, callId });
        finish({ ok: false, error: new GatewayError('NODE_INVOKE_CANCELLED', { vars: { nodeId: input.nodeId, command: input.command } }).shape });
      };
      // The holding instance enforces the timeout; this only covers that instance dying mid-call.
      const disconnected = () =>
        finish({ ok: false, error: new GatewayError('NODE_DISCONNECTED', { vars: { nodeId: input.nodeId, command: input.command } }).shape });
      const timer = setTimeout(() => disconnected(), waitMs);
      let checking = false;
      const watch = setInterval(() => {
        if (checking) return;
        checking = true;
        this.bus
          .instanceLive(target)
          .then((live) => {
            if (!live) disconnected();
          })
          // The database itself unreachable says nothing about the target: keep waiting.
          .catch(() => {})
          .finally(() => {
            checking = false;
          });
      }, ROUTED_LIVENESS_CHECK_MS);
      watch.unref();
      this.waiting.set(callId, finish);
      signal.addEventListener('abort', onAbort, { once: true });
      this.bus.publish({ type: 'node-invoke', to: target, from: this.bus.instanceId, callId, input }).catch((err) => {
        this.gw.log.warn('could not route node.invoke', { nodeId: input.nodeId, err: String(err) });
        finish({ ok: false, error: new GatewayError('NODE_NOT_CONNECTED', { vars: { nodeId: input.nodeId }, details: { nodeId: input.nodeId } }).shape });
      });
    });
    if (outcome.ok) return outcome.value;
    return errorFromShape(outcome.error);
  }

  /** Events addressed to this instance (others are ignored). */
  handle(e: ClusterEvent): void {
    switch (e.type) {
      case 'node-invoke':
        if (e.to === this.bus.instanceId) void this.serve(e);
        return;
      case 'node-invoke-result':
        if (e.to === this.bus.instanceId) this.waiting.get(e.callId)?.(e.outcome);
        return;
      case 'node-invoke-cancel':
        if (e.to === this.bus.instanceId) this.serving.get(e.callId)?.abort();
        return;
      case 'node-surface-changed':
        void this.surfaceChanged(e);
        return;
      default:
        return;
    }
  }

  private async serve(e: Extract<ClusterEvent, { type: 'node-invoke' }>): Promise<void> {
    const ac = new AbortController();
    this.serving.set(e.callId, ac);
    let outcome: Outcome;
    try {
      const r = await this.gw.nodes.invoke(e.input, ac.signal);
      outcome = r instanceof GatewayError ? { ok: false, error: r.shape } : { ok: true, value: r };
    } catch (err) {
      const ref = this.gw.random.uuid().slice(0, 8);
      this.gw.log.error('routed node.invoke failed with an exception', { ref, err: String((err as Error)?.stack ?? err) });
      outcome = { ok: false, error: new GatewayError('INTERNAL_ERROR', { vars: { ref } }).shape };
    } finally {
      this.serving.delete(e.callId);
    }
    this.publish({ type: 'node-invoke-result', to: e.from, callId: e.callId, outcome });
  }

  /** Tell the other instances an operator decided on a node's surface. */
  surfaceDecided(deviceId: string, requestId: string, decision: 'approved' | 'rejected', ts: number): void {
    this.publish({ type: 'node-surface-changed', deviceId, requestId, decision, ts });
  }

  /** Another instance decided on a surface: live sessions of that node here follow the store. */
  private async surfaceChanged(e: Extract<ClusterEvent, { type: 'node-surface-changed' }>): Promise<void> {
    if (!this.gw.nodes.byNode(e.deviceId)) return;
    try {
      const surface = await this.gw.store.getNodeSurface(e.deviceId);
      // Same rule as a decision made here; the approved surface is re-read from the store.
      this.gw.nodes.applyDecision({ requestId: e.requestId, nodeId: e.deviceId, decision: e.decision, ts: e.ts }, surface);
    } catch (err) {
      this.gw.log.warn('could not apply a node surface decision', { nodeId: e.deviceId, err: String(err) });
    }
  }

  private publish(e: ClusterEvent): void {
    this.bus.publish(e).catch((err) => this.gw.log.warn('could not publish a cluster event', { type: e.type, err: String(err) }));
  }
}

/** Rebuild a catalogue error that crossed the bus, keeping its exact shape. */
function errorFromShape(shape: GatewayError['shape']): GatewayError {
  const detail = (shape.details as { code?: string } | undefined)?.code;
  const known = detail !== undefined && Object.hasOwn(CATALOGUE, detail);
  const err = new GatewayError(known ? (detail as DetailCode) : 'INTERNAL_ERROR', known ? {} : { vars: { ref: 'routed' } });
  if (known) Object.assign(err.shape, shape);
  return err;
}
