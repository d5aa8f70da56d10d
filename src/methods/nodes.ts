/**
 * Node methods (PROTOCOL.md §19).
 * Operator side: node.list|describe|rename, node.pair.list|approve|reject|remove, node.invoke.
 * Node side: node.invoke.result, node.event, and the publications the OpenClaw node host sends
 * after connecting (node.runnerInventory.update, node.skills.update, node.pluginTools.update,
 * skills.bins), accepted so a real node host runs without error loops.
 */

import { GatewayError } from '@clawgate/protocol/errors';
import { ADMIN, PAIRING, READ, WRITE } from '@clawgate/protocol/scopes';
import { unsafeFieldError } from '@clawgate/protocol/text';
import type { NodeView } from '@clawgate/protocol/views';
import { Type as T } from '@sinclair/typebox';
import { nodeRequestState } from '../core/approval-flow.js';
import type { RemoteNode } from '../core/cluster.js';
import type { Gateway } from '../core/gateway.js';
import { HOST_COMMANDS } from '../core/node-surface-policy.js';
import { ADMIN_INVOKE_COMMANDS, type LiveNode, type NodePendingView, normalizeList } from '../core/nodes.js';
import { isAdmin, type Principal } from '../core/principal.js';
import type { DeviceRecord, GrantRecord, NodeSurfaceRecord, NodeSurfaceRequest } from '../store/types.js';
import { byDevice } from './devices.js';

/** The wire views live in the protocol module; re-exported for the gateway code that builds them. */
export type { NodeView };

const NodeId = T.String({ minLength: 1, maxLength: 128 });
const RequestId = T.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' });
const Command = T.String({ minLength: 1, maxLength: 256 });

function nodeView(
  d: DeviceRecord | null,
  grant: GrantRecord,
  surface: NodeSurfaceRecord | null,
  request: NodeSurfaceRequest | undefined,
  live: LiveNode | undefined,
  // POSTGRES: the node's socket is on another instance.
  remote?: RemoteNode | undefined,
): NodeView {
  const approved = surface?.commands ?? [];
  const elsewhere = live ? undefined : remote?.detail;
  const declared = live?.declared ?? elsewhere?.declared ?? null;
  const pending = request ? request.commands.filter((c) => !approved.includes(c)) : declared ? declared.filter((c) => !approved.includes(c)) : [];
  return {
    nodeId: grant.deviceId,
    displayName: d?.label ?? live?.session.client.displayName ?? d?.displayName ?? null,
    label: d?.label ?? null,
    clientId: live?.session.client.id ?? d?.clientId ?? null,
    clientMode: live?.session.client.mode ?? d?.clientMode ?? null,
    platform: live?.session.client.platform ?? d?.platform ?? null,
    deviceFamily: live?.session.client.deviceFamily ?? d?.deviceFamily ?? null,
    version: live?.version ?? elsewhere?.version ?? request?.meta.version ?? null,
    remoteIp: live?.session.address ?? elsewhere?.address ?? d?.lastSeenAddress ?? null,
    caps: live?.caps ?? elsewhere?.caps ?? surface?.caps ?? [],
    commands: live ? [...live.routable].sort() : elsewhere ? elsewhere.declared.filter((c) => approved.includes(c)).sort() : approved,
    declaredCommands: declared,
    approvedCommands: approved,
    pendingCommands: pending,
    pendingRequestId: request?.requestId ?? live?.pendingRequestId ?? null,
    hostCommands: normalizeList([...approved, ...(declared ?? []), ...pending]).filter((c) => HOST_COMMANDS.has(c)),
    permissions: live ? live.permissions : null,
    connected: live !== undefined || remote !== undefined,
    connectedAtMs: live?.session.connectedAtMs ?? remote?.connectedAtMs ?? null,
    inflight: live?.inflight.size ?? 0,
    paired: true,
    approvedAtMs: surface?.approvedAtMs ?? null,
    lastSeenAtMs: d?.lastSeenAtMs ?? null,
  };
}

