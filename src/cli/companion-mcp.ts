/**
 * `clawgate companion mcp`: an MCP server on stdio (the official TypeScript SDK) for the AI tools
 * on this machine, with the companion's connection controls. Every tool goes through the local
 * control socket (control.ts) — nothing here is reachable through the gateway or the node side.
 * Secrets given to a tool (a setup code, a gateway token) are passed on, never echoed back.
 */

import { printable } from '@clawgate/protocol/text';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { z } from 'zod';
import { COMPANION_VERSION } from '../companion/companion.js';
import { askControl, type ControlRequest } from '../companion/control.js';
import { companionPaths, companionStatus } from './companion.js';
import { parse, UsageError } from './usage.js';

type ToolResult = { content: Array<{ type: 'text'; text: string }>; isError?: boolean };

function text(value: unknown, isError = false): ToolResult {
  return { content: [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value, null, 2) }], ...(isError ? { isError } : {}) };
}

export async function mcpCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { 'state-dir': { type: 'string' } });
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const paths = companionPaths(values['state-dir'] as string | undefined);

  const forward = async (req: ControlRequest): Promise<ToolResult> => {
    const res = (await askControl(paths.dir, req).catch((e: Error) => ({ ok: false, code: 'CONTROL_UNREACHABLE', message: e.message }))) as {
      ok?: boolean;
      message?: string;
      code?: string;
      nextStep?: string;
    } | null;
    if (res === null) return text('The companion is not running. Start it with `clawgate companion run` (or its service).', true);
    if (res.ok) return text(printable(res.message ?? 'done'));
    return text(`${printable(res.message ?? 'failed')}${res.code ? ` [${res.code}]` : ''}${res.nextStep ? `\nnext: ${printable(res.nextStep)}` : ''}`, true);
  };
  const side = z.enum(['operator', 'node']).describe('which side of the companion');

  const server = new McpServer({ name: 'clawgate-companion', version: COMPANION_VERSION });
  server.registerTool(
    'status',
    {
      description:
        'Both sides of the clawgate companion (operator and node): state, scopes, credential in use, pending request id and confirmation code, last error, next step.',
      annotations: { readOnlyHint: true },
    },
    async () => text(await companionStatus(paths)),
  );
  server.registerTool(
    'apply_setup_code',
    {
      description: 'Pair with a setup code or oc-pair:// link (from `clawgate qr` on the gateway host). Stored device tokens and the gateway token are kept.',
      inputSchema: { code: z.string().min(1).max(4096).describe('the setup code or oc-pair:// link') },
    },
    async ({ code }) => forward({ op: 'apply-setup-code', code }),
  );
  server.registerTool(
    'set_shared_token',
    {
      description: 'Use a gateway token. It is tried on an isolated connection first; a refused token changes nothing and device tokens are never removed.',
      inputSchema: { token: z.string().min(1).max(4096).describe('the gateway token') },
    },
    async ({ token }) => forward({ op: 'set-shared-token', token }),
  );
  server.registerTool(
    'reconnect',
    { description: 'Reconnect one side now (also leaves a paused state after the next step was done).', inputSchema: { side } },
    async (a) => forward({ op: 'reconnect', side: a.side }),
  );
  server.registerTool(
    'pause_side',
    { description: 'Disconnect one side and keep it disconnected; the other side is not affected.', inputSchema: { side } },
    async (a) => forward({ op: 'pause', side: a.side }),
  );
  server.registerTool('resume_side', { description: 'Connect a side that was paused again.', inputSchema: { side } }, async (a) =>
    forward({ op: 'resume', side: a.side }),
  );
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
    process.stdin.once('end', () => resolve());
  });
  await server.connect(transport);
  await closed;
  await server.close().catch(() => undefined);
  return 0;
}
