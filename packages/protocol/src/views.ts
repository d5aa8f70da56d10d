/**
 * The views of gateway data that travel on the wire: what `device.pair.list`, `node.pair.list`,
 * `device.pair.setupStatus`, `device.pair.setup`, `audit.list` and the `device.presence` /
 * `node.pair.requested` events carry. The gateway builds them and every client (the Control UI,
 * the CLI) reads them from here, so a field added on one side is a type error on the other.
 */
import type { Role } from './frames.js';

/** Quorum progress of a request (`required` 1 when no quorum applies: one approval does it). */
export interface ApprovalProgress {
  received: number;
  required: number;
  approvers: string[];
}

/** Why a pairing request was filed. */
export type PairingKind = 'new-device' | 'role-upgrade' | 'scope-upgrade';
/** Where a setup code stands. */
export type SetupStatus = 'active' | 'expired' | 'redeemed' | 'revoked' | 'burned';
/** The roles a setup code grants. */
export type SetupProfileName = 'operator' | 'node' | 'operator+node';

export interface DeviceView {
  deviceId: string;
  publicKey: string;
  displayName: string | null;
  label: string | null;
  platform: string | null;
  deviceFamily: string | null;
  clientId: string | null;
  clientMode: string | null;
  roles: Role[];
  scopes: string[];
  /**
   * `approvedBy` (`owner`, `device:<id>`, `rule:<name>`, `gateway`) and `expiresAtMs` appear once
   * the store records them; a time-bound grant also names what the role keeps after it.
   */
  grants: Array<{
    role: Role;
    scopes: string[];
    approvedAtMs: number;
    approvedVia: string;
    epoch: number;
    approvedBy?: string;
    expiresAtMs?: number | null;
    scopesAfterExpiry?: string[];
  }>;
  tokens: Array<{ role: Role; tokenId: string; createdAtMs: number; rotatedAtMs?: number; revokedAtMs?: number; lastUsedAtMs?: number }>;
  createdAtMs: number;
  lastSeenAtMs: number | null;
  remoteIp: string | null;
  connected: boolean;
  /** Node role only: the approved command surface (the name and shape `openclaw devices list` reads). */
  nodeSurface?: NodeSurfaceView | null;
  /** Node role only: a declared surface waiting for `node.pair.approve`. */
  pendingNodeSurface?: PendingNodeSurfaceView | null;
}

export interface NodeSurfaceView {
  caps: string[];
  commands: string[];
  requestId: string;
  /** The approved record is written at approval, so both times are the approval time. */
  createdAtMs: number;
  approvedAtMs: number;
}

export interface PendingNodeSurfaceView {
  requestId: string;
  /** A different surface always gets a new request id, so the id doubles as the revision. */
  revision: string;
  displayName: string | null;
  platform: string | null;
  caps: string[];
  commands: string[];
  remoteIp: string;
  createdAtMs: number;
  ts: number;
}

export interface PendingView {
  requestId: string;
  deviceId: string;
  publicKey: string;
  displayName: string | null;
  platform: string | null;
  deviceFamily: string | null;
  clientId: string | null;
  clientMode: string | null;
  role: Role;
  roles: Role[];
  scopes: string[];
  /** What approval would add to the current grant. */
  adds: string[];
  approvedScopes: string[] | null;
  kind: PairingKind;
  remoteIp: string;
  silent: false;
  isRepair: boolean;
  createdAtMs: number;
  ts: number;
  widenedAtMs: number | null;
  expiresAtMs: number;
  /** Short code to compare with the one the device shows (derived from the request id and key). */
  confirmationCode: string;
  /** Quorum progress (`required` 1 when no quorum applies); set by device.pair.list. */
  approvals?: ApprovalProgress;
}

