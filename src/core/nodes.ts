/**
 * Nodes: live node connections, their command surfaces, and `node.invoke` routing.
 *
 * A node declares `caps`/`commands` on every connect; those are claims. What may be routed is
 * the declared commands that an operator approved (the device's approved surface in the store).
 * A new or wider declaration files one pending surface request per device (stable id, persisted)
 * and is announced to operators; until it is approved the new commands are refused, and a
 * refused invocation is never queued. Approval reaches the node on its open socket as
 * `node.pair.resolved`: no reconnect, no new token.
 *
 * This module never sees a socket: nodes are SessionPrincipals the gateway hands over.
 */
import { GatewayError } from '@clawgate/protocol/errors';
import type { ConnectParams } from '@clawgate/protocol/frames';
import { ADMIN } from '@clawgate/protocol/scopes';
import { cleanOptional, cleanText, isSafeText } from '@clawgate/protocol/text';
import type { NodePendingView } from '@clawgate/protocol/views';
import type { NodeSurfaceRecord, NodeSurfaceRequest, Store } from '../store/types.js';
import { nodeRequestState, type QuorumDeps, voteOnNodeRequest } from './approval-flow.js';
import type { ApprovalProgress } from './approval-quorum.js';
import type { Clock, Random } from './env.js';
import type { Broadcast } from './events.js';
import type { GatewayMetrics } from './metrics.js';
import { HOST_COMMANDS, requiredApproveScopes } from './node-surface-policy.js';
import { hasScope, type Principal, type SessionPrincipal } from './principal.js';

/** The wire views live in the protocol module; re-exported for the gateway code that builds them. */
export type { NodePendingView };

export interface NodeLimits {
  /** Invocations one node may have in flight; more are refused with NODE_BUSY (never queued). */
  maxInflightPerNode: number;
  /** Bytes of an invocation's params JSON. */
  maxParamsBytes: number;
  /** Bytes of a node's result payload JSON. */
  maxResultBytes: number;
  /** Bytes of a `node.event` payload. */
  maxEventBytes: number;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
}

export const DEFAULT_NODE_LIMITS: NodeLimits = {
  // The node hosts' own limit (clawgate's MAX_CONCURRENT_INVOKES and OpenClaw's node host both run 8
  // at once): a higher gateway limit would only route invokes 9+ to a node that answers NODE_HOST_BUSY.
  maxInflightPerNode: 8,
  maxParamsBytes: 1024 * 1024,
  maxResultBytes: 8 * 1024 * 1024,
  maxEventBytes: 256 * 1024,
  defaultTimeoutMs: 30_000,
  maxTimeoutMs: 600_000,
};

/** Commands whose invocation (not only approval) needs operator.admin, as in the reference. */
export const ADMIN_INVOKE_COMMANDS: ReadonlySet<string> = new Set([
  'browser.proxy',
  'browser.proxy.upload.v1',
  'fs.listDir',
  'terminal.upload',
  'system.execApprovals.get',
  'system.execApprovals.set',
]);

/**
 * Trim, drop empties, de-duplicate, sort (so surfaces compare element-wise). A command or cap name with an unsafe character
 * (protocol/text.ts) is dropped: it is neither shown to an approver nor ever routable, and a
 * node is not refused for it (replacing it would name a command the node does not have).
 */
export function normalizeList(list: readonly string[] | undefined): string[] {
  return [...new Set((list ?? []).map((s) => s.trim()).filter((s) => s.length > 0 && isSafeText(s)))].sort();
}

export interface LiveNode {
  session: SessionPrincipal;
  nodeId: string;
  caps: string[];
  /** What the node declared on this connect. */
  declared: string[];
  /** Declared and approved: the only commands node.invoke routes. */
  routable: Set<string>;
  permissions: Record<string, boolean>;
  version: string;
  /** The surface request this connection filed or refreshed (null when its surface is approved). */
  pendingRequestId: string | null;
  inflight: Set<string>;
}

interface Invocation {
  id: string;
  live: LiveNode;
  command: string;
  settle(outcome: unknown): void;
}

export interface InvokeInput {
  nodeId: string;
  command: string;
  paramsJSON?: string | undefined;
  timeoutMs?: number | undefined;
  idempotencyKey?: string | undefined;
}

