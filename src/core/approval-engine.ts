/**
 * The gateway side of approval policies: gathers the proofs of a connect (the user an
 * identity-aware proxy signed in, the node host answering over SSH), asks `decideApproval`
 * (src/core/approval-policy.ts) and carries the decision out through the gateway's normal
 * approval path, so an automatic approval is resolved, audited and announced like a manual one
 * — with the rule and the proof in its audit entry and `approvedBy: rule:<name>` on the grant.
 */
import type { Role } from '@clawgate/protocol/frames';
import type { PairingRequest, Store } from '../store/types.js';
import {
  type ApprovalDecision,
  type ApprovalProofs,
  type ApprovalRequest,
  type ApprovalsConfig,
  checkApprovalsConfig,
  decideApproval,
  type SshProbeConfig,
  sshRuleFor,
} from './approval-policy.js';
import type { ApprovalOptions, Approvals } from './approvals.js';
import type { GatewayConfig } from './config.js';
import type { TransportFacts } from './connect-outcome.js';
import type { Clock } from './env.js';
import { type GrantExpiryDeps, GrantExpiryScheduler } from './grant-expiry.js';
import type { Logger } from './logger.js';
import type { Principal } from './principal.js';

/** What the node host said over SSH, or why it could not be asked. */
export type SshProbeResult = { ok: true; deviceId: string; publicKey: string } | { ok: false; reason: string };
/** Runs `cfg.command` on `host` over SSH (src/server/ssh-probe.ts); injected so the core runs no process. */
export type SshProbe = (host: string, cfg: SshProbeConfig) => Promise<SshProbeResult>;

export type ProxyUserCheck = { ok: true; user: string } | { ok: false; detail: 'AUTH_PROXY_USER_MISSING' | 'AUTH_PROXY_USER_NOT_ALLOWED' };

/** A request whose SSH proof failed is not probed again for this long (its retries file nothing new). */
export const PROBE_RETRY_MS = 60_000;

/** The approver an automatic decision is attributed to (`rule:<name>`). */
export class RulePrincipal implements Principal {
  readonly kind = 'internal' as const;
  readonly role = 'operator' as const;
  scopes = new Set<string>();
  constructor(readonly rule: string) {}
  get actor(): string {
    return `rule:${this.rule}`;
  }
}

/** What the engine needs of the gateway (it never sees the facade). */
export interface ApprovalEngineDeps extends GrantExpiryDeps {
  config: Pick<GatewayConfig, 'approvals' | 'trustedProxies' | 'trustedProxyUser'>;
  store: GrantExpiryDeps['store'] & Pick<Store, 'getPairingRequest'>;
  clock: Clock;
  log: Logger;
  approveRequest(r: PairingRequest, by: Principal, opts: ApprovalOptions): ReturnType<Approvals['approveRequest']>;
  audit(actor: string, action: string, subject?: string, data?: Record<string, unknown>): Promise<void>;
}

export class ApprovalEngine {
  readonly config: ApprovalsConfig;
  readonly expiry: GrantExpiryScheduler;
  /** SSH probes in flight, by request id (one per request; never blocks a handshake). */
  private readonly probes = new Map<string, Promise<void>>();
  /** When a request's last probe failed: a client retrying its connect must not make the gateway dial out each time. */
  private readonly failedAtMs = new Map<string, number>();

  constructor(
    private readonly gw: ApprovalEngineDeps,
    private readonly sshProbe: SshProbe | null,
  ) {
    this.config = gw.config.approvals ?? { policies: [] };
    checkApprovalsConfig(gw.config.trustedProxies, gw.config.trustedProxyUser, this.config);
    this.expiry = new GrantExpiryScheduler(gw);
  }

  /** Whether any policy rule is configured (without one, nothing here runs on a connect). */
  get active(): boolean {
    return this.config.policies.length > 0;
  }

  /**
   * A proxied connect when an identity-aware proxy is configured: it must carry an allowed user.
   * Null when that does not apply (no such proxy configured, or a direct socket).
   */
  proxyUser(transport: TransportFacts): ProxyUserCheck | null {
    const cfg = this.gw.config.trustedProxyUser;
    if (!cfg || !transport.proxied) return null;
    const user = transport.proxyUser;
    if (user === undefined || user === null || user === '') return { ok: false, detail: 'AUTH_PROXY_USER_MISSING' };
    return cfg.allowUsers.includes(user) ? { ok: true, user } : { ok: false, detail: 'AUTH_PROXY_USER_NOT_ALLOWED' };
  }

