/**
 * Quorum edges over real sockets and the real SQLite store: a quorum reached just before the
 * process died is carried out on the next start (exactly once), and the votes of an approver
 * that was removed or lost its scopes stop counting. "Remote" devices come through a trusted
 * proxy (X-Forwarded-For from loopback), so nothing they ask for is approved silently.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { ConnectError, connectGateway, type DeviceIdentity, GatewayRequestError, generateIdentity } from '../src/client/connection.js';
import { parseApprovalsConfig } from '../src/core/approval-policy.js';
import type { Explanation } from '../src/core/explain.js';
import { asOwner, cli, expectRefused, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';
import { waitFor } from './helpers/wait.js';

const REMOTE = { 'x-forwarded-for': '198.51.100.78' };
const ADMIN_ASK = ['operator.admin', 'operator.pairing'];
const QUORUM_CONFIG = { trustedProxies: ['127.0.0.1'], approvalQuorum: { 'operator.admin': 2 } };

type Conn = Awaited<ReturnType<typeof connectGateway>>;

function remote(tg: TestGateway, identity: DeviceIdentity, scopes: string[], displayName = 'remote'): Promise<Conn> {
  return connectGateway({
    url: tg.url,
    identity,
    client: { id: 'test', mode: 'test', displayName, platform: 'linux' },
    auth: { token: TEST_TOKEN },
    headers: REMOTE,
    scopes,
  });
}

async function asked(tg: TestGateway, identity: DeviceIdentity, scopes: string[], displayName = 'remote'): Promise<string> {
  const refused = await expectRefused(remote(tg, identity, scopes, displayName), 'PAIRING_REQUIRED');
  return (refused.error?.details as { requestId: string } | undefined)?.requestId as string;
}

async function asOwnerDo<T>(tg: TestGateway, fn: (o: Conn) => Promise<T>): Promise<T> {
  const o = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
  try {
    return await fn(o);
  } finally {
    await o.close();
  }
}

/** A gateway whose administrator devices were approved before the quorum was turned on. */
async function quorumGateway(admins: DeviceIdentity[]): Promise<TestGateway> {
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-quorum-followups-'));
  const first = await startTestGateway({ stateDir, config: { trustedProxies: ['127.0.0.1'] } });
  for (const a of admins) {
    const requestId = await asked(first, a, ADMIN_ASK, 'admin');
    await asOwnerDo(first, (o) => o.request('device.pair.approve', { requestId }));
  }
  await first.stop();
  return startTestGateway({ stateDir, config: QUORUM_CONFIG });
}

describe('a quorum reached just before the process died', () => {
  const admin = generateIdentity();
  let tg: TestGateway;

  before(async () => {
    tg = await quorumGateway([admin]);
  });

  after(async () => {
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
  });

  test('is carried out on the next start, exactly once, with the completing approver and ttl', async () => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'crash laptop');
    const first = await asOwnerDo(tg, (o) => o.request<{ awaiting: unknown[] }>('device.pair.approve', { requestId }));
    assert.equal(first.awaiting.length, 1);

    // The second vote lands in the store, claimed by this process, which then dies before
    // approving: exactly the record the completing vote writes (approval-quorum.ts).
    const key = `approval.votes.${requestId}`;
    const rec = JSON.parse((await tg.store.getMeta(key)) as string) as { subject: string[]; votes: Array<Record<string, unknown>> };
    const atMs = Date.now();
    rec.votes.push({ approver: `device:${admin.deviceId}`, atMs, ttlMs: 3_600_000 });
    await tg.store.setMeta(key, JSON.stringify({ ...rec, claim: { by: tg.gateway.bootId, atMs } }));
    await tg.stop();

    tg = await tg.restart();
    const conn = await waitFor(
      async () => (await remote(tg, device, ADMIN_ASK, 'crash laptop').catch(() => null)) ?? undefined,
      'the device admitted after the restart',
    );
    try {
      assert.ok(conn.hello.auth.scopes.includes('operator.admin'), conn.hello.auth.scopes.join(', '));
    } finally {
      await conn.close();
    }
    const grant = await tg.store.getGrant(device.deviceId, 'operator');
    assert.equal(grant?.approvedBy, `device:${admin.deviceId}`);
    // The completing approval's ttl applies.
    assert.ok(typeof grant?.expiresAtMs === 'number' && grant.expiresAtMs > atMs, String(grant?.expiresAtMs));
    // Another pass (the periodic one, or a second start) finds nothing left to do.
    assert.equal(await tg.gateway.carryOutDecidedQuorums(), 0);
    const audit = await tg.store.listAudit({ limit: 10_000 });
    const approvals = audit.filter((a) => a.action === 'pairing.approved' && a.data?.requestId === requestId);
    assert.equal(approvals.length, 1);
    assert.equal(approvals[0]?.actor, `device:${admin.deviceId}`);
    assert.deepEqual((approvals[0]?.data?.approvals as { approvers?: string[] } | undefined)?.approvers, ['owner', `device:${admin.deviceId}`]);
    // The votes go with the request at the next retention pass.
    const pruned = await tg.gateway.pruneRetained();
    assert.ok(pruned && pruned.approvalRecords >= 1, JSON.stringify(pruned));
    assert.equal(await tg.store.getMeta(key), null);
  });

  test('a pending request below its quorum is left alone on start', async () => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'half laptop');
    await asOwnerDo(tg, (o) => o.request('device.pair.approve', { requestId }));
    assert.equal(await tg.gateway.carryOutDecidedQuorums(), 0);
    assert.ok(await tg.store.getPairingRequest(requestId));
  });
});

