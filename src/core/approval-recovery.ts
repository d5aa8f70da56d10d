/**
 * Requests whose quorum was reached but never carried out. The vote that completes a quorum
 * claims the request (approval-quorum.ts) and its instance then approves it; if that process
 * dies in between, the request would stay pending at N/N for ever. Every instance therefore
 * looks, at start and then periodically, for pending requests whose counted votes (approvers
 * re-checked now) meet the quorum, and carries out those whose claimant is gone: a claim by
 * an instance that no longer beats, by an earlier process of a single gateway, or by this
 * process longer ago than a lease (its approval failed). The takeover is a compare-and-set on
 * the vote record, so of several instances exactly one carries a request out.
 */

import { uncoveredScopes } from '@clawgate/protocol/scopes';
import type { NodeSurfaceRequest, PairingRequest, Store } from '../store/types.js';
import { deviceApprovers, nodeApprovers, nodeRequestState, type QuorumDeps } from './approval-flow.js';
import { type ApprovalProgress, type ClaimedQuorum, claimDecided, type QuorumClaim, requiredForScopes } from './approval-quorum.js';
import type { ApprovalOptions } from './approvals.js';
import type { ClusterBus } from './cluster.js';
import { effectiveGrant } from './grant-expiry.js';
import type { Logger } from './logger.js';
import type { Principal } from './principal.js';

/** How long this process's own claim stands before it is taken as failed (an approval takes milliseconds). */
export const OWN_CLAIM_LEASE_MS = 60_000;

export interface RecoveryDeps {
  quorum: QuorumDeps & {
    store: Pick<
      Store,
      | 'getMeta'
      | 'setMetaIf'
      | 'appendAudit'
      | 'getGrant'
      | 'getNodeSurface'
      | 'listPairingRequests'
      | 'getPairingRequest'
      | 'listNodeSurfaceRequests'
      | 'getNodeSurfaceRequest'
    >;
  };
  /** This instance's claim name (the cluster instance id, or the boot id of a single gateway). */
  claimant: string;
  bus: Pick<ClusterBus, 'instanceLive'> | null;
  log: Logger;
  approveRequest(r: PairingRequest, by: Principal, extra: Record<string, unknown>, opts: ApprovalOptions): Promise<unknown>;
  approveNodeSurface(r: NodeSurfaceRequest, by: Principal, approvals: ApprovalProgress, auditExtra: Record<string, unknown>): Promise<unknown>;
}

/** The principal a recorded approver approves as (kind and actor are what the grant and audit record). */
function approverPrincipal(approver: string): Principal {
  if (approver === 'owner') return { kind: 'owner', role: 'operator', scopes: new Set(), actor: 'owner' };
  return { kind: 'device', role: 'operator', scopes: new Set(), deviceId: approver.slice('device:'.length), actor: approver };
}

/** Carry out every pending request whose quorum is met and whose claimant is gone; the number carried out. */
export async function carryOutDecidedQuorums(d: RecoveryDeps): Promise<number> {
  const { quorum: gw } = d;
  const quorum = gw.config.approvalQuorum;
  if (!quorum || Object.keys(quorum).length === 0) return 0;
  const mayTakeOver = async (claim: QuorumClaim): Promise<boolean> => {
    if (claim.by === d.claimant) return gw.clock.now() - claim.atMs >= OWN_CLAIM_LEASE_MS;
    // A single gateway: another claimant was an earlier process of this gateway.
    if (!d.bus) return true;
    return !(await d.bus.instanceLive(claim.by));
  };
  const recovered = (c: ClaimedQuorum) => ({ quorumCarriedOutBy: d.claimant, approvals: c.progress });
  let n = 0;
  for (const r of await gw.store.listPairingRequests()) {
    try {
      const stored = await gw.store.getGrant(r.deviceId, r.role);
      const current = stored ? effectiveGrant(stored, gw.clock.now()) : null;
      const required = requiredForScopes(quorum, current ? uncoveredScopes(current.scopes, r.scopes) : r.scopes);
      if (required <= 1) continue;
      const claimed = await claimDecided(gw.store, r.requestId, r.scopes, required, deviceApprovers(gw, r), d.claimant, gw.clock.now(), mayTakeOver);
      // Claimed, but the request may have been carried out between the listing and the claim.
      if (!claimed || !(await gw.store.getPairingRequest(r.requestId))) continue;
      await d.approveRequest(
        r,
        approverPrincipal(claimed.last.approver),
        { approvals: claimed.progress },
        {
          ttlMs: claimed.last.ttlMs ?? null,
          auditExtra: recovered(claimed),
        },
      );
      n++;
    } catch (err) {
      d.log.warn('could not carry out a request whose quorum was reached', { requestId: r.requestId, err: String(err) });
    }
  }
  for (const r of await gw.store.listNodeSurfaceRequests()) {
    try {
      const state = await nodeRequestState(gw, r);
      if (state.approvals.required <= 1) continue;
      const claimed = await claimDecided(
        gw.store,
        r.requestId,
        r.commands,
        state.approvals.required,
        nodeApprovers(gw, r),
        d.claimant,
        gw.clock.now(),
        mayTakeOver,
      );
      if (!claimed || !(await gw.store.getNodeSurfaceRequest(r.requestId))) continue;
      await d.approveNodeSurface(r, approverPrincipal(claimed.last.approver), claimed.progress, recovered(claimed));
      n++;
    } catch (err) {
      d.log.warn('could not carry out a node request whose quorum was reached', { requestId: r.requestId, err: String(err) });
    }
  }
  return n;
}
