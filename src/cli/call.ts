/** `clawgate call <method>`: one RPC to the gateway, its result printed as JSON. */
import { printableLines } from '@clawgate/protocol/text';
import { jsonParams, parseGatewayCommand, positiveIntFlag } from './common.js';
import { withGateway } from './gateway-session.js';
import { UsageError } from './usage.js';

export async function call(args: string[]): Promise<number> {
  const { values, positionals } = parseGatewayCommand(args, { params: { type: 'string' }, timeout: { type: 'string' } });
  const method = positionals[0];
  if (!method) throw new UsageError('usage: clawgate call <method> [--params <json>]');
  const params = jsonParams(values.params);
  const timeoutMs = positiveIntFlag(values, 'timeout') ?? 30_000;
  try {
    return await withGateway(values, async (conn) => {
      const result = await conn.request(method, params, timeoutMs);
      // JSON escapes C0 controls but not C1 or bidi characters; the escape keeps it the same JSON.
      process.stdout.write(`${printableLines(JSON.stringify(result, null, values.json ? 0 : 2))}\n`);
      return 0;
    });
  } catch (err) {
    // `call` reports a missing credential as a failure of the call (exit 1), like any other.
    if (!(err instanceof UsageError) || !err.message.startsWith('no credential')) throw err;
    process.stderr.write(`${err.message}\n`);
    return 1;
  }
}
