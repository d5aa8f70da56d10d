/**
 * How `gateway run`, `doctor` and `gateway install-service` turn flags, environment and the
 * config file into a gateway configuration. Flags > environment > file > defaults. Reading the
 * TLS files happens here (the CLI is the IO edge); the core only sees PEM text.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { setupUrlProblem } from '@clawgate/protocol/setup-code';
import { ConfigKeyError, checkApprovalsConfig, parseApprovalsConfig, parseTrustedProxyUser } from '../core/approval-policy.js';
import { DEFAULTS, type GatewayConfig, normalizeContextPath, type RetentionPolicy, type TlsMaterial, toWsUrl } from '../core/config.js';
import { proxyEntryProblem } from '../server/proxy.js';
import { ensureSelfSignedCert, readPem } from '../server/tls.js';
import { processSecretIo, readSecret, SECRET_FLAGS } from './secret-input.js';
import { resolveStateDir, type TokenSource } from './state.js';
import { UsageError } from './usage.js';

export interface FileConfig {
  gateway?: {
    port?: number;
    bind?: string;
    auth?: { token?: string; password?: string; sharedSecretIsAdminOnHost?: boolean; trustedProxyUser?: unknown };
    /** Approval policies (docs/approvals.md), checked by src/core/approval-policy.ts. */
    approvals?: unknown;
    autoApproveLocal?: boolean;
    handshakeTimeoutMs?: number;
    tickIntervalMs?: number;
    pendingTtlMs?: number;
    rateLimit?: Partial<GatewayConfig['rateLimit']>;
    trustedProxies?: string[];
    untrustedForwarded?: 'refuse' | 'ignore';
    publicUrl?: string;
    contextPath?: string;
    tls?: { enabled?: boolean; certPath?: string; keyPath?: string };
    /** `sqlite` (default) or `postgres` (several instances on one database, docs/postgres.md). */
    store?: string;
    /** `waiterReconcileMs`: how often an instance re-checks its waiting connects against the store (docs/postgres.md). */
    postgres?: { url?: string; waiterReconcileMs?: number };
    controlUi?: { allowedOrigins?: string[] };
    /** Prometheus `/metrics` (docs/operations.md). */
    metrics?: { enabled?: boolean; allowFrom?: string[] };
    /** How long finished records are kept (docs/operations.md); 0 keeps a kind forever. */
    retention?: {
      deliveredWebhooksDays?: number;
      cronRunsDays?: number;
      signInLinksDays?: number;
      setupCodesDays?: number;
      intervalMinutes?: number;
    };
  };
  /** Automations: `channels.webhooks` and the `webhook` delivery policy (checked by cli/automations.ts). */
  automations?: unknown;
}

