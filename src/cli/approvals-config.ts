/**
 * `gateway.approvals.quorum` and `gateway.approvals.notify` from the config file, checked at
 * startup: a bad key is a usage error that names it, never a surprise at the first request.
 * (`gateway.approvals.policies` is read with the approval policies.)
 */
import { parseNotifyTargets } from '../core/approval-notify.js';
import { quorumConfigProblem } from '../core/approval-quorum.js';
import type { AutomationsConfig, GatewayConfig } from '../core/config.js';
import { UsageError } from './usage.js';

export function approvalsQuorumNotifyConfig(
  gateway: unknown,
  automations: AutomationsConfig | undefined,
): Pick<GatewayConfig, 'approvalQuorum' | 'approvalNotify'> {
  const approvals = (gateway as { approvals?: unknown } | undefined)?.approvals;
  if (approvals === undefined) return {};
  if (typeof approvals !== 'object' || approvals === null || Array.isArray(approvals)) throw new UsageError('config file: gateway.approvals must be an object');
  const a = approvals as { quorum?: unknown; notify?: unknown };
  const out: Pick<GatewayConfig, 'approvalQuorum' | 'approvalNotify'> = {};
  if (a.quorum !== undefined) {
    const problem = quorumConfigProblem(a.quorum);
    if (problem) throw new UsageError(`config file: ${problem}`);
    out.approvalQuorum = a.quorum as Record<string, number>;
  }
  if (a.notify !== undefined) {
    const targets = parseNotifyTargets(
      a.notify,
      (automations?.channels ?? []).map((c) => c.name),
    );
    if (typeof targets === 'string') throw new UsageError(`config file: ${targets}`);
    out.approvalNotify = targets;
  }
  return out;
}
