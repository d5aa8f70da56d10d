/** `clawgate nodes …`: thin wrappers over the node RPCs (PROTOCOL.md §19). */
import type { NodePendingView } from '../core/nodes.js';
import type { NodeView } from '../methods/nodes.js';
import { field, jsonParams, out, parseGatewayCommand } from './common.js';
import type { CliConnection } from './gateway-session.js';
import { withGateway } from './gateway-session.js';
import { ambiguityMessage, resolveRef } from './resolve.js';
import { commandHint } from './target.js';
import { UsageError } from './usage.js';

const OPTIONS = {
  node: { type: 'string' },
  command: { type: 'string' },
  params: { type: 'string' },
  timeout: { type: 'string' },
} as const;

const USAGE =
  'usage: clawgate nodes list | pending | approve <requestId|node> | reject <requestId|node> | describe <node> | rename <node> <name> | remove <node>\n' +
  '       clawgate nodes invoke --node <node> --command <cmd> [--params <json>] [--timeout <ms>]   (all take --json; <node> is an id, a unique id prefix or a name)';

/** A failure the CLI reports as `error: …` with exit 1 (not a usage error). */
class NodeLookupError extends Error {}

/** Find a node by exact id, by name (display name or label, any case), or by a unique id prefix (resolve.ts). */
export function resolveNode(nodes: NodeView[], ref: string): NodeView {
  const r = resolveRef(
    nodes.map((n) => ({ id: n.nodeId, names: [n.displayName, n.label] })),
    ref,
  );
  if (r.kind === 'found') return nodes.find((n) => n.nodeId === r.id) as NodeView;
  if (r.kind === 'ambiguous') throw new NodeLookupError(ambiguityMessage('node', ref, r));
  throw new NodeLookupError(`no node matches ${ref} (clawgate nodes list shows the paired nodes)`);
}

async function lookup(c: CliConnection, ref: string): Promise<NodeView> {
  const { nodes } = await c.request<{ nodes: NodeView[] }>('node.list', {});
  return resolveNode(nodes, ref);
}

/**
 * The surface request to approve or reject: `ref` itself when it is a pending request id, else
 * the pending request of the node `ref` names (id, prefix or name). Anything else is passed on
 * unchanged, so the gateway's UNKNOWN_NODE_REQUEST_ID (with its hints) reaches the user.
 */
async function pendingRequestId(c: CliConnection, ref: string): Promise<string> {
  const { pending: all } = await c.request<{ pending: NodePendingView[] }>('node.pair.list', {});
  // An exact id goes as it is (a device pairing id gets the gateway's pointer to `devices approve`).
  if (all.some((p) => p.requestId === ref)) return ref;
  const pending = all.filter((p) => p.kind !== 'device-pairing');
  const { nodes } = await c.request<{ nodes: NodeView[] }>('node.list', {});
  try {
    const node = resolveNode(nodes, ref);
    const p = pending.find((x) => x.nodeId === node.nodeId);
    if (p) return p.requestId;
  } catch (err) {
    if (!(err instanceof NodeLookupError)) throw err;
  }
  return ref;
}

function describeLine(n: NodeView): string {
  const state = n.connected ? 'connected' : 'offline';
  const pending = n.pendingRequestId ? `  pending ${n.pendingRequestId} (${n.pendingCommands.join(', ') || 'caps only'})` : '';
  const name = n.displayName === null || n.displayName === undefined ? '(no name)' : field(n.displayName);
  return `${n.nodeId}  ${name}  ${field(n.platform)}  ${state}  commands: ${n.commands.map(field).join(', ') || '(none)'}${pending}`;
}

