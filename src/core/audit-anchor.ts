/**
 * The audit log's anchor (docs/security.md §Audit log). The hash chain alone shows an edited
 * row, but not a deleted tail, and not a chain rewritten and re-hashed from the edit onwards:
 * whoever can write the store can do both. The anchor is the chain head (seq + hash) signed with
 * the gateway identity key, kept outside the store (the state dir's `audit-anchor.json`). A
 * store whose chain does not reach the anchored seq with the anchored hash was cut or rewritten.
 *
 * Pure: signing goes through the injected GatewayIdentity, reading and writing the file is the
 * server's (server/audit-anchor.ts).
 */
import { createHash, verify } from 'node:crypto';
import { auditHash, GENESIS_HASH } from './audit-chain.js';
import type { GatewayIdentity } from './gateway-identity.js';
import { parsePublicKey, publicKeyObject } from './identity.js';
import type { AuditEntry } from './store.js';

export interface AuditAnchor {
  v: 1;
  /** The last audit entry the anchor vouches for. */
  seq: number;
  /** Its chain hash (64 hex). */
  hash: string;
  /** When the anchor was signed. */
  signedAtMs: number;
  /** The gateway public key that signed (raw Ed25519, unpadded base64url). */
  publicKey: string;
  /** Ed25519 over `auditAnchorPayload(seq, hash, signedAtMs)`, unpadded base64url. */
  signature: string;
}

/** The exact bytes an anchor signs: a domain tag, so no other gateway signature can pass as one. */
export function auditAnchorPayload(seq: number, hash: string, signedAtMs: number): Buffer {
  return Buffer.from(`clawgate-audit-anchor-v1\n${seq}\n${hash}\n${signedAtMs}`, 'utf8');
}

export function signAuditAnchor(identity: GatewayIdentity, head: { seq: number; hash: string }, signedAtMs: number): AuditAnchor {
  return {
    v: 1,
    seq: head.seq,
    hash: head.hash,
    signedAtMs,
    publicKey: identity.publicKey,
    signature: identity.sign(auditAnchorPayload(head.seq, head.hash, signedAtMs)),
  };
}

/** An anchor read from JSON, or null when it does not have the anchor's shape. */
export function parseAuditAnchor(value: unknown): AuditAnchor | null {
  const a = value as Partial<AuditAnchor> | null;
  if (typeof a !== 'object' || a === null || a.v !== 1) return null;
  if (!Number.isSafeInteger(a.seq) || (a.seq as number) < 1) return null;
  if (typeof a.hash !== 'string' || !/^[0-9a-f]{64}$/.test(a.hash)) return null;
  if (!Number.isSafeInteger(a.signedAtMs)) return null;
  if (typeof a.publicKey !== 'string' || typeof a.signature !== 'string') return null;
  return { v: 1, seq: a.seq as number, hash: a.hash, signedAtMs: a.signedAtMs as number, publicKey: a.publicKey, signature: a.signature };
}

/** Null when `anchor` is signed by the key with `expectedFingerprint`; else what is wrong with it. */
export function anchorSignatureProblem(anchor: AuditAnchor, expectedFingerprint: string): string | null {
  const raw = parsePublicKey(anchor.publicKey);
  if (!raw) return 'the anchor names a malformed public key';
  const fingerprint = createHash('sha256').update(raw).digest('hex');
  if (fingerprint !== expectedFingerprint) return `the anchor was signed by key ${fingerprint}, not by this gateway's key ${expectedFingerprint}`;
  const good = verify(null, auditAnchorPayload(anchor.seq, anchor.hash, anchor.signedAtMs), publicKeyObject(raw), Buffer.from(anchor.signature, 'base64url'));
  return good ? null : 'the anchor signature does not verify (the anchor was forged or edited)';
}

/**
 * Are `entries` a contiguous, correctly hashed run? `prevHash` is the hash before the first
 * (GENESIS_HASH for a run from seq 1). Returns the seq of the first bad entry, or null.
 */
export function brokenLink(entries: readonly AuditEntry[], prevHash: string): number | null {
  let prev = prevHash;
  let expect = entries[0]?.seq ?? 1;
  for (const e of entries) {
    if (e.seq !== expect || e.prevHash !== prev || auditHash(prev, e.seq, e) !== e.hash) return e.seq;
    prev = e.hash;
    expect++;
  }
  return null;
}

export type AuditVerdict =
  | { ok: true; entries: number; anchoredSeq: number | null; unanchored: number }
  | { ok: false; problem: string; brokenAtSeq: number | null };

/**
 * Verify the whole log against its anchor. `anchor` is null when there is none; `fingerprint`
 * is the gateway key the anchor must be signed by (the state dir's).
 */
export function verifyAnchoredAudit(entries: readonly AuditEntry[], anchor: AuditAnchor | null, fingerprint: string | null): AuditVerdict {
  const broken = brokenLink(entries, GENESIS_HASH);
  if (broken !== null || (entries.length > 0 && entries[0]?.seq !== 1)) {
    const at = broken ?? (entries[0] as AuditEntry).seq;
    return { ok: false, brokenAtSeq: at, problem: `the hash chain is broken at entry ${at} (an entry was edited, deleted or inserted)` };
  }
  if (anchor === null) {
    if (entries.length === 0) return { ok: true, entries: 0, anchoredSeq: null, unanchored: 0 };
    return {
      ok: false,
      brokenAtSeq: null,
      problem: `there is no audit anchor, so the ${entries.length} entries' head is not authenticated (a deleted anchor, or a gateway that never started with this version)`,
    };
  }
  if (fingerprint === null) return { ok: false, brokenAtSeq: null, problem: 'there is no gateway key to check the anchor with' };
  const sig = anchorSignatureProblem(anchor, fingerprint);
  if (sig) return { ok: false, brokenAtSeq: null, problem: sig };
  if (entries.length < anchor.seq) {
    return {
      ok: false,
      brokenAtSeq: entries.length + 1,
      problem: `the log was truncated: the anchor vouches for ${anchor.seq} entries, the store holds ${entries.length}`,
    };
  }
  const at = entries[anchor.seq - 1] as AuditEntry;
  if (at.hash !== anchor.hash) {
    return {
      ok: false,
      brokenAtSeq: null,
      problem: `entries up to ${anchor.seq} were rewritten: the chain hash there is ${at.hash}, the anchor signed ${anchor.hash}`,
    };
  }
  return { ok: true, entries: entries.length, anchoredSeq: anchor.seq, unanchored: entries.length - anchor.seq };
}
