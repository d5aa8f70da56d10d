/**
 * Approval policies and time-bound grants over real sockets: the identity-aware proxy user
 * (allowed, unknown, missing, from an untrusted peer), `deny` rules, configs refused at startup
 * (naming the key), `devices approve --ttl` withdrawing scopes live, `devices extend`, and an
 * expiry that survives a restart.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConnectError, connectGateway, type GatewayConnection, generateIdentity } from '../src/client/connection.js';
import { parseApprovalsConfig } from '../src/core/approval-policy.js';
import { ManualClock } from '../src/core/env.js';
import { ownerCall, tempDir } from './helpers/client.js';
import { cli, cliJson, expectRefused, removeDir, runClawgate, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { waitFor } from './helpers/wait.js';

const PROXY_USER = {
  trustedProxies: ['127.0.0.1'],
  trustedProxyUser: { header: 'x-forwarded-user', allowUsers: ['ana@example.com', 'bo@example.com'] },
  approvals: parseApprovalsConfig({
    policies: [
      { name: 'no-webchat', match: { role: 'operator', client: 'webchat' }, action: 'deny' },
      { name: 'team', match: { proof: 'proxy-user', role: 'operator' }, action: 'approve', scopes: ['operator.read', 'operator.write'], ttl: '8h' },
    ],
  }),
};

interface Audit {
  actor: string;
  action: string;
  subject?: string;
  data?: Record<string, unknown>;
}
async function auditOf(tg: TestGateway, action: string): Promise<Audit[]> {
  const r = await ownerCall<{ entries: Audit[] }>(tg, 'audit.list', { limit: 10_000 });
  return r.entries.filter((e) => e.action === action);
}

interface Grant {
  role: string;
  scopes: string[];
  approvedBy: string | null;
  approvedVia: string;
  expiresAtMs: number | null;
  scopesAfterExpiry?: string[];
}
async function grantsOf(tg: TestGateway, deviceId: string): Promise<Grant[]> {
  const list = await ownerCall<{ paired: Array<{ deviceId: string; grants: Grant[] }> }>(tg, 'device.pair.list');
  return list.paired.find((d) => d.deviceId === deviceId)?.grants ?? [];
}

describe('identity-aware proxy user (gateway.auth.trustedProxyUser) and proxy-user rules', () => {
  let tg: TestGateway;
  after(async () => {
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
  });

  test('an allowed user through a trusted proxy is admitted without a shared token and auto-approved with the rule scopes and ttl', async () => {
    tg = await startTestGateway({ config: { ...PROXY_USER, autoApproveLocal: false } });
    const identity = generateIdentity();
    const headers = { 'X-Forwarded-For': '203.0.113.5', 'X-Forwarded-User': 'ana@example.com' };
    const c = await connectGateway({
      url: tg.url,
      identity,
      scopes: ['operator.read', 'operator.write'],
      client: { id: 'test', mode: 'test' },
      headers,
    });
    try {
      assert.equal(c.hello.auth.method, 'trusted-proxy');
      assert.deepEqual(c.hello.auth.scopes, ['operator.read', 'operator.write']);
      const expiresAtMs = (c.hello.auth as { expiresAtMs?: number }).expiresAtMs;
      assert.ok(typeof expiresAtMs === 'number' && expiresAtMs > Date.now() + 7 * 3600_000, `hello-ok names the expiry: ${expiresAtMs}`);
      const grants = await grantsOf(tg, identity.deviceId);
      assert.equal(grants[0]?.approvedBy, 'rule:team');
      assert.equal(grants[0]?.approvedVia, 'policy');
      const approved = (await auditOf(tg, 'pairing.approved')).find((e) => e.subject === identity.deviceId);
      assert.equal(approved?.actor, 'rule:team');
      assert.equal(approved?.data?.rule, 'team');
      assert.equal(approved?.data?.proof, 'proxy-user');
      assert.deepEqual(approved?.data?.evidence, { user: 'ana@example.com' });
    } finally {
      await c.close();
    }
  });

  test('asking for more than the rule grants: the rule part is approved, the rest waits for a person', async () => {
    const identity = generateIdentity();
    const c = await connectGateway({
      url: tg.url,
      identity,
      scopes: ['operator.read', 'operator.pairing'],
      client: { id: 'test', mode: 'test' },
      headers: { 'X-Forwarded-For': '203.0.113.6', 'X-Forwarded-User': 'bo@example.com' },
    });
    try {
      assert.deepEqual(c.hello.auth.scopes, ['operator.read']);
      const pending = await ownerCall<{ pending: Array<{ deviceId: string; adds: string[]; kind: string }> }>(tg, 'device.pair.list');
      const mine = pending.pending.find((p) => p.deviceId === identity.deviceId);
      assert.equal(mine?.kind, 'scope-upgrade');
      assert.deepEqual(mine?.adds, ['operator.pairing']);
    } finally {
      await c.close();
    }
  });

  test('a user not in allowUsers is refused (AUTH_PROXY_USER_NOT_ALLOWED), and no device is paired', async () => {
    const identity = generateIdentity();
    const err = await expectRefused(
      connectGateway({
        url: tg.url,
        identity,
        scopes: ['operator.read'],
        client: { id: 'test', mode: 'test' },
        headers: { 'X-Forwarded-For': '203.0.113.7', 'X-Forwarded-User': 'mallory@example.com' },
      }),
      'AUTH_PROXY_USER_NOT_ALLOWED',
    );
    assert.equal(err.closeCode, 1008);
    assert.deepEqual(await grantsOf(tg, identity.deviceId), []);
  });

  test('a proxied connect without the user header is refused even with the gateway token (AUTH_PROXY_USER_MISSING)', async () => {
    await expectRefused(
      connectGateway({
        url: tg.url,
        identity: generateIdentity(),
        auth: { token: TEST_TOKEN },
        scopes: ['operator.read'],
        client: { id: 'test', mode: 'test' },
        headers: { 'X-Forwarded-For': '203.0.113.8' },
      }),
      'AUTH_PROXY_USER_MISSING',
    );
  });

  test('a deny rule (by client kind) refuses the request before any approve rule (PAIRING_DENIED_BY_POLICY), audited with the rule', async () => {
    const identity = generateIdentity();
    const err = await expectRefused(
      connectGateway({
        url: tg.url,
        identity,
        scopes: ['operator.read'],
        client: { id: 'webchat-ui', mode: 'webchat' },
        headers: { 'X-Forwarded-For': '203.0.113.9', 'X-Forwarded-User': 'ana@example.com' },
      }),
      'PAIRING_DENIED_BY_POLICY',
    );
    assert.equal((err.error?.details as { rule?: string } | undefined)?.rule, 'no-webchat');
    const denied = (await auditOf(tg, 'pairing.denied')).find((e) => e.subject === identity.deviceId);
    assert.equal(denied?.actor, 'rule:no-webchat');
    const pending = await ownerCall<{ pending: Array<{ deviceId: string }> }>(tg, 'device.pair.list');
    assert.equal(
      pending.pending.some((p) => p.deviceId === identity.deviceId),
      false,
      'no request was filed',
    );
  });
});

describe('a policy never goes around a quorum', () => {
  test('a proxy-user rule that may grant operator.admin leaves it pending when admin needs two approvers', async () => {
    const tg = await startTestGateway({
      config: {
        ...PROXY_USER,
        autoApproveLocal: false,
        approvalQuorum: { 'operator.admin': 2 },
        approvals: parseApprovalsConfig({
          policies: [{ name: 'admins', match: { proof: 'proxy-user', role: 'operator' }, action: 'approve' }],
        }),
      },
    });
    try {
      const identity = generateIdentity();
      const c = await connectGateway({
        url: tg.url,
        identity,
        scopes: ['operator.admin'],
        client: { id: 'test', mode: 'test' },
        headers: { 'X-Forwarded-For': '203.0.113.10', 'X-Forwarded-User': 'ana@example.com' },
      });
      try {
        assert.deepEqual(c.hello.auth.scopes, ['operator.read', 'operator.write'], 'the rule granted what needs no quorum');
        const list = await ownerCall<{ pending: Array<{ deviceId: string; adds: string[] }> }>(tg, 'device.pair.list');
        assert.deepEqual(list.pending.find((p) => p.deviceId === identity.deviceId)?.adds, ['operator.admin']);
        assert.equal((await grantsOf(tg, identity.deviceId))[0]?.approvedBy, 'rule:admins');
      } finally {
        await c.close();
      }
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('the proxy user header from a peer that is not a trusted proxy', () => {
  test('is refused at the upgrade (HTTP 403 proxy_attribution_required), as forwarded headers are', async () => {
    const tg = await startTestGateway({
      config: { trustedProxies: ['127.0.0.2'], trustedProxyUser: PROXY_USER.trustedProxyUser, approvals: PROXY_USER.approvals },
    });
    try {
      // Only the user header, no X-Forwarded-*: it is proxy evidence by itself.
      const err = await connectGateway({
        url: tg.url,
        identity: generateIdentity(),
        scopes: ['operator.read'],
        client: { id: 'test', mode: 'test' },
        headers: { 'X-Forwarded-User': 'ana@example.com' },
      }).then(
        () => assert.fail('expected a refusal'),
        (e: unknown) => e as ConnectError,
      );
      assert.ok(err instanceof ConnectError);
      assert.match(err.message, /HTTP 403/);
      assert.match(err.message, /proxy_attribution_required/);
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});

describe('approval config refused at startup, naming the key', () => {
  const dir = tempDir('clawgate-approvals-config-');
  after(() => removeDir(dir));
  async function startWith(gateway: Record<string, unknown>): Promise<{ code: number; stderr: string }> {
    const path = join(dir, `config-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(path, JSON.stringify({ gateway }));
    return runClawgate(['gateway', 'run', '--port', '0', '--state-dir', join(dir, 'state'), '--config', path]);
  }

  test('a CIDR (address) rule for operator scopes', async () => {
    const r = await startWith({
      approvals: { policies: [{ name: 'lan', match: { proof: 'address', cidrs: ['192.168.1.0/24'], role: 'operator' }, action: 'approve' }] },
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /gateway\.approvals\.policies\[0\]\.match\.role must be "node" with "proof": "address"/);
  });

  test('an address rule granting scopes, a bad CIDR, an approve without proof, an unknown key, a bad ttl', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ name: 'n', match: { proof: 'address', cidrs: ['10.0.0.0/8'], role: 'node' }, action: 'approve', scopes: ['operator.read'] }, /policies\[0\]\.scopes/],
      [{ name: 'n', match: { proof: 'address', cidrs: ['10.0.0.0/33'], role: 'node' }, action: 'approve' }, /policies\[0\]\.match\.cidrs/],
      [{ name: 'n', match: { role: 'operator' }, action: 'approve' }, /policies\[0\]\.match\.proof is required/],
      [{ name: 'n', match: { role: 'operator', prof: 'ssh' }, action: 'deny' }, /policies\[0\]\.match\.prof is not a match key/],
      [{ name: 'n', match: { proof: 'proxy-user' }, action: 'approve', ttl: 'soon' }, /policies\[0\]\.ttl must be a duration/],
    ];
    const typo = await startWith({ approvals: { polices: [] } });
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /gateway\.approvals\.polices is not an approvals key/);
    for (const [rule, want] of cases) {
      const r = await startWith({
        trustedProxies: ['127.0.0.1'],
        auth: { trustedProxyUser: { header: 'X-User', allowUsers: ['a'] } },
        approvals: { policies: [rule] },
      });
      assert.equal(r.code, 2, `${JSON.stringify(rule)}: ${r.stderr}`);
      assert.match(r.stderr, want);
    }
  });

  test('clawgate doctor lists the rules and fails an SSH proof whose known_hosts file is missing', async () => {
    const path = join(dir, 'doctor-config.json');
    const known = join(dir, 'no-such-known-hosts');
    writeFileSync(
      path,
      JSON.stringify({
        gateway: {
          approvals: {
            policies: [{ name: 'homelab-nodes', match: { proof: 'ssh', role: 'node' }, action: 'approve', ttl: '30d' }],
            ssh: { user: 'probe', knownHostsFile: known },
          },
        },
      }),
    );
    const r = await runClawgate(['doctor', '--state-dir', join(dir, 'doctor-state'), '--config', path, '--json']);
    const checks = (JSON.parse(r.stdout) as { checks: Array<{ name: string; status: string; message: string }> }).checks;
    const rules = checks.find((c) => c.name === 'approvals');
    assert.equal(rules?.status, 'ok');
    assert.match(rules?.message ?? '', /homelab-nodes \(approve by ssh for 30d\)/);
    const ssh = checks.find((c) => c.name === 'approvals-ssh');
    assert.equal(ssh?.status, 'fail');
    assert.ok(ssh?.message.includes(known));
  });

  test('a proxy-user rule without gateway.auth.trustedProxyUser, and trustedProxyUser without trustedProxies', async () => {
    let r = await startWith({ approvals: { policies: [{ name: 't', match: { proof: 'proxy-user' }, action: 'approve' }] } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /gateway\.auth\.trustedProxyUser is required by rule "t"/);
    r = await startWith({ auth: { trustedProxyUser: { header: 'X-User', allowUsers: ['a'] } } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /gateway\.auth\.trustedProxyUser needs gateway\.trustedProxies/);
  });
});

/** A device that files a request and waits on its socket for the decision. */
function waitingDevice(tg: TestGateway, scopes: string[], events: Array<{ event: string; payload: Record<string, unknown> }>) {
  const identity = generateIdentity();
  const conn = connectGateway({
    url: tg.url,
    identity,
    auth: { token: TEST_TOKEN },
    scopes,
    caps: ['device-pairing-wait'],
    client: { id: 'test', mode: 'test' },
    timeoutMs: 60_000,
    onEvent: (event, payload) => events.push({ event, payload: payload as Record<string, unknown> }),
  });
  return { identity, conn };
}

