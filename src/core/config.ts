/** Gateway configuration: defaults, and the merge of config file and flags. */

import type { NotifyTarget } from './approval-notify.js';
import type { ApprovalsConfig, TrustedProxyUserConfig } from './approval-policy.js';
import type { NodeLimits } from './nodes.js';
import type { RateLimitPolicy } from './ratelimit.js';
import { DEFAULT_RATE_LIMIT } from './ratelimit.js';

export interface GatewayConfig {
  port: number;
  /** `loopback`, `lan` or a literal address. */
  bind: string;
  stateDir: string;
  /** Shared gateway token (auth.token). */
  token?: string | undefined;
  /** Shared gateway password (auth.password). */
  password?: string | undefined;
  /** Owner credential: full authority, never needs pairing. */
  ownerCredential?: string | undefined;
  autoApproveLocal: boolean;
  /**
   * `gateway.auth.sharedSecretIsAdminOnHost` (off by default): the shared token/password on a
   * direct loopback socket is worth every scope, as in OpenClaw. Off, it is worth at most
   * SHARED_SECRET_SCOPES everywhere (the secret is handed to devices and nodes).
   */
  sharedSecretIsAdminOnHost?: boolean | undefined;
  handshakeTimeoutMs: number;
  tickIntervalMs: number;
  /** Pending pairing requests expire after this long without a retry. */
  pendingTtlMs: number;
  rateLimit: RateLimitPolicy;
  /** How often buffered access metadata (last seen) is flushed to the store. */
  seenFlushMs: number;
  /** Addresses/CIDRs of reverse proxies whose forwarded headers are believed. */
  trustedProxies: string[];
  /** Forwarded headers from an untrusted peer: refuse the upgrade (default) or ignore them. */
  untrustedForwarded: 'refuse' | 'ignore';
  /** Extra browser origins (`scheme://host[:port]`) allowed to open a WebSocket; the gateway's own origin always is. */
  allowedOrigins: string[];
  /**
   * Keep-alive: every socket is pinged this often, and one that answered no ping since the
   * previous one is terminated (default 25 s in the server; tests shorten it).
   */
  pingIntervalMs?: number | undefined;
  /**
   * With several instances: how often each re-checks its connects waiting on approval against
   * the store (default WAITER_RECONCILE_MS, 1 s). A safety net only: the database announces every
   * decided request at its commit.
   */
  waiterReconcileMs?: number | undefined;
  /** Coalescing window of the `device.presence` event (default DEFAULT_PRESENCE_WINDOW_MS, 1 s). */
  presenceWindowMs?: number | undefined;
  /** node.invoke limits; unset fields take DEFAULT_NODE_LIMITS. */
  nodeLimits?: Partial<NodeLimits> | undefined;
  /** Native TLS: PEM material the server listens with (absent: plain ws://, e.g. behind a proxy). */
  tls?: TlsMaterial | undefined;
  /** What setup codes, links and the UI advertise (`ws(s)://host[:port][/path]`); absent: the listening URL. */
  publicUrl?: string | undefined;
  /** Path prefix the gateway answers under (`/clawgate`), for proxies that route by path; '' for none. */
  contextPath: string;
  /** Automations: webhook channels from the config file and the delivery policy. */
  automations?: AutomationsConfig | undefined;
  /** Prometheus `/metrics` (docs/operations.md); off unless `enabled`. */
  metrics?: MetricsConfig | undefined;
  /** `gateway.approvals.quorum`: approvals needed per scope or `node:<command>` (core/approval-quorum.ts). */
  approvalQuorum?: Readonly<Record<string, number>> | undefined;
  /** `gateway.approvals.notify`: webhook channels told of every pairing request and its resolution (core/approval-notify.ts). */
  approvalNotify?: NotifyTarget[] | undefined;
  /** How long finished records are kept before the periodic prune deletes them; unset fields take DEFAULT_RETENTION. */
  retention?: Partial<RetentionPolicy> | undefined;
  /**
   * `gateway.auth.trustedProxyUser`: an identity-aware proxy (one of trustedProxies) names the
   * signed-in user in this header; proxied connections need an allowed user (docs/approvals.md).
   */
  trustedProxyUser?: TrustedProxyUserConfig | undefined;
  /** `gateway.approvals`: ordered policy rules deciding pairing requests (src/core/approval-policy.ts). */
  approvals?: ApprovalsConfig | undefined;
}

