/**
 * A client process for network-namespace tests: run with `ip netns exec <ns> node
 * dist/test/helpers/netns-client.js '<json>'`, it connects to a gateway from the namespace's
 * own address (a real non-loopback peer), optionally with extra headers, and prints the outcome
 * as one JSON line.
 */
import { ConnectError, connectGateway, generateIdentity } from '../../src/client/connection.js';

interface Args {
  url: string;
  token: string;
  headers?: Record<string, string>;
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const identity = generateIdentity();
try {
  const c = await connectGateway({
    url: args.url,
    identity,
    auth: { token: args.token },
    scopes: ['operator.read'],
    client: { id: 'test', mode: 'test', displayName: 'netns client' },
    ...(args.headers ? { headers: args.headers } : {}),
    timeoutMs: 10_000,
  });
  process.stdout.write(`${JSON.stringify({ ok: true, deviceId: identity.deviceId, role: c.hello.auth.role, scopes: c.hello.auth.scopes })}\n`);
  await c.close();
} catch (err) {
  const e = err as ConnectError;
  process.stdout.write(
    `${JSON.stringify({
      ok: false,
      deviceId: identity.deviceId,
      message: e.message,
      detail: err instanceof ConnectError ? (e.detailCode ?? null) : null,
      closeCode: err instanceof ConnectError ? e.closeCode : null,
      details: err instanceof ConnectError ? (e.error?.details ?? null) : null,
    })}\n`,
  );
}
