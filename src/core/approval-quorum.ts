/**
 * Approval quorum (`gateway.approvals.quorum`): a pairing request that adds a listed scope, or a
 * node surface request that adds a listed command (`node:<command>`), needs that many approvals
 * from distinct approvers before it is carried out. The owner credential is one approver
 * (`owner`), a device session another (`device:<id>`); a session that is neither (a shared
 * secret without a device, an automation) cannot be told apart from the next one and may not
 * vote. Any approver's rejection ends the request (the ordinary reject path).
 *
 * Votes live in the store (meta key per request, written by compare-and-set), so every instance
 * sharing a PostgreSQL store counts the same votes and exactly one approval crosses the line.
 * A vote is for what the request asked when it was cast: a request widened since starts over.
 */
import { GatewayError } from '@clawgate/protocol/errors';
import { isKnownScope, scopeSatisfied } from '@clawgate/protocol/scopes';
import type { ApprovalProgress } from '@clawgate/protocol/views';
import type { Store } from '../store/types.js';
import type { Principal } from './principal.js';

/** Scope (`operator.admin`) or node command (`node:system.run`) → approvals needed (2..MAX_QUORUM). */
export type QuorumConfig = Readonly<Record<string, number>>;

export const MAX_QUORUM = 9;
const NODE_PREFIX = 'node:';
const COMMAND_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** Compare-and-set retries before a vote gives up (each retry means another vote landed first). */
const VOTE_CAS_ATTEMPTS = 16;

/** Why `value` is not a quorum block, naming the bad key; null when it is one. */
export function quorumConfigProblem(value: unknown): string | null {
  const where = 'gateway.approvals.quorum';
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `${where} must be an object like {"operator.admin": 2, "node:system.run": 2}`;
  for (const [key, n] of Object.entries(value)) {
    const name = `${where}[${JSON.stringify(key)}]`;
    if (key.startsWith(NODE_PREFIX)) {
      if (!COMMAND_RE.test(key.slice(NODE_PREFIX.length))) return `${name}: "node:" must be followed by a node command name like system.run`;
    } else if (!isKnownScope(key)) {
      return `${name}: not an operator scope (operator.admin, operator.pairing, …) or node:<command>`;
    }
    if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > MAX_QUORUM) return `${name} must be a whole number from 1 to ${MAX_QUORUM}`;
  }
  return null;
}

/** Approvals needed for a request that adds `adds` (scopes): the largest quorum any of them falls under, at least 1. */
export function requiredForScopes(quorum: QuorumConfig | undefined, adds: readonly string[]): number {
  let need = 1;
  for (const [key, n] of Object.entries(quorum ?? {})) {
    if (key.startsWith(NODE_PREFIX)) continue;
    // An added scope that implies a listed one (admin implies write) needs that quorum too.
    if (scopeSatisfied(adds, key)) need = Math.max(need, n);
  }
  return need;
}

/** Approvals needed for a node surface that adds `commands`. */
export function requiredForCommands(quorum: QuorumConfig | undefined, commands: readonly string[]): number {
  let need = 1;
  for (const c of commands) need = Math.max(need, quorum?.[`${NODE_PREFIX}${c}`] ?? 1);
  return need;
}

/** The scopes under quorum (more than one approval) among `scopes`. */
export function quorumScopes(quorum: QuorumConfig | undefined, scopes: readonly string[]): string[] {
  return scopes.filter((s) => requiredForScopes(quorum, [s]) > 1);
}

/** Who this principal is as an approver, or null when it cannot be told apart from another. */
export function approverOf(p: Principal): string | null {
  if (p.kind === 'owner') return 'owner';
  if (p.kind === 'internal') return null;
  return p.deviceId ? `device:${p.deviceId}` : null;
}

export interface Vote {
  approver: string;
  atMs: number;
  /** The ttl this approval asked for (the completing approval's applies, also when carried out after a restart). */
  ttlMs?: number | null | undefined;
}

/**
 * Whether a recorded approver still counts: the owner always; a device only while it still
 * holds what approving the request needs (a removed device, or one that lost operator.pairing
 * or the scopes the request asks for, no longer counts).
 */
export type ApproverCheck = (approver: string) => Promise<boolean>;

/** Which instance is carrying out a request whose votes reached its quorum, since when. */
export interface QuorumClaim {
  by: string;
  atMs: number;
}

/** Quorum progress as devices list, nodes pending, events and the Control UI show it. */
/** The wire shape of quorum progress is the protocol's; re-exported for the core code that computes it. */
export type { ApprovalProgress };

interface VoteRecord {
  /** What the votes approve (sorted scopes or commands): a different ask starts over. */
  subject: string[];
  votes: Vote[];
  /**
   * Written in the same compare-and-set as the vote that reached the quorum: the instance that
   * carries the request out. A request still pending with enough votes and no live claimant
   * (the process died in between) is carried out by the next instance that looks
   * (approval-recovery.ts).
   */
  claim?: QuorumClaim | undefined;
}

const metaKey = (requestId: string) => `approval.votes.${requestId}`;
const sameSubject = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

function parseRecord(text: string | null, subject: readonly string[]): { votes: Vote[]; claim: QuorumClaim | null } {
  if (!text) return { votes: [], claim: null };
  try {
    const rec = JSON.parse(text) as VoteRecord;
    return sameSubject(rec.subject, subject) ? { votes: rec.votes, claim: rec.claim ?? null } : { votes: [], claim: null };
  } catch {
    return { votes: [], claim: null };
  }
}