describe('votes of an approver that can no longer approve do not count', () => {
  const gone = generateIdentity();
  const narrowed = generateIdentity();
  const other = generateIdentity();
  let tg: TestGateway;

  before(async () => {
    tg = await quorumGateway([gone, narrowed, other]);
  });

  after(async () => {
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
  });

  async function voteAs(identity: DeviceIdentity, requestId: string): Promise<{ approved: unknown[]; awaiting?: Array<{ approvals: unknown }> }> {
    const c = await remote(tg, identity, ADMIN_ASK, 'admin');
    try {
      return await c.request('device.pair.approve', { requestId });
    } finally {
      await c.close();
    }
  }

  test('a removed device: its approval is dropped from the count, and the owner alone does not complete the quorum', async () => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'x laptop');
    const first = await voteAs(gone, requestId);
    assert.deepEqual(first.awaiting?.[0]?.approvals, { received: 1, required: 2, approvers: [`device:${gone.deviceId}`] });
    await asOwnerDo(tg, (o) => o.request('device.pair.remove', { deviceId: gone.deviceId }));

    const listed = await asOwnerDo(tg, (o) => o.request<{ pending: Array<{ requestId: string; approvals: unknown }> }>('device.pair.list', {}));
    assert.deepEqual(listed.pending.find((p) => p.requestId === requestId)?.approvals, { received: 0, required: 2, approvers: [] });
    const owner = await asOwnerDo(tg, (o) =>
      o.request<{ approved: unknown[]; awaiting?: Array<{ approvals: unknown }> }>('device.pair.approve', { requestId }),
    );
    assert.equal(owner.approved.length, 0);
    assert.deepEqual(owner.awaiting?.[0]?.approvals, { received: 1, required: 2, approvers: ['owner'] });
    await expectRefused(remote(tg, device, ADMIN_ASK, 'x laptop'), 'PAIRING_REQUIRED');
    // A start does not carry it out either.
    assert.equal(await tg.gateway.carryOutDecidedQuorums(), 0);

    const done = await voteAs(other, requestId);
    assert.equal(done.approved.length, 1);
  });

  test('a device that lost operator.admin: its approval of an admin request stops counting', async () => {
    const device = generateIdentity();
    const requestId = await asked(tg, device, ADMIN_ASK, 'y laptop');
    await voteAs(narrowed, requestId);
    // The administrator is narrowed to read + pairing (its own grant, by the owner).
    await asOwnerDo(tg, (o) =>
      o.request('device.token.rotate', { deviceId: narrowed.deviceId, role: 'operator', scopes: ['operator.read', 'operator.pairing'] }),
    );
    const owner = await asOwnerDo(tg, (o) =>
      o.request<{ approved: unknown[]; awaiting?: Array<{ approvals: unknown }> }>('device.pair.approve', { requestId }),
    );
    assert.equal(owner.approved.length, 0);
    assert.deepEqual(owner.awaiting?.[0]?.approvals, { received: 1, required: 2, approvers: ['owner'] });
    const done = await voteAs(other, requestId);
    assert.equal(done.approved.length, 1);
  });
});