export interface NodeView {
  nodeId: string;
  displayName: string | null;
  label: string | null;
  clientId: string | null;
  clientMode: string | null;
  platform: string | null;
  deviceFamily: string | null;
  version: string | null;
  remoteIp: string | null;
  caps: string[];
  /** What node.invoke routes now (connected), or the approved surface (offline). */
  commands: string[];
  declaredCommands: string[] | null;
  approvedCommands: string[];
  /** Declared but not approved (refused until an operator approves `pendingRequestId`). */
  pendingCommands: string[];
  pendingRequestId: string | null;
  /** Which of the declared, approved and pending commands act on the node's host (the Control UI marks them). */
  hostCommands: string[];
  permissions: Record<string, boolean> | null;
  connected: boolean;
  connectedAtMs: number | null;
  inflight: number;
  paired: true;
  approvedAtMs: number | null;
  lastSeenAtMs: number | null;
}

/** What `device.pair.setupStatus` shows of a code: never the secret or its hash. */
export interface SetupView {
  setupId: string;
  status: SetupStatus;
  label: string | null;
  profile: SetupProfileName;
  roles: Role[];
  scopes: string[];
  url: string;
  createdAtMs: number;
  createdBy: string;
  expiresAtMs: number;
  failures: number;
  redeemedAtMs: number | null;
  redeemCount: number;
  deviceId: string | null;
  deviceName: string | null;
  redeemedRole: Role | null;
  revokedAtMs: number | null;
  burnedAtMs: number | null;
}

/** A node's pending command surface as node.pair.list `pending` and `node.pair.requested` carry it. */
export interface NodePendingView {
  /**
   * `surface`: a node's declared commands, approved with node.pair.approve. `device-pairing`: a
   * node-role device pairing request, listed so that a client that looks its id up here (the
   * OpenClaw CLI's `nodes approve`) reaches node.pair.approve, which answers with the device
   * command that approves it.
   */
  kind: 'surface' | 'device-pairing';
  requestId: string;
  nodeId: string;
  clientId: string | null;
  clientMode: string | null;
  displayName: string | null;
  platform: string | null;
  version: string | null;
  deviceFamily: string | null;
  caps: string[];
  commands: string[];
  requiredApproveScopes: string[];
  /** Which of `commands` act on the node's host. */
  hostCommands: string[];
  remoteIp: string;
  silent: boolean;
  connected: boolean;
  createdAtMs: number;
  /** When the node last declared this surface (refreshedAtMs). */
  ts: number;
  /** Quorum progress (`node:<command>` keys); set by node.pair.list and the events. */
  approvals?: ApprovalProgress;
}

export interface PresenceChange {
  connId: string;
  deviceId: string;
  role: Role;
  clientId: string;
  clientMode: string;
  state: 'connected' | 'disconnected';
  atMs: number;
}

export interface PresenceEvent {
  ts: number;
  /** In the order they happened; `deviceConnected` is whether the device still had a session anywhere when the event was sent. */
  changes: Array<PresenceChange & { deviceConnected: boolean }>;
  /** More than PRESENCE_MAX_CHANGES changes happened in the window: `changes` is empty, re-read the lists. */
  truncated: boolean;
  /** Changes that happened in the window (equals `changes.length` unless truncated). */
  count: number;
}

/** What `device.pair.setup` answers: the code to hand over once (it is never shown again) and how it was built. */
export interface SetupMintView {
  joinUrl?: string;
  setupId: string;
  setupCode: string;
  link: string;
  expiresAtMs: number;
  gatewayUrl: string;
  gatewayUrls?: string[];
  tlsFingerprint?: string;
  gatewayKey?: string;
  urlSource: 'request.publicUrl' | 'gateway.publicUrl' | 'gateway.url';
  auth: 'token' | 'password' | 'none';
  access: SetupProfileName;
  profile: SetupProfileName;
  roles: Role[];
  scopes: string[];
  label: string | null;
}

/** One `audit.list` entry: an append-only, hash-chained record of who changed what. */
export interface AuditEntryView {
  seq: number;
  atMs: number;
  /** Who did it: `owner`, `device:<id>`, `shared-token`, `internal:<component>`, `gateway`. */
  actor: string;
  action: string;
  subject?: string | undefined;
  data?: Record<string, unknown> | undefined;
  prevHash: string;
  hash: string;
}
