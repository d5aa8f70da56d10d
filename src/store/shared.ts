/** Pure helpers every adapter uses, so the adapters differ only in how they persist. */
import { createHash } from 'node:crypto';
import type { Role } from '@clawgate/protocol/frames';
import type {
  ApproveInput,
  AuditEntry,
  AuditInput,
  ChatMessage,
  ChatSession,
  Delivery,
  DeliveryAttempt,
  DeviceRecord,
  GrantRecord,
  NewChannel,
  NewChatMessage,
  PairingRequest,
  SetupCodeRecord,
  TokenRecord,
  UpsertRequestInput,
  WebhookChannel,
} from './types.js';

export const GENESIS_HASH = '0'.repeat(64);

/** Hash of one audit entry, chained to the previous entry's hash. */
export function auditHash(prevHash: string, seq: number, input: AuditInput): string {
  const body = JSON.stringify([seq, input.atMs, input.actor, input.action, input.subject ?? null, input.data ?? null]);
  return createHash('sha256').update(prevHash).update('\n').update(body).digest('hex');
}

export function chainAudit(prev: AuditEntry | undefined, input: AuditInput): AuditEntry {
  const seq = (prev?.seq ?? 0) + 1;
  const prevHash = prev?.hash ?? GENESIS_HASH;
  return { ...input, seq, prevHash, hash: auditHash(prevHash, seq, input) };
}

/** Verify a contiguous run of audit entries; returns the seq of the first broken link or null. */
export function verifyAuditChain(entries: readonly AuditEntry[], after?: Pick<AuditEntry, 'seq' | 'hash'>): number | null {
  // `after`: the last entry of the previous page, so a long log is verified a page at a time.
  let prevHash = after?.hash ?? GENESIS_HASH;
  let expectSeq = (after?.seq ?? 0) + 1;
  for (const e of entries) {
    if (e.seq !== expectSeq || e.prevHash !== prevHash || auditHash(prevHash, e.seq, e) !== e.hash) return e.seq;
    prevHash = e.hash;
    expectSeq++;
  }
  return null;
}

/**
 * Merge a retry into the existing pending request of the same (device, role): the id is kept,
 * the timestamp refreshed, and a wider ask adds its scopes (marked as widened). A narrower or
 * equal ask never shrinks what is shown to the approver.
 */
export function mergePairingRequest(
  existing: PairingRequest | null,
  input: UpsertRequestInput,
): { request: PairingRequest; created: boolean; widened: boolean } {
  if (!existing) {
    return {
      created: true,
      widened: false,
      request: {
        requestId: input.requestId,
        deviceId: input.deviceId,
        publicKey: input.publicKey,
        role: input.role,
        scopes: [...input.scopes].sort(),
        kind: input.kind,
        meta: input.meta,
        address: input.address,
        isRepair: input.isRepair,
        createdAtMs: input.atMs,
        refreshedAtMs: input.atMs,
      },
    };
  }
  const added = input.scopes.filter((s) => !existing.scopes.includes(s));
  const widened = added.length > 0;
  return {
    created: false,
    widened,
    request: {
      ...existing,
      publicKey: input.publicKey,
      scopes: widened ? [...existing.scopes, ...added].sort() : existing.scopes,
      kind: input.kind === 'new-device' || existing.kind === 'new-device' ? (input.isRepair ? input.kind : 'new-device') : input.kind,
      meta: input.meta,
      address: input.address,
      isRepair: input.isRepair,
      refreshedAtMs: input.atMs,
      widenedAtMs: widened ? input.atMs : existing.widenedAtMs,
    },
  };
}

/** A pending delivery after one attempt (automations): every adapter stores this. */
export function applyAttempt(d: Delivery, a: DeliveryAttempt): Delivery {
  const next: Delivery = { ...d, attempts: d.attempts + 1, lastAttemptAtMs: a.atMs, lastError: a.error, lastStatus: a.httpStatus };
  if (a.outcome === 'delivered') {
    next.status = 'delivered';
    next.deliveredAtMs = a.atMs;
    next.lastError = undefined;
  } else if (a.outcome === 'dead') {
    next.status = 'dead';
    next.deadAtMs = a.atMs;
  } else {
    next.nextAttemptAtMs = a.nextAttemptAtMs ?? a.atMs;
  }
  return next;
}

