/**
 * Events between gateway instances that share one store. The store holds the truth (grants,
 * tokens, requests); these events only carry the live consequences to the instance that holds
 * the affected sockets: close a revoked device, admit a connect waiting on an approval made
 * elsewhere, relay pairing events to operators connected elsewhere. Delivery is best effort, so
 * every consumer also reconciles from the store (see Gateway.reconcileWaiters).
 */
import type { Role } from '../protocol/frames.js';

export type CloseWhy = 'TOKEN_ROTATED' | 'TOKEN_REVOKED' | 'DEVICE_REMOVED' | 'SCOPES_REDUCED' | 'PAIRING_REJECTED';

export type ClusterEvent =
  /** An operator-facing event (pairing requested/resolved/changed, setup completed). */
  | { type: 'broadcast'; event: string; payload: unknown }
  /** A device's authority changed: close its sessions (of one role, or all). */
  | { type: 'close-device'; deviceId: string; role: Role | null; why: CloseWhy }
  /** A pairing request was decided: finish connects waiting on it. */
  | { type: 'resolve-waiters'; requestId: string; decision: 'approved' | 'rejected' }
  /** An approval widened a grant: widen live sessions that asked for it. */
  | { type: 'widen-sessions'; deviceId: string; role: Role; scopes: string[]; requestId: string }
  /** A scope upgrade was rejected: tell live sessions that asked for it. */
  | { type: 'upgrade-rejected'; deviceId: string; requestId: string };

export interface ClusterBus {
  /** This instance's id; events it published are not delivered back to it. */
  readonly instanceId: string;
  publish(event: ClusterEvent): Promise<void>;
  /** Handlers for events from other instances; `onResync` runs after a lost connection is back. */
  subscribe(handler: (event: ClusterEvent) => void, onResync?: () => void): void;
  close(): Promise<void>;
}
