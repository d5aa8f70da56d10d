/** The events the gateway sends to sessions: who may receive each, and which travel to other instances. */
import { PAIRING, READ } from '@clawgate/protocol/scopes';

/** Send an event to every session entitled to it (and, for cluster events, to the other instances). */
export type Broadcast = (event: string, payload: unknown) => void;

/** Pairing events go only to holders of operator.pairing (admin passes). */
export const EVENT_SCOPES: Record<string, string | null> = {
  tick: null,
  health: null,
  shutdown: null,
  'device.presence': READ,
  'device.pair.requested': PAIRING,
  'device.pair.resolved': PAIRING,
  'device.pair.changed': PAIRING,
  'device.pair.setup.completed': PAIRING,
  'auth.updated': null,
  // nodes
  'node.pair.requested': PAIRING,
  'node.pair.resolved': PAIRING,
  'node.event': READ,
  // token rotation: sent only to the rotated device's own sessions of that role, never broadcast
  'device.token.rotated': null,
  // automations: sent only to subscribers of the session (sessions.subscribe)
  chat: READ,
};

/** Events every instance's operators must see, whichever instance caused them. */
export const CLUSTER_EVENTS: ReadonlySet<string> = new Set([
  'device.pair.requested',
  'device.pair.resolved',
  'device.pair.changed',
  'device.pair.setup.completed',
  'node.pair.requested',
  'node.pair.resolved',
  // presence: each instance announces its own sessions' changes (one event per window, src/core/presence.ts)
  'device.presence',
  'node.event',
]);