/** The grant an approval writes: the asked scopes, one epoch past the (device, role)'s previous grant. */
export function approvedGrant(input: ApproveInput, prevEpoch: number | undefined): GrantRecord {
  return {
    deviceId: input.device.deviceId,
    role: input.role,
    scopes: [...input.scopes],
    epoch: (prevEpoch ?? 0) + 1,
    approvedAtMs: input.atMs,
    approvedVia: input.via,
    // Only what is set: a permanent grant reads exactly as before these fields existed.
    ...(input.approvedBy ? { approvedBy: input.approvedBy } : {}),
    ...(input.expiresAtMs != null ? { expiresAtMs: input.expiresAtMs, scopesAfterExpiry: [...(input.scopesAfterExpiry ?? [])] } : {}),
  };
}

/** The grant a time-bound grant becomes at its expiry, or null when nothing is kept. */
export function grantAfterExpiry(g: GrantRecord): GrantRecord | null {
  const keep = g.scopesAfterExpiry ?? [];
  if (keep.length === 0) return null;
  const { expiresAtMs: _ends, scopesAfterExpiry: _kept, ...rest } = g;
  return { ...rest, scopes: [...keep], epoch: g.epoch + 1 };
}

/**
 * May a channel named like `existing` be written by `input`? Only a config-declared channel
 * re-declared by config (a restart re-reading the file) updates in place; any other clash is taken.
 */
export const channelNameTaken = (existing: { source: string } | undefined, input: { source: string }): boolean =>
  existing !== undefined && (input.source !== 'config' || existing.source !== 'config');

/** How many chat messages `listChatMessages` returns when the caller gives no limit. */
export const CHAT_PAGE_DEFAULT = 100;

// --- SQL rows (SQLite and PostgreSQL share the columns) ----------------------------------------

/** Values of a new chat_messages row, in the column order both SQL adapters' INSERT names. */
export const chatMessageValues = (m: NewChatMessage, seq: number) => [m.sessionId, seq, m.messageId, m.author, m.text, m.idempotencyKey ?? null, m.atMs];

/** Values of a new channels row, in the column order both SQL adapters' INSERT names. */
export const channelValues = (c: NewChannel) => [c.channelId, c.name, c.url, c.username ?? null, c.source, c.createdBy, c.createdAtMs];

export interface DeviceRow {
  device_id: string;
  public_key: string;
  meta_json: string;
  label: string | null;
  created_at_ms: number;
  last_seen_at_ms: number | null;
  last_seen_address: string | null;
}
export interface GrantRow {
  device_id: string;
  role: Role;
  scopes_json: string;
  epoch: number;
  approved_at_ms: number;
  approved_via: GrantRecord['approvedVia'];
  approved_by?: string | null;
  expires_at_ms?: number | string | null;
  scopes_after_expiry_json?: string | null;
}
export interface TokenRow {
  token_id: string;
  device_id: string;
  role: Role;
  secret_hash: Buffer;
  created_at_ms: number;
  rotated_at_ms: number | null;
  revoked_at_ms: number | null;
  last_used_at_ms: number | null;
}
export interface AuditRow {
  seq: number;
  at_ms: number;
  actor: string;
  action: string;
  subject: string | null;
  data_json: string | null;
  prev_hash: string;
  hash: string;
}

export interface SetupRow {
  setup_id: string;
  secret_hash: Buffer;
  profile_json: string;
  label: string | null;
  url: string;
  created_at_ms: number;
  expires_at_ms: number;
  created_by: string;
  failures: number;
  burned_at_ms: number | null;
  revoked_at_ms: number | null;
  redeemed_at_ms: number | null;
  redeem_count: number;
  device_id: string | null;
  public_key: string | null;
  device_name: string | null;
  redeemed_role: Role | null;
  grant_epochs_json: string | null;
}

export const opt = <T>(v: T | null): T | undefined => (v === null ? undefined : v);

