/**
 * Events between gateway instances that share one store. The store holds the truth (grants,
 * tokens, requests); these events only carry the live consequences to the instance that holds
 * the affected sockets: close a revoked device, admit a connect waiting on an approval made
 * elsewhere, relay pairing events to operators connected elsewhere. Delivery is best effort, so
 * every consumer also reconciles from the store (see Gateway.reconcileWaiters).
 */
import type { ErrorShape, Role } from '@clawgate/protocol/frames';
import type { InvokeInput } from './nodes.js';

export type CloseWhy = 'TOKEN_ROTATED' | 'TOKEN_REVOKED' | 'DEVICE_REMOVED' | 'SCOPES_REDUCED' | 'PAIRING_REJECTED' | 'GRANT_EXPIRED';

export type ClusterEvent =
  /** An operator-facing event (pairing requested/resolved/changed, setup completed). */
  | { type: 'broadcast'; event: string; payload: unknown }
  /** A device's authority changed: close its sessions (of one role, or all). */
  | { type: 'close-device'; deviceId: string; role: Role | null; why: CloseWhy; atMs?: number | undefined }
  /**
   * A pairing request was decided: finish connects waiting on it. The receiver does not take
   * `decision` on trust: it reads the outcome from the store (Approvals.settleFromStore).
   */
  | { type: 'resolve-waiters'; requestId: string; decision: 'approved' | 'rejected' }
  /**
   * Sent by the database itself (a trigger, in the deleting transaction) when a pairing request
   * leaves the store: the instance holding connects waiting on it reads the outcome (the grant).
   */
  | { type: 'pairing-request-gone'; requestId: string }
  /** An approval widened a grant: widen live sessions that asked for it. */
  | { type: 'widen-sessions'; deviceId: string; role: Role; scopes: string[]; requestId: string; expiresAtMs?: number | undefined }
  /** A scope upgrade was rejected: tell live sessions that asked for it. */
  | { type: 'upgrade-rejected'; deviceId: string; requestId: string }
  /** An operator approved or rejected a node's surface: live sessions of the node re-read it. */
  | { type: 'node-surface-changed'; deviceId: string; requestId: string; decision: 'approved' | 'rejected'; ts: number }
  /** Run node.invoke on the instance `to`, which holds the node's socket. */
  | { type: 'node-invoke'; to: string; from: string; callId: string; input: InvokeInput }
  /** The outcome of a routed invocation, back to the instance that asked. */
  | { type: 'node-invoke-result'; to: string; callId: string; outcome: { ok: true; value: unknown } | { ok: false; error: ErrorShape } }
  /**
   * Sent by the database itself (a trigger, in the committing transaction) when a grant is
   * deleted or a live token deleted or revoked: re-check that device's live sessions.
   */
  | { type: 'authority-changed'; deviceId: string }
  /** A domain's own event (e.g. `chat` for session subscribers), handled by its registered handler. */
  | { type: 'topic'; topic: string; payload: unknown }
  /** The caller cancelled a routed invocation. */
  | { type: 'node-invoke-cancel'; to: string; callId: string }
  /**
   * An operator retired a device's token for a role: the instance holding that device's sockets
   * of the role mints the successor and pushes it to them (the secret never goes on the bus).
   */
  | { type: 'token-retired'; deviceId: string; role: Role };

/** What a node declared on the socket another instance holds (for node.list there). */
export interface RemoteNodeDetail {
  declared: string[];
  caps: string[];
  version: string;
  address: string;
}

export interface RemoteNode {
  instanceId: string;
  connectedAtMs: number;
  detail: RemoteNodeDetail | null;
}

export interface ClusterBus {
  /** This instance's id; events it published are not delivered back to it. */
  readonly instanceId: string;
  publish(event: ClusterEvent): Promise<void>;
  /** Handlers for events from other instances; `onResync` runs after a lost connection is back. */
  subscribe(handler: (event: ClusterEvent) => void, onResync?: () => void): void;
  /** Record that this instance holds a device's socket (`connId`), until `withdrawSession`. */
  announceSession(connId: string, deviceId: string, role: Role, atMs: number, detail?: RemoteNodeDetail): Promise<void>;
  withdrawSession(connId: string): Promise<void>;
  /** The live instance holding the newest socket of a node, or null when none does. */
  locateNode(deviceId: string): Promise<string | null>;
  /** Whether an instance still beats (its presence has not expired). */
  instanceLive(instanceId: string): Promise<boolean>;
  /** Whether a live instance (other than this one, with `exceptSelf`) holds a socket of this device and role. */
  hasSession(deviceId: string, role: Role, opts?: { exceptSelf?: boolean }): Promise<boolean>;
  /** Devices with a socket on any live instance. */
  connectedDevices(): Promise<Set<string>>;
  /** The newest node socket of each node on any live instance, with what the node declared there. */
  nodePresence(): Promise<Map<string, RemoteNode>>;
  /**
   * Run `gained` on exactly one live instance at a time (per `name`); `lost` runs if this
   * instance's leadership ends while the process lives (its lock connection broke).
   */
  lead(name: string, gained: () => void, lost: () => void): void;
  close(): Promise<void>;
}
