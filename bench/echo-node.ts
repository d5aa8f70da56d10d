/**
 * The node.invoke benchmarks' setup: a node in this process that answers its one command,
 * `bench.echo`, with the params it was given, and an operator session holding the owner
 * credential that approved the node's command surface.
 */
import { connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import type { OwnerOptions } from './harness.js';

export interface EchoNode {
  /** The owner's operator session (the one that sends node.invoke). */
  op: GatewayConnection;
  nodeId: string;
  /** How many node.invoke.request events the node has answered. */
  answered(): number;
  close(): Promise<void>;
}

/** Connects the node with the shared token (paired silently over loopback), then approves its surface. */
export async function startEchoNode(url: string, sharedToken: string, owner: OwnerOptions): Promise<EchoNode> {
  const node = await connectGateway({
    url,
    role: 'node',
    identity: generateIdentity(),
    auth: { token: sharedToken },
    client: { id: 'node-host', mode: 'node', displayName: 'bench-node' },
    commands: ['bench.echo'],
  });
  let answered = 0;
  let op: GatewayConnection | null = null;
  try {
    node.onEvent((event, payload) => {
      if (event !== 'node.invoke.request') return;
      const p = payload as { id: string; nodeId: string; paramsJSON?: string };
      answered++;
      node.request('node.invoke.result', { id: p.id, nodeId: p.nodeId, ok: true, payloadJSON: p.paramsJSON ?? 'null' }).catch(() => {});
    });
    op = await connectGateway({ url, ...owner, client: { id: 'cli', mode: 'cli' } });
    const list = await op.request<{ pending: Array<{ requestId: string; nodeId: string }> }>('node.pair.list', {});
    const req = list.pending[0];
    if (!req) throw new Error('the node filed no surface request');
    await op.request('node.pair.approve', { requestId: req.requestId });
    const o = op;
    return {
      op: o,
      nodeId: req.nodeId,
      answered: () => answered,
      close: async () => {
        await o.close();
        await node.close();
      },
    };
  } catch (err) {
    await op?.close();
    await node.close();
    throw err;
  }
}
