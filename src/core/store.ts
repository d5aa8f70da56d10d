/**
 * The store interfaces, one per domain, named by domain actions. Both adapters (SQLite,
 * PostgreSQL) pass the same contract suite (test/store-contract.ts). Every method that
 * changes trust takes the audit record it must append, so the change and its audit entry
 * commit together or not at all.
 */
import type { Role } from '@clawgate/protocol/frames';

export type ApprovedVia = 'silent' | 'manual' | 'owner' | 'bootstrap' | 'policy';

export interface DeviceMeta {
  displayName?: string | undefined;
  platform?: string | undefined;
  deviceFamily?: string | undefined;
  clientId?: string | undefined;
  clientMode?: string | undefined;
}

export interface DeviceRecord extends DeviceMeta {
  deviceId: string;
  publicKey: string;
  /** Operator-chosen name; survives re-pairing. */
  label?: string | undefined;
  createdAtMs: number;
  lastSeenAtMs?: number | undefined;
  lastSeenAddress?: string | undefined;
}

/** What a device may do in one role. The epoch grows on every change of authority. */
export interface GrantRecord {
  deviceId: string;
  role: Role;
  scopes: string[];
  epoch: number;
  approvedAtMs: number;
  approvedVia: ApprovedVia;
  /** Who approved the current grant: `owner`, `device:<id>`, `rule:<name>`, `gateway` (absent on grants from before it was recorded). */
  approvedBy?: string | undefined;
  /** When a time-bound part of the grant ends (null or absent: until revoked). */
  expiresAtMs?: number | null | undefined;
  /** With expiresAtMs: the scopes the role keeps after it (empty: the role goes). */
  scopesAfterExpiry?: string[] | undefined;
}

/** What a time-bound grant turned into at its expiry. */
export type GrantExpiry = { outcome: 'removed'; grant: GrantRecord } | { outcome: 'narrowed'; grant: GrantRecord };

export interface TokenRecord {
  tokenId: string;
  deviceId: string;
  role: Role;
  secretHash: Buffer;
  createdAtMs: number;
  rotatedAtMs?: number | undefined;
  revokedAtMs?: number | undefined;
  lastUsedAtMs?: number | undefined;
}

export type PairingKind = 'new-device' | 'role-upgrade' | 'scope-upgrade';

export interface PairingRequest {
  requestId: string;
  deviceId: string;
  publicKey: string;
  role: Role;
  /** Everything the device has asked for in this role (grows when a retry asks wider). */
  scopes: string[];
  kind: PairingKind;
  meta: DeviceMeta;
  address: string;
  isRepair: boolean;
  createdAtMs: number;
  refreshedAtMs: number;
  /** Set when a retry asked for more than the request held before. */
  widenedAtMs?: number | undefined;
}

export interface AuditInput {
  atMs: number;
  /** Who did it: `owner`, `device:<id>`, `shared-token`, `internal:<component>`, `gateway`. */
  actor: string;
  action: string;
  subject?: string | undefined;
  data?: Record<string, unknown> | undefined;
}

export interface AuditEntry extends AuditInput {
  seq: number;
  prevHash: string;
  hash: string;
}

export interface NewToken {
  tokenId: string;
  secretHash: Buffer;
}

export interface ApproveInput {
  device: { deviceId: string; publicKey: string; meta: DeviceMeta; address?: string | undefined };
  role: Role;
  /** The grant's scopes after approval (the caller computes union or replacement). */
  scopes: string[];
  via: ApprovedVia;
  /** Who approved (`owner`, `device:<id>`, `rule:<name>`, `gateway`). */
  approvedBy?: string | undefined;
  /** Time-bound: when the grant (or the part beyond scopesAfterExpiry) ends; null or absent: until revoked. */
  expiresAtMs?: number | null | undefined;
  /** With expiresAtMs: what the role keeps after it. */
  scopesAfterExpiry?: string[] | undefined;
  /** A new token for the role, or null to keep the current one (it stays valid). */
  token: NewToken | null;
  atMs: number;
  /** Pending request this approval resolves (deleted in the same transaction). */
  requestId?: string | undefined;
  audit: AuditInput;
}