/** Flags shared by `gateway run`, `doctor` and `gateway install-service`. */
export const GATEWAY_FLAGS = {
  port: { type: 'string' },
  bind: { type: 'string' },
  'state-dir': { type: 'string' },
  ...SECRET_FLAGS,
  config: { type: 'string' },
  'public-url': { type: 'string' },
  'context-path': { type: 'string' },
  tls: { type: 'boolean' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'trusted-proxy': { type: 'string', multiple: true },
  store: { type: 'string' },
  'postgres-url': { type: 'string' },
  metrics: { type: 'boolean' },
} as const;

export function readConfigFile(path: string): FileConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as FileConfig;
  } catch (err) {
    throw new UsageError(`config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** A day: the re-check is a safety net under the cluster's events, never their replacement. */
const MAX_WAITER_RECONCILE_MS = 86_400_000;

/** The keys this module reads, checked for type so a typo is a usage error and not a crash. */
function fileShapeProblems(g: NonNullable<FileConfig['gateway']>): void {
  const bad = (key: string, want: string) => {
    throw new UsageError(`config file: gateway.${key} must be ${want}`);
  };
  if (g.trustedProxies !== undefined && (!Array.isArray(g.trustedProxies) || g.trustedProxies.some((e) => typeof e !== 'string')))
    bad('trustedProxies', 'an array of addresses or CIDRs (strings)');
  const origins = g.controlUi?.allowedOrigins;
  if (g.controlUi !== undefined && (typeof g.controlUi !== 'object' || g.controlUi === null || Array.isArray(g.controlUi))) bad('controlUi', 'an object');
  if (origins !== undefined && (!Array.isArray(origins) || origins.some((o) => typeof o !== 'string' || !/^https?:\/\/[^/?#]+$/i.test(o))))
    bad('controlUi.allowedOrigins', 'an array of origins like "https://admin.example.com" (scheme and host[:port], no path)');
  if (g.auth !== undefined && (typeof g.auth !== 'object' || g.auth === null || Array.isArray(g.auth))) bad('auth', 'an object');
  if (g.auth?.sharedSecretIsAdminOnHost !== undefined && typeof g.auth.sharedSecretIsAdminOnHost !== 'boolean')
    bad('auth.sharedSecretIsAdminOnHost', 'true or false');
  if (g.publicUrl !== undefined && typeof g.publicUrl !== 'string') bad('publicUrl', 'a string like "wss://gateway.example.com"');
  if (g.contextPath !== undefined && typeof g.contextPath !== 'string') bad('contextPath', 'a string like "/clawgate"');
  if (g.metrics !== undefined) {
    if (typeof g.metrics !== 'object' || g.metrics === null || Array.isArray(g.metrics)) bad('metrics', 'an object');
    if (g.metrics.enabled !== undefined && typeof g.metrics.enabled !== 'boolean') bad('metrics.enabled', 'true or false');
    const from = g.metrics.allowFrom;
    if (from !== undefined && (!Array.isArray(from) || from.some((e) => typeof e !== 'string' || proxyEntryProblem(e) !== null)))
      bad('metrics.allowFrom', 'an array of addresses or CIDRs (strings) like "10.0.0.0/8"');
  }
  if (g.retention !== undefined) {
    if (typeof g.retention !== 'object' || g.retention === null || Array.isArray(g.retention)) bad('retention', 'an object');
    for (const key of RETENTION_DAY_KEYS) {
      const v = g.retention[key];
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > MAX_RETENTION_DAYS))
        bad(`retention.${key}`, `a whole number of days from 0 (keep forever) to ${MAX_RETENTION_DAYS}`);
    }
    const every = g.retention.intervalMinutes;
    if (every !== undefined && (!Number.isInteger(every) || every < 1 || every > 1440))
      bad('retention.intervalMinutes', 'a whole number of minutes from 1 to 1440');
  }
  const recheck = g.postgres?.waiterReconcileMs;
  if (recheck !== undefined && (!Number.isInteger(recheck) || recheck < 100 || recheck > MAX_WAITER_RECONCILE_MS))
    bad('postgres.waiterReconcileMs', `a whole number of milliseconds from 100 to ${MAX_WAITER_RECONCILE_MS}`);
  if (g.tls !== undefined) {
    if (typeof g.tls !== 'object' || g.tls === null || Array.isArray(g.tls)) bad('tls', 'an object');
    if (g.tls.enabled !== undefined && typeof g.tls.enabled !== 'boolean') bad('tls.enabled', 'true or false');
    if (g.tls.certPath !== undefined && typeof g.tls.certPath !== 'string') bad('tls.certPath', 'a file path');
    if (g.tls.keyPath !== undefined && typeof g.tls.keyPath !== 'string') bad('tls.keyPath', 'a file path');
  }
}

const RETENTION_DAY_KEYS = ['deliveredWebhooksDays', 'cronRunsDays', 'signInLinksDays', 'setupCodesDays'] as const;
const MAX_RETENTION_DAYS = 36_500;
const DAY_MS = 24 * 3600_000;

/** The file's retention section in milliseconds (unset keys stay unset: the defaults apply). */
function retentionFromFile(r: NonNullable<NonNullable<FileConfig['gateway']>['retention']> | undefined): Partial<RetentionPolicy> | undefined {
  if (!r) return undefined;
  const out: Partial<RetentionPolicy> = {};
  if (r.deliveredWebhooksDays !== undefined) out.deliveredWebhooksMs = r.deliveredWebhooksDays * DAY_MS;
  if (r.cronRunsDays !== undefined) out.cronRunsMs = r.cronRunsDays * DAY_MS;
  if (r.signInLinksDays !== undefined) out.signInLinksMs = r.signInLinksDays * DAY_MS;
  if (r.setupCodesDays !== undefined) out.setupCodesMs = r.setupCodesDays * DAY_MS;
  if (r.intervalMinutes !== undefined) out.intervalMs = r.intervalMinutes * 60_000;
  return out;
}

/** Where TLS material comes from, before anything is read. */
export type TlsSource = { kind: 'none' } | { kind: 'files'; certPath: string; keyPath: string } | { kind: 'self-signed' };

/** Everything but the secrets and the TLS material, resolved and validated. */
export interface ResolvedGatewaySettings {
  stateDir: string;
  configPath: string | undefined;
  file: FileConfig;
  base: Omit<GatewayConfig, 'token' | 'password' | 'ownerCredential' | 'tls'>;
  chosenToken: string | undefined;
  /** Where `chosenToken` came from (undefined: none chosen, the generated one applies); recorded for `gateway token`. */
  tokenSource: TokenSource | undefined;
  password: string | undefined;
  tls: TlsSource;
}

export function resolveGatewaySettings(values: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): ResolvedGatewaySettings {
  const configPath = values.config as string | undefined;
  const file = configPath ? readConfigFile(configPath) : {};
  const g = file.gateway ?? {};
  fileShapeProblems(g);
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined, env);
  const portText = (values.port as string | undefined) ?? env.CLAWGATE_PORT;
  const port = portText !== undefined ? Number(portText) : (g.port ?? DEFAULTS.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be a whole number from 0 to 65535, got ${portText ?? g.port}`);
  const bind = (values.bind as string | undefined) ?? g.bind ?? DEFAULTS.bind;

  const flagProxies = values['trusted-proxy'] as string[] | undefined;
  const trustedProxies = (flagProxies && flagProxies.length > 0 ? flagProxies.flatMap((s) => s.split(',')) : (g.trustedProxies ?? DEFAULTS.trustedProxies))
    .map((s) => s.trim())
    .filter(Boolean);
  for (const entry of trustedProxies) {
    const problem = proxyEntryProblem(entry);
    if (problem) throw new UsageError(`trustedProxies: ${problem}`);
  }
  const untrustedForwarded = g.untrustedForwarded ?? DEFAULTS.untrustedForwarded;
  if (untrustedForwarded !== 'refuse' && untrustedForwarded !== 'ignore') throw new UsageError('gateway.untrustedForwarded must be "refuse" or "ignore"');

  const ctxText = (values['context-path'] as string | undefined) ?? g.contextPath ?? '';
  const contextPath = normalizeContextPath(ctxText);
  if (contextPath === null) throw new UsageError(`--context-path must be a plain URL path like /clawgate, got ${ctxText}`);

  const publicText = (values['public-url'] as string | undefined) ?? env.CLAWGATE_PUBLIC_URL ?? g.publicUrl;
  let publicUrl: string | undefined;
  if (publicText !== undefined && publicText.trim() !== '') {
    publicUrl = toWsUrl(publicText).replace(/\/+$/, '');
    const problem = setupUrlProblem(publicUrl);
    if (problem) throw new UsageError(`--public-url ${problem}`);
    const u = new URL(publicUrl);
    if (u.search || u.hash) throw new UsageError('--public-url must not carry a query or fragment');
  }

  const certPath = (values['tls-cert'] as string | undefined) ?? g.tls?.certPath;
  const keyPath = (values['tls-key'] as string | undefined) ?? g.tls?.keyPath;
  let tls: TlsSource = { kind: 'none' };
  if (certPath !== undefined || keyPath !== undefined) {
    if (certPath === undefined || keyPath === undefined)
      throw new UsageError('--tls-cert and --tls-key go together: pass both, or --tls for a generated self-signed certificate');
    tls = { kind: 'files', certPath, keyPath };
  } else if (values.tls === true || g.tls?.enabled === true) tls = { kind: 'self-signed' };

  // Not CLAWGATE_TOKEN: that is what client commands send, often the owner credential, which
  // must never become the secret handed to every device.
  const io = { ...processSecretIo, env };
  const tokenRead = readSecret(values, 'token', ['CLAWGATE_GATEWAY_TOKEN'], io);
  const chosenToken = tokenRead?.value ?? g.auth?.token;
  let tokenSource: TokenSource | undefined;
  if (tokenRead?.source === 'file') tokenSource = { kind: 'file', path: resolve(values['token-file'] as string) };
  else if (tokenRead?.source === 'env') tokenSource = { kind: 'env', name: 'CLAWGATE_GATEWAY_TOKEN' };
  else if (tokenRead) tokenSource = { kind: tokenRead.source };
  else if (chosenToken !== undefined && configPath !== undefined) tokenSource = { kind: 'config', path: resolve(configPath) };
  const password = readSecret(values, 'password', ['CLAWGATE_GATEWAY_PASSWORD'], io)?.value ?? g.auth?.password;

  // Approval policies and the identity-aware proxy: refused at startup, naming the bad key.
  let approvals: GatewayConfig['approvals'];
  let trustedProxyUser: GatewayConfig['trustedProxyUser'];
  try {
    approvals = parseApprovalsConfig(g.approvals);
    trustedProxyUser = parseTrustedProxyUser(g.auth?.trustedProxyUser);
    checkApprovalsConfig(trustedProxies, trustedProxyUser, approvals);
  } catch (err) {
    if (err instanceof ConfigKeyError) throw new UsageError(`config file: ${err.key} ${err.want}`);
    throw err;
  }

  return {
    stateDir,
    configPath,
    file,
    chosenToken,
    tokenSource,
    password,
    tls,
    base: {
      ...DEFAULTS,
      port,
      bind,
      stateDir,
      autoApproveLocal: g.autoApproveLocal ?? DEFAULTS.autoApproveLocal,
      sharedSecretIsAdminOnHost: g.auth?.sharedSecretIsAdminOnHost ?? DEFAULTS.sharedSecretIsAdminOnHost,
      handshakeTimeoutMs: g.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
      tickIntervalMs: g.tickIntervalMs ?? DEFAULTS.tickIntervalMs,
      pendingTtlMs: g.pendingTtlMs ?? DEFAULTS.pendingTtlMs,
      ...(g.postgres?.waiterReconcileMs !== undefined ? { waiterReconcileMs: g.postgres.waiterReconcileMs } : {}),
      rateLimit: { ...DEFAULTS.rateLimit, ...g.rateLimit },
      trustedProxies,
      untrustedForwarded,
      publicUrl,
      contextPath,
      allowedOrigins: g.controlUi?.allowedOrigins ?? DEFAULTS.allowedOrigins,
      metrics: {
        enabled: values.metrics === true || g.metrics?.enabled === true,
        ...(g.metrics?.allowFrom ? { allowFrom: g.metrics.allowFrom } : {}),
      },
      retention: retentionFromFile(g.retention),
      ...(approvals.policies.length > 0 || approvals.ssh ? { approvals } : {}),
      ...(trustedProxyUser ? { trustedProxyUser } : {}),
    },
  };
}

