/**
 * Where quorum meets the approval paths: what a pending request adds and how far its approvals
 * are (for lists, events, notifications and explain), and the vote-then-approve step that
 * device.pair.approve and node.pair.approve run instead of approving at once. The counting
 * itself is core/approval-quorum.ts.
 */

import { confirmationCode } from '@clawgate/protocol/confirmation';
import type { GatewayError } from '@clawgate/protocol/errors';
import { ADMIN, PAIRING, uncoveredScopes } from '@clawgate/protocol/scopes';
import {
  type ApprovalProgress,
  type ApproverCheck,
  castVote,
  type QuorumConfig,
  quorumScopes,
  readProgress,
  requiredForCommands,
  requiredForScopes,
} from './approval-quorum.js';
import type { Clock } from './env.js';
import type { Broadcast } from './events.js';
import { effectiveGrant } from './grant-expiry.js';
import { approvalDenial, type ManagementCaller } from './management-policy.js';
import { requiredApproveScopes } from './node-surface-policy.js';
import { hasScope, type Principal } from './principal.js';
import type { GrantRecord, NodeSurfaceRequest, PairingRequest, Store } from './store.js';

/** What the quorum steps use of the gateway. */
export interface QuorumDeps {
  store: Pick<Store, 'getMeta' | 'setMetaIf' | 'appendAudit' | 'getGrant' | 'getNodeSurface'>;
  clock: Clock;
  config: { approvalQuorum?: QuorumConfig | undefined };
  broadcast: Broadcast;
  /** Who claims a request whose quorum a vote here completes (the instance id; approval-recovery.ts). */
  claimant?: string | undefined;
}

/**
 * A recorded approver counts only while it still could approve: the owner always; a device
 * while its operator grant (as stored now, expiry applied) holds operator.pairing and passes
 * `mayApprove`. A removed device, or one that lost the scopes, no longer counts.
 */
function stillCounts(gw: Pick<QuorumDeps, 'store' | 'clock'>, mayApprove: (caller: ManagementCaller) => boolean): ApproverCheck {
  return async (approver) => {
    if (approver === 'owner') return true;
    if (!approver.startsWith('device:')) return false;
    const deviceId = approver.slice('device:'.length);
    const stored = await gw.store.getGrant(deviceId, 'operator');
    const grant = stored ? effectiveGrant(stored, gw.clock.now()) : null;
    if (!grant) return false;
    const caller: ManagementCaller = { kind: 'device', scopes: new Set(grant.scopes), deviceId, deviceBound: true };
    return hasScope(caller, PAIRING) && mayApprove(caller);
  };
}

/** Approvers of a device pairing request that still count (the same rule device.pair.approve applies). */
export const deviceApprovers = (gw: Pick<QuorumDeps, 'store' | 'clock'>, r: PairingRequest): ApproverCheck =>
  stillCounts(gw, (caller) => approvalDenial(caller, r) === null);

/** Approvers of a node surface request that still count (the scopes node.pair.approve needs for its commands). */
export const nodeApprovers = (gw: Pick<QuorumDeps, 'store' | 'clock'>, r: NodeSurfaceRequest): ApproverCheck =>
  stillCounts(
    gw,
    (caller) => requiredApproveScopes(r.commands).every((s) => hasScope(caller, s)) && (caller.deviceId !== r.deviceId || hasScope(caller, ADMIN)),
  );

export interface RequestApprovalState {
  /** What approving adds: scopes beyond the current grant, or commands beyond the approved surface. */
  adds: string[];
  approvals: ApprovalProgress;
}

const noVotes = (required: number): ApprovalProgress => ({ received: 0, required, approvers: [] });

/** `adds` and quorum progress of a device pairing request. */
export async function deviceRequestState(gw: QuorumDeps, r: PairingRequest, grant?: GrantRecord | null): Promise<RequestApprovalState> {
  const current = grant === undefined ? await gw.store.getGrant(r.deviceId, r.role) : grant;
  const adds = current ? uncoveredScopes(current.scopes, r.scopes) : [...r.scopes];
  const required = requiredForScopes(gw.config.approvalQuorum, adds);
  return { adds, approvals: required > 1 ? await readProgress(gw.store, r.requestId, r.scopes, required, deviceApprovers(gw, r)) : noVotes(required) };
}