export function toDevice(r: DeviceRow): DeviceRecord {
  return {
    ...JSON.parse(r.meta_json),
    deviceId: r.device_id,
    publicKey: r.public_key,
    label: opt(r.label),
    createdAtMs: r.created_at_ms,
    lastSeenAtMs: opt(r.last_seen_at_ms),
    lastSeenAddress: opt(r.last_seen_address),
  };
}
export function toGrant(r: GrantRow): GrantRecord {
  return {
    deviceId: r.device_id,
    role: r.role,
    scopes: JSON.parse(r.scopes_json),
    epoch: r.epoch,
    approvedAtMs: r.approved_at_ms,
    approvedVia: r.approved_via,
    ...(r.approved_by ? { approvedBy: r.approved_by } : {}),
    ...(r.expires_at_ms != null ? { expiresAtMs: Number(r.expires_at_ms), scopesAfterExpiry: JSON.parse(r.scopes_after_expiry_json ?? '[]') } : {}),
  };
}
export function toToken(r: TokenRow): TokenRecord {
  return {
    tokenId: r.token_id,
    deviceId: r.device_id,
    role: r.role,
    secretHash: Buffer.from(r.secret_hash),
    createdAtMs: r.created_at_ms,
    rotatedAtMs: opt(r.rotated_at_ms),
    revokedAtMs: opt(r.revoked_at_ms),
    lastUsedAtMs: opt(r.last_used_at_ms),
  };
}
export function toSetup(r: SetupRow): SetupCodeRecord {
  return {
    setupId: r.setup_id,
    secretHash: Buffer.from(r.secret_hash),
    profile: JSON.parse(r.profile_json),
    label: opt(r.label),
    url: r.url,
    createdAtMs: r.created_at_ms,
    expiresAtMs: r.expires_at_ms,
    createdBy: r.created_by,
    failures: r.failures,
    burnedAtMs: opt(r.burned_at_ms),
    revokedAtMs: opt(r.revoked_at_ms),
    redeemedAtMs: opt(r.redeemed_at_ms),
    redeemCount: r.redeem_count,
    deviceId: opt(r.device_id),
    publicKey: opt(r.public_key),
    deviceName: opt(r.device_name),
    redeemedRole: opt(r.redeemed_role),
    grantEpochs: r.grant_epochs_json === null ? undefined : JSON.parse(r.grant_epochs_json),
  };
}
export function toAudit(r: AuditRow): AuditEntry {
  return {
    seq: r.seq,
    atMs: r.at_ms,
    actor: r.actor,
    action: r.action,
    subject: opt(r.subject),
    data: r.data_json === null ? undefined : JSON.parse(r.data_json),
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

// automations
export interface ChatSessionRow {
  session_id: string;
  key: string;
  label: string | null;
  parent_id: string | null;
  created_by: string;
  created_at_ms: number;
  updated_at_ms: number;
  message_count: number;
}
export interface ChatMessageRow {
  session_id: string;
  seq: number;
  message_id: string;
  author: string;
  text: string;
  idempotency_key: string | null;
  at_ms: number;
}
export interface ChannelRow {
  channel_id: string;
  name: string;
  url: string;
  username: string | null;
  source: WebhookChannel['source'];
  created_by: string;
  created_at_ms: number;
}
export function toChatSession(r: ChatSessionRow): ChatSession {
  return {
    sessionId: r.session_id,
    key: r.key,
    label: opt(r.label),
    parentId: opt(r.parent_id),
    createdBy: r.created_by,
    createdAtMs: r.created_at_ms,
    updatedAtMs: r.updated_at_ms,
    messageCount: r.message_count,
  };
}
export function toChatMessage(r: ChatMessageRow): ChatMessage {
  return {
    sessionId: r.session_id,
    seq: r.seq,
    messageId: r.message_id,
    author: r.author,
    text: r.text,
    idempotencyKey: opt(r.idempotency_key),
    atMs: r.at_ms,
  };
}
export function toChannel(r: ChannelRow): WebhookChannel {
  return {
    channelId: r.channel_id,
    name: r.name,
    type: 'webhook',
    url: r.url,
    username: opt(r.username),
    source: r.source,
    createdBy: r.created_by,
    createdAtMs: r.created_at_ms,
  };
}
