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
import { GatewayError } from '../protocol/errors.js';
import { isKnownScope, scopeSatisfied } from '../protocol/scopes.js';
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
}

/** Quorum progress as devices list, nodes pending, events and the Control UI show it. */
export interface ApprovalProgress {
  received: number;
  required: number;
  approvers: string[];
}

interface VoteRecord {
  /** What the votes approve (sorted scopes or commands): a different ask starts over. */
  subject: string[];
  votes: Vote[];
}

const metaKey = (requestId: string) => `approval.votes.${requestId}`;
const sameSubject = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

function parse(text: string | null, subject: readonly string[]): Vote[] {
  if (!text) return [];
  try {
    const rec = JSON.parse(text) as VoteRecord;
    return sameSubject(rec.subject, subject) ? rec.votes : [];
  } catch {
    return [];
  }
}

/** Votes recorded for `requestId` that approve exactly `subject`. */
export async function readProgress(store: Pick<Store, 'getMeta'>, requestId: string, subject: readonly string[], required: number): Promise<ApprovalProgress> {
  const votes = parse(await store.getMeta(metaKey(requestId)), [...subject].sort());
  return { received: Math.min(votes.length, required), required, approvers: votes.map((v) => v.approver) };
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
    const votes = parse(before, subject);
    if (votes.some((v) => v.approver === approver)) {
      const progress = { received: Math.min(votes.length, required), required, approvers: votes.map((v) => v.approver) };
      return {
        ok: false,
        error: new GatewayError('APPROVAL_ALREADY_RECORDED', {
          vars: { approver, requestId: req.requestId, received: String(progress.received), required: String(required) },
          details: { ...details, approver, approvals: progress },
        }),
      };
    }
    const next = [...votes, { approver, atMs }];
    if (await store.setMetaIf(key, before, JSON.stringify({ subject, votes: next } satisfies VoteRecord))) {
      return {
        ok: true,
        complete: next.length === required,
        progress: { received: Math.min(next.length, required), required, approvers: next.map((v) => v.approver) },
      };
    }
  }
  throw new Error(`approval vote on ${req.requestId} lost ${VOTE_CAS_ATTEMPTS} compare-and-set races in a row`);
}
