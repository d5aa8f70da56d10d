/**
 * Which scopes approving a node's command surface takes. Shared by the node registry and the
 * approval quorum, which both need it, so neither has to import the other.
 */
import { ADMIN, PAIRING, WRITE } from '@clawgate/protocol/scopes';

/** Commands that act on the node's host: approving a surface with any of them needs operator.admin. */
export const HOST_COMMANDS: ReadonlySet<string> = new Set([
  'system.run',
  'system.run.prepare',
  'system.which',
  'browser.proxy',
  'browser.proxy.upload.v1',
  'fs.listDir',
  'system.execApprovals.get',
  'system.execApprovals.set',
]);

/** Scopes an operator needs to approve a surface with these commands (besides the owner). */
export function requiredApproveScopes(commands: readonly string[]): string[] {
  if (commands.length === 0) return [PAIRING];
  if (commands.some((c) => HOST_COMMANDS.has(c))) return [PAIRING, ADMIN];
  return [PAIRING, WRITE];
}
