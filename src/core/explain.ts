/**
 * `device.explain` (`clawgate explain`): what a device holds per role, what is pending and what
 * approving it needs, and whether a method call would be allowed. The call verdict is not a
 * second opinion: it runs the dispatcher's own authority check (`callDenial`, core/dispatch.ts)
 * on the principal a session of this device would have when it asks for everything it holds.
 */
import { GatewayError } from '@clawgate/protocol/errors';
import type { Role } from '@clawgate/protocol/frames';
import { ADMIN, normalizeScopes, PAIRING, scopeSatisfied } from '@clawgate/protocol/scopes';
import type { DeviceRecord, GrantRecord, NodeSurfaceRequest, PairingRequest, Store } from '../store/types.js';
import type { ApprovalEngine } from './approval-engine.js';
import { deviceRequestState, nodeRequestState, type QuorumDeps } from './approval-flow.js';
import type { ApprovalProgress } from './approval-quorum.js';
import { callDenial, type MethodTable, requiredScopes } from './dispatch.js';
import { decidePending, type PendingDecision } from './explain-decision.js';
import type { Principal } from './principal.js';

/** What explain uses of the gateway. */
export interface ExplainDeps extends QuorumDeps {
  store: QuorumDeps['store'] &
    Pick<Store, 'getDevice' | 'listDevices' | 'listGrants' | 'getPairingRequest' | 'getNodeSurfaceRequest' | 'listPairingRequests' | 'listNodeSurfaceRequests'>;
  methods: Pick<MethodTable, 'get'>;
  /** The approval policies, decided exactly as the handshake decides them. */
  policies: Pick<ApprovalEngine, 'decide'>;
  expirePending(): Promise<number>;
  connectedDeviceIds(): Promise<Set<string>>;
}

export interface ExplainRole {
  role: Role;
  scopes: string[];
  /** When the current grant was approved. */
  sinceMs: number;
  /** How: `owner`, `manual`, `silent`, `bootstrap`. */
  approvedVia: string;
  /** Who or which rule (`owner`, `device:<id>`, `rule:<name>`), when the store records it. */
  approvedBy: string | null;
  /** When the grant lapses; null: until revoked. */
  expiresAtMs: number | null;
  epoch: number;
}

export interface ExplainPending {
  requestId: string;
  /** `pairing`: a role or scopes for the device; `node-surface`: commands of its node. */
  type: 'pairing' | 'node-surface';
  role: Role;
  kind: string;
  adds: string[];
  approvals: ApprovalProgress;
  /** In words: who may approve it and how many approvals it still needs. */
  needs: string;
  command: string;
  /** Pairing requests: what the approval policies make of what it adds (a rule, or a person). */
  decision?: PendingDecision;
}

export interface ExplainCall {
  method: string;
  known: boolean;
  role: Role | null;
  requiredScopes: string[];
  allowed: boolean;
  /** The catalogue code the gateway answers a refused call with. */
  code: string | null;
  /** What is missing, in words (null when allowed). */
  missing: string | null;
  /** The one command that fixes it (null when allowed, or when only the device itself can act). */
  fix: string | null;
}

export interface Explanation {
  target: string;
  deviceId: string;
  name: string | null;
  platform: string | null;
  paired: boolean;
  connected: boolean;
  roles: ExplainRole[];
  pending: ExplainPending[];
  nodeSurface: { commands: string[]; approvedAtMs: number; approvedBy: string } | null;
  call?: ExplainCall;
}