/** A pairing request as the gateway files it; the store assigns timestamps and merges retries. */
export type UpsertRequestInput = Pick<PairingRequest, 'requestId' | 'deviceId' | 'publicKey' | 'role' | 'scopes' | 'kind' | 'meta' | 'address' | 'isRepair'> & {
  atMs: number;
  audit: AuditInput;
};

export interface UpsertRequestResult {
  request: PairingRequest;
  created: boolean;
  widened: boolean;
}

// --- device pages ------------------------------------------------------------------

/** Most devices one page may hold. */
export const DEVICE_PAGE_MAX = 500;
/** Longest `search` a device page takes (labels are at most 64 characters too). */
export const DEVICE_SEARCH_MAX_CHARS = 64;
/** Devices per page when a client pages without naming a limit. */
export const DEVICE_PAGE_DEFAULT = 100;
/**
 * Most devices one `seedPairedDevices` batch may hold: one transaction each, so a batch this size
 * holds the write lock for well under a second on SQLite, and the bench's seeding batch fits.
 */
export const SEED_BATCH_MAX = 10_000;

export interface DevicePageQuery {
  /** 1 to DEVICE_PAGE_MAX. */
  limit: number;
  /** The `nextCursor` of the previous page (opaque); absent for the first page. */
  cursor?: string | undefined;
  /** Prefix of the device id, label or display name (see listDevicesPage); empty means none. */
  search?: string | undefined;
}

export type DevicePageResult =
  | { ok: true; devices: DeviceRecord[] /** Null on the last page. */; nextCursor: string | null }
  | { ok: false; reason: 'bad-limit' | 'bad-cursor' };

/** One device of a seed batch: approved, with its grants and token hashes. */
export interface SeedDevice {
  deviceId: string;
  publicKey: string;
  meta: DeviceMeta;
  label?: string | undefined;
  createdAtMs: number;
  grants: ImportedGrant[];
  tokens: ImportedToken[];
}

export interface SeedDevicesInput {
  devices: SeedDevice[];
  /** Appended once for the whole batch. */
  audit: AuditInput;
}

export type SeedDevicesResult = { ok: true; inserted: number } | { ok: false; reason: 'exists'; deviceIds: string[] } | { ok: false; reason: 'bad-batch' };

// --- setup codes -------------------------------------------------------------------

export type SetupProfileName = 'operator' | 'node' | 'operator+node';

/** What a setup code hands out: the roles it approves, and the scopes of its operator role. */
export interface SetupProfile {
  name: SetupProfileName;
  roles: Role[];
  /** Scopes of the operator role (normalized); the node role carries none. */
  scopes: string[];
}

/**
 * One minted setup code. `setupId` is the public id of its bootstrap token (`cgb1_<id>_<secret>`);
 * only SHA-256 of the secret is kept. The record outlives the code's expiry, so "who redeemed
 * it" can still be answered later.
 */
export interface SetupCodeRecord {
  setupId: string;
  secretHash: Buffer;
  profile: SetupProfile;
  label?: string | undefined;
  /** The gateway URL written into the code. */
  url: string;
  createdAtMs: number;
  expiresAtMs: number;
  /** Actor that minted it (`owner`, `device:<id>`, …). */
  createdBy: string;
  /** Wrong secrets presented for this id so far. */
  failures: number;
  /** Set when the failure budget ran out: the code is dead. */
  burnedAtMs?: number | undefined;
  revokedAtMs?: number | undefined;
  /** First redemption. */
  redeemedAtMs?: number | undefined;
  /** 1 after the first redemption, + 1 for every repeat by the same key within the grace window. */
  redeemCount: number;
  /** The key the code is bound to by its first redemption. */
  deviceId?: string | undefined;
  publicKey?: string | undefined;
  deviceName?: string | undefined;
  /** The role the device connected with when it redeemed the code. */
  redeemedRole?: Role | undefined;
  /** Grant epochs right after the first redemption: a repeat is honoured only while they are unchanged. */
  grantEpochs?: Partial<Record<Role, number>> | undefined;
}

/** What minting stores; the redemption fields start empty. */
export type NewSetupCode = Pick<SetupCodeRecord, 'setupId' | 'secretHash' | 'profile' | 'label' | 'url' | 'createdAtMs' | 'expiresAtMs' | 'createdBy'> & {
  audit: AuditInput;
};