/** What the node registry needs of the gateway: the store, time, ids, metrics and operator events. */
export interface NodeRegistryDeps {
  store: Pick<Store, 'getNodeSurface' | 'upsertNodeSurfaceRequest' | 'getGrant' | 'approveNodeSurface' | 'deleteNodeSurfaceRequest'>;
  clock: Clock;
  random: Random;
  metrics: Pick<GatewayMetrics, 'invoke'>;
  broadcast: Broadcast;
  /** Approval quorum on node commands (`node:<command>`, core/approval-flow.ts). */
  quorum: QuorumDeps;
}

/** node.invoke to nodes held by other instances, and surface decisions they must hear of (cluster-nodes.ts). */
export interface NodeRouting {
  /** The outcome from the instance holding the node, or null when no live instance holds it. */
  invoke(input: InvokeInput, signal: AbortSignal): Promise<unknown | null>;
  surfaceDecided(deviceId: string, requestId: string, decision: 'approved' | 'rejected', ts: number): void;
}

export class NodeRegistry {
  readonly limits: NodeLimits;
  /** Live node sessions by connection id. */
  private readonly live = new Map<string, LiveNode>();
  /** The same live sessions by node id (a node may hold several sockets): lookups per node, not scans. */
  private readonly ofNode = new Map<string, Set<LiveNode>>();
  private readonly invocations = new Map<string, Invocation>();

  /** Set once by the composition root when several instances share a store. */
  private router: NodeRouting | null = null;

  constructor(
    private readonly gw: NodeRegistryDeps,
    limits: Partial<NodeLimits> = {},
  ) {
    this.limits = { ...DEFAULT_NODE_LIMITS, ...limits };
  }

  /** Route invocations for nodes this instance does not hold through `router` (several instances). */
  routeThrough(router: NodeRouting): void {
    this.router = router;
  }

  /** The newest live session of a node device. */
  byNode(nodeId: string): LiveNode | undefined {
    let best: LiveNode | undefined;
    for (const n of this.ofNode.get(nodeId) ?? []) {
      if (!best || n.session.connectedAtMs >= best.session.connectedAtMs) best = n;
    }
    return best;
  }

  liveNodes(): LiveNode[] {
    return [...this.live.values()];
  }

  /** The live node of one connection (a map lookup: node-side calls and announce run per frame/connect). */
  byConn(connId: string): LiveNode | undefined {
    return this.live.get(connId);
  }

  /**
   * A node session was admitted: compare its declared surface with the approved one and file
   * (or refresh) a surface request when it asks for more. Runs before hello-ok is sent.
   */
  async attach(session: SessionPrincipal, params: ConnectParams): Promise<void> {
    const nodeId = session.deviceId;
    if (!nodeId) throw new Error('node session without a device id');
    const gw = this.gw;
    const caps = normalizeList(params.caps);
    const declared = normalizeList(params.commands);
    const surface = await gw.store.getNodeSurface(nodeId);
    const approvedCommands = new Set(surface?.commands ?? []);
    const approvedCaps = new Set(surface?.caps ?? []);
    const live: LiveNode = {
      session,
      nodeId,
      caps,
      declared,
      // Already-approved commands stay routable while a wider request waits.
      routable: new Set(declared.filter((c) => approvedCommands.has(c))),
      permissions: { ...(params.permissions ?? {}) },
      version: params.client.version,
      pendingRequestId: null,
      inflight: new Set(),
    };
    const wider = declared.some((c) => !approvedCommands.has(c)) || caps.some((c) => !approvedCaps.has(c));
    if (wider) {
      const now = gw.clock.now();
      const meta = {
        displayName: cleanOptional(params.client.displayName),
        platform: cleanText(params.client.platform),
        deviceFamily: cleanOptional(params.client.deviceFamily),
        clientId: params.client.id,
        clientMode: params.client.mode,
        version: cleanText(params.client.version),
      };
      const res = await gw.store.upsertNodeSurfaceRequest({
        requestId: gw.random.uuid(),
        deviceId: nodeId,
        caps,
        commands: declared,
        meta,
        address: session.address,
        atMs: now,
        audit: {
          atMs: now,
          actor: `device:${nodeId}`,
          action: 'node.surface.requested',
          subject: nodeId,
          data: { caps, commands: declared, address: session.address },
        },
      });
      live.pendingRequestId = res.request.requestId;
      if (res.replacedRequestId) {
        // The operator must not approve what they saw before: the old request is gone.
        gw.broadcast('node.pair.resolved', { requestId: res.replacedRequestId, nodeId, decision: 'expired', reason: 'superseded', ts: now });
      }
      if (res.created) {
        const state = await nodeRequestState(gw.quorum, res.request);
        gw.broadcast('node.pair.requested', { ...this.pendingView(res.request), adds: state.adds, approvals: state.approvals });
      }
    }
    this.live.set(session.connId, live);
    let mine = this.ofNode.get(nodeId);
    if (!mine) this.ofNode.set(nodeId, (mine = new Set()));
    mine.add(live);
  }