export interface MetricsConfig {
  enabled: boolean;
  /**
   * Client addresses/CIDRs allowed to scrape, as the gateway attributes them (behind a trusted
   * proxy: the forwarded client address). Absent: loopback only.
   */
  allowFrom?: string[] | undefined;
}

/** Retention of finished records; 0 keeps that kind forever. The audit log is never pruned. */
export interface RetentionPolicy {
  /** Webhook deliveries that were delivered (dead letters are kept for the operator). */
  deliveredWebhooksMs: number;
  /** Cron run history. */
  cronRunsMs: number;
  /** Control UI sign-in links, counted from their use (or their expiry when never used). */
  signInLinksMs: number;
  /** Setup codes, counted from their expiry. */
  setupCodesMs: number;
  /** How often the prune runs. */
  intervalMs: number;
}

const DAY_MS = 24 * 3600_000;

export const DEFAULT_RETENTION: RetentionPolicy = {
  deliveredWebhooksMs: 30 * DAY_MS,
  cronRunsMs: 30 * DAY_MS,
  signInLinksMs: 30 * DAY_MS,
  setupCodesMs: 30 * DAY_MS,
  intervalMs: 3600_000,
};

export interface AutomationsConfig {
  channels?: Array<{ name: string; url: string; username?: string | undefined }> | undefined;
  webhook?: Partial<{ maxAttempts: number; baseBackoffMs: number; maxBackoffMs: number; timeoutMs: number }> | undefined;
}

export interface TlsMaterial {
  certPem: string;
  keyPem: string;
  /** Where the certificate came from (for messages and `clawgate doctor`). */
  certPath?: string | undefined;
  /** True when clawgate generated it (self-signed, kept in the state dir). */
  selfSigned?: boolean | undefined;
}

export const DEFAULT_PORT = 18789;

export const DEFAULTS: Omit<GatewayConfig, 'stateDir'> = {
  port: DEFAULT_PORT,
  bind: 'loopback',
  autoApproveLocal: true,
  sharedSecretIsAdminOnHost: false,
  handshakeTimeoutMs: 15_000,
  tickIntervalMs: 30_000,
  pendingTtlMs: 7 * 24 * 3600_000,
  rateLimit: DEFAULT_RATE_LIMIT,
  seenFlushMs: 5_000,
  trustedProxies: [],
  untrustedForwarded: 'refuse',
  allowedOrigins: [],
  contextPath: '',
};

/**
 * `/clawgate/`, `clawgate` → `/clawgate`; `/` or '' → ''. Returns null for a path that cannot be
 * one (query, fragment, `..`, characters outside a conservative set).
 */
export function normalizeContextPath(input: string): string | null {
  const trimmed = input.trim().replace(/^\/+|\/+$/g, '');
  if (trimmed === '') return '';
  if (!/^[A-Za-z0-9._~\-/]+$/.test(trimmed) || trimmed.split('/').some((seg) => seg === '' || seg === '.' || seg === '..')) return null;
  return `/${trimmed}`;
}

/** http(s) → ws(s) (a public URL is often written as the https address users know). */
export function toWsUrl(url: string): string {
  return url.trim().replace(/^http(s?):\/\//i, (_m, s: string) => `ws${s}://`);
}

export function resolveBindHost(bind: string): string {
  if (bind === 'loopback') return '127.0.0.1';
  if (bind === 'lan') return '0.0.0.0';
  return bind;
}

export function isLoopbackBind(bind: string): boolean {
  const host = resolveBindHost(bind);
  return host === '127.0.0.1' || host === '::1' || host === 'localhost' || host.startsWith('127.');
}
