/**
 * Setup codes over real sockets and the real SQLite store: minting (RPC and
 * `clawgate qr`), redemption as one transaction, repeats by the same key, races between keys,
 * every documented refusal, the per-code failure budget and the per-address rate limit.
 * Clients reach the gateway through a trusted proxy (X-Forwarded-For), so each test can speak
 * from its own address and the per-address limiter of one test never touches another.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { decodeSetupCode, encodeSetupCode, setupLink } from '@clawgate/protocol/setup-code';
import {
  ConnectError,
  connectGateway,
  type DeviceIdentity,
  type GatewayConnection,
  type GatewayRequestError,
  generateIdentity,
} from '../src/client/connection.js';
import { ManualClock } from '../src/core/env.js';
import { parseToken } from '../src/core/secrets.js';
import { SETUP_FAILURE_BUDGET } from '../src/core/setup-codes.js';
import { asOwner, cli, cliJson, expectRefused as refused, removeDir, startTestGateway, type TestGateway } from './helpers/gateway.js';

const cfg = { trustedProxies: ['127.0.0.1'] };

let nextAddress = 1;
/** A fresh client address (TEST-NET-2) for each caller that should not share a limiter bucket. */
function freshAddress(): Record<string, string> {
  const n = nextAddress++;
  return { 'x-forwarded-for': `198.51.${100 + Math.floor(n / 250)}.${n % 250}` };
}

interface Minted {
  setupId: string;
  setupCode: string;
  link: string;
  expiresAtMs: number;
  gatewayUrl: string;
  profile: string;
  roles: string[];
  scopes: string[];
}

async function owner(tg: TestGateway): Promise<GatewayConnection> {
  return connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
}

async function mint(tg: TestGateway, params: Record<string, unknown> = {}): Promise<Minted & { token: string }> {
  const c = await owner(tg);
  try {
    const m = await c.request<Minted>('device.pair.setupCode', params);
    const decoded = decodeSetupCode(m.setupCode);
    assert.ok(decoded.ok, 'the minted code decodes');
    return { ...m, token: decoded.payload.bootstrapToken };
  } finally {
    await c.close();
  }
}

interface RedeemOpts {
  role?: 'operator' | 'node';
  scopes?: string[];
  headers?: Record<string, string>;
  displayName?: string;
}

function redeem(tg: TestGateway, token: string, identity: DeviceIdentity, o: RedeemOpts = {}): Promise<GatewayConnection> {
  const role = o.role ?? 'operator';
  return connectGateway({
    url: tg.url,
    identity,
    role,
    scopes: o.scopes ?? (role === 'operator' ? ['operator.read', 'operator.write'] : []),
    client:
      role === 'node'
        ? { id: 'node-host', mode: 'node', displayName: o.displayName ?? 'test-node' }
        : { id: 'test', mode: 'test', displayName: o.displayName ?? 'test-phone' },
    auth: { bootstrapToken: token },
    headers: o.headers ?? freshAddress(),
  });
}

async function expectRefused(p: Promise<unknown>, detail: string): Promise<ConnectError> {
  const err = await refused(p, detail);
  assert.equal(err.closeCode, 1008);
  return err;
}

function reasonOf(err: ConnectError): unknown {
  return err.error?.details?.reason;
}

async function status(tg: TestGateway, setupId: string) {
  const c = await owner(tg);
  try {
    return await c.request<{
      setup: { status: string; deviceId: string | null; redeemCount: number; failures: number; redeemedRole: string | null };
      completion?: unknown;
    }>('device.pair.setupStatus', { setupId });
  } finally {
    await c.close();
  }
}