/** The votes whose approver still counts (re-checked at every count, never trusted from the record). */
async function counted(votes: readonly Vote[], valid: ApproverCheck | undefined): Promise<Vote[]> {
  if (!valid) return [...votes];
  const out: Vote[] = [];
  for (const v of votes) if (await valid(v.approver)) out.push(v);
  return out;
}

const progressOf = (votes: readonly Vote[], required: number): ApprovalProgress => ({
  received: Math.min(votes.length, required),
  required,
  approvers: votes.map((v) => v.approver),
});

/** Votes recorded for `requestId` that approve exactly `subject`, from approvers that still count. */
export async function readProgress(
  store: Pick<Store, 'getMeta'>,
  requestId: string,
  subject: readonly string[],
  required: number,
  valid?: ApproverCheck,
): Promise<ApprovalProgress> {
  const { votes } = parseRecord(await store.getMeta(metaKey(requestId)), [...subject].sort());
  return progressOf(await counted(votes, valid), required);
}

/** A request whose counted votes reach its quorum, claimed by this instance to be carried out. */
export interface ClaimedQuorum {
  progress: ApprovalProgress;
  /** The vote that completed it (its approver approves, its ttl applies). */
  last: Vote;
}

/**
 * Claim a request whose counted votes reach `required` but that was never carried out, when
 * `mayTakeOver` says the current claimant (if any) is gone. Compare-and-set: of several
 * instances looking at once exactly one gets it. Null when it is not decided or not ours.
 */
export async function claimDecided(
  store: Pick<Store, 'getMeta' | 'setMetaIf'>,
  requestId: string,
  subjectIn: readonly string[],
  required: number,
  valid: ApproverCheck,
  claimant: string,
  atMs: number,
  mayTakeOver: (claim: QuorumClaim) => Promise<boolean>,
): Promise<ClaimedQuorum | null> {
  const subject = [...subjectIn].sort();
  const key = metaKey(requestId);
  const before = await store.getMeta(key);
  const rec = parseRecord(before, subject);
  const votes = await counted(rec.votes, valid);
  const last = votes[votes.length - 1];
  if (votes.length < required || !last) return null;
  if (rec.claim && !(await mayTakeOver(rec.claim))) return null;
  const claim: QuorumClaim = { by: claimant, atMs };
  if (!(await store.setMetaIf(key, before, JSON.stringify({ subject, votes, claim } satisfies VoteRecord)))) return null;
  return { progress: progressOf(votes, required), last };
}

/** Forget a request's votes (it was carried out, rejected or expired). */
export async function dropVotes(store: Pick<Store, 'getMeta' | 'setMetaIf'>, requestId: string): Promise<void> {
  const key = metaKey(requestId);
  const before = await store.getMeta(key);
  if (before !== null) await store.setMetaIf(key, before, '');
}

export type VoteOutcome =
  /** Recorded; `complete` is true for exactly the vote that reached `required`. */
  { ok: true; complete: boolean; progress: ApprovalProgress } | { ok: false; error: GatewayError };

/**
 * Record `by`'s approval of `requestId` (for `subject`). Refused for an approver that voted
 * already, for the device the request is about, and for a principal that is no approver.
 */
export async function castVote(
  store: Pick<Store, 'getMeta' | 'setMetaIf'>,
  req: { requestId: string; deviceId: string },
  subjectIn: readonly string[],
  required: number,
  by: Principal,
  atMs: number,
  opts: { valid?: ApproverCheck | undefined; claimant?: string | undefined; ttlMs?: number | null | undefined } = {},
): Promise<VoteOutcome> {
  const approver = approverOf(by);
  const details = { requestId: req.requestId, deviceId: req.deviceId, required };
  if (!approver) {
    return {
      ok: false,
      error: new GatewayError('QUORUM_APPROVER_UNIDENTIFIED', { vars: { requestId: req.requestId, required: String(required) }, details }),
    };
  }
  if (approver === `device:${req.deviceId}`) {
    return { ok: false, error: new GatewayError('APPROVAL_DENIED', { vars: { why: 'a device cannot approve its own request' }, details }) };
  }
  const subject = [...subjectIn].sort();
  const key = metaKey(req.requestId);
  for (let attempt = 0; attempt < VOTE_CAS_ATTEMPTS; attempt++) {
    const before = await store.getMeta(key);
    const rec = parseRecord(before, subject);
    // Votes of approvers that no longer count are dropped here: a device removed and paired
    // again (or given back its scopes) must approve again.
    const votes = await counted(rec.votes, opts.valid);
    if (votes.some((v) => v.approver === approver)) {
      const progress = progressOf(votes, required);
      return {
        ok: false,
        error: new GatewayError('APPROVAL_ALREADY_RECORDED', {
          vars: { approver, requestId: req.requestId, received: String(progress.received), required: String(required) },
          details: { ...details, approver, approvals: progress },
        }),
      };
    }
    const next: Vote[] = [...votes, { approver, atMs, ...(opts.ttlMs != null ? { ttlMs: opts.ttlMs } : {}) }];
    // The vote that reaches the quorum claims the request in the same write: if this process
    // dies before carrying it out, another instance (or this one restarted) sees whose it was.
    const complete = next.length >= required && !rec.claim;
    const claim = complete ? { by: opts.claimant ?? 'gateway', atMs } : (rec.claim ?? undefined);
    if (await store.setMetaIf(key, before, JSON.stringify({ subject, votes: next, ...(claim ? { claim } : {}) } satisfies VoteRecord))) {
      return { ok: true, complete, progress: progressOf(next, required) };
    }
  }
  throw new Error(`approval vote on ${req.requestId} lost ${VOTE_CAS_ATTEMPTS} compare-and-set races in a row`);
}
