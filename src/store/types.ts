/**
 * The store interface, named by domain actions. Every adapter (memory, SQLite, later
 * PostgreSQL) passes the same contract suite (test/store-contract.ts). Every method that
 * changes trust takes the audit record it must append, so the change and its audit entry
 * commit together or not at all.
 */
import type { Role } from '../protocol/frames.js';

export type ApprovedVia = 'silent' | 'manual' | 'owner' | 'bootstrap';

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
}

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
  /** A new token for the role, or null to keep the current one (it stays valid). */
  token: NewToken | null;
  atMs: number;
  /** Pending request this approval resolves (deleted in the same transaction). */
  requestId?: string | undefined;
  audit: AuditInput;
}

export interface UpsertRequestInput {
  requestId: string;
  deviceId: string;
  publicKey: string;
  role: Role;
  scopes: string[];
  kind: PairingKind;
  meta: DeviceMeta;
  address: string;
  isRepair: boolean;
  atMs: number;
  audit: AuditInput;
}

export interface UpsertRequestResult {
  request: PairingRequest;
  created: boolean;
  widened: boolean;
}

export interface Store {
  readonly kind: 'memory' | 'sqlite' | 'postgres';
  close(): Promise<void>;

  getMeta(key: string): Promise<string | null>;
  setMeta(key: string, value: string): Promise<void>;

  getDevice(deviceId: string): Promise<DeviceRecord | null>;
  listDevices(): Promise<DeviceRecord[]>;
  listGrants(deviceId?: string): Promise<GrantRecord[]>;
  getGrant(deviceId: string, role: Role): Promise<GrantRecord | null>;
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
  /** Remove one role from a device (grant, token, requests); the row goes when no role is left. */
  removeRole(deviceId: string, role: Role, audit: AuditInput): Promise<boolean>;
  /** Remove a device with all its grants, tokens and requests. */
  removeDevice(deviceId: string, audit: AuditInput): Promise<boolean>;
  renameDevice(deviceId: string, label: string, audit: AuditInput): Promise<boolean>;

  /** Batched, best-effort access metadata (not on the connect hot path). */
  recordSeen(entries: Array<{ deviceId: string; atMs: number; address: string; tokenId?: string | undefined }>): Promise<void>;

  appendAudit(input: AuditInput): Promise<AuditEntry>;
  listAudit(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEntry[]>;
}
