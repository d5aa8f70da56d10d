/** `clawgate explain <deviceId|name|requestId> [--method <m>] [--params <json>] [--json]`: the `device.explain` method, printed. */
import type { Explanation } from '../core/explain.js';
import { field, jsonParams, out, parseGatewayCommand } from './common.js';
import { withGateway } from './gateway-session.js';
import { UsageError } from './usage.js';

const USAGE = 'usage: clawgate explain <deviceId|name|requestId> [--method <method>] [--params <json>] [--json]';
const iso = (ms: number | null) => (ms === null ? 'never' : new Date(ms).toISOString());

export function printExplanation(e: Explanation): void {
  out(`${e.deviceId}  ${field(e.name ?? '(no name)')}${e.platform ? `  ${field(e.platform)}` : ''}  ${e.connected ? 'connected' : 'not connected'}`);
  if (e.roles.length === 0) out('  holds no role');
  for (const r of e.roles) {
    // "owner by owner" says nothing twice: the approver is named when it adds something (a device, a rule).
    const by = r.approvedBy && r.approvedBy !== r.approvedVia ? ` by ${field(r.approvedBy)}` : '';
    out(
      `  role ${r.role}: ${r.scopes.join(', ') || '(no scopes)'}; since ${iso(r.sinceMs)} (${r.approvedVia}${by}); ` +
        `${r.expiresAtMs === null ? 'no expiry' : `expires ${iso(r.expiresAtMs)}`}`,
    );
  }
  if (e.nodeSurface) out(`  node commands: ${e.nodeSurface.commands.map(field).join(', ') || '(none)'} (approved by ${field(e.nodeSurface.approvedBy)})`);
  for (const p of e.pending) {
    const quorum = p.approvals.required > 1 ? `  approvals ${p.approvals.received}/${p.approvals.required}` : '';
    out(`  pending ${p.requestId} (${p.type}, role ${p.role}) adds ${p.adds.map(field).join(', ') || '(nothing)'}${quorum}`);
    out(`    needs ${field(p.needs)}; run: ${p.command}`);
    if (p.decision) out(`    policies: ${field(p.decision.text)}`);
  }
  const c = e.call;
  if (c) {
    if (c.allowed) out(`  ${field(c.method)}: allowed (role ${c.role}${c.requiredScopes.length ? `, needs ${c.requiredScopes.join(', ')}` : ''})`);
    else {
      out(`  ${field(c.method)}: refused with ${c.code}; missing ${field(c.missing ?? '')}`);
      out(c.fix ? `    fix: ${c.fix}` : '    fix: the device must connect in that role first (it files a request to approve)');
    }
  }
}

export async function explainCommand(args: string[]): Promise<number> {
  const { values, positionals, print } = parseGatewayCommand(args, { method: { type: 'string' }, params: { type: 'string' } });
  const target = positionals[0];
  if (!target || positionals.length > 1) throw new UsageError(USAGE);
  const params = jsonParams(values.params);
  if (params !== undefined && values.method === undefined) throw new UsageError('--params goes with --method');
  return withGateway(values, async (c) => {
    const e = await c.request<Explanation>('device.explain', {
      target,
      ...(values.method !== undefined ? { method: values.method } : {}),
      ...(params !== undefined ? { params } : {}),
    });
    print(e, () => printExplanation(e));
    // A refused call is the answer, not a failure of the command: scripts read `call.allowed`.
    return 0;
  });
}
