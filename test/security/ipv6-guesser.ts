/**
 * A wrong-password guesser for the IPv6 network-namespace test: run inside the namespace with
 * `ip netns exec <ns> node dist/test/security/ipv6-guesser.js '<json>'`, it makes one connect per
 * source address in `from` (each bound with localAddress) and prints the refusal codes as one
 * JSON line.
 */
import { ConnectError, connectGateway } from '../../src/client/connection.js';

interface Args {
  url: string;
  password: string;
  from: string[];
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const outcomes: string[] = [];
for (const localAddress of args.from) {
  try {
    const c = await connectGateway({
      url: args.url,
      identity: null,
      client: { id: 'cli', mode: 'cli' },
      scopes: ['operator.read'],
      auth: { password: args.password },
      localAddress,
      timeoutMs: 10_000,
    });
    await c.close();
    outcomes.push('ADMITTED');
  } catch (err) {
    outcomes.push(err instanceof ConnectError ? (err.detailCode ?? `close ${err.closeCode}`) : `error ${String(err)}`);
  }
}
process.stdout.write(`${JSON.stringify(outcomes)}\n`);
