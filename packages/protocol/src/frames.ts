/**
 * Wire frames of the OpenClaw Gateway protocol as clawgate speaks it (see PROTOCOL.md).
 * Every object schema is closed: an unknown property makes the frame invalid, exactly as
 * the reference gateway does, so clients learn about typos instead of silently losing a field.
 * This module does no IO; it is shared by the gateway and the client SDK.
 */
import { type Static, Type as T } from '@sinclair/typebox';
import type { GatewayChallengeProof } from './gateway-proof.js';

export const PROTOCOL_VERSION = 4;
export const MIN_CLIENT_PROTOCOL = 4;
/** Nodes and probes get an N-1 window: v4 changed chat deltas, not node frames. */
export const MIN_NODE_PROTOCOL = 3;
export const MIN_PROBE_PROTOCOL = 3;

/** Closed client id enum of the reference protocol; input is lower-cased before matching. */
export const CLIENT_IDS = [
  'webchat-ui',
  'openclaw-control-ui',
  'openclaw-browser-copilot',
  'openclaw-tui',
  'webchat',
  'cli',
  'gateway-client',
  'openclaw-macos',
  'openclaw-linux',
  'openclaw-ios',
  'openclaw-watchos',
  'openclaw-android',
  'node-host',
  'openclaw-worker',
  'test',
  'fingerprint',
  'openclaw-probe',
] as const;
export type ClientId = (typeof CLIENT_IDS)[number];

export const CLIENT_MODES = ['webchat', 'cli', 'ui', 'backend', 'node', 'worker', 'probe', 'test'] as const;
export type ClientMode = (typeof CLIENT_MODES)[number];

export const ROLES = ['operator', 'node'] as const;
export type Role = (typeof ROLES)[number];

const NonEmpty = T.String({ minLength: 1 });
const Literals = <V extends readonly string[]>(values: V) => T.Union(values.map((v) => T.Literal(v)));

export const RequestFrameSchema = T.Object(
  {
    type: T.Literal('req'),
    id: T.String({ minLength: 1, maxLength: 256 }),
    method: T.String({ minLength: 1, maxLength: 256 }),
    params: T.Optional(T.Unknown()),
    traceparent: T.Optional(T.String({ maxLength: 128 })),
  },
  { additionalProperties: false },
);
export type RequestFrame = Static<typeof RequestFrameSchema>;

export const CancelFrameSchema = T.Object({ type: T.Literal('cancel'), id: T.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: false });

export const ClientInfoSchema = T.Object(
  {
    id: Literals(CLIENT_IDS),
    mode: Literals(CLIENT_MODES),
    version: NonEmpty,
    platform: NonEmpty,
    displayName: T.Optional(T.String({ maxLength: 256 })),
    deviceFamily: T.Optional(T.String({ maxLength: 128 })),
    modelIdentifier: T.Optional(T.String({ maxLength: 128 })),
    instanceId: T.Optional(T.String({ maxLength: 256 })),
    buildId: T.Optional(T.String({ maxLength: 256 })),
    timeZone: T.Optional(T.String({ maxLength: 128 })),
  },
  { additionalProperties: false },
);

export const ConnectAuthSchema = T.Object(
  {
    token: T.Optional(T.String({ maxLength: 4096 })),
    bootstrapToken: T.Optional(T.String({ maxLength: 4096 })),
    deviceToken: T.Optional(T.String({ maxLength: 4096 })),
    password: T.Optional(T.String({ maxLength: 4096 })),
    approvalRuntimeToken: T.Optional(T.String({ maxLength: 4096 })),
    agentRuntimeIdentityToken: T.Optional(T.String({ maxLength: 4096 })),
    /** HMAC-SHA256 by the owner credential over ownerProofPayload (PROTOCOL.md §Gateway identity and owner proof); the credential itself is never sent. */
    ownerProof: T.Optional(T.String({ pattern: '^[A-Za-z0-9_-]{43}$' })),
    /** audienceOf() the URL the client dialed; the gateway accepts only its own. */
    ownerAudience: T.Optional(T.String({ minLength: 1, maxLength: 512, pattern: '^wss?://[^\\s/?#]+:[0-9]{1,5}$' })),
  },
  { additionalProperties: false },
);

