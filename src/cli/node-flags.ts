/**
 * The node side's command flags, shared by `node run` and `companion run` so both refuse the same
 * bad values the same way.
 */
import { SUPPORTED_COMMANDS } from '../node-host/commands.js';
import { EXEC_POLICIES, type ExecPolicyMode } from '../node-host/exec-policy.js';
import { UsageError } from './usage.js';

/** `--exec-policy` and `--commands`, checked; `who` names the program in the refusal. */
export function nodeCommandFlags(values: Record<string, unknown>, who: string): { execPolicy: ExecPolicyMode; commands: string[] } {
  const execPolicy = ((values['exec-policy'] as string | undefined) ?? 'allowlist') as ExecPolicyMode;
  if (!EXEC_POLICIES.includes(execPolicy)) throw new UsageError(`--exec-policy must be one of ${EXEC_POLICIES.join(', ')}, got ${execPolicy}`);
  const commands = ((values.commands as string | undefined) ?? SUPPORTED_COMMANDS.join(','))
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
  const unknown = commands.filter((c) => !(SUPPORTED_COMMANDS as readonly string[]).includes(c));
  if (unknown.length > 0) throw new UsageError(`--commands: ${who} implements ${SUPPORTED_COMMANDS.join(', ')}; not ${unknown.join(', ')}`);
  return { execPolicy, commands };
}
