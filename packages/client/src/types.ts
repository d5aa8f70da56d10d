/**
 * The seams of the SDK. The core (GatewayClient, pairing, URL rules) never touches a socket,
 * a key or a disk directly: a platform supplies a transport, a crypto provider and a credential
 * store. `node.ts` wires `ws` + node:crypto + files, `browser.ts` wires WebSocket + WebCrypto +
 * IndexedDB, and tests can wrap either.
 */

export type Role = 'operator' | 'node';
export const ROLES: readonly Role[] = ['operator', 'node'];

/** What a transport reports about one socket. Exactly one `onClose` ends every socket. */
export interface SocketHandlers {
  onOpen(): void;
  onMessage(text: string): void;
  /** The socket is gone; `code` 1006 when it never opened or dropped without a close frame. */
  onClose(code: number, reason: string): void;
  /** Diagnostic only (an `onClose` always follows). */
  onError(message: string): void;
  /** A sign of life that is not a message (a WebSocket ping); transports that cannot see pings never call it. */
  onPing?(): void;
}

export interface SocketLike {
  send(text: string): void;
  close(code?: number, reason?: string): void;
}

export interface TransportOptions {
  /**
   * SHA-256 of the gateway's certificate (64 lower-case hex), from the setup code. A transport
   * that can see the certificate (Node) accepts exactly that certificate, self-signed or not,
   * and fails the socket with close code 1015 and reason `TLS_PIN_MISMATCH: …` otherwise;
   * browsers cannot see it and rely on their own certificate trust instead.
   */
  tlsFingerprint?: string;
}

/**
 * Opens one WebSocket to an already normalised `ws://`/`wss://` URL. A certificate problem is
 * reported as close code 1015 with a reason starting `TLS_` (the client pauses instead of retrying).
 * A transport that can read an HTTP answer to the upgrade reports it as close code 1006 with
 * the reason `HTTP_<status>: <body excerpt>` (see `GatewayClientOptions.upgradeRefusal`).
 */
export type Transport = (url: string, handlers: SocketHandlers, opts?: TransportOptions) => SocketLike;

/** A device key able to sign device proofs. The private half may be non-extractable. */
export interface DeviceKey {
  /** Lower-case hex SHA-256 of the raw 32-byte public key. */
  deviceId: string;
  /** Raw public key, unpadded base64url. */
  publicKey: string;
  /** Ed25519 signature of the UTF-8 payload, unpadded base64url. */
  sign(payload: string): Promise<string>;
}

/**
 * Generates and restores device keys. `stored` is whatever the platform's credential store can
 * keep: a PEM string for the file store, a non-extractable CryptoKey for IndexedDB.
 */
export interface CryptoProvider {
  generate(): Promise<{ key: DeviceKey; stored: unknown }>;
  /** Throws when the stored form is not a usable key; the caller fails closed, never regenerates. */
  restore(stored: unknown): Promise<DeviceKey>;
  /**
   * Does `signature` (unpadded base64url) verify as the Ed25519 signature of the UTF-8 `payload`
   * by the raw public key `publicKey` (unpadded base64url)? False for malformed input, never throws.
   */
  verify(publicKey: string, payload: string, signature: string): Promise<boolean>;
  /** SHA-256 of the raw key bytes behind `publicKey` (unpadded base64url), 64 lowercase hex; null if malformed. */
  keyFingerprint(publicKey: string): Promise<string | null>;
}

export interface RoleToken {
  token: string;
  /** Scopes the gateway reported with this token (the role's live authority at that time). */
  scopes: string[];
  issuedAtMs?: number;
  storedAtMs: number;
}

/** Everything the SDK keeps about one gateway (one record per normalised gateway key). */
export interface GatewayRecord {
  version: 1;
  /** Credential key from `gatewayKey()`: loopback aliases and default ports collapse. */
  key: string;
  /** The URL to connect to (normalised, as last given). */
  url: string;
  deviceId: string;
  /** Platform-specific stored key (see CryptoProvider). */
  identity: unknown;
  /** Shared gateway token (`auth.token`), when the user supplied one. */
  sharedToken?: string;
  /** Pinned certificate fingerprint (64 lower-case hex) from the setup code, for wss:// gateways. */
  tlsFingerprint?: string;
  /**
   * Pinned gateway identity key: SHA-256 of its raw Ed25519 public key (64 lower-case hex), from
   * the setup code or learned at the first connect whose challenge it signed. Every connect
   * checks the challenge signature against it before sending any secret.
   */
  gatewayKey?: string;
  /** Setup-code bootstrap token, kept until every role token it produced is durable. */
  bootstrap?: { token: string; expiresAtMs?: number; setAtMs: number };
  tokens: Partial<Record<Role, RoleToken>>;
  displayName?: string;
  createdAtMs: number;
  lastConnectedAtMs?: number;
}

export interface UpdateOptions {
  /** Names the write for crash-test checkpoints (`before-rename:<label>`). */
  label?: string;
}

/**
 * Durable per-gateway records. `update` runs the mutator on the current record and resolves
 * only once the result is durable (fsync'd / committed); updates of one key are serialised
 * within a process. `load` throws CredentialStoreError when a record exists but cannot be
 * read, so callers fail closed instead of minting a new identity.
 */
export interface CredentialStore {
  load(key: string): Promise<GatewayRecord | null>;
  update(key: string, mutate: (current: GatewayRecord | null) => GatewayRecord | null, opts?: UpdateOptions): Promise<GatewayRecord | null>;
  list(): Promise<GatewayRecord[]>;
}

export interface Platform {
  transport: Transport;
  crypto: CryptoProvider;
  /** `client.platform` sent in connect (kept stable: it is part of the signed metadata). */
  platformName: string;
}

/** Named points in the pairing/hand-off sequence; tests use them to simulate crashes. */
export type Checkpoint = 'setup-saved' | 'hello-received' | 'tokens-stored' | 'bootstrap-cleared' | `before-rename:${string}`;
export type CheckpointHook = (name: Checkpoint) => void | Promise<void>;