export const DeviceBlockSchema = T.Object(
  {
    id: T.String({ minLength: 1, maxLength: 128 }),
    publicKey: T.String({ minLength: 1, maxLength: 4096 }),
    signature: T.String({ minLength: 1, maxLength: 1024 }),
    signedAt: T.Integer({ minimum: 0 }),
    nonce: T.String({ maxLength: 256 }),
  },
  { additionalProperties: false },
);
export type DeviceBlock = Static<typeof DeviceBlockSchema>;

export const ConnectParamsSchema = T.Object(
  {
    minProtocol: T.Integer({ minimum: 1 }),
    maxProtocol: T.Integer({ minimum: 1 }),
    client: ClientInfoSchema,
    role: T.Optional(T.String({ maxLength: 64 })),
    scopes: T.Optional(T.Array(T.String({ maxLength: 128 }), { maxItems: 64 })),
    caps: T.Optional(T.Array(T.String({ maxLength: 128 }), { maxItems: 128 })),
    commands: T.Optional(T.Array(T.String({ maxLength: 256 }), { maxItems: 1024 })),
    permissions: T.Optional(T.Record(T.String(), T.Boolean())),
    pathEnv: T.Optional(T.String({ maxLength: 16384 })),
    auth: T.Optional(ConnectAuthSchema),
    device: T.Optional(DeviceBlockSchema),
    locale: T.Optional(T.String({ maxLength: 64 })),
    userAgent: T.Optional(T.String({ maxLength: 1024 })),
  },
  { additionalProperties: false },
);
export type ConnectParams = Static<typeof ConnectParamsSchema>;

/** Error shape of a failed `res` frame. */
export interface ErrorShape {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  retryable?: boolean;
  retryAfterMs?: number;
}

export interface ResponseFrame {
  type: 'res';
  id: string;
  ok: boolean;
  payload?: unknown;
  error?: ErrorShape;
}

export interface EventFrame {
  type: 'event';
  event: string;
  payload?: unknown;
  seq?: number;
  stateVersion?: Record<string, number>;
}

export interface ChallengePayload {
  nonce: string;
  ts: number;
  /** The gateway's signature over this challenge (PROTOCOL.md §Gateway identity); OpenClaw clients ignore it. */
  gateway?: GatewayChallengeProof;
}

export interface HelloAuth {
  method: 'token' | 'password' | 'device-token' | 'bootstrap-token' | 'owner' | 'trusted-proxy';
  role: Role;
  scopes: string[];
  /** The role's grant is time-bound and ends then (absent: until revoked). */
  expiresAtMs?: number;
  deviceToken?: string;
  issuedAtMs?: number;
  deviceTokens?: Array<{ deviceToken: string; role: Role; scopes: string[]; issuedAtMs: number }>;
}

export interface HelloOk {
  type: 'hello-ok';
  protocol: number;
  server: { version: string; connId: string; bootId: string };
  features: { methods: string[]; events: string[]; capabilities: string[]; scopes: string[] };
  snapshot: Record<string, unknown>;
  auth: HelloAuth;
  policy: { maxPayload: number; maxBufferedBytes: number; tickIntervalMs: number };
}

/** Byte limits (see PROTOCOL.md §Limits). */
export const MAX_PREAUTH_PAYLOAD_BYTES = 64 * 1024;
export const MAX_PAYLOAD_BYTES = 25 * 1024 * 1024;
export const MAX_BUFFERED_BYTES = 50 * 1024 * 1024;
/** WebSocket close reasons are limited to 123 bytes; the reference cuts at 120. */
export const MAX_CLOSE_REASON_BYTES = 120;