describe('setup codes do not go around a quorum', () => {
  let tg: TestGateway;
  let earlyToken: string;

  before(async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-quorum-setup-'));
    // A code with the default profile (read, write, approvals), minted while no quorum was configured.
    const first = await startTestGateway({ stateDir, config: { trustedProxies: ['127.0.0.1'] } });
    try {
      const m = await asOwnerDo(first, (o) => o.request<{ setupCode: string }>('device.pair.setupCode', {}));
      const decoded = decodeSetupCode(m.setupCode);
      assert.ok(decoded.ok);
      earlyToken = decoded.payload.bootstrapToken;
    } finally {
      await first.stop();
    }
    // Setup codes never hand out admin or pairing at all; a quorum on write is what they could skip.
    tg = await startTestGateway({ stateDir, config: { trustedProxies: ['127.0.0.1'], approvalQuorum: { 'operator.write': 2 } } });
  });

  after(async () => {
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
  });

  test('minting a code whose profile holds a scope under quorum is refused; one without it is minted', async () => {
    await asOwnerDo(tg, async (o) => {
      try {
        await o.request('device.pair.setupCode', {});
        assert.fail('minted a code that grants operator.write under a quorum of 2');
      } catch (err) {
        assert.ok(err instanceof GatewayRequestError, String(err));
        assert.equal(err.detailCode, 'SETUP_PROFILE_UNDER_QUORUM');
        const details = err.error.details as { scopes: string[]; required: number };
        assert.deepEqual([details.scopes, details.required], [['operator.write'], 2]);
      }
      const ok = await o.request<{ setupCode: string }>('device.pair.setupCode', { scopes: ['operator.read'] });
      assert.ok(ok.setupCode);
    });
    const viaCli = await cli(tg, 'qr');
    assert.notEqual(viaCli.code, 0);
    assert.match(viaCli.stderr, /\[SETUP_PROFILE_UNDER_QUORUM\]/);
  });

  test('a code minted before the quorum was configured is refused at redemption and grants nothing', async () => {
    const device = generateIdentity();
    try {
      await connectGateway({
        url: tg.url,
        identity: device,
        scopes: ['operator.read', 'operator.write'],
        client: { id: 'test', mode: 'test', displayName: 'early phone' },
        auth: { bootstrapToken: earlyToken },
        headers: REMOTE,
      });
      assert.fail('redeemed a code granting operator.write under a quorum of 2');
    } catch (err) {
      assert.ok(err instanceof ConnectError, String(err));
      assert.equal(err.detailCode, 'SETUP_PROFILE_UNDER_QUORUM');
      assert.equal(err.closeCode, 1008);
    }
    assert.equal(await tg.store.getGrant(device.deviceId, 'operator'), null);
  });
});

describe('explain says what would decide a pending request, as the gateway decides it', () => {
  let tg: TestGateway;

  before(async () => {
    tg = await startTestGateway({
      config: {
        autoApproveLocal: false,
        trustedProxies: ['127.0.0.1'],
        trustedProxyUser: { header: 'x-forwarded-user', allowUsers: ['ana@example.com', 'bo@example.com'] },
        approvals: parseApprovalsConfig({
          policies: [
            {
              name: 'ana-team',
              match: { proof: 'proxy-user', users: ['ana@example.com'], role: 'operator' },
              action: 'approve',
              scopes: ['operator.read', 'operator.write'],
            },
          ],
        }),
      },
    });
  });

  after(async () => {
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
  });

  const explain = (target: string) => asOwnerDo(tg, (o) => o.request<Explanation>('device.explain', { target }));

  test('a rule approved part of the request: explain names that rule and leaves the rest to a person, as the gateway did', async () => {
    const identity = generateIdentity();
    const c = await connectGateway({
      url: tg.url,
      identity,
      scopes: ['operator.read', 'operator.pairing'],
      client: { id: 'test', mode: 'test', displayName: 'ana laptop' },
      headers: { 'X-Forwarded-For': '203.0.113.15', 'X-Forwarded-User': 'ana@example.com' },
    });
    await c.close();
    const grant = await tg.store.getGrant(identity.deviceId, 'operator');
    assert.equal(grant?.approvedBy, 'rule:ana-team');
    const x = await explain(identity.deviceId);
    const pending = x.pending.find((p) => p.type === 'pairing');
    assert.deepEqual(pending?.adds, ['operator.pairing']);
    assert.equal(`rule:${pending?.decision?.rule}`, grant?.approvedBy);
    assert.equal(pending?.decision?.action, 'approve');
    assert.deepEqual(pending?.decision?.scopes, []);
    assert.match(pending?.decision?.text ?? '', /rule ana-team \(proof proxy-user\) grants none of it \(operator.pairing\): a person must approve/);
  });

  test('no rule matches: the gateway leaves it pending and explain says a person must approve', async () => {
    const identity = generateIdentity();
    const refused = await expectRefused(
      connectGateway({
        url: tg.url,
        identity,
        scopes: ['operator.read'],
        client: { id: 'test', mode: 'test', displayName: 'bo laptop' },
        headers: { 'X-Forwarded-For': '203.0.113.16', 'X-Forwarded-User': 'bo@example.com' },
      }),
      'PAIRING_REQUIRED',
    );
    const requestId = (refused.error?.details as { requestId: string } | undefined)?.requestId as string;
    const x = await explain(requestId);
    const pending = x.pending.find((p) => p.requestId === requestId);
    assert.deepEqual(pending?.decision, { rule: null, action: null, proof: null, scopes: [], ttlMs: null, text: 'no rule: a person must approve' });
    const printed = await cli(tg, 'explain', requestId);
    assert.equal(printed.code, 0, printed.stderr);
    assert.match(printed.stdout, /policies: no rule: a person must approve/);
  });
});
