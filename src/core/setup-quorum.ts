/**
 * Setup codes and quorum. A code approves its profile when it is redeemed, on the word of the
 * one administrator who minted it, so a profile holding a scope under `gateway.approvals.quorum`
 * would go around the quorum. Such a code is refused when minted and, if it was minted before
 * the quorum was configured, when redeemed. The device can pair with a code for the other scopes
 * and ask for the rest, which then collects its approvals like any request.
 */
import { GatewayError } from '@clawgate/protocol/errors';
import { type QuorumConfig, quorumScopes, requiredForScopes } from './approval-quorum.js';

/** The refusal for a setup profile granting `scopes`, or null when no scope of it is under quorum. */
export function setupQuorumRefusal(quorum: QuorumConfig | undefined, scopes: readonly string[]): GatewayError | null {
  const held = quorumScopes(quorum, scopes);
  if (held.length === 0) return null;
  const required = requiredForScopes(quorum, held);
  return new GatewayError('SETUP_PROFILE_UNDER_QUORUM', {
    vars: { scopes: held.join(', '), required: String(required) },
    details: { scopes: held, required },
  });
}
