/** `clawgate call <method>`: one RPC to the gateway, its result printed as JSON. */
import { printableLines } from '../protocol/text.js';
import { connectExplained, jsonParams, parseGatewayCommand, positiveIntFlag } from './common.js';
import { credentialOptions, resolveTarget } from './target.js';
import { UsageError } from './usage.js';

export async function call(args: string[]): Promise<number> {
  const { values, positionals } = parseGatewayCommand(args, { params: { type: 'string' }, timeout: { type: 'string' } });
  const method = positionals[0];
  if (!method) throw new UsageError('usage: clawgate call <method> [--params <json>]');
  const params = jsonParams(values.params);
  const timeoutMs = positiveIntFlag(values, 'timeout') ?? 30_000;
  const target = resolveTarget(values);
  if (!target.token && !target.password && !target.owner) {
    const { callWithStoredCredentials } = await import('./client.js');
    const viaPairing = await callWithStoredCredentials(values, method, params, timeoutMs);
    if (viaPairing !== null) return viaPairing;
    process.stderr.write(
      'no credential: set CLAWGATE_TOKEN, pass --token-file <path> or --token-stdin, run on the gateway host (owner credential in the state dir), or pair first (clawgate pair --code-file <file>)\n',
    );
    return 1;
  }
  const conn = await connectExplained(values, {
    url: target.url,
    ...credentialOptions(target),
    tlsFingerprint: target.tlsFingerprint,
    scopes: ['operator.admin'],
    client: { id: 'cli', mode: 'cli' },
  });
  try {
    const result = await conn.request(method, params, timeoutMs);
    // JSON escapes C0 controls but not C1 or bidi characters; the escape keeps it the same JSON.
    process.stdout.write(`${printableLines(JSON.stringify(result, null, values.json ? 0 : 2))}\n`);
    return 0;
  } finally {
    await conn.close();
  }
}