describe('setup code format', () => {
  const payload = { url: 'ws://127.0.0.1:19004', bootstrapToken: '05eO4v88180I4aY3g2k2HcXAHIJ4cmQFLgPcN89m8TM', expiresAtMs: 1795288907696 };
  const captured =
    'eyJ1cmwiOiJ3czovLzEyNy4wLjAuMToxOTAwNCIsImJvb3RzdHJhcFRva2VuIjoiMDVlTzR2ODgxODBJNGFZM2cyazJIY1hBSElKNGNtUUZMZ1BjTjg5bThUTSIsImV4cGlyZXNBdE1zIjoxNzk1Mjg4OTA3Njk2fQ';

  test('encodes exactly like the reference capture and decodes it back', () => {
    assert.equal(encodeSetupCode(payload), captured);
    assert.deepEqual(decodeSetupCode(captured), { ok: true, payload });
  });

  test('accepts an oc-pair:// link in any case, with surrounding space or a trailing slash', () => {
    for (const input of [setupLink(captured), `OC-PAIR://${captured}`, `  Oc-Pair://${captured}/ `, `\n${captured}\n`]) {
      assert.deepEqual(decodeSetupCode(input), { ok: true, payload }, input);
    }
  });

  test('optional urls and tlsFingerprint round-trip; bad ones are refused', () => {
    const full = { ...payload, urls: ['wss://gw.example.test', 'ws://192.168.1.2:18789'], tlsFingerprint: 'ab'.repeat(32) };
    assert.deepEqual(decodeSetupCode(encodeSetupCode(full)), { ok: true, payload: full });
    assert.throws(() => encodeSetupCode({ ...payload, tlsFingerprint: 'nope' }));
    assert.throws(() => encodeSetupCode({ ...payload, url: 'http://x' }));
  });

  test('gatewayKey: written last as 64 lowercase hex, normalised on both sides; a malformed one is refused', () => {
    const key = 'ab'.repeat(32);
    const code = encodeSetupCode({ ...payload, tlsFingerprint: 'cd'.repeat(32), gatewayKey: `sha256:${key.toUpperCase()}` });
    const json = Buffer.from(code, 'base64url').toString('utf8');
    assert.ok(json.endsWith(`"gatewayKey":"${key}"}`), json);
    assert.deepEqual(decodeSetupCode(code), { ok: true, payload: { ...payload, tlsFingerprint: 'cd'.repeat(32), gatewayKey: key } });
    // Colon-separated upper-case (as some tools print fingerprints) decodes to the same key.
    const colons = key.toUpperCase().match(/../g)?.join(':');
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    assert.deepEqual(decodeSetupCode(enc({ ...payload, gatewayKey: colons })), { ok: true, payload: { ...payload, gatewayKey: key } });
    for (const bad of ['', 'ab'.repeat(31), 'zz'.repeat(32), 42, null, ['ab'.repeat(32)]]) {
      const r = decodeSetupCode(enc({ ...payload, gatewayKey: bad }));
      assert.equal(r.ok, false, `must refuse gatewayKey ${JSON.stringify(bad)}`);
      if (!r.ok) assert.match(r.problem, /gatewayKey/);
    }
    assert.throws(() => encodeSetupCode({ ...payload, gatewayKey: 'nope' }), /gatewayKey/);
  });

  test('refuses malformed input with a reason', () => {
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const cases: Array<[string, RegExp]> = [
      ['', /empty/],
      ['oc-pair://', /empty/],
      ['abc=', /base64url/],
      ['a b', /base64url/],
      ['x'.repeat(5000), /longer/],
      [Buffer.from('not json').toString('base64url'), /JSON/],
      [enc([1]), /object/],
      [enc({ ...payload, url: 'ws://user:pw@host' }), /credentials/],
      [enc({ ...payload, url: 'https://host' }), /ws:\/\//],
      [enc({ ...payload, bootstrapToken: '' }), /bootstrapToken/],
      [enc({ ...payload, bootstrapToken: 'x'.repeat(513) }), /bootstrapToken/],
      [enc({ ...payload, expiresAtMs: 'soon' }), /expiresAtMs/],
      [enc({ ...payload, urls: [] }), /urls/],
      [enc({ ...payload, urls: ['ftp://x'] }), /urls/],
      [enc({ ...payload, tlsFingerprint: 'zz' }), /tlsFingerprint/],
    ];
    for (const [input, why] of cases) {
      const r = decodeSetupCode(input);
      assert.equal(r.ok, false, `must refuse ${input.slice(0, 40)}`);
      if (!r.ok) assert.match(r.problem, why);
    }
    assert.deepEqual(decodeSetupCode(captured, { nowMs: payload.expiresAtMs - 1 }), { ok: true, payload });
    const expired = decodeSetupCode(captured, { nowMs: payload.expiresAtMs });
    assert.equal(expired.ok, false);
  });
});

describe('setup codes against a running gateway', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: cfg });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('an operator-profile code pairs a device: operator token, reconnect with it, scopes bounded by the profile', async () => {
    const watcher = await owner(tg);
    const m = await mint(tg, { label: 'phone' });
    assert.equal(m.profile, 'operator');
    assert.deepEqual(m.roles, ['operator']);
    assert.deepEqual(m.scopes, ['operator.approvals', 'operator.read', 'operator.write']);
    assert.equal(m.gatewayUrl, tg.url, 'defaults to the gateway URL');
    assert.equal(m.link, `oc-pair://${m.setupCode}`);
    const parsed = parseToken('bootstrap', m.token);
    assert.ok(parsed, 'the code carries a cgb1 bootstrap token');
    assert.equal(parsed.id, m.setupId, 'setupId is the public id of the token');
    assert.ok(Math.abs(m.expiresAtMs - (Date.now() + 600_000)) < 5000, 'default TTL 10 minutes');
    assert.ok(!watcher.hello.features.methods.includes('device.pair.setupCode'), 'not advertised');

    const id = generateIdentity();
    const resolved = watcher.waitForEvent<{ deviceId: string; decision: string }>('device.pair.resolved', 5000, (p) => p.deviceId === id.deviceId);
    const completed = watcher.waitForEvent<{ setupId: string; deviceId: string; access: string; deviceName: string }>('device.pair.setup.completed');
    const conn = await redeem(tg, m.token, id, { scopes: ['operator.read', 'operator.write', 'operator.admin'], displayName: 'Pixel' });
    const auth = conn.hello.auth;
    assert.equal(auth.method, 'bootstrap-token');
    assert.equal(auth.role, 'operator');
    assert.deepEqual(auth.scopes, ['operator.read', 'operator.write'], 'admin is outside the profile and dropped');
    assert.ok(auth.deviceToken?.startsWith('cgd1_'));
    assert.equal(auth.deviceTokens, undefined, 'no other role, no deviceTokens');
    assert.equal((await resolved).decision, 'approved');
    assert.deepEqual(await completed, { ...(await completed), setupId: m.setupId, deviceId: id.deviceId, access: 'operator', deviceName: 'Pixel' });
    await conn.close();

    const grant = await tg.store.getGrant(id.deviceId, 'operator');
    assert.equal(grant?.approvedVia, 'bootstrap');
    assert.deepEqual(grant?.scopes, ['operator.approvals', 'operator.read', 'operator.write']);

    // Later connects use the device token, never the setup code.
    const again = await connectGateway({
      url: tg.url,
      identity: id,
      client: { id: 'test', mode: 'test' },
      scopes: ['operator.read', 'operator.write'],
      auth: { deviceToken: auth.deviceToken },
      headers: freshAddress(),
    });
    assert.equal(again.hello.auth.method, 'device-token');
    assert.ok(again.hello.auth.scopes.includes('operator.write'));
    assert.ok(await again.request('health'));
    await assert.rejects(again.request('device.pair.list', {}), (err: GatewayRequestError) => {
      assert.equal(err.error.code, 'FORBIDDEN');
      assert.equal(err.detailCode, 'MISSING_SCOPE');
      assert.equal((err.error.details as { missingScope: string }).missingScope, 'operator.pairing');
      return true;
    });
    await assert.rejects(again.request('device.pair.setupCode', {}), (err: GatewayRequestError) => err.detailCode === 'MISSING_SCOPE');
    await again.close();

    const st = await status(tg, m.setupId);
    assert.equal(st.setup.status, 'redeemed');
    assert.equal(st.setup.deviceId, id.deviceId);
    assert.equal(st.setup.redeemedRole, 'operator');
    assert.deepEqual(st.completion, {
      setupId: m.setupId,
      deviceId: id.deviceId,
      deviceName: 'Pixel',
      access: 'operator',
      ts: (st.setup as { redeemedAtMs?: number }).redeemedAtMs,
    });
    const audit = await watcher.request<{ entries: Array<{ action: string; subject?: string; data?: Record<string, unknown> }> }>('audit.list', {});
    assert.ok(audit.entries.some((e) => e.action === 'setup.minted' && e.subject === m.setupId));
    const redeemed = audit.entries.find((e) => e.action === 'setup.redeemed' && e.subject === id.deviceId);
    assert.equal(redeemed?.data?.setupId, m.setupId);
    // The secret part is base64url and may itself contain '_': take it with the real parser.
    const secret = parseToken('bootstrap', m.token)?.secret;
    assert.ok(secret && secret.length === 43);
    assert.ok(!JSON.stringify(audit.entries).includes(secret), 'the secret is never audited');
    await watcher.close();
  });

  test('asking for role node with an operator-only code is refused clearly, and the code stays usable', async () => {
    const m = await mint(tg);
    const id = generateIdentity();
    const err = await expectRefused(redeem(tg, m.token, id, { role: 'node' }), 'AUTH_BOOTSTRAP_TOKEN_INVALID');
    const d = err.error?.details as Record<string, unknown>;
    assert.equal(d.reason, 'role-not-in-profile');
    assert.equal(d.requestedRole, 'node');
    assert.deepEqual(d.allowedRoles, ['operator']);
    assert.match(String(d.nextStep), /grants role operator/);
    assert.equal(d.authReason, 'bootstrap_token_invalid');
    assert.equal((await status(tg, m.setupId)).setup.status, 'active');
    const conn = await redeem(tg, m.token, id);
    assert.equal(conn.hello.auth.role, 'operator');
    await conn.close();
  });

  test('an operator+node code yields both role tokens from one redemption; the node token works on a node connection', async () => {
    const m = await mint(tg, { profile: 'operator+node' });
    assert.deepEqual(m.roles, ['operator', 'node']);
    const id = generateIdentity();
    const node = await redeem(tg, m.token, id, { role: 'node' });
    const auth = node.hello.auth;
    assert.equal(auth.method, 'bootstrap-token');
    assert.equal(auth.role, 'node');
    assert.deepEqual(auth.scopes, []);
    const nodeToken = auth.deviceToken as string;
    assert.ok(nodeToken);
    assert.equal(auth.deviceTokens?.length, 1);
    const op = auth.deviceTokens?.[0];
    assert.equal(op?.role, 'operator');
    assert.deepEqual(op?.scopes, ['operator.approvals', 'operator.read', 'operator.write']);
    assert.ok(op && op.deviceToken !== nodeToken && typeof op.issuedAtMs === 'number');
    await node.close();

    const byNodeToken = await connectGateway({
      url: tg.url,
      identity: id,
      role: 'node',
      client: { id: 'node-host', mode: 'node' },
      auth: { deviceToken: nodeToken },
      headers: freshAddress(),
    });
    assert.equal(byNodeToken.hello.auth.method, 'device-token');
    assert.equal(byNodeToken.hello.auth.role, 'node');
    await byNodeToken.close();
    const byOpToken = await connectGateway({
      url: tg.url,
      identity: id,
      client: { id: 'test', mode: 'test' },
      scopes: ['operator.write'],
      auth: { deviceToken: op?.deviceToken },
      headers: freshAddress(),
    });
    assert.deepEqual(byOpToken.hello.auth.scopes, ['operator.read', 'operator.write'], 'write implies read');
    await byOpToken.close();
    const grants = (await tg.store.listGrants(id.deviceId)).map((g) => `${g.role}:${g.approvedVia}`).sort();
    assert.deepEqual(grants, ['node:bootstrap', 'operator:bootstrap']);
  });

  test('two keys racing for one code: exactly one wins, 50 times over', async () => {
    for (let round = 0; round < 50; round++) {
      const m = await mint(tg);
      const a = generateIdentity();
      const b = generateIdentity();
      const results = await Promise.allSettled([redeem(tg, m.token, a), redeem(tg, m.token, b)]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1, `round ${round}: exactly one redemption wins`);
      assert.equal(lost.length, 1);
      const err = lost[0]?.reason;
      assert.ok(err instanceof ConnectError, String(err));
      assert.equal(err.detailCode, 'AUTH_BOOTSTRAP_TOKEN_USED', `round ${round}: ${err.message}`);
      const winner = (won[0] as PromiseFulfilledResult<GatewayConnection>).value;
      const winnerId = winner.hello.auth.deviceToken ? (await status(tg, m.setupId)).setup.deviceId : null;
      assert.ok(winnerId === a.deviceId || winnerId === b.deviceId);
      const loserId = winnerId === a.deviceId ? b.deviceId : a.deviceId;
      assert.equal(await tg.store.getGrant(loserId, 'operator'), null, 'the loser got nothing');
      await winner.close();
    }
  });

  test('the same key redeeming twice within the grace window gets the same grant with fresh tokens', async () => {
    const m = await mint(tg, { profile: 'operator+node' });
    const id = generateIdentity();
    const first = await redeem(tg, m.token, id);
    const firstToken = first.hello.auth.deviceToken as string;
    await first.close();
    const grantBefore = await tg.store.getGrant(id.deviceId, 'operator');

    // The hello-ok was "lost": the device tries the code again.
    const second = await redeem(tg, m.token, id);
    const secondToken = second.hello.auth.deviceToken as string;
    assert.equal(second.hello.auth.method, 'bootstrap-token');
    assert.ok(secondToken && secondToken !== firstToken, 'fresh tokens');
    assert.equal(second.hello.auth.deviceTokens?.[0]?.role, 'node');
    assert.deepEqual(await tg.store.getGrant(id.deviceId, 'operator'), grantBefore, 'the same grant');
    await second.close();
    assert.equal((await status(tg, m.setupId)).setup.redeemCount, 2);

    const opts = { url: tg.url, identity: id, client: { id: 'test', mode: 'test' }, scopes: ['operator.read'] };
    await expectRefused(connectGateway({ ...opts, auth: { deviceToken: firstToken }, headers: freshAddress() }), 'AUTH_DEVICE_TOKEN_MISMATCH');
    const ok = await connectGateway({ ...opts, auth: { deviceToken: secondToken }, headers: freshAddress() });
    await ok.close();

    // Any other key is refused; so is the same key once an operator removed the device.
    const spent = await expectRefused(redeem(tg, m.token, generateIdentity()), 'AUTH_BOOTSTRAP_TOKEN_USED');
    assert.equal(reasonOf(spent), 'used');
    const c = await owner(tg);
    await c.request('device.pair.remove', { deviceId: id.deviceId });
    await c.close();
    await expectRefused(redeem(tg, m.token, id), 'AUTH_BOOTSTRAP_TOKEN_USED');
  });

  test('wrong and unknown tokens get AUTH_BOOTSTRAP_TOKEN_INVALID; a revoked code gets AUTH_BOOTSTRAP_TOKEN_REVOKED', async () => {
    const m = await mint(tg);
    const id = generateIdentity();
    const parsed = parseToken('bootstrap', m.token);
    assert.ok(parsed);
    const wrongSecret = `cgb1_${parsed.id}_${'A'.repeat(43)}`;
    const unknownId = `cgb1_${'0'.repeat(16)}_${parsed.secret}`;
    for (const bad of [wrongSecret, unknownId, 'not-a-token', m.setupCode]) {
      const err = await expectRefused(redeem(tg, bad, id), 'AUTH_BOOTSTRAP_TOKEN_INVALID');
      assert.equal(reasonOf(err), 'invalid');
      assert.equal(err.error?.code, 'INVALID_REQUEST');
    }
    assert.equal((await status(tg, m.setupId)).setup.failures, 1, 'only the wrong secret for a known id counts against the code');

    // Without a device block the token is not even looked at.
    await expectRefused(
      connectGateway({ url: tg.url, client: { id: 'test', mode: 'test' }, auth: { bootstrapToken: m.token }, headers: freshAddress() }),
      'DEVICE_IDENTITY_REQUIRED',
    );

    const c = await owner(tg);
    const revoked = await c.request<{ revoked: boolean; setup: { status: string } }>('device.pair.setupRevoke', { setupId: m.setupId });
    assert.equal(revoked.revoked, true);
    assert.equal(revoked.setup.status, 'revoked');
    await assert.rejects(
      c.request('device.pair.setupRevoke', { setupId: 'ffffffffffffffff' }),
      (err: GatewayRequestError) => err.detailCode === 'UNKNOWN_SETUP_ID',
    );
    await c.close();
    const err = await expectRefused(redeem(tg, m.token, id), 'AUTH_BOOTSTRAP_TOKEN_REVOKED');
    assert.equal(reasonOf(err), 'revoked');
    assert.match(err.closeReason, /setup code revoked/);
  });

  test(`the failure budget: ${SETUP_FAILURE_BUDGET} wrong guesses of one code id burn it, from any number of addresses`, async () => {
    const m = await mint(tg);
    const id = generateIdentity();
    const parsed = parseToken('bootstrap', m.token);
    assert.ok(parsed);
    for (let i = 0; i < SETUP_FAILURE_BUDGET; i++) {
      const guess = `cgb1_${parsed.id}_${String(i).padStart(43, 'x')}`;
      // A new address every few guesses: the per-address limit must not be what stops this.
      await expectRefused(redeem(tg, guess, id, { headers: freshAddress() }), 'AUTH_BOOTSTRAP_TOKEN_INVALID');
    }
    const burned = await expectRefused(redeem(tg, m.token, id), 'AUTH_BOOTSTRAP_TOKEN_REVOKED');
    assert.equal(reasonOf(burned), 'burned');
    const st = await status(tg, m.setupId);
    assert.equal(st.setup.status, 'burned');
    assert.equal(st.setup.failures, SETUP_FAILURE_BUDGET);
    assert.equal(await tg.store.getGrant(id.deviceId, 'operator'), null);
  });

  test('guessing is rate limited per client address, and the lock holds even for a valid code', async () => {
    const m = await mint(tg);
    const id = generateIdentity();
    const here = freshAddress();
    const max = tg.gateway.config.rateLimit.maxFailures;
    for (let i = 0; i < max; i++) {
      await expectRefused(redeem(tg, `cgb1_${String(i).padStart(16, '0')}_${'g'.repeat(43)}`, id, { headers: here }), 'AUTH_BOOTSTRAP_TOKEN_INVALID');
    }
    const limited = await expectRefused(redeem(tg, m.token, id, { headers: here }), 'AUTH_RATE_LIMITED');
    assert.ok((limited.error?.retryAfterMs ?? 0) > 0);
    assert.equal((await status(tg, m.setupId)).setup.status, 'active', 'the locked-out attempt did not touch the code');
    // Another address is not affected.
    const conn = await redeem(tg, m.token, id, { headers: freshAddress() });
    await conn.close();
  });

  test('device.pair.setupCode validates its params and needs operator.admin', async () => {
    const c = await owner(tg);
    for (const [params, why] of [
      [{ scopes: ['operator.pairing'] }, /operator\.pairing is never handed out/],
      [{ scopes: ['operator.admin'] }, /operator\.admin is never handed out/],
      [{ scopes: ['operator.bogus'] }, /unknown operator scope/],
      [{ profile: 'node', scopes: ['operator.read'] }, /operator role only/],
      [{ publicUrl: 'ftp://x' }, /ws:\/\//],
      [{ ttlMs: 1 }, /ttlMs/],
      [{ includeQr: true }, /includeQr/],
    ] as Array<[Record<string, unknown>, RegExp]>) {
      await assert.rejects(c.request('device.pair.setupCode', params), (err: GatewayRequestError) => {
        assert.equal(err.detailCode, 'INVALID_PARAMS', JSON.stringify(params));
        assert.match(err.message, why);
        return true;
      });
    }
    const viaReference = await c.request<Minted>('device.pair.setupCode', { publicUrl: 'https://gw.example.test', bootstrapProfile: 'node', includeQr: false });
    assert.equal(viaReference.gatewayUrl, 'wss://gw.example.test');
    assert.equal(viaReference.profile, 'node');
    await c.close();
  });
});