  decide(request: ApprovalRequest, proofs: ApprovalProofs): ApprovalDecision {
    return decideApproval(request, this.config.policies, proofs);
  }

  /** The audit fields of an automatic decision: the rule, the proof and what it showed. */
  auditData(d: ApprovalDecision): Record<string, unknown> {
    return { rule: d.rule, proof: d.proof, ...(d.evidence ? { evidence: d.evidence } : {}), ...(d.ttlMs !== null ? { ttlMs: d.ttlMs } : {}) };
  }

  /**
   * After a request was filed and the connect answered (waiting or PAIRING_REQUIRED): when an
   * `ssh` rule would approve it, ask the node host in the background. A match approves the
   * request like an operator would (a waiting connect is admitted live); anything else leaves it
   * pending for a person, with an audit entry saying why the proof failed.
   */
  maybeProbe(request: ApprovalRequest, proofs: ApprovalProofs, filed: PairingRequest): void {
    if (!this.sshProbe || !this.config.ssh) return;
    const would = sshRuleFor(request, this.config.policies, proofs);
    if (would?.action !== 'approve' || this.probes.has(filed.requestId)) return;
    const now = this.gw.clock.now();
    const failed = this.failedAtMs.get(filed.requestId);
    if (failed !== undefined && now - failed < PROBE_RETRY_MS) return;
    for (const [id, at] of this.failedAtMs) if (now - at >= PROBE_RETRY_MS) this.failedAtMs.delete(id);
    const run = this.probe(filed, request, would, this.config.ssh, this.sshProbe)
      .catch((err) => this.gw.log.warn('ssh approval probe failed', { requestId: filed.requestId, err: String(err) }))
      .finally(() => this.probes.delete(filed.requestId));
    this.probes.set(filed.requestId, run);
  }

  /** Wait for the SSH probes in flight (tests, and stop). */
  async settled(): Promise<void> {
    await Promise.all([...this.probes.values()]);
  }

  private async probe(filed: PairingRequest, request: ApprovalRequest, would: ApprovalDecision, cfg: SshProbeConfig, run: SshProbe): Promise<void> {
    const host = request.address;
    const started = this.gw.clock.now();
    const answer = await run(host, cfg);
    const matches = answer.ok && answer.deviceId === filed.deviceId && answer.publicKey === filed.publicKey;
    const evidence = { host, sshUser: cfg.user };
    if (!matches) {
      this.failedAtMs.set(filed.requestId, this.gw.clock.now());
      const reason = answer.ok ? 'the node host answered with another device identity' : answer.reason;
      this.gw.log.info('ssh proof did not hold; the request waits for a person', { requestId: filed.requestId, rule: would.rule, host, reason });
      await this.gw.audit(`rule:${would.rule}`, 'pairing.proof-failed', filed.deviceId, {
        requestId: filed.requestId,
        rule: would.rule,
        proof: 'ssh',
        evidence,
        reason,
        ...(answer.ok ? { answeredDeviceId: answer.deviceId } : {}),
        probeMs: this.gw.clock.now() - started,
      });
      return;
    }
    // The request may have been decided (or widened) while the probe ran: approve only what was proven.
    const current = await this.gw.store.getPairingRequest(filed.requestId);
    if (!current || current.deviceId !== filed.deviceId || current.publicKey !== filed.publicKey || current.scopes.length > 0 || current.role !== 'node')
      return;
    const decision = decideApproval(request, this.config.policies, { ssh: { host, user: cfg.user } });
    if (decision.action !== 'approve' || decision.proof !== 'ssh') return;
    await this.gw.approveRequest(current, new RulePrincipal(decision.rule as string), {
      ttlMs: decision.ttlMs,
      auditExtra: this.auditData({ ...decision, evidence }),
    });
  }
}

/** The policy view of a connect that would file a request. */
export function approvalRequestOf(
  role: Role,
  scopes: readonly string[],
  kind: ApprovalRequest['kind'],
  client: { id: string; mode: string },
  transport: TransportFacts,
): ApprovalRequest {
  return { role, scopes: [...scopes], kind, client, address: transport.address, direct: transport.proxied !== true };
}
