/**
 * What would decide a pending pairing request, for `explain`: the same `decideApproval`
 * (approval-policy.ts) the handshake runs, on the request as it was filed and the proofs the
 * connect established then (recorded with the request when policies are configured), applied to
 * what the request still adds. One decision function, so explain and the gateway cannot disagree.
 */
import type { Store } from '../store/types.js';
import type { ApprovalDecision, ApprovalProofs, ApprovalRequest } from './approval-policy.js';

/** What explain says would decide a pending request. */
export interface PendingDecision {
  rule: string | null;
  action: ApprovalDecision['action'] | null;
  proof: string | null;
  /** What the rule grants of what is pending (empty: nothing, a person decides). */
  scopes: string[];
  ttlMs: number | null;
  /** In words, e.g. `no rule: a person must approve`. */
  text: string;
}

interface RecordedFacts {
  client: { id: string; mode: string };
  direct: boolean;
  proofs: ApprovalProofs;
}

const proofsKey = (requestId: string) => `approval.proofs.${requestId}`;

/** Keep what the policy decision of a filed request saw (client, directness, proofs) for explain. */
export async function recordRequestFacts(store: Pick<Store, 'setMeta'>, requestId: string, request: ApprovalRequest, proofs: ApprovalProofs): Promise<void> {
  const facts: RecordedFacts = {
    client: request.client,
    direct: request.direct,
    proofs: proofs.proxyUser !== undefined ? { proxyUser: proofs.proxyUser } : {},
  };
  await store.setMeta(proofsKey(requestId), JSON.stringify(facts));
}

async function recordedFacts(store: Pick<Store, 'getMeta'>, requestId: string): Promise<RecordedFacts | null> {
  const text = await store.getMeta(proofsKey(requestId));
  if (!text) return null;
  try {
    return JSON.parse(text) as RecordedFacts;
  } catch {
    return null;
  }
}

/** Run the gateway's decision on a pending request for what it still `adds`. */
export async function decidePending(
  store: Pick<Store, 'getMeta'>,
  decide: (request: ApprovalRequest, proofs: ApprovalProofs) => ApprovalDecision,
  r: {
    requestId: string;
    role: ApprovalRequest['role'];
    kind: ApprovalRequest['kind'];
    address: string;
    meta: { clientId?: string | undefined; clientMode?: string | undefined };
  },
  adds: readonly string[],
): Promise<PendingDecision> {
  const facts = await recordedFacts(store, r.requestId);
  const request: ApprovalRequest = {
    role: r.role,
    scopes: [...adds],
    kind: r.kind,
    client: facts?.client ?? { id: r.meta.clientId ?? '', mode: r.meta.clientMode ?? '' },
    address: r.address,
    // Unrecorded (no policy was configured when it was filed): only what needs no proof can match.
    direct: facts?.direct ?? false,
  };
  const d = decide(request, facts?.proofs ?? {});
  const base = { rule: d.rule, action: d.rule === null ? null : d.action, proof: d.proof, scopes: d.action === 'approve' ? d.scopes : [], ttlMs: d.ttlMs };
  if (d.rule === null) return { ...base, text: 'no rule: a person must approve' };
  const by = `rule ${d.rule}${d.proof ? ` (proof ${d.proof})` : ''}`;
  if (d.action === 'deny') return { ...base, text: `${by} denies it` };
  if (d.action === 'require-approval') return { ...base, text: `${by} requires a person: a person must approve` };
  if (d.scopes.length === 0) return { ...base, text: `${by} grants none of it (${d.missing.join(', ')}): a person must approve` };
  const rest = d.missing.length > 0 ? `; ${d.missing.join(', ')} left to a person` : '';
  return { ...base, text: `${by} approves ${d.scopes.join(', ')}${rest}` };
}
