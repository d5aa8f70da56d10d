/**
 * Who is calling a method. Sockets become `SessionPrincipal`s after `hello-ok`; internal
 * automations (cron, announce, spawn) use an in-process principal that no socket, header or
 * client id can produce. Dispatch only ever sees a Principal.
 */
import { type EventFrame, MAX_PAYLOAD_BYTES, MAX_PREAUTH_PAYLOAD_BYTES, type Role } from '@clawgate/protocol/frames';
import { ADMIN, scopeSatisfied } from '@clawgate/protocol/scopes';

export type PrincipalKind = 'owner' | 'shared' | 'device' | 'internal';

/** The transport side of a session, implemented by the server (core never sees a socket). */
export interface SessionTransport {
  send(text: string): void;
  close(code: number, reason: string): void;
  /** Bytes queued but not yet written to the socket. */
  bufferedBytes(): number;
  /** Set the largest inbound frame the socket accepts (frameCapBytes of its session). */
  setFrameCap?(maxBytes: number): void;
}

export interface Principal {
  readonly kind: PrincipalKind;
  readonly role: Role;
  /** Live scopes, exactly what dispatch enforces. */
  scopes: Set<string>;
  readonly deviceId?: string | undefined;
  /** Attributable name for logs and the audit log. */
  readonly actor: string;
  /** The pending scope-upgrade request of this device, named in MISSING_SCOPE errors. */
  pendingUpgradeRequestId?: string | undefined;
  /**
   * The session proved a credential bound to its device key (its device token or a setup code),
   * rather than a shared secret: such a session speaks only for its own device (the reference's
   * `isDeviceTokenAuth`), so managing another device needs operator.admin.
   */
  readonly deviceBound?: boolean | undefined;
}

export function hasScope(p: Pick<Principal, 'scopes'>, scope: string): boolean {
  return scopeSatisfied(p.scopes, scope);
}

/**
 * Administrator authority: the owner, or a session holding operator.admin. The internal
 * principal is not one: it acts with its fixed grant only, so an automation can never do more
 * than the scopes it was given (whatever method it is steered to call).
 */
export function isAdmin(p: Pick<Principal, 'kind' | 'scopes'>): boolean {
  return p.kind === 'owner' || hasScope(p, ADMIN);
}

/**
 * The largest inbound frame a session may send. Only a session that can call something gets
 * the large cap: a node (its results and events carry payloads), or an operator holding at
 * least one scope. An operator with no scopes can call no method, so it keeps the pre-auth cap
 * and cannot make the gateway parse 25 MiB frames it will refuse anyway.
 */
export function frameCapBytes(p: { role: Role; scopes: ReadonlySet<string> }): number {
  return p.role === 'node' || p.scopes.size > 0 ? MAX_PAYLOAD_BYTES : MAX_PREAUTH_PAYLOAD_BYTES;
}

/**
 * A scope set that cannot change: `add`, `delete` and `clear` throw. Code that changes a
 * session's scopes assigns a new Set (`session.scopes = new Set(...)`), so an immutable one can
 * be shared.
 */
class FrozenScopeSet extends Set<string> {
  override add(_scope: string): this {
    throw new Error('this scope set is shared and immutable: assign a new Set to change scopes');
  }
  override delete(_scope: string): boolean {
    throw new Error('this scope set is shared and immutable: assign a new Set to change scopes');
  }
  override clear(): void {
    throw new Error('this scope set is shared and immutable: assign a new Set to change scopes');
  }
}

/**
 * The scope set of every session admitted without scopes (every node, and operators that asked
 * for none): one shared instance, because an empty Set costs about 150 bytes per idle session.
 */
export const NO_SCOPES: Set<string> = new FrozenScopeSet();

/** `scopes` as a session's live set: the shared NO_SCOPES when empty. */
export function scopeSetOf(scopes: Iterable<string>): Set<string> {
  const set = new Set(scopes);
  return set.size === 0 ? NO_SCOPES : set;
}

export interface ClientDescription {
  id: string;
  mode: string;
  version: string;
  platform: string;
  displayName?: string | undefined;
  deviceFamily?: string | undefined;
  instanceId?: string | undefined;
}

export class SessionPrincipal implements Principal {
  /** Live scopes; replaced, never changed in place (it may be the shared NO_SCOPES). */
  scopes: Set<string>;
  pendingUpgradeRequestId?: string | undefined;
  deviceBound = false;
  /** When the time-bound part of this session's grant ends (null: until revoked), as last told to the device. */
  grantExpiresAtMs: number | null = null;
  /** Grant epoch this session was admitted under (device sessions only). */
  epoch: number;
  private seq = 0;
  readonly connectedAtMs: number;

  constructor(
    readonly connId: string,
    readonly kind: Exclude<PrincipalKind, 'internal'>,
    readonly role: Role,
    scopes: Iterable<string>,
    readonly transport: SessionTransport,
    readonly client: ClientDescription,
    readonly address: string,
    nowMs: number,
    readonly deviceId?: string,
    epoch = 0,
    readonly tokenId?: string,
  ) {
    this.scopes = scopeSetOf(scopes);
    this.epoch = epoch;
    this.connectedAtMs = nowMs;
  }

  get actor(): string {
    if (this.kind === 'device') return `device:${this.deviceId}`;
    return this.kind === 'owner' ? 'owner' : 'shared-token';
  }

  sendEvent(event: string, payload: unknown): void {
    const frame: EventFrame = { type: 'event', event, payload, seq: ++this.seq };
    this.transport.send(JSON.stringify(frame));
  }

  /**
   * The same frame as sendEvent for a payload already serialized: a broadcast serializes its
   * payload once, not once per session (only `seq` differs between sessions).
   */
  sendEventJson(event: string, payloadJson: string): void {
    this.transport.send(`{"type":"event","event":${JSON.stringify(event)},"payload":${payloadJson},"seq":${++this.seq}}`);
  }

  /** Consume a seq for an event dropped for this (slow) session, so the client can see the gap. */
  skipEvent(): void {
    this.seq++;
  }
}

/** The in-process principal of an internal component; constructed only by the automation layer. */
export class InternalPrincipal implements Principal {
  readonly kind = 'internal' as const;
  readonly role = 'operator' as const;
  scopes: Set<string>;
  constructor(
    readonly component: string,
    scopes: Iterable<string>,
  ) {
    this.scopes = new Set(scopes);
  }
  get actor(): string {
    return `internal:${this.component}`;
  }
}