/** Why a setup code cannot be redeemed (the secret was right, or the id is unknown). */
export type SetupRefusal = 'unknown' | 'expired' | 'used' | 'revoked' | 'burned';

export interface RedeemSetupInput {
  setupId: string;
  device: ApproveInput['device'];
  /** The role the device connected with. */
  role: Role;
  /** A fresh token for every role of the profile (the store keeps only the hashes). */
  tokens: Partial<Record<Role, NewToken>>;
  atMs: number;
  /** How long after the first redemption the same key may redeem again (a lost hello-ok). */
  graceMs: number;
  /** Audit entry of a first redemption. */
  audit: AuditInput;
  /** Audit entry of a repeat by the same key. */
  repeatAudit: AuditInput;
}

export type RedeemSetupResult =
  | {
      ok: true;
      /** A repeat by the same key: the grants are unchanged, the tokens were replaced. */
      repeat: boolean;
      code: SetupCodeRecord;
      /** The device's grant for every role of the profile, after redemption. */
      grants: GrantRecord[];
      /** Pending requests of the device for those roles, resolved by this redemption. */
      resolvedRequestIds: string[];
    }
  | { ok: false; reason: SetupRefusal };

// --- nodes: command surfaces -------------------------------------------------------

/** What a node connection says about itself, kept with its surface request for the operator. */
export interface NodeMeta extends DeviceMeta {
  version?: string | undefined;
}

/** The command surface an operator approved for a node device (lives as long as its node role). */
export interface NodeSurfaceRecord {
  deviceId: string;
  caps: string[];
  commands: string[];
  /** The request this surface came from. */
  requestId: string;
  approvedAtMs: number;
  /** Actor that approved it. */
  approvedBy: string;
}

/**
 * A declared surface waiting for an operator: one per node device. A reconnect with the same
 * surface refreshes it under the same id; a different surface replaces it under a new id, so an
 * operator never approves something other than what they were shown.
 */
export interface NodeSurfaceRequest {
  requestId: string;
  deviceId: string;
  caps: string[];
  commands: string[];
  meta: NodeMeta;
  address: string;
  createdAtMs: number;
  refreshedAtMs: number;
}

/** The surface a node declared; `requestId` is used only when a new request is created. */
export interface UpsertNodeSurfaceInput extends Pick<NodeSurfaceRequest, 'requestId' | 'deviceId' | 'caps' | 'commands' | 'meta' | 'address'> {
  atMs: number;
  /** Appended only when a request is created or replaced. */
  audit: AuditInput;
}

export interface UpsertNodeSurfaceResult {
  request: NodeSurfaceRequest;
  created: boolean;
  /** The id of a request with a different surface that this one replaced. */
  replacedRequestId?: string | undefined;
}

// --- automations: sessions, chat, channels, deliveries, cron ----------------------

/** A chat session: the message surface operators, agents and automations share. */
export interface ChatSession {
  sessionId: string;
  /** Unique, human-chosen key (`main`, `ops/alerts`); generated when not given. */
  key: string;
  label?: string | undefined;
  /** The session this one was spawned from. */
  parentId?: string | undefined;
  /** Actor that created it (`owner`, `device:<id>`, `internal:cron`). */
  createdBy: string;
  createdAtMs: number;
  updatedAtMs: number;
  messageCount: number;
}

export type NewChatSession = Pick<ChatSession, 'sessionId' | 'key' | 'label' | 'parentId' | 'createdBy' | 'createdAtMs'> & { audit: AuditInput };

export interface ChatMessage {
  sessionId: string;
  /** 1, 2, 3 … per session: the paging cursor of chat.history. */
  seq: number;
  messageId: string;
  /** Actor that sent it. */
  author: string;
  text: string;
  idempotencyKey?: string | undefined;
  atMs: number;
}

export type NewChatMessage = Pick<ChatMessage, 'sessionId' | 'messageId' | 'author' | 'text' | 'idempotencyKey' | 'atMs'> & { audit: AuditInput };