async function pendingFor(tg: TestGateway, deviceId: string): Promise<string> {
  return waitFor(async () => {
    const list = await ownerCall<{ pending: Array<{ requestId: string; deviceId: string }> }>(tg, 'device.pair.list');
    return list.pending.find((p) => p.deviceId === deviceId)?.requestId;
  }, 'the pairing request');
}

describe('time-bound grants: devices approve --ttl, devices extend', () => {
  let tg: TestGateway;
  after(async () => {
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
  });

  test('a role approved with --ttl is withdrawn live when it expires: the session is closed GRANT_EXPIRED', async () => {
    tg = await startTestGateway({ config: { autoApproveLocal: false } });
    const events: Array<{ event: string; payload: Record<string, unknown> }> = [];
    const { identity, conn } = waitingDevice(tg, ['operator.read'], events);
    const requestId = await pendingFor(tg, identity.deviceId);
    const approved = await cliJson<{ approved: Array<{ expiresAtMs: number }> }>(tg, 'devices', 'approve', requestId, '--ttl', '3s', '--json');
    const c = await conn;
    const expiresAtMs = (c.hello.auth as { expiresAtMs?: number }).expiresAtMs;
    assert.equal(expiresAtMs, approved.approved[0]?.expiresAtMs, 'hello-ok carries the expiry the approval set');
    const closed = await c.closed;
    assert.equal(closed.code, 4001);
    assert.match(closed.reason, /time-bound grant expired/);
    assert.deepEqual(await grantsOf(tg, identity.deviceId), [], 'nothing is left of the role');
    const expired = (await auditOf(tg, 'grant.expired')).find((e) => e.subject === identity.deviceId);
    assert.equal(expired?.actor, 'gateway');
    assert.deepEqual(expired?.data?.withdrawn, ['operator.read']);
  });

  test('a scope upgrade approved with --ttl: the added scope goes at expiry (auth.updated), the session stays with the rest', async () => {
    const events: Array<{ event: string; payload: Record<string, unknown> }> = [];
    const { identity, conn } = waitingDevice(tg, ['operator.read'], events);
    await cli(tg, 'devices', 'approve', await pendingFor(tg, identity.deviceId));
    const first = await conn;
    await first.close();
    // Reconnect with the device token asking for write too: admitted with read, write pending.
    const token = first.hello.auth.deviceToken as string;
    const c: GatewayConnection = await connectGateway({
      url: tg.url,
      identity,
      auth: { deviceToken: token },
      scopes: ['operator.read', 'operator.write'],
      client: { id: 'test', mode: 'test' },
      onEvent: (event, payload) => events.push({ event, payload: payload as Record<string, unknown> }),
    });
    try {
      assert.deepEqual(c.hello.auth.scopes, ['operator.read']);
      await cli(tg, 'devices', 'approve', await pendingFor(tg, identity.deviceId), '--ttl', '3s');
      const widened = await waitFor(() => events.find((e) => e.event === 'auth.updated' && e.payload.reason === 'scope-upgrade-approved'), 'the widening');
      assert.deepEqual(widened.payload.scopes, ['operator.read', 'operator.write']);
      assert.equal(typeof widened.payload.expiresAtMs, 'number', 'the device sees when the added scope ends');
      const narrowed = await waitFor(() => events.find((e) => e.event === 'auth.updated' && e.payload.reason === 'grant-expired'), 'the withdrawal');
      assert.deepEqual(narrowed.payload.scopes, ['operator.read']);
      // Enforced, not only announced: a write method is refused now, a read one still works.
      await assert.rejects(c.request('sessions.create', { key: 'after-expiry' }), /missing scope: operator\.write/);
      await c.request('health', {});
      const grants = await grantsOf(tg, identity.deviceId);
      assert.deepEqual(grants[0]?.scopes, ['operator.read']);
      assert.equal(grants[0]?.expiresAtMs, undefined, 'no expiry left');
    } finally {
      await c.close();
    }
  });

  test('devices extend moves the expiry (the device is told); a permanent grant cannot be extended', async () => {
    const events: Array<{ event: string; payload: Record<string, unknown> }> = [];
    const { identity, conn } = waitingDevice(tg, ['operator.read'], events);
    await cli(tg, 'devices', 'approve', await pendingFor(tg, identity.deviceId), '--ttl', '1h');
    const c = await conn;
    try {
      const before = (c.hello.auth as unknown as { expiresAtMs: number }).expiresAtMs;
      const res = await cliJson<{ expiresAtMs: number }>(tg, 'devices', 'extend', identity.deviceId, '--role', 'operator', '--ttl', '5h', '--json');
      assert.ok(res.expiresAtMs > before + 3 * 3600_000, 'about four more hours than before');
      const told = await waitFor(() => events.find((e) => e.event === 'auth.updated' && e.payload.reason === 'grant-extended'), 'the extension event');
      assert.equal(told.payload.expiresAtMs, res.expiresAtMs);
      assert.equal((await grantsOf(tg, identity.deviceId))[0]?.expiresAtMs, res.expiresAtMs);
      const extended = (await auditOf(tg, 'grant.extended')).find((e) => e.subject === identity.deviceId);
      assert.equal(extended?.actor, 'owner');
      // Without operator.pairing there is nothing to extend with.
      await assert.rejects(c.request('device.grant.extend', { deviceId: identity.deviceId, role: 'operator', ttl: '1h' }), /missing scope: operator\.pairing/);
    } finally {
      await c.close();
    }
    // A time-bound device holding operator.pairing still cannot keep itself alive.
    const { identity: pairer, conn: pairerConn } = waitingDevice(tg, ['operator.read', 'operator.pairing'], []);
    await cli(tg, 'devices', 'approve', await pendingFor(tg, pairer.deviceId), '--ttl', '1h');
    const self = await pairerConn;
    try {
      await assert.rejects(
        self.request('device.grant.extend', { deviceId: pairer.deviceId, role: 'operator', ttl: '5h' }),
        /grant extension denied: a device cannot approve its own request/,
      );
    } finally {
      await self.close();
    }
    const { identity: permanent, conn: pconn } = waitingDevice(tg, ['operator.read'], []);
    await cli(tg, 'devices', 'approve', await pendingFor(tg, permanent.deviceId));
    await (await pconn).close();
    const r = await cli(tg, 'devices', 'extend', permanent.deviceId, '--role', 'operator', '--ttl', '1h');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /GRANT_NOT_TIME_BOUND/);
    const bad = await cli(tg, 'devices', 'approve', 'whatever', '--ttl', 'forever');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--ttl must be a duration/);
  });
});