describe('setup code expiry (manual clock)', () => {
  let tg: TestGateway;
  const clock = new ManualClock(Date.now());
  before(async () => {
    tg = await startTestGateway({ config: cfg, clock });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('an expired code gets AUTH_BOOTSTRAP_TOKEN_EXPIRED; --ttl sets the lifetime', async () => {
    const m = await mint(tg, { ttlMs: 60_000 });
    assert.equal(m.expiresAtMs, clock.now() + 60_000);
    clock.advance(60_000);
    const err = await expectRefused(redeem(tg, m.token, generateIdentity()), 'AUTH_BOOTSTRAP_TOKEN_EXPIRED');
    assert.equal(reasonOf(err), 'expired');
    assert.equal((await status(tg, m.setupId)).setup.status, 'expired');
  });

  test('the grace window for a repeat ends 10 minutes after the first redemption', async () => {
    const m = await mint(tg);
    const id = generateIdentity();
    (await redeem(tg, m.token, id)).close();
    clock.advance(10 * 60_000);
    (await redeem(tg, m.token, id)).close();
    clock.advance(1);
    await expectRefused(redeem(tg, m.token, id), 'AUTH_BOOTSTRAP_TOKEN_USED');
  });
});

describe('clawgate qr (CLI, end to end)', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: cfg });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('--json, --list and --revoke work against the running gateway', async () => {
    const minted = await cli(tg, 'qr', '--json', '--label', 'tablet', '--ttl', '30m');
    assert.equal(minted.code, 0, minted.stderr);
    const j = JSON.parse(minted.stdout) as Minted & { label: string };
    assert.equal(j.profile, 'operator');
    assert.equal(j.label, 'tablet');
    assert.equal(j.link, `oc-pair://${j.setupCode}`);
    assert.ok(Math.abs(j.expiresAtMs - (Date.now() + 30 * 60_000)) < 10_000);
    const decoded = decodeSetupCode(j.link);
    assert.ok(decoded.ok);
    assert.equal(decoded.payload.url, tg.url, '--url is the URL written into the code');
    assert.equal(parseToken('bootstrap', decoded.payload.bootstrapToken)?.id, j.setupId);

    let list = (await cliJson(tg, 'qr', '--list', '--json')) as {
      codes: Array<{ setupId: string; status: string; deviceId: string | null; label: string }>;
    };
    assert.equal(list.codes.find((c) => c.setupId === j.setupId)?.status, 'active');

    const id = generateIdentity();
    const conn = await redeem(tg, decoded.payload.bootstrapToken, id);
    await conn.close();
    list = await cliJson(tg, 'qr', '--list', '--json');
    const listed = list.codes.find((c) => c.setupId === j.setupId);
    assert.equal(listed?.status, 'redeemed');
    assert.equal(listed?.deviceId, id.deviceId);
    const human = await cli(tg, 'qr', '--list');
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`${j.setupId}\\s+tablet.*redeemed by test-phone ${id.deviceId} as operator`));

    const other = (await cliJson(tg, 'qr', '--json', '--profile', 'operator+node', '--scopes', 'operator.read', 'operator.talk')) as Minted;
    assert.deepEqual(other.roles, ['operator', 'node']);
    assert.deepEqual(other.scopes, ['operator.read', 'operator.talk']);
    const revoked = await cli(tg, 'qr', '--revoke', other.setupId);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /revoked setup code/);
    const again = await cli(tg, 'qr', '--revoke', other.setupId, '--json');
    assert.equal(JSON.parse(again.stdout).revoked, false);
    list = await cliJson(tg, 'qr', '--list', '--json');
    assert.equal(list.codes.find((c) => c.setupId === other.setupId)?.status, 'revoked');
    const otherToken = decodeSetupCode(other.setupCode);
    assert.ok(otherToken.ok);
    await expectRefused(redeem(tg, otherToken.payload.bootstrapToken, generateIdentity()), 'AUTH_BOOTSTRAP_TOKEN_REVOKED');

    const unknown = await cli(tg, 'qr', '--revoke', 'ffffffffffffffff');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown setupId/);
  });

  test('the human output shows the code, the link and a QR code', async () => {
    const r = await cli(tg, 'qr', '--profile', 'node');
    assert.equal(r.code, 0, r.stderr);
    const code = /^Code:\s+(\S+)$/m.exec(r.stdout)?.[1];
    const link = /^Link:\s+(\S+)$/m.exec(r.stdout)?.[1];
    assert.ok(code && link === `oc-pair://${code}`);
    assert.ok(decodeSetupCode(code).ok);
    assert.match(r.stdout, /pairs one device as node/);
    const qrLines = r.stdout.split('\n').filter((l) => /^[█▀▄ ]{40,}$/.test(l));
    assert.ok(qrLines.length >= 20, 'a QR code of half-block rows');
    assert.ok(
      qrLines.every((l) => l.length === qrLines[0]?.length),
      'a square block',
    );
  });

  test('refuses operator.pairing (and admin) with a clear usage error', async () => {
    for (const scope of ['operator.pairing', 'operator.admin']) {
      const r = await cli(tg, 'qr', '--scopes', `operator.read,${scope}`);
      assert.equal(r.code, 2);
      assert.match(r.stderr, new RegExp(`${scope.replace('.', '\\.')} is never handed out by a setup code`));
    }
    const bad = await cli(tg, 'qr', '--ttl', '10');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--ttl takes a duration/);
  });
});