/** The device a target names: a device id, a pending request id, or a device name. */
async function resolveTarget(gw: ExplainDeps, target: string): Promise<{ deviceId: string } | GatewayError> {
  if (await gw.store.getDevice(target)) return { deviceId: target };
  const req = (await gw.store.getPairingRequest(target)) ?? (await gw.store.getNodeSurfaceRequest(target));
  if (req) return { deviceId: req.deviceId };
  const wanted = target.trim().toLowerCase();
  const named = (await gw.store.listDevices()).filter((d) => [d.label, d.displayName].some((n) => n !== undefined && n.toLowerCase() === wanted));
  const ids = [...new Set(named.map((d) => d.deviceId))];
  if (ids.length === 0) {
    // A device that was never approved exists only as its requests.
    const asked = (await gw.store.listPairingRequests()).filter((r) => r.meta.displayName?.toLowerCase() === wanted);
    ids.push(...new Set(asked.map((r) => r.deviceId)));
  }
  if (ids.length === 1) return { deviceId: ids[0] as string };
  if (ids.length > 1) return new GatewayError('EXPLAIN_TARGET_AMBIGUOUS', { vars: { target, count: ids.length }, details: { deviceIds: ids } });
  return new GatewayError('EXPLAIN_TARGET_UNKNOWN', { vars: { target } });
}

/** Grant fields other parts of the store may add (approvedBy, expiresAtMs): read if present. */
function optionalGrantFields(g: GrantRecord): { approvedBy: string | null; expiresAtMs: number | null } {
  const extra = g as GrantRecord & { approvedBy?: unknown; expiresAtMs?: unknown };
  return {
    approvedBy: typeof extra.approvedBy === 'string' ? extra.approvedBy : null,
    expiresAtMs: typeof extra.expiresAtMs === 'number' ? extra.expiresAtMs : null,
  };
}

/** The same fields for a device list row, only when the store has them (absent otherwise). */
export function grantExtras(g: GrantRecord): { approvedBy?: string; expiresAtMs?: number } {
  const { approvedBy, expiresAtMs } = optionalGrantFields(g);
  return { ...(approvedBy !== null ? { approvedBy } : {}), ...(expiresAtMs !== null ? { expiresAtMs } : {}) };
}

function needsText(who: string, approvals: ApprovalProgress): string {
  if (approvals.required <= 1) return `one approval by ${who}`;
  const so = approvals.approvers.length > 0 ? ` (so far: ${approvals.approvers.join(', ')})` : '';
  return `${approvals.required} approvals from distinct approvers, each ${who}: ${approvals.received}/${approvals.required}${so}`;
}

async function pendingOf(gw: ExplainDeps, deviceId: string, grants: GrantRecord[]): Promise<ExplainPending[]> {
  await gw.expirePending();
  const out: ExplainPending[] = [];
  const requests: PairingRequest[] = await gw.store.listPairingRequests(deviceId);
  for (const r of requests) {
    const state = await deviceRequestState(gw, r, grants.find((g) => g.role === r.role) ?? null);
    const admin = r.role !== 'operator' || state.adds.includes(ADMIN);
    out.push({
      requestId: r.requestId,
      type: 'pairing',
      role: r.role,
      kind: r.kind,
      adds: state.adds,
      approvals: state.approvals,
      needs: needsText(
        admin ? `the owner or an ${ADMIN} session` : `the owner, an ${ADMIN} session, or a ${PAIRING} session holding what it adds`,
        state.approvals,
      ),
      command: `clawgate devices approve ${r.requestId}`,
      decision: await decidePending(gw.store, (req, proofs) => gw.policies.decide(req, proofs), r, state.adds),
    });
  }
  const surface: NodeSurfaceRequest | undefined = (await gw.store.listNodeSurfaceRequests()).find((r) => r.deviceId === deviceId);
  if (surface) {
    const state = await nodeRequestState(gw, surface);
    out.push({
      requestId: surface.requestId,
      type: 'node-surface',
      role: 'node',
      kind: 'surface',
      adds: state.adds,
      approvals: state.approvals,
      needs: needsText(`the owner or a ${PAIRING} session (host-level commands need ${ADMIN})`, state.approvals),
      command: `clawgate nodes approve ${surface.requestId}`,
    });
  }
  return out;
}