describe('time-bound grants survive a restart', () => {
  test('the expiry is stored: a gateway started after it passed withdraws the grant and refuses the old token', async () => {
    const clock = new ManualClock(Date.now());
    let tg = await startTestGateway({ clock, config: { autoApproveLocal: false } });
    try {
      const { identity, conn } = waitingDevice(tg, ['operator.read'], []);
      await cli(tg, 'devices', 'approve', await pendingFor(tg, identity.deviceId), '--ttl', '2h');
      const c = await conn;
      const token = c.hello.auth.deviceToken as string;
      await c.close();
      assert.equal(typeof (await grantsOf(tg, identity.deviceId))[0]?.expiresAtMs, 'number');
      await tg.stop();
      // Down while the grant ran out: the new process finds the stored expiry on start.
      clock.advance(2 * 3600_000 + 1000);
      tg = await tg.restart();
      await waitFor(async () => (await grantsOf(tg, identity.deviceId)).length === 0, 'the grant withdrawn after the restart');
      const expired = (await auditOf(tg, 'grant.expired')).find((e) => e.subject === identity.deviceId);
      assert.equal(expired?.actor, 'gateway');
      await expectRefused(
        connectGateway({ url: tg.url, identity, auth: { deviceToken: token }, scopes: ['operator.read'], client: { id: 'test', mode: 'test' } }),
        'AUTH_DEVICE_TOKEN_MISMATCH',
      );
    } finally {
      await tg.stop();
      removeDir(tg.stateDir);
    }
  });
});