/** `duplicate`: the idempotency key was used before in this session; `message` is the original. Null session: unknown. */
export type AppendMessageResult = { ok: true; message: ChatMessage; duplicate: boolean } | { ok: false; reason: 'unknown-session' };

export interface WebhookChannel {
  channelId: string;
  name: string;
  type: 'webhook';
  url: string;
  /** Default `username` of the posted body (Discord shows it as the author). */
  username?: string | undefined;
  /** Where it came from: the config file, or a method call. */
  source: 'config' | 'api';
  createdBy: string;
  createdAtMs: number;
}

export type NewChannel = Omit<WebhookChannel, 'type'> & { audit: AuditInput };

export type DeliveryStatus = 'pending' | 'delivered' | 'dead';

/** One outbox entry: persisted before the first attempt, so a restart loses nothing. */
export interface Delivery {
  deliveryId: string;
  channelId: string;
  channelName: string;
  /** The JSON body posted (Discord-webhook compatible). */
  body: Record<string, unknown>;
  /** Sent as the `Idempotency-Key` header on every attempt. */
  idempotencyKey: string;
  /** Actor whose `send` created it. */
  actor: string;
  status: DeliveryStatus;
  attempts: number;
  createdAtMs: number;
  nextAttemptAtMs: number;
  lastAttemptAtMs?: number | undefined;
  lastError?: string | undefined;
  /** HTTP status of the last attempt that got a response. */
  lastStatus?: number | undefined;
  deliveredAtMs?: number | undefined;
  deadAtMs?: number | undefined;
}

export type NewDelivery = Pick<Delivery, 'deliveryId' | 'channelId' | 'channelName' | 'body' | 'idempotencyKey' | 'actor' | 'createdAtMs'> & {
  audit: AuditInput;
};

/** The outcome of one attempt, as the delivery worker records it. */
export interface DeliveryAttempt {
  deliveryId: string;
  atMs: number;
  outcome: 'delivered' | 'retry' | 'dead';
  /** When outcome is `retry`. */
  nextAttemptAtMs?: number | undefined;
  error?: string | undefined;
  httpStatus?: number | undefined;
  /** Appended when the delivery goes to the dead-letter list. */
  deadAudit?: AuditInput | undefined;
}

export type CronSchedule = { kind: 'cron'; expr: string; tz?: string | undefined } | { kind: 'every'; everyMs: number };

/** What a cron run does; every action is a method call made with the internal principal. */
export type CronAction =
  | { kind: 'chat'; sessionKey: string; text: string; spawn?: { label?: string | undefined } | undefined }
  | { kind: 'send'; channel: string; content: string; username?: string | undefined }
  | { kind: 'node'; nodeId: string; command: string; params?: unknown };

export interface CronJob {
  jobId: string;
  name: string;
  schedule: CronSchedule;
  action: CronAction;
  enabled: boolean;
  createdBy: string;
  createdAtMs: number;
  updatedAtMs: number;
  /** Next due time (null when disabled). */
  nextRunAtMs: number | null;
  lastRunAtMs?: number | undefined;
}

export type NewCronJob = Omit<CronJob, 'updatedAtMs' | 'lastRunAtMs'> & { audit: AuditInput };

export type CronJobPatch = Partial<Pick<CronJob, 'name' | 'schedule' | 'action' | 'enabled' | 'nextRunAtMs'>>;

export type CronTrigger = 'schedule' | 'catch-up' | 'manual';

export interface CronRun {
  runId: string;
  jobId: string;
  trigger: CronTrigger;
  /** The time the run was due (schedule/catch-up) or requested (manual). */
  dueAtMs: number;
  startedAtMs: number;
  finishedAtMs: number;
  status: 'ok' | 'error';
  error?: string | undefined;
  /** What the action returned (message id, delivery id, session id …). */
  result?: Record<string, unknown> | undefined;
}

/** Cutoffs of one retention prune: records finished before them go; null keeps that kind. */
export interface RetentionCutoffs {
  /** Deliveries with status `delivered` and `deliveredAtMs` before this (dead letters stay). */
  deliveredBeforeMs: number | null;
  /** Cron runs that finished before this. */
  cronRunsBeforeMs: number | null;
  /** Sign-in links used (or, never used, expired) before this. */
  signInLinksBeforeMs: number | null;
  /** Setup codes whose expiry is before this. */
  setupCodesBeforeMs: number | null;
}