/**
 * Read (or, for `self-signed` with `generate`, create) the TLS material. `extraNames` go into a
 * generated certificate's subjectAltName (the bind address, the public URL's host).
 */
export function loadTls(
  source: TlsSource,
  stateDir: string,
  opts: { generate: boolean; extraNames?: string[] },
): { material: TlsMaterial | undefined; created: boolean; keyPath?: string } {
  if (source.kind === 'none') return { material: undefined, created: false };
  if (source.kind === 'files') {
    return {
      material: { certPem: readPem(source.certPath, 'certificate'), keyPem: readPem(source.keyPath, 'key'), certPath: source.certPath },
      created: false,
      keyPath: source.keyPath,
    };
  }
  if (!opts.generate) {
    const certPath = `${stateDir}/tls/cert.pem`;
    const keyPath = `${stateDir}/tls/key.pem`;
    return { material: { certPem: readPem(certPath, 'certificate'), keyPem: readPem(keyPath, 'key'), certPath, selfSigned: true }, created: false, keyPath };
  }
  const made = ensureSelfSignedCert(stateDir, opts.extraNames ?? []);
  return {
    material: { certPem: readPem(made.certPath, 'certificate'), keyPem: readPem(made.keyPath, 'key'), certPath: made.certPath, selfSigned: true },
    created: made.created,
    keyPath: made.keyPath,
  };
}
