/**
 * Two instances on one PostgreSQL database behind a real nginx configured as docs/postgres.md
 * shows: connections spread over both, a device paired and revoked through the balancer
 * whichever instance each step lands on, and clients attributed to their own address.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type ConnectOptions, connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { PostgresStore } from '../src/store/postgres/store.js';
import { asClusterOwner, CLUSTER_TOKEN, type Instance, removeStateDir, startInstancesAB } from './helpers/instance.js';
import { freePort } from './helpers/net.js';
import { NGINX_BIN } from './helpers/nginx.js';
import { type Nginx, startNginx } from './helpers/nginx-cluster.js';
import { type PgCluster, startPgCluster } from './helpers/pg-cluster.js';
import { missingFile, skipUnlessPresent } from './helpers/strict.js';
import { waitFor } from './helpers/wait.js';

// The same policy as the other nginx tests: a visible skip without nginx, a failure under CLAWGATE_TEST_STRICT.
const noNginx = skipUnlessPresent(missingFile(NGINX_BIN, 'scripts/system-deps.sh'));

let cluster: PgCluster;
let url: string;
let a: Instance;
let b: Instance;
let nginx: Nginx;
const dirs: string[] = [];

before(async () => {
  if (noNginx) return;
  cluster = await startPgCluster();
  url = await cluster.createDatabase();
  // The balancer's address is the instances' public URL, so an owner proof made for it is theirs.
  const port = await freePort();
  [a, b] = await startInstancesAB(url, dirs, { trustedProxies: ['127.0.0.1'], publicUrl: `ws://127.0.0.1:${port}` });
  nginx = await startNginx([a.url, b.url], port);
});

after(async () => {
  await nginx?.stop();
  await Promise.all([a?.stop(), b?.stop()]);
  await cluster?.stop();
  for (const d of dirs) removeStateDir(d);
});

const CLIENT_ADDRESS = '198.51.100.9';

function viaNginx(extra: Partial<ConnectOptions> = {}): Promise<GatewayConnection> {
  return connectGateway({
    url: nginx.url,
    // The owner unless the caller brings its own credential (the owner proof stands alone).
    ...(extra.auth ? {} : asClusterOwner),
    client: { id: 'cli', mode: 'cli' },
    scopes: ['operator.admin'],
    headers: { 'x-forwarded-for': CLIENT_ADDRESS },
    ...extra,
  });
}

describe('two instances behind nginx', { skip: noNginx }, () => {
  test('connections through the balancer reach both instances', async () => {
    const conns = await Promise.all(Array.from({ length: 6 }, () => viaNginx()));
    try {
      const boots = new Set(conns.map((c) => (c.hello.server as { bootId?: string }).bootId));
      assert.equal(boots.size, 2, 'round robin spread the sockets over A and B');
    } finally {
      await Promise.all(conns.map((c) => c.close()));
    }
  });

  test('pair, use and revoke a device through the balancer, attributed to the client address', async () => {
    const identity = generateIdentity();
    const waiting = viaNginx({
      identity,
      auth: { token: CLUSTER_TOKEN },
      client: { id: 'test', mode: 'test' },
      scopes: ['operator.read'],
      caps: ['device-pairing-wait'],
      timeoutMs: 20_000,
    });
    const store = await PostgresStore.open(url, { maxConnections: 1 });
    try {
      const requestId = await waitFor(async () => (await store.listPairingRequests(identity.deviceId))[0]?.requestId, 'the pairing request', {
        timeoutMs: 10_000,
      });
      assert.equal((await store.getPairingRequest(requestId))?.address, CLIENT_ADDRESS, 'the proxy was trusted, the client attributed');
      // Several operators through the balancer: whichever instance they land on, one approves.
      const ops = await Promise.all([viaNginx(), viaNginx()]);
      try {
        await (ops[0] as GatewayConnection).request('device.pair.approve', { requestId });
        const device = await waiting;
        assert.equal(device.hello.type, 'hello-ok');
        const token = device.hello.auth.deviceToken as string;
        // Reconnect with the token through the balancer a few times: every instance honours it.
        const again = await Promise.all(
          Array.from({ length: 4 }, () =>
            viaNginx({ identity, auth: { deviceToken: token }, client: { id: 'test', mode: 'test' }, scopes: ['operator.read'] }),
          ),
        );
        assert.equal(new Set(again.map((c) => (c.hello.server as { bootId?: string }).bootId)).size, 2);
        const closes = [device, ...again].map((c) => c.closed);
        await (ops[1] as GatewayConnection).request('device.token.revoke', { deviceId: identity.deviceId, role: 'operator' });
        const closed = await Promise.all(closes);
        assert.ok(
          closed.every((c) => c.code === 4001),
          `every socket of the device, on both instances, closed 4001: ${JSON.stringify(closed)}`,
        );
      } finally {
        await Promise.all(ops.map((o) => o.close()));
      }
    } finally {
      await store.close();
    }
  });
});