/** How many records one prune deleted, per kind. */
export interface PruneCounts {
  deliveries: number;
  cronRuns: number;
  signInLinks: number;
  setupCodes: number;
  /** Quorum votes and policy facts of requests that are gone (approved, rejected, expired). */
  approvalRecords: number;
}

/** Small key/value settings of the gateway itself (sign-in links, the gateway key id, …). */
export interface MetaStore {
  getMeta(key: string): Promise<string | null>;
  setMeta(key: string, value: string): Promise<void>;
  /**
   * Compare-and-set: write `value` only when the key currently holds `expected` (null: the key
   * is absent). True when written. One statement, so racing writers on any number of instances
   * sharing the store see exactly one of them win (approval quorum votes rely on it).
   */
  setMetaIf(key: string, expected: string | null, value: string): Promise<boolean>;
}

/** Paired devices, their grants and tokens, and pending pairing requests. */
export interface DeviceStore {
  getDevice(deviceId: string): Promise<DeviceRecord | null>;
  /** Every device, oldest first (small stores; large ones page with `listDevicesPage`). */
  listDevices(): Promise<DeviceRecord[]>;
  /**
   * One page of devices in a stable order (creation time, then id), after `cursor`. A device
   * added while a client pages appears on a later page; none already listed is listed again.
   * `search` keeps devices whose id (as typed, or with ASCII letters lowercased), label or
   * presented display name (ASCII letters compared case-insensitively) starts with it.
   * Served by indexes: the cost of a page does not grow with the number of devices.
   */
  listDevicesPage(query: DevicePageQuery): Promise<DevicePageResult>;
  listGrants(deviceId?: string): Promise<GrantRecord[]>;
  getGrant(deviceId: string, role: Role): Promise<GrantRecord | null>;
  /** Every grant of one role, by device id (indexed: the node list reads the node grants only). */
  listGrantsOfRole(role: Role): Promise<GrantRecord[]>;
  /** Every grant with an expiry, soonest first (indexed: the expiry scheduler never reads the permanent grants). */
  listTimeBoundGrants(): Promise<GrantRecord[]>;
  getToken(tokenId: string): Promise<TokenRecord | null>;
  listTokens(deviceId?: string): Promise<TokenRecord[]>;
  /** Create or update the device, set the role's grant (epoch + 1), optionally replace its token. */
  approve(input: ApproveInput): Promise<GrantRecord>;
  /** One pending request per (device, role): create, refresh (same id) or widen it. */
  upsertPairingRequest(input: UpsertRequestInput): Promise<UpsertRequestResult>;
  getPairingRequest(requestId: string): Promise<PairingRequest | null>;
  listPairingRequests(deviceId?: string): Promise<PairingRequest[]>;
  /** Delete a request (reject/expire) with its audit entry; false when it did not exist. */
  deletePairingRequest(requestId: string, audit: AuditInput): Promise<boolean>;
  /**
   * Replace a role's token (and optionally its scopes); epoch + 1. With `token` null the old
   * token is retired and the next connect of the device mints one. Null when the grant is missing.
   */
  rotateToken(deviceId: string, role: Role, token: NewToken | null, scopes: string[] | null, atMs: number, audit: AuditInput): Promise<GrantRecord | null>;
  /**
   * Revoke a role: the token is marked revoked (kept for audit) and the role's grant is
   * dropped, so the device must be approved again for that role. Null when there is no grant.
   */
  revokeToken(deviceId: string, role: Role, atMs: number, audit: AuditInput): Promise<TokenRecord | null>;
  /**
   * End a time-bound grant whose expiry is at or before `atMs`: narrowed to its scopesAfterExpiry
   * (epoch + 1, no expiry), or removed with its token revoked when nothing is kept. Null when the
   * grant is gone, not time-bound or not yet due (another instance got there first).
   */
  expireGrant(deviceId: string, role: Role, atMs: number, audit: AuditInput): Promise<GrantExpiry | null>;
  /** Move a time-bound grant's expiry (epoch unchanged). Null when there is no time-bound grant. */
  extendGrant(deviceId: string, role: Role, expiresAtMs: number, audit: AuditInput): Promise<GrantRecord | null>;
  /** Remove one role from a device (grant, token, requests); the row goes when no role is left. */
  removeRole(deviceId: string, role: Role, audit: AuditInput): Promise<boolean>;
  /** Remove a device with all its grants, tokens and requests. */
  removeDevice(deviceId: string, audit: AuditInput): Promise<boolean>;
  renameDevice(deviceId: string, label: string, audit: AuditInput): Promise<boolean>;
  /** Batched, best-effort access metadata (not on the connect hot path). */
  recordSeen(entries: Array<{ deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>): Promise<void>;
  /**
   * Give a role a token only when it has none live (an operator retired it with rotateToken
   * null): the instance holding the device's sockets mints the replacement it pushes to them.
   * Null, and nothing written, when the grant is gone or a live token already exists.
   */
  issueTokenIfAbsent(deviceId: string, role: Role, token: NewToken, atMs: number, audit: AuditInput): Promise<GrantRecord | null>;
}

/**
 * Bulk loading of paired devices (benchmarks, provisioning): one transaction per batch, one audit
 * entry per batch. Not for the connect path.
 */
export interface DeviceSeedStore {
  /**
   * Insert a batch of 1 to SEED_BATCH_MAX new, already approved devices with their grants and
   * token hashes, in one transaction with the batch's one audit entry, with multi-row statements
   * (src/store/seed-devices.ts). A batch naming a device id already stored, or one id twice, is
   * refused whole (`exists`, every offending id once) and nothing is written; an empty or
   * oversized batch is `bad-batch`. Never merges (that is `importDevices`).
   */
  seedPairedDevices(input: SeedDevicesInput): Promise<SeedDevicesResult>;
}

/** Setup codes: minted, redeemed (enrolling a device in one transaction), failed, revoked. */
export interface SetupCodeStore {
  /** Store a newly minted setup code (with its audit entry). */
  createSetupCode(input: NewSetupCode): Promise<SetupCodeRecord>;
  getSetupCode(setupId: string): Promise<SetupCodeRecord | null>;
  /** Every setup code ever minted, oldest first. */
  listSetupCodes(): Promise<SetupCodeRecord[]>;
  /**
   * Redeem a code in ONE transaction: check it is live (or a repeat by the bound key within the
   * grace window), bind it to the key, approve every role of its profile (`approvedVia`
   * 'bootstrap', scopes widened never narrowed), replace each role's token, resolve the device's
   * pending requests for those roles, mark the code redeemed and append the audit entry. A
   * repeat only replaces the tokens. Of two racing redemptions by different keys exactly one wins.
   */
  redeemSetupCode(input: RedeemSetupInput): Promise<RedeemSetupResult>;
  /**
   * Count a wrong secret for `setupId`. When the count reaches `budget` the code is burned and
   * `burnAudit` appended (`burned` is true only for the call that burned it). Null for an unknown id.
   */
  recordSetupFailure(setupId: string, atMs: number, budget: number, burnAudit: AuditInput): Promise<{ failures: number; burned: boolean } | null>;
  /**
   * Revoke a code (ends its repeat window too). `changed` is false when it was already revoked or
   * burned. Devices it enrolled keep their grants. Null for an unknown id.
   */
  revokeSetupCode(setupId: string, atMs: number, audit: AuditInput): Promise<{ code: SetupCodeRecord; changed: boolean } | null>;
}

/** Node command surfaces and the requests that ask for them. A surface and its request go with
 * the node role: removing the device, removing or revoking its node role drops them (so a
 * re-paired key never inherits an old approval). */
export interface NodeSurfaceStore {
  // A node's surface and surface request go with its node role: removing the device, removing
  // or revoking its node role drops them (so a re-paired key never inherits an old approval).
  getNodeSurface(deviceId: string): Promise<NodeSurfaceRecord | null>;
  listNodeSurfaces(): Promise<NodeSurfaceRecord[]>;
  /** Create, refresh (same surface, same id) or replace (different surface, new id) the device's request. */
  upsertNodeSurfaceRequest(input: UpsertNodeSurfaceInput): Promise<UpsertNodeSurfaceResult>;
  getNodeSurfaceRequest(requestId: string): Promise<NodeSurfaceRequest | null>;
  listNodeSurfaceRequests(): Promise<NodeSurfaceRequest[]>;
  /** Approve a request: its surface becomes the device's approved surface, the request goes. Null when unknown. */
  approveNodeSurface(requestId: string, atMs: number, approvedBy: string, audit: AuditInput): Promise<NodeSurfaceRecord | null>;
  /** Delete a request (reject) with its audit entry; false when it did not exist. */
  deleteNodeSurfaceRequest(requestId: string, audit: AuditInput): Promise<boolean>;
}

/** Automations: chat sessions and messages, webhook channels, the delivery outbox, cron jobs and runs. */
export interface AutomationStore {
  /** Create a session; false when the key is taken. */
  createChatSession(input: NewChatSession): Promise<{ ok: true; session: ChatSession } | { ok: false; reason: 'key-taken' }>;
  getChatSession(idOrKey: string): Promise<ChatSession | null>;
  /** Sessions, newest activity first; `parentId` filters to the children of one session. */
  listChatSessions(opts?: { parentId?: string; limit?: number }): Promise<ChatSession[]>;
  /** Append a message; a repeated idempotency key in the same session returns the first message and appends nothing. */
  appendChatMessage(input: NewChatMessage): Promise<AppendMessageResult>;
  /** Messages of a session in seq order: the newest `limit` (default `CHAT_PAGE_DEFAULT`, 100) before `beforeSeq` (or the first after `afterSeq`). */
  listChatMessages(sessionId: string, opts?: { beforeSeq?: number; afterSeq?: number; limit?: number }): Promise<ChatMessage[]>;
  /** Create a channel, or (source `config`) replace the one of the same name; false when the name is taken by another source. */
  putChannel(input: NewChannel): Promise<{ ok: true; channel: WebhookChannel; created: boolean } | { ok: false; reason: 'name-taken' }>;
  getChannel(idOrName: string): Promise<WebhookChannel | null>;
  listChannels(): Promise<WebhookChannel[]>;
  removeChannel(idOrName: string, audit: AuditInput): Promise<boolean>;
  /**
   * Persist a delivery (status pending, due at creation) before anything is sent. A repeated
   * idempotency key on the same channel returns the first delivery (`duplicate`) and adds nothing.
   */
  enqueueDelivery(input: NewDelivery): Promise<{ delivery: Delivery; duplicate: boolean }>;
  getDelivery(deliveryId: string): Promise<Delivery | null>;
  /** Newest first. */
  listDeliveries(opts?: { status?: DeliveryStatus; channelId?: string; limit?: number }): Promise<Delivery[]>;
  /** Pending deliveries due at or before `nowMs`, oldest due first. */
  dueDeliveries(nowMs: number, limit: number): Promise<Delivery[]>;
  /** The earliest `nextAttemptAtMs` of a pending delivery, or null. */
  nextDeliveryDueAtMs(): Promise<number | null>;
  /** Record an attempt's outcome (attempts + 1); null when the delivery is not pending. */
  recordDeliveryAttempt(attempt: DeliveryAttempt): Promise<Delivery | null>;
  createCronJob(input: NewCronJob): Promise<CronJob>;
  getCronJob(jobId: string): Promise<CronJob | null>;
  listCronJobs(): Promise<CronJob[]>;
  updateCronJob(jobId: string, patch: CronJobPatch, atMs: number, audit: AuditInput): Promise<CronJob | null>;
  removeCronJob(jobId: string, audit: AuditInput): Promise<boolean>;
  /** Record a finished run and move the job's next due time, in one transaction. Null for a removed job. */
  recordCronRun(run: CronRun, nextRunAtMs: number | null): Promise<CronJob | null>;
  /** Runs of a job, newest first. */
  listCronRuns(jobId: string, limit?: number): Promise<CronRun[]>;
  /** Deliveries still waiting to be sent (the webhook queue depth). */
  pendingDeliveryCount(): Promise<number>;
}

/** Importing another gateway's paired devices (clawgate import openclaw). */
export interface DeviceImportStore {
  /**
   * Import paired devices in ONE transaction (all or nothing): new devices with their grants,
   * token hashes and node surfaces; for a device already here (same key) only the roles it does
   * not hold yet. A grant or token clawgate already holds is never replaced, so a repeated import
   * is a no-op and never brings back a token clawgate rotated since. A device id held here by a
   * different key is skipped. Without `merge`, a target holding devices not in `devices` is
   * refused (`not-empty`) and nothing is written; with `dryRun` nothing is written either.
   */
  importDevices(input: ImportDevicesInput): Promise<ImportDevicesResult>;
}

/** The hash-chained audit log (every trust change appends to it in its own transaction). */
export interface AuditStore {
  appendAudit(input: AuditInput): Promise<AuditEntry>;
  listAudit(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEntry[]>;
  /**
   * Call `listener` after every commit that appended to the audit log through this store
   * object (the audit anchor then signs the new head). Optional: a store without it is only
   * anchored on start and stop.
   */
  onAuditAppended?(listener: () => void): void;
}

/** Retention: pruning finished records (never the audit log). */
export interface RetentionStore {
  /** Delete finished records older than the cutoffs (never the audit log); counts per kind. */
  pruneRetained(cutoffs: RetentionCutoffs): Promise<PruneCounts>;
}
/**
 * The whole store: every domain of one database, as one object. Callers that need one domain
 * take that domain's interface; the adapters (src/store/sqlite, src/store/postgres) build the
 * whole from one implementation per domain.
 */
export interface Store
  extends MetaStore,
    DeviceStore,
    DeviceSeedStore,
    SetupCodeStore,
    NodeSurfaceStore,
    AutomationStore,
    DeviceImportStore,
    AuditStore,
    RetentionStore {
  readonly kind: 'sqlite' | 'postgres';
  close(): Promise<void>;
}

// --- importing another gateway's paired devices (clawgate import openclaw) ------------------

/** A token carried over from another gateway: only its hash, under an id derived from it. */
export interface ImportedToken {
  role: Role;
  tokenId: string;
  secretHash: Buffer;
  createdAtMs: number;
  rotatedAtMs?: number | undefined;
  lastUsedAtMs?: number | undefined;
}

export interface ImportedGrant {
  role: Role;
  scopes: string[];
  approvedAtMs: number;
  approvedVia: ApprovedVia;
}

/** One paired device of the source gateway, as the importer read and validated it. */
export interface ImportedDevice {
  deviceId: string;
  publicKey: string;
  meta: DeviceMeta;
  label?: string | undefined;
  createdAtMs: number;
  lastSeenAtMs?: number | undefined;
  grants: ImportedGrant[];
  tokens: ImportedToken[];
  /** The approved node command surface (only with a node grant). */
  surface?: { caps: string[]; commands: string[]; approvedAtMs: number } | undefined;
}

export interface ImportDevicesInput {
  /** Where the devices came from (`openclaw:<dir>`), kept in the audit entries. */
  source: string;
  /**
   * Read once, in batches of IMPORT_BATCH_DEVICES, inside the import's transaction: a source
   * larger than memory streams through (an iterable that throws rolls the import back).
   */
  devices: Iterable<ImportedDevice>;
  /** Allow a target that holds devices of its own (else `not-empty`). */
  merge: boolean;
  /** Compute the same report and write nothing. */
  dryRun: boolean;
  atMs: number;
  /** Actor of the audit entries (`owner` for the CLI). */
  actor: string;
}

/**
 * What happened to one device: `imported` (new here), `merged` (the device existed, some roles,
 * tokens or the surface were added), `unchanged` (everything was here already: a repeated
 * import), `skipped` (nothing written; `reason` says why).
 */
export interface DeviceImportReport {
  deviceId: string;
  outcome: 'imported' | 'merged' | 'unchanged' | 'skipped';
  /** Roles whose grant was added. */
  roles: Role[];
  /** Roles whose token was added. */
  tokens: Role[];
  surface: boolean;
  /** Why the device, or a part of it, was not imported. */
  notes: string[];
}

export type ImportDevicesResult = { ok: true; devices: DeviceImportReport[]; applied: boolean } | { ok: false; reason: 'not-empty'; otherDevices: number };