/** The principal a session of this device would be in `role`, asking for everything it holds. */
function sessionOf(deviceId: string, role: Role, grant: GrantRecord | undefined): Principal {
  return {
    kind: 'device',
    role,
    scopes: new Set(grant ? normalizeScopes(grant.scopes) : []),
    deviceId,
    actor: `device:${deviceId}`,
  };
}

function explainCall(deviceId: string, method: string, params: unknown, gw: ExplainDeps, grants: GrantRecord[], pending: ExplainPending[]): ExplainCall {
  const spec = gw.methods.get(method);
  if (!spec)
    return {
      method,
      known: false,
      role: null,
      requiredScopes: [],
      allowed: false,
      code: 'UNKNOWN_METHOD',
      missing: `the gateway has no method ${method}`,
      fix: null,
    };
  const required = requiredScopes(spec, params);
  const base = { method, known: true, role: spec.role, requiredScopes: required };
  const grant = grants.find((g) => g.role === spec.role);
  // A device without the role connects in a role it holds (or none): the role check refuses.
  const asRole: Role = grant ? spec.role : (grants[0]?.role ?? (spec.role === 'operator' ? 'node' : 'operator'));
  const denial = callDenial(spec, sessionOf(deviceId, asRole, grant), params);
  if (!denial) return { ...base, allowed: true, code: null, missing: null, fix: null };
  const code = denial.detail;
  const rolePending = pending.find((p) => p.type === 'pairing' && p.role === spec.role);
  if (code === 'ROLE_NOT_ALLOWED') {
    return {
      ...base,
      allowed: false,
      code,
      missing: `role ${spec.role}: the device holds ${grants.map((g) => g.role).join(', ') || 'no role'}`,
      fix: rolePending ? rolePending.command : null,
    };
  }
  const held = grant?.scopes ?? [];
  const missing = required.filter((s) => !scopeSatisfied(held, s));
  const covering = pending.find((p) => p.type === 'pairing' && p.role === spec.role && missing.every((m) => scopeSatisfied(p.adds, m)));
  return {
    ...base,
    allowed: false,
    code,
    missing: `scope ${missing.join(', ')} (the ${spec.role} grant holds ${held.join(', ') || 'none'})`,
    // A pending request that asks for it is approved; otherwise the grant is widened in place.
    fix: covering
      ? covering.command
      : `clawgate devices rotate --device ${deviceId} --role ${spec.role} ${normalizeScopes([...held, ...missing])
          .map((s) => `--scope ${s}`)
          .join(' ')}`,
  };
}

export async function explainDevice(gw: ExplainDeps, target: string, method?: string, params?: unknown): Promise<Explanation | GatewayError> {
  const found = await resolveTarget(gw, target);
  if (found instanceof GatewayError) return found;
  const { deviceId } = found;
  const [device, grants, surface, connected] = await Promise.all([
    gw.store.getDevice(deviceId),
    gw.store.listGrants(deviceId),
    gw.store.getNodeSurface(deviceId),
    gw.connectedDeviceIds(),
  ]);
  const pending = await pendingOf(gw, deviceId, grants);
  const firstAsk = device ? null : (await gw.store.listPairingRequests(deviceId))[0];
  const named = (d: DeviceRecord | null) => d?.label ?? d?.displayName ?? firstAsk?.meta.displayName ?? null;
  const out: Explanation = {
    target,
    deviceId,
    name: named(device),
    platform: device?.platform ?? firstAsk?.meta.platform ?? null,
    paired: grants.length > 0,
    connected: connected.has(deviceId),
    roles: grants.map((g) => ({
      role: g.role,
      scopes: g.scopes,
      sinceMs: g.approvedAtMs,
      approvedVia: g.approvedVia,
      ...optionalGrantFields(g),
      epoch: g.epoch,
    })),
    pending,
    nodeSurface: surface ? { commands: surface.commands, approvedAtMs: surface.approvedAtMs, approvedBy: surface.approvedBy } : null,
  };
  if (method !== undefined) out.call = explainCall(deviceId, method, params ?? {}, gw, grants, pending);
  return out;
}