  /** A session ended: a node's in-flight invocations fail at once with NODE_DISCONNECTED. */
  detach(session: SessionPrincipal): void {
    const live = this.live.get(session.connId);
    if (!live) return;
    this.live.delete(session.connId);
    const mine = this.ofNode.get(live.nodeId);
    mine?.delete(live);
    if (mine?.size === 0) this.ofNode.delete(live.nodeId);
    for (const id of [...live.inflight]) {
      const inv = this.invocations.get(id);
      inv?.settle(
        new GatewayError('NODE_DISCONNECTED', { vars: { nodeId: live.nodeId, command: inv.command }, details: { nodeId: live.nodeId, invokeId: id } }),
      );
    }
  }

  /** Route one invocation to a node and wait for its result (or a timeout, cancel, disconnect). */
  async invoke(input: InvokeInput, signal: AbortSignal): Promise<unknown> {
    const startedAtMs = this.gw.clock.now();
    const outcome = await this.route(input, signal);
    const label = outcome instanceof GatewayError ? outcome.detail : (outcome as { ok?: unknown } | null)?.ok === false ? 'node_error' : 'ok';
    this.gw.metrics.invoke(label, this.gw.clock.now() - startedAtMs);
    return outcome;
  }

  private async route(input: InvokeInput, signal: AbortSignal): Promise<unknown> {
    const { nodeId, command } = input;
    const live = this.byNode(nodeId);
    if (!live) {
      // POSTGRES: another instance may hold the node's socket (several instances).
      const routed = await this.router?.invoke(input, signal);
      if (routed !== undefined && routed !== null) return routed;
      const grant = await this.gw.store.getGrant(nodeId, 'node');
      return new GatewayError(grant ? 'NODE_NOT_CONNECTED' : 'UNKNOWN_NODE', { vars: { nodeId }, details: { nodeId } });
    }
    if (!live.declared.includes(command)) {
      return new GatewayError('NODE_COMMAND_NOT_DECLARED', { vars: { nodeId, command }, details: { nodeId, command, declared: live.declared } });
    }
    if (!live.routable.has(command)) {
      return new GatewayError('NODE_COMMAND_NOT_APPROVED', {
        vars: { nodeId, command },
        details: { nodeId, command, ...(live.pendingRequestId ? { requestId: live.pendingRequestId } : {}) },
      });
    }
    const paramsBytes = input.paramsJSON === undefined ? 0 : Buffer.byteLength(input.paramsJSON, 'utf8');
    if (paramsBytes > this.limits.maxParamsBytes) {
      return new GatewayError('NODE_PAYLOAD_TOO_LARGE', {
        vars: { what: 'node.invoke params', bytes: paramsBytes, limitBytes: this.limits.maxParamsBytes },
        details: { bytes: paramsBytes, limitBytes: this.limits.maxParamsBytes },
      });
    }
    if (live.inflight.size >= this.limits.maxInflightPerNode) {
      return new GatewayError('NODE_BUSY', {
        vars: { nodeId, limit: this.limits.maxInflightPerNode },
        details: { nodeId, limit: this.limits.maxInflightPerNode },
      });
    }
    if (signal.aborted) return new GatewayError('NODE_INVOKE_CANCELLED', { vars: { nodeId, command } });
    const timeoutMs = Math.min(input.timeoutMs ?? this.limits.defaultTimeoutMs, this.limits.maxTimeoutMs);
    const id = this.gw.random.uuid();
    const startedAtMs = this.gw.clock.now();

    return new Promise<unknown>((resolve) => {
      let done = false;
      const onAbort = () => {
        this.sendCancel(live, id, 'caller-cancelled');
        inv.settle(new GatewayError('NODE_INVOKE_CANCELLED', { vars: { nodeId, command }, details: { nodeId, invokeId: id } }));
      };
      const timer = setTimeout(() => {
        this.sendCancel(live, id, 'timeout');
        inv.settle(new GatewayError('NODE_INVOKE_TIMEOUT', { vars: { nodeId, command, timeoutMs }, details: { nodeId, invokeId: id, timeoutMs } }));
      }, timeoutMs);
      const inv: Invocation = {
        id,
        live,
        command,
        settle: (outcome) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          live.inflight.delete(id);
          this.invocations.delete(id);
          resolve(outcome);
        },
      };
      this.invocations.set(id, inv);
      live.inflight.add(id);
      signal.addEventListener('abort', onAbort, { once: true });
      live.session.sendEvent('node.invoke.request', {
        id,
        nodeId,
        command,
        ...(input.paramsJSON !== undefined ? { paramsJSON: input.paramsJSON } : {}),
        timeoutMs,
        ...(input.idempotencyKey ? { idempotencyKey: input.idempotencyKey } : {}),
      });
    }).then((outcome) => {
      if (outcome instanceof GatewayError) return outcome;
      return { ...(outcome as Record<string, unknown>), durationMs: this.gw.clock.now() - startedAtMs };
    });
  }

  private sendCancel(live: LiveNode, id: string, reason: string): void {
    if (this.live.get(live.session.connId) !== live) return;
    live.session.sendEvent('node.invoke.cancel', { id, invokeId: id, nodeId: live.nodeId, reason });
  }

  /**
   * A node answered an invocation. Only the node the invocation was sent to can settle it; a
   * late or foreign result is acknowledged and dropped.
   */
  result(
    session: SessionPrincipal,
    p: { id: string; ok: boolean; payloadJSON?: string | null | undefined; payload?: unknown; error?: { code?: string; message?: string } | undefined },
  ): { ok: true; ignored?: true } {
    const inv = this.invocations.get(p.id);
    if (!inv || inv.live.session !== session) return { ok: true, ignored: true };
    const nodeId = inv.live.nodeId;
    const command = inv.command;
    if (!p.ok) {
      const nodeError = { code: p.error?.code ?? 'UNAVAILABLE', message: p.error?.message ?? 'node reported a failure without a message' };
      inv.settle(
        new GatewayError('NODE_INVOKE_FAILED', {
          vars: { nodeId, command, nodeMessage: nodeError.message },
          details: { nodeId, command, invokeId: p.id, nodeError },
        }),
      );
      return { ok: true };
    }
    const payloadJSON = typeof p.payloadJSON === 'string' ? p.payloadJSON : p.payload === undefined ? null : JSON.stringify(p.payload);
    const bytes = payloadJSON === null ? 0 : Buffer.byteLength(payloadJSON, 'utf8');
    if (bytes > this.limits.maxResultBytes) {
      inv.settle(
        new GatewayError('NODE_PAYLOAD_TOO_LARGE', {
          vars: { what: `result of ${command} from node ${nodeId}`, bytes, limitBytes: this.limits.maxResultBytes },
          details: { nodeId, command, bytes, limitBytes: this.limits.maxResultBytes },
        }),
      );
      return { ok: true };
    }
    let payload: unknown = null;
    if (payloadJSON !== null) {
      try {
        payload = JSON.parse(payloadJSON);
      } catch {
        // Not JSON: hand it over as text rather than dropping what the node said.
        payload = payloadJSON;
      }
    }
    inv.settle({ ok: true, nodeId, command, invokeId: p.id, payload, payloadJSON });
    return { ok: true };
  }

  /** Approve a pending surface; live sessions of the node widen in place and are told. */
  async approve(req: NodeSurfaceRequest, by: Principal): Promise<NodeSurfaceRecord | GatewayError | { awaiting: ApprovalProgress }> {
    const required = requiredApproveScopes(req.commands);
    if (by.kind === 'device' && by.deviceId === req.deviceId && !hasScope(by, ADMIN)) {
      // Same rule as device pairing: a device does not widen its own authority.
      return new GatewayError('NODE_APPROVAL_DENIED', {
        vars: { why: 'a device cannot approve its own node surface' },
        details: { requestId: req.requestId, nodeId: req.deviceId, requiredScopes: [...required, ADMIN], missingScopes: [ADMIN] },
      });
    }
    // Only the owner skips the scope check; the internal principal holds exactly its grant.
    if (by.kind !== 'owner') {
      const missing = required.filter((s) => !hasScope(by, s));
      if (missing.length > 0) {
        const host = req.commands.filter((c) => HOST_COMMANDS.has(c));
        const why =
          host.length > 0
            ? `the surface includes host-level commands (${host.join(', ')}), which need ${missing.join(', ')}`
            : `it needs ${missing.join(', ')}`;
        return new GatewayError('NODE_APPROVAL_DENIED', {
          vars: { why },
          details: { requestId: req.requestId, nodeId: req.deviceId, requiredScopes: required, missingScopes: missing },
        });
      }
    }
    // Commands under quorum (`node:<command>`) record this approval and wait for the rest.
    const vote = await voteOnNodeRequest(this.gw.quorum, req, by, () => ({ ...this.pendingView(req) }));
    if (vote instanceof GatewayError) return vote;
    if (!vote.done) return { awaiting: vote.approvals };
    return this.carryOut(req, by, vote.approvals);
  }

  /** Make a request's surface the node's approved surface (the approval was decided: by `by`, or by a completed quorum). */
  async carryOut(
    req: NodeSurfaceRequest,
    by: Principal,
    approvals?: ApprovalProgress,
    auditExtra?: Record<string, unknown>,
  ): Promise<NodeSurfaceRecord | GatewayError> {
    const now = this.gw.clock.now();
    const surface = await this.gw.store.approveNodeSurface(req.requestId, now, by.actor, {
      atMs: now,
      actor: by.actor,
      action: 'node.surface.approved',
      subject: req.deviceId,
      data: { requestId: req.requestId, caps: req.caps, commands: req.commands, ...auditExtra },
    });
    if (!surface)
      return new GatewayError('UNKNOWN_NODE_REQUEST_ID', { vars: { requestId: req.requestId }, details: { requestId: req.requestId, pending: [] } });
    const event = { requestId: req.requestId, nodeId: req.deviceId, decision: 'approved' as const, ts: now };
    this.applyDecision(event, surface);
    this.gw.broadcast('node.pair.resolved', approvals ? { ...event, approvals } : event);
    this.router?.surfaceDecided(req.deviceId, req.requestId, 'approved', now);
    return surface;
  }

  async reject(req: NodeSurfaceRequest, by: Principal): Promise<boolean> {
    const now = this.gw.clock.now();
    const gone = await this.gw.store.deleteNodeSurfaceRequest(req.requestId, {
      atMs: now,
      actor: by.actor,
      action: 'node.surface.rejected',
      subject: req.deviceId,
      data: { requestId: req.requestId, commands: req.commands },
    });
    if (!gone) return false;
    const event = { requestId: req.requestId, nodeId: req.deviceId, decision: 'rejected' as const, ts: now };
    this.applyDecision(event);
    this.gw.broadcast('node.pair.resolved', event);
    this.router?.surfaceDecided(req.deviceId, req.requestId, 'rejected', now);
    return true;
  }

  /**
   * An operator decided on a node's surface (here, or on another instance): the node's live
   * sessions here route what `surface` approves (when given), drop the decided request as
   * pending (a rejection always; an approval once it covers all they declared) and are told.
   */
  applyDecision(
    event: { requestId: string; nodeId: string; decision: 'approved' | 'rejected'; ts: number },
    surface?: Pick<NodeSurfaceRecord, 'commands' | 'caps'> | null,
  ): void {
    const approved = new Set(surface?.commands ?? []);
    const caps = new Set(surface?.caps ?? []);
    for (const live of this.ofNode.get(event.nodeId) ?? []) {
      if (surface !== undefined) live.routable = new Set(live.declared.filter((c) => approved.has(c)));
      const covered = live.declared.every((c) => approved.has(c)) && live.caps.every((c) => caps.has(c));
      if (event.decision === 'approved' ? covered : live.pendingRequestId === event.requestId) live.pendingRequestId = null;
      live.session.sendEvent('node.pair.resolved', event);
    }
  }

  pendingView(r: NodeSurfaceRequest): NodePendingView {
    return {
      kind: 'surface',
      requestId: r.requestId,
      nodeId: r.deviceId,
      clientId: r.meta.clientId ?? null,
      clientMode: r.meta.clientMode ?? null,
      displayName: r.meta.displayName ?? null,
      platform: r.meta.platform ?? null,
      version: r.meta.version ?? null,
      deviceFamily: r.meta.deviceFamily ?? null,
      caps: r.caps,
      commands: r.commands,
      requiredApproveScopes: requiredApproveScopes(r.commands),
      hostCommands: r.commands.filter((c) => HOST_COMMANDS.has(c)),
      remoteIp: r.address,
      silent: false,
      connected: this.byNode(r.deviceId) !== undefined,
      createdAtMs: r.createdAtMs,
      ts: r.refreshedAtMs,
    };
  }
}