/** `adds` and quorum progress of a node surface request. */
export async function nodeRequestState(gw: QuorumDeps, r: NodeSurfaceRequest): Promise<RequestApprovalState> {
  const approved = new Set((await gw.store.getNodeSurface(r.deviceId))?.commands ?? []);
  const adds = r.commands.filter((c) => !approved.has(c));
  const required = requiredForCommands(gw.config.approvalQuorum, adds);
  return { adds, approvals: required > 1 ? await readProgress(gw.store, r.requestId, r.commands, required, nodeApprovers(gw, r)) : noVotes(required) };
}

/** The `device.pair.requested` payload (the shape gateway.fileRequest broadcasts), with progress. */
export function deviceRequestedPayload(r: PairingRequest, state: RequestApprovalState, extra: Record<string, unknown>, nowMs: number): Record<string, unknown> {
  return {
    requestId: r.requestId,
    deviceId: r.deviceId,
    publicKey: r.publicKey,
    ...r.meta,
    role: r.role,
    roles: [r.role],
    scopes: r.scopes,
    adds: state.adds,
    remoteIp: r.address,
    silent: false,
    isRepair: r.isRepair,
    kind: r.kind,
    confirmationCode: confirmationCode(r),
    approvals: state.approvals,
    ...extra,
    ts: nowMs,
  };
}

/**
 * Local auto-approval never satisfies a quorum: scopes under one are held back for a request
 * that collects the approvals like any other.
 */
export function holdBackQuorumScopes(quorum: QuorumConfig | undefined, grantScopes: readonly string[], current: readonly string[] | null): string[] {
  const have = new Set(current ?? []);
  return quorumScopes(
    quorum,
    grantScopes.filter((s) => !have.has(s)),
  );
}

export type VoteResult = { done: true; approvals?: ApprovalProgress } | { done: false; approvals: ApprovalProgress } | GatewayError;

/**
 * Record `by`'s approval of a device request under quorum. `done` when this approval completes
 * it (or none is needed): the caller approves. Otherwise the progress is recorded, audited and
 * announced, and the request stays pending.
 */
export async function voteOnDeviceRequest(
  gw: QuorumDeps,
  r: PairingRequest,
  by: Principal,
  ttlMs: number | null = null,
  grant?: GrantRecord | null,
): Promise<VoteResult> {
  const state = await deviceRequestState(gw, r, grant);
  if (state.approvals.required <= 1) return { done: true };
  const now = gw.clock.now();
  const vote = await castVote(gw.store, r, r.scopes, state.approvals.required, by, now, { valid: deviceApprovers(gw, r), claimant: gw.claimant, ttlMs });
  if (!vote.ok) return vote.error;
  await gw.store.appendAudit({
    atMs: now,
    actor: by.actor,
    action: 'pairing.approval.recorded',
    subject: r.deviceId,
    data: {
      requestId: r.requestId,
      role: r.role,
      adds: state.adds,
      received: vote.progress.received,
      required: vote.progress.required,
    },
  });
  if (vote.complete) return { done: true, approvals: vote.progress };
  gw.broadcast('device.pair.requested', deviceRequestedPayload(r, { adds: state.adds, approvals: vote.progress }, { approvalRecorded: true }, now));
  return { done: false, approvals: vote.progress };
}

/** The same for a node surface request (quorum keys `node:<command>`). */
export async function voteOnNodeRequest(
  gw: QuorumDeps,
  r: NodeSurfaceRequest,
  by: Principal,
  requestedView: () => Record<string, unknown>,
): Promise<VoteResult> {
  const state = await nodeRequestState(gw, r);
  if (state.approvals.required <= 1) return { done: true };
  const now = gw.clock.now();
  const vote = await castVote(gw.store, r, r.commands, state.approvals.required, by, now, { valid: nodeApprovers(gw, r), claimant: gw.claimant });
  if (!vote.ok) return vote.error;
  await gw.store.appendAudit({
    atMs: now,
    actor: by.actor,
    action: 'node.surface.approval.recorded',
    subject: r.deviceId,
    data: {
      requestId: r.requestId,
      adds: state.adds,
      received: vote.progress.received,
      required: vote.progress.required,
    },
  });
  if (vote.complete) return { done: true, approvals: vote.progress };
  gw.broadcast('node.pair.requested', { ...requestedView(), adds: state.adds, approvals: vote.progress, approvalRecorded: true });
  return { done: false, approvals: vote.progress };
}