export async function nodesCommand(sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals, print } = parseGatewayCommand(args, OPTIONS);
  try {
    switch (sub) {
      case 'list':
        return await withGateway(values, async (c) => {
          const res = await c.request<{ nodes: NodeView[] }>('node.list', {});
          print(res, () => {
            out(`Nodes (${res.nodes.length})`);
            for (const n of res.nodes) out(`  ${describeLine(n)}`);
          });
          return 0;
        });
      case 'pending':
        return await withGateway(values, async (c) => {
          const res = await c.request<{ pending: NodePendingView[] }>('node.pair.list', {});
          // Node-role device pairing requests are listed too (for the OpenClaw CLI); they are decided with `devices`.
          const surfaces = res.pending.filter((p) => p.kind !== 'device-pairing');
          const devicePairing = res.pending.filter((p) => p.kind === 'device-pairing');
          print({ pending: surfaces, devicePairing }, () => {
            out(`Pending node surfaces (${surfaces.length})`);
            for (const p of devicePairing) {
              out(
                `  ${p.requestId}  ${p.displayName ?? p.nodeId.slice(0, 12)}  device pairing (role node): ${commandHint(values, `devices approve ${p.requestId}`)}`,
              );
            }
            for (const p of surfaces) {
              out(
                `  ${p.requestId}  ${field(p.displayName ?? p.nodeId.slice(0, 12))}  ${field(p.platform)} ${field(p.version)}  from ${p.remoteIp}  ${p.connected ? 'connected' : 'offline'}`,
              );
              out(`    commands: ${p.commands.map(field).join(', ') || '(none)'}`);
              const quorum = p.approvals && p.approvals.required > 1 ? `; approvals ${p.approvals.received}/${p.approvals.required}` : '';
              out(
                `    approving needs: ${p.requiredApproveScopes.join(' + ')}${p.hostCommands.length ? ` (host-level: ${p.hostCommands.join(', ')})` : ''}${quorum}`,
              );
            }
          });
          return 0;
        });
      case 'approve':
      case 'reject': {
        const ref = positionals[0];
        if (!ref) throw new UsageError(`usage: clawgate nodes ${sub} <requestId|node>  (clawgate nodes pending lists them)`);
        return await withGateway(values, async (c) => {
          const id = await pendingRequestId(c, ref);
          const res = await c.request<{
            requestId: string;
            nodeId?: string;
            node?: NodeView;
            approved?: boolean;
            approvals?: { received: number; required: number };
          }>(`node.pair.${sub}`, { requestId: id });
          print(res, () =>
            out(
              res.approved === false && res.approvals
                ? `approval recorded for ${id}: approvals ${res.approvals.received}/${res.approvals.required} (another approver must approve it too)`
                : sub === 'approve'
                  ? `approved ${id}: node ${field(res.node?.displayName ?? res.node?.nodeId)} may now run ${res.node?.commands.join(', ') || '(no commands)'}`
                  : `rejected ${id} (node ${res.nodeId})`,
            ),
          );
          return 0;
        });
      }
      case 'describe': {
        const ref = positionals[0] ?? (values.node as string | undefined);
        if (!ref) throw new UsageError('usage: clawgate nodes describe <node>');
        return await withGateway(values, async (c) => {
          const node = await lookup(c, ref);
          const res = await c.request<NodeView>('node.describe', { nodeId: node.nodeId });
          print(res, () => {
            out(describeLine(res));
            out(`  declared: ${res.declaredCommands?.join(', ') ?? '(offline)'}`);
            out(`  approved: ${res.approvedCommands.join(', ') || '(none)'}`);
            out(`  caps: ${res.caps.join(', ') || '(none)'}  from ${res.remoteIp ?? 'unknown'}`);
          });
          return 0;
        });
      }
      case 'rename': {
        const ref = positionals[0] ?? (values.node as string | undefined);
        const name = positionals[0] && !values.node ? positionals[1] : positionals[0];
        if (!ref || !name) throw new UsageError('usage: clawgate nodes rename <node> <name>');
        return await withGateway(values, async (c) => {
          const node = await lookup(c, ref);
          const res = await c.request('node.rename', { nodeId: node.nodeId, displayName: name });
          print(res, () => out(`renamed ${node.nodeId} to ${name}`));
          return 0;
        });
      }
      case 'remove': {
        const ref = positionals[0] ?? (values.node as string | undefined);
        if (!ref) throw new UsageError('usage: clawgate nodes remove <node>');
        return await withGateway(values, async (c) => {
          const node = await lookup(c, ref);
          const res = await c.request('node.pair.remove', { nodeId: node.nodeId });
          print(res, () => out(`removed node ${node.nodeId}; its node connections were closed`));
          return 0;
        });
      }
      case 'invoke': {
        const ref = (values.node as string | undefined) ?? positionals[0];
        const command = (values.command as string | undefined) ?? positionals[1];
        if (!ref || !command) throw new UsageError('usage: clawgate nodes invoke --node <node> --command <cmd> [--params <json>] [--timeout <ms>]');
        const params = jsonParams(values.params);
        const timeoutMs = values.timeout !== undefined ? Number(values.timeout) : undefined;
        if (timeoutMs !== undefined && (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000)) {
          throw new UsageError(`--timeout must be a whole number of milliseconds from 1 to 600000, got ${values.timeout}`);
        }
        return await withGateway(values, async (c) => {
          const node = await lookup(c, ref);
          // The gateway enforces the invocation timeout; the socket waits a little longer so the
          // gateway's NODE_INVOKE_TIMEOUT (with its details) is what the user sees.
          const res = await c.request<{ payload: unknown }>(
            'node.invoke',
            { nodeId: node.nodeId, command, ...(params !== undefined ? { params } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) },
            (timeoutMs ?? 30_000) + 5_000,
          );
          print(res, () => out(JSON.stringify(res.payload, null, 2)));
          return 0;
        });
      }
      default:
        throw new UsageError(USAGE);
    }
  } catch (err) {
    if (err instanceof NodeLookupError) {
      process.stderr.write(`error: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