/** What these methods use of the gateway (nothing else reaches them). */
export type NodeMethodDeps = Pick<
  Gateway,
  'methods' | 'store' | 'clock' | 'config' | 'broadcast' | 'closeDeviceSessions' | 'expirePending' | 'nodes' | 'cluster'
>;

export function registerNodeMethods(gw: NodeMethodDeps): void {
  const nodes = gw.nodes;

  /** `requests`: the pending surface requests when the caller already reads them (read once). */
  async function allNodes(requests: Promise<NodeSurfaceRequest[]> = gw.store.listNodeSurfaceRequests()): Promise<NodeView[]> {
    // The node grants only (an index), and the devices that hold them: not every paired device.
    const grants = await gw.store.listGrantsOfRole('node');
    const [devices, surfaces, pending, remote] = await Promise.all([
      Promise.all(grants.map((g) => gw.store.getDevice(g.deviceId))).then((ds) => ds.filter((d): d is DeviceRecord => d !== null)),
      gw.store.listNodeSurfaces(),
      requests,
      gw.cluster?.remoteNodes() ?? new Map<string, RemoteNode>(),
    ]);
    // Indexed once: the listing is one pass over the node grants, not a scan per node.
    const deviceOf = byDevice(devices);
    const surfaceOf = byDevice(surfaces);
    const requestOf = byDevice(pending);
    return grants
      .map((g) =>
        nodeView(
          deviceOf.get(g.deviceId) ?? null,
          g,
          surfaceOf.get(g.deviceId) ?? null,
          requestOf.get(g.deviceId),
          nodes.byNode(g.deviceId),
          remote.get(g.deviceId),
        ),
      )
      .sort((a, b) => (a.displayName ?? a.nodeId).localeCompare(b.displayName ?? b.nodeId));
  }

  async function oneNode(nodeId: string): Promise<NodeView | GatewayError> {
    const grant = await gw.store.getGrant(nodeId, 'node');
    if (!grant) return new GatewayError('UNKNOWN_NODE', { vars: { nodeId }, details: { nodeId } });
    const [device, surface, requests, remote] = await Promise.all([
      gw.store.getDevice(nodeId),
      gw.store.getNodeSurface(nodeId),
      gw.store.listNodeSurfaceRequests(),
      gw.cluster?.remoteNodes() ?? new Map<string, RemoteNode>(),
    ]);
    return nodeView(
      device,
      grant,
      surface,
      requests.find((r) => r.deviceId === nodeId),
      nodes.byNode(nodeId),
      remote.get(nodeId),
    );
  }

  async function unknownRequest(requestId: string, verb: 'approve' | 'reject'): Promise<GatewayError> {
    const pending = await gw.store.listNodeSurfaceRequests();
    const listed = pending.map((r) => ({ requestId: r.requestId, nodeId: r.deviceId, commands: r.commands }));
    // The classic mix-up: a device pairing request id given to the node surface approval. The
    // OpenClaw CLI prints only `message`, so the message itself names the command to run.
    const device = await gw.store.getPairingRequest(requestId);
    if (device) {
      return new GatewayError('NODE_REQUEST_IS_DEVICE_REQUEST', {
        vars: { requestId, role: device.role, verb },
        details: { requestId, devicePairingRequest: { requestId, deviceId: device.deviceId, role: device.role }, pending: listed },
      });
    }
    return new GatewayError('UNKNOWN_NODE_REQUEST_ID', { vars: { requestId }, details: { requestId, pending: listed } });
  }

  /** Node-role device pairing requests, in the shape of node.pair.list `pending` (see NodePendingView.kind). */
  async function nodeDevicePairingViews(): Promise<NodePendingView[]> {
    await gw.expirePending();
    return (await gw.store.listPairingRequests())
      .filter((r) => r.role === 'node')
      .map((r) => ({
        kind: 'device-pairing' as const,
        requestId: r.requestId,
        nodeId: r.deviceId,
        clientId: r.meta.clientId ?? null,
        clientMode: r.meta.clientMode ?? null,
        displayName: r.meta.displayName ?? null,
        platform: r.meta.platform ?? null,
        version: null,
        deviceFamily: r.meta.deviceFamily ?? null,
        caps: [],
        commands: [],
        // node.pair.approve answers it (with the device command to run) under operator.pairing.
        requiredApproveScopes: [PAIRING],
        hostCommands: [],
        remoteIp: r.address,
        silent: false,
        connected: false,
        createdAtMs: r.createdAtMs,
        ts: r.refreshedAtMs,
      }));
  }

  // --- operator: inventory ---------------------------------------------------------------------

  gw.methods.add({
    name: 'node.list',
    role: 'operator',
    scope: READ,
    params: T.Object({}, { additionalProperties: false }),
    handler: async () => ({ ts: gw.clock.now(), nodes: await allNodes() }),
  });

  gw.methods.add({
    name: 'node.describe',
    role: 'operator',
    scope: READ,
    params: T.Object({ nodeId: NodeId }, { additionalProperties: false }),
    handler: async ({ params }) => oneNode((params as { nodeId: string }).nodeId),
  });

  gw.methods.add({
    name: 'node.rename',
    role: 'operator',
    scope: PAIRING,
    params: T.Object({ nodeId: NodeId, displayName: T.String({ maxLength: 256 }) }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const p = params as { nodeId: string; displayName: string };
      const name = p.displayName.trim();
      if (name.length < 1 || name.length > 64) {
        return new GatewayError('INVALID_PARAMS', { vars: { method: 'node.rename', problem: 'displayName must be 1 to 64 characters' } });
      }
      const unsafe = unsafeFieldError('node.rename', { displayName: name });
      if (unsafe) return unsafe;
      if (!(await gw.store.getGrant(p.nodeId, 'node'))) return new GatewayError('UNKNOWN_NODE', { vars: { nodeId: p.nodeId }, details: { nodeId: p.nodeId } });
      await gw.store.renameDevice(p.nodeId, name, {
        atMs: gw.clock.now(),
        actor: principal.actor,
        action: 'node.renamed',
        subject: p.nodeId,
        data: { displayName: name },
      });
      return { nodeId: p.nodeId, displayName: name };
    },
  });

  // --- operator: surface approval ------------------------------------------------------------

  gw.methods.add({
    name: 'node.pair.list',
    role: 'operator',
    scope: PAIRING,
    params: T.Object({}, { additionalProperties: false }),
    handler: async () => {
      const requests = gw.store.listNodeSurfaceRequests();
      const [pending, paired, devicePairing] = await Promise.all([requests, allNodes(requests), nodeDevicePairingViews()]);
      const surfaces = await Promise.all(pending.map(async (r) => ({ ...nodes.pendingView(r), approvals: (await nodeRequestState(gw, r)).approvals })));
      return { pending: [...surfaces, ...devicePairing], paired };
    },
  });

  const ByRequestId = T.Object({ requestId: RequestId }, { additionalProperties: false });
  /** The surface request an approve or reject names (params already validated against ByRequestId). */
  const namedRequest = async (params: unknown) => {
    const { requestId } = params as { requestId: string };
    return { requestId, req: await gw.store.getNodeSurfaceRequest(requestId) };
  };

  gw.methods.add({
    name: 'node.pair.approve',
    role: 'operator',
    // Plus operator.write, or operator.admin for host-level commands: checked against the
    // request's commands in the handler (the params carry only the id).
    scope: PAIRING,
    params: ByRequestId,
    handler: async ({ principal, params }) => {
      const { requestId, req } = await namedRequest(params);
      if (!req) return unknownRequest(requestId, 'approve');
      const surface = await nodes.approve(req, principal);
      if (surface instanceof GatewayError) return surface;
      if ('awaiting' in surface) return { requestId, nodeId: req.deviceId, approved: false, approvals: surface.awaiting };
      const node = await oneNode(req.deviceId);
      return { requestId, node: node instanceof GatewayError ? { nodeId: req.deviceId } : node, surface };
    },
  });

  gw.methods.add({
    name: 'node.pair.reject',
    role: 'operator',
    scope: PAIRING,
    params: ByRequestId,
    handler: async ({ principal, params }) => {
      const { requestId, req } = await namedRequest(params);
      if (!req || !(await nodes.reject(req, principal))) return unknownRequest(requestId, 'reject');
      return { requestId, nodeId: req.deviceId };
    },
  });

  gw.methods.add({
    name: 'node.pair.remove',
    role: 'operator',
    scope: PAIRING,
    params: T.Object({ nodeId: NodeId }, { additionalProperties: false }),
    handler: async ({ principal, params }) => {
      const { nodeId } = params as { nodeId: string };
      const grants = await gw.store.listGrants(nodeId);
      if (!grants.some((g) => g.role === 'node')) return new GatewayError('UNKNOWN_NODE', { vars: { nodeId }, details: { nodeId } });
      // A device session removing the node role of its own mixed-role device would cut off its
      // own other half without an administrator's say.
      if (!isAdmin(principal) && principal.deviceId === nodeId && grants.some((g) => g.role !== 'node')) {
        return new GatewayError('MANAGEMENT_DENIED', { vars: { action: 'node removal', why: `removing the node role of your own device needs ${ADMIN}` } });
      }
      const now = gw.clock.now();
      await gw.store.removeRole(nodeId, 'node', { atMs: now, actor: principal.actor, action: 'node.removed', subject: nodeId });
      gw.closeDeviceSessions(nodeId, 'node', 'DEVICE_REMOVED', principal, now);
      gw.broadcast('node.pair.resolved', { requestId: '', nodeId, decision: 'removed', ts: now });
      return { nodeId, removedAtMs: now, deviceRemoved: grants.length === 1 };
    },
  });

  // --- operator: invoke ----------------------------------------------------------------------

  gw.methods.add({
    name: 'node.invoke',
    role: 'operator',
    scope: WRITE,
    // Relaying commands that act with the node owner's full authority needs admin (reference parity).
    dynamicScope: (p) => (ADMIN_INVOKE_COMMANDS.has((p as { command?: string }).command ?? '') ? ADMIN : null),
    params: T.Object(
      {
        nodeId: NodeId,
        command: Command,
        params: T.Optional(T.Unknown()),
        paramsJSON: T.Optional(T.String()),
        timeoutMs: T.Optional(T.Integer({ minimum: 1, maximum: 600_000 })),
        idempotencyKey: T.Optional(T.String({ maxLength: 256 })),
      },
      { additionalProperties: false },
    ),
    handler: async ({ params, signal }) => {
      const p = params as { nodeId: string; command: string; params?: unknown; paramsJSON?: string; timeoutMs?: number; idempotencyKey?: string };
      if (p.params !== undefined && p.paramsJSON !== undefined) {
        return new GatewayError('INVALID_PARAMS', { vars: { method: 'node.invoke', problem: 'pass params or paramsJSON, not both' } });
      }
      if (p.paramsJSON !== undefined) {
        try {
          JSON.parse(p.paramsJSON);
        } catch {
          return new GatewayError('INVALID_PARAMS', {
            vars: { method: 'node.invoke', problem: 'paramsJSON is not valid JSON' },
            details: { path: '/paramsJSON' },
          });
        }
      }
      const paramsJSON = p.paramsJSON ?? (p.params === undefined ? undefined : JSON.stringify(p.params));
      return nodes.invoke({ nodeId: p.nodeId, command: p.command, paramsJSON, timeoutMs: p.timeoutMs, idempotencyKey: p.idempotencyKey }, signal);
    },
  });

  // --- node side -----------------------------------------------------------------------------

  const liveOf = (p: Principal): LiveNode | undefined => {
    const connId = (p as { connId?: string }).connId;
    return connId === undefined ? undefined : nodes.byConn(connId);
  };

  gw.methods.add({
    name: 'node.invoke.result',
    role: 'node',
    scope: null,
    params: T.Object(
      {
        id: T.String({ minLength: 1, maxLength: 256 }),
        nodeId: T.Optional(T.String({ maxLength: 256 })),
        ok: T.Boolean(),
        payloadJSON: T.Optional(T.Union([T.String(), T.Null()])),
        payload: T.Optional(T.Unknown()),
        error: T.Optional(
          T.Object({ code: T.Optional(T.String({ maxLength: 256 })), message: T.Optional(T.String({ maxLength: 4096 })) }, { additionalProperties: true }),
        ),
      },
      { additionalProperties: true },
    ),
    handler: async ({ principal, params }) => {
      const live = liveOf(principal);
      if (!live) return { ok: true, ignored: true };
      return nodes.result(live.session, params as Parameters<typeof nodes.result>[1]);
    },
  });

  gw.methods.add({
    name: 'node.event',
    role: 'node',
    scope: null,
    params: T.Object(
      { event: T.String({ minLength: 1, maxLength: 256 }), payloadJSON: T.Optional(T.Union([T.String(), T.Null()])), payload: T.Optional(T.Unknown()) },
      { additionalProperties: false },
    ),
    handler: async ({ principal, params }) => {
      const p = params as { event: string; payloadJSON?: string | null; payload?: unknown };
      const live = liveOf(principal);
      if (!live) return { ok: true, event: p.event, handled: false };
      const text = typeof p.payloadJSON === 'string' ? p.payloadJSON : p.payload === undefined ? null : JSON.stringify(p.payload);
      const bytes = text === null ? 0 : Buffer.byteLength(text, 'utf8');
      if (bytes > nodes.limits.maxEventBytes) {
        return new GatewayError('NODE_PAYLOAD_TOO_LARGE', {
          vars: { what: 'node.event payload', bytes, limitBytes: nodes.limits.maxEventBytes },
          details: { bytes, limitBytes: nodes.limits.maxEventBytes },
        });
      }
      let payload: unknown = null;
      if (text !== null) {
        try {
          payload = JSON.parse(text);
        } catch {
          payload = text;
        }
      }
      gw.broadcast('node.event', { nodeId: live.nodeId, event: p.event, payload, ts: gw.clock.now() });
      return { ok: true, event: p.event, handled: true };
    },
  });

  const Open = T.Object({}, { additionalProperties: true });

  gw.methods.add({
    name: 'node.runnerInventory.update',
    role: 'node',
    scope: null,
    params: Open,
    handler: async ({ principal }) => {
      const live = liveOf(principal);
      // The OpenClaw node host retries this until it succeeds and logs the message: that log
      // line is where the person at the node learns what to do.
      if (live?.pendingRequestId) {
        return new GatewayError('NODE_SURFACE_PENDING', { vars: { requestId: live.pendingRequestId }, details: { requestId: live.pendingRequestId } });
      }
      return { nodeId: principal.deviceId };
    },
  });

  // Skill and plugin-tool reports: acknowledged with the list echoed back (clawgate keeps neither).
  for (const [name, field] of [
    ['node.skills.update', 'skills'],
    ['node.pluginTools.update', 'tools'],
  ] as const) {
    gw.methods.add({
      name,
      role: 'node',
      scope: null,
      params: T.Object({ [field]: T.Optional(T.Array(T.Unknown(), { maxItems: 1024 })) }, { additionalProperties: true }),
      handler: async ({ principal, params }) => ({ nodeId: principal.deviceId, [field]: (params as Record<string, unknown[] | undefined>)[field] ?? [] }),
    });
  }

  gw.methods.add({
    name: 'skills.bins',
    role: 'node',
    scope: null,
    params: Open,
    // clawgate hosts no skills, so there are no skill binaries to auto-allow.
    handler: async () => ({ bins: [] }),
  });
}
