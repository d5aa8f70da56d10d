/**
 * Remote gateways without a reverse proxy: client attribution from forwarded headers,
 * native TLS with the certificate fingerprint in setup codes and pinning clients, the context
 * path, the public URL, `clawgate doctor` and `clawgate gateway install-service --print`.
 * Real sockets, a real SQLite store, real certificates made by openssl, the real CLI binary.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import { ConnectError, connectGateway, type GatewayConnection, generateIdentity, TlsPinError } from '../src/client/connection.js';
import type { TlsMaterial } from '../src/core/config.js';
import { attribute, hopAddress, ProxyTrust, parseForwarded } from '../src/server/proxy.js';
import { certFacts, ensureSelfSignedCert } from '../src/server/tls.js';
import { asOwner, removeDir, runClawgate, startTestGateway, type TestGateway } from './helpers/gateway.js';
import { spawnGateway } from './helpers/process.js';
import { RawClient } from './helpers/raw.js';
import { missingFile, skipUnlessPresent } from './helpers/strict.js';

const run = promisify(execFile);
const BIN = join(process.cwd(), 'bin', 'clawgate.js');

const clawgate = runClawgate;

function tlsMaterial(dir: string): TlsMaterial {
  const made = ensureSelfSignedCert(dir);
  return { certPem: readFileSync(made.certPath, 'utf8'), keyPem: readFileSync(made.keyPath, 'utf8'), certPath: made.certPath, selfSigned: true };
}

describe('client attribution (forwarded headers)', () => {
  const trust = new ProxyTrust(['127.0.0.2', '10.0.0.0/8', '2001:db8:1::/48']);

  test('no forwarded headers: the socket peer, local only on loopback', () => {
    assert.deepEqual(attribute('127.0.0.1', {}, trust, 'refuse'), { ok: true, address: '127.0.0.1', directLocal: true, proxied: false });
    assert.deepEqual(attribute('::ffff:192.0.2.4', {}, trust, 'refuse'), { ok: true, address: '192.0.2.4', directLocal: false, proxied: false });
    assert.equal((attribute('::1', {}, trust, 'refuse') as { directLocal: boolean }).directLocal, true);
  });

  test('any forwarding header from an untrusted peer is refused with 403, or ignored (never local) when configured', () => {
    for (const h of [
      { 'x-forwarded-for': '127.0.0.1' },
      { forwarded: 'for=127.0.0.1' },
      { 'x-real-ip': '127.0.0.1' },
      { 'x-forwarded-host': 'localhost' },
      { 'x-forwarded-proto': 'https' },
    ]) {
      const r = attribute('127.0.0.1', h, trust, 'refuse');
      assert.equal(r.ok, false, JSON.stringify(h));
      if (!r.ok) {
        assert.equal(r.status, 403);
        assert.equal(r.type, 'proxy_attribution_required');
        assert.match(r.message, /not a trusted proxy.*trustedProxies/);
      }
      assert.deepEqual(attribute('127.0.0.1', h, trust, 'ignore'), { ok: true, address: '127.0.0.1', directLocal: false, proxied: false });
    }
  });

  test('X-Forwarded-For through trusted proxies: the right-most untrusted hop, never local', () => {
    const a = (xff: string, peer = '127.0.0.2') => attribute(peer, { 'x-forwarded-for': xff }, trust, 'refuse');
    assert.deepEqual(a('203.0.113.9'), { ok: true, address: '203.0.113.9', directLocal: false, proxied: true });
    // The client prepended a lie; the proxy appended the truth: the truth wins.
    assert.equal((a('127.0.0.1, 203.0.113.9') as { address: string }).address, '203.0.113.9');
    // Chained proxies (10/8 trusted) are skipped.
    assert.equal((a('198.51.100.7, 10.1.2.3, 10.9.9.9', '10.0.0.1') as { address: string }).address, '198.51.100.7');
    // A forged loopback address through the proxy is recorded as such, but is not local.
    assert.deepEqual(a('127.0.0.1'), { ok: true, address: '127.0.0.1', directLocal: false, proxied: true });
    // Ports, brackets and junk.
    assert.equal((a('198.51.100.1:5555') as { address: string }).address, '198.51.100.1');
    assert.equal((a('[2001:db8::5]:443') as { address: string }).address, '2001:db8::5');
    assert.equal((a('not-an-ip') as { address: string }).address, 'unknown');
    // All hops trusted: the left-most (furthest) one.
    assert.equal((a('10.3.3.3, 10.4.4.4') as { address: string }).address, '10.3.3.3');
    // IPv4-mapped peer addresses match IPv4 entries.
    assert.equal(a('203.0.113.1', '::ffff:127.0.0.2').ok, true);
  });

  test('RFC 7239 Forwarded: quoted IPv6 with port, proto and host, obfuscated and unknown nodes', () => {
    const f = 'for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711";proto=https;host="gw.example.test"';
    assert.deepEqual(parseForwarded(f), [
      { for: '192.0.2.60', proto: 'http', by: '203.0.113.43' },
      { for: '[2001:db8:cafe::17]:4711', proto: 'https', host: 'gw.example.test' },
    ]);
    assert.deepEqual(attribute('127.0.0.2', { forwarded: f }, trust, 'refuse'), {
      ok: true,
      address: '2001:db8:cafe::17',
      directLocal: false,
      proxied: true,
      forwardedProto: 'https',
      forwardedHost: 'gw.example.test',
    });
    assert.equal(hopAddress('_hidden'), 'unknown');
    assert.equal(hopAddress('unknown'), 'unknown');
    assert.equal((attribute('127.0.0.2', { forwarded: 'for=unknown' }, trust, 'refuse') as { address: string }).address, 'unknown');
    // X-Forwarded-For wins over a client-supplied Forwarded the proxy passed through.
    const both = attribute('127.0.0.2', { forwarded: 'for=127.0.0.1', 'x-forwarded-for': '198.51.100.99', 'x-forwarded-proto': 'https' }, trust, 'refuse');
    assert.deepEqual(both, { ok: true, address: '198.51.100.99', directLocal: false, proxied: true, forwardedProto: 'https' });
    // Only a proto header: the client is the proxy's peer address, and it is not local.
    assert.deepEqual(attribute('127.0.0.2', { 'x-forwarded-proto': 'https' }, trust, 'refuse'), {
      ok: true,
      address: '127.0.0.2',
      directLocal: false,
      proxied: true,
      forwardedProto: 'https',
    });
  });

  test('trustedProxies entries are validated', () => {
    assert.throws(() => new ProxyTrust(['nginx']), /not an IP address or CIDR/);
    assert.throws(() => new ProxyTrust(['10.0.0.0/33']), /bad prefix/);
    assert.throws(() => new ProxyTrust(['10.0.0.0/8/1']), /not an IP address or CIDR/);
    assert.ok(new ProxyTrust(['::1', 'fd00::/8']).trusts('fd12::3'));
  });
});

describe('native TLS', () => {
  let dirA: string;
  let dirB: string;
  let tg: TestGateway;
  let other: TestGateway;
  let fingerprint: string;

  before(async () => {
    dirA = mkdtempSync(join(tmpdir(), 'clawgate-tls-a-'));
    dirB = mkdtempSync(join(tmpdir(), 'clawgate-tls-b-'));
    const a = tlsMaterial(dirA);
    fingerprint = certFacts(a.certPem).fingerprint;
    tg = await startTestGateway({ stateDir: dirA, config: { tls: a } });
    other = await startTestGateway({ stateDir: dirB, config: { tls: tlsMaterial(dirB) } });
  });
  after(async () => {
    await tg.stop();
    await other.stop();
    removeDir(dirA);
    removeDir(dirB);
  });

  async function mint(g: TestGateway, fp: string): Promise<{ setupCode: string; tlsFingerprint?: string; gatewayUrl: string }> {
    const c = await connectGateway({ url: g.url, ...asOwner(g), tlsFingerprint: fp, client: { id: 'cli', mode: 'cli' } });
    try {
      return await c.request('device.pair.setupCode', {});
    } finally {
      await c.close();
    }
  }

  test('the gateway listens on wss:// and a setup code carries its certificate fingerprint', async () => {
    assert.match(tg.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(tg.server.tlsFingerprint, fingerprint);
    const m = await mint(tg, fingerprint);
    assert.equal(m.gatewayUrl, tg.url);
    assert.equal(m.tlsFingerprint, fingerprint);
    const decoded = decodeSetupCode(m.setupCode);
    assert.ok(decoded.ok);
    assert.equal(decoded.payload.url, tg.url);
    assert.equal(decoded.payload.tlsFingerprint, fingerprint);
  });

  test('a client pinned to the fingerprint from the code redeems it; one facing another certificate refuses before sending anything', async () => {
    const m = await mint(tg, fingerprint);
    const code = decodeSetupCode(m.setupCode);
    assert.ok(code.ok);
    const { url, bootstrapToken, tlsFingerprint } = code.payload;
    const identity = generateIdentity();
    const phone = await connectGateway({
      url,
      tlsFingerprint,
      identity,
      scopes: ['operator.read'],
      client: { id: 'test', mode: 'test', displayName: 'pinned phone' },
      auth: { bootstrapToken },
    });
    assert.equal(phone.hello.auth.role, 'operator');
    assert.ok(phone.hello.auth.deviceToken);
    await phone.close();

    // The same pin against a gateway with a different certificate (think: DNS or a proxy changed
    // underneath the phone): refused with a clear error, no connect frame ever sent.
    const before = (await other.store.listAudit({ limit: 10_000 })).length;
    const err = await connectGateway({ url: other.url, tlsFingerprint, identity, client: { id: 'test', mode: 'test' }, auth: { bootstrapToken } }).then(
      () => assert.fail('connected despite a certificate mismatch'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TlsPinError, String(err));
    assert.equal(err.expected, fingerprint);
    assert.equal(err.actual, other.server.tlsFingerprint);
    assert.match(err.message, /TLS certificate mismatch at wss:\/\/127\.0\.0\.1:\d+: expected SHA-256 [0-9a-f]{64}, the server presented [0-9a-f]{64}/);
    assert.equal((await other.store.listAudit({ limit: 10_000 })).length, before, 'the other gateway saw no connect');
  });

  test('without a pin, a self-signed gateway is refused by certificate verification, with a hint', async () => {
    const err = await connectGateway({ url: tg.url, ...asOwner(tg) }).then(
      () => assert.fail('connected to a self-signed certificate without a pin'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConnectError);
    assert.match(err.message, /self-signed certificate.*pin its fingerprint/);
  });

  test('a pin with a ws:// URL is refused instead of silently dropping TLS', async () => {
    const err = await connectGateway({ url: tg.url.replace('wss:', 'ws:'), tlsFingerprint: fingerprint }).then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof TlsPinError);
    assert.match(err.message, /not a wss:\/\/ URL/);
  });

  test('CLI: --tls-fingerprint pins; a wrong one fails with the mismatch message', async () => {
    const ok = await clawgate([
      'call',
      'health',
      '--url',
      tg.url,
      '--state-dir',
      tg.stateDir,
      '--tls-fingerprint',
      fingerprint.toUpperCase().replace(/(..)(?!$)/g, '$1:'),
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).ok, true);
    const bad = await clawgate(['call', 'health', '--url', tg.url, '--state-dir', tg.stateDir, '--tls-fingerprint', other.server.tlsFingerprint as string]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /TLS certificate mismatch/);
    const junk = await clawgate(['call', 'health', '--url', tg.url, '--state-dir', tg.stateDir, '--tls-fingerprint', 'abc']);
    assert.equal(junk.code, 2);
  });
});

describe('context path and public URL', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: { contextPath: '/cg', publicUrl: 'wss://gw.example.test/cg' } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  test('WebSocket only at the context path; health at the root and under it', async () => {
    assert.match(tg.url, /^ws:\/\/127\.0\.0\.1:\d+\/cg$/);
    const base = tg.url.replace(/^ws/, 'http').replace(/\/cg$/, '');
    await assert.rejects(RawClient.open(`${base.replace(/^http/, 'ws')}/`), (e: Error & { statusCode?: number }) => e.statusCode === 404);
    await assert.rejects(RawClient.open(`${base.replace(/^http/, 'ws')}/cgx`), (e: Error & { statusCode?: number }) => e.statusCode === 404);
    const c = await RawClient.open(tg.url);
    assert.ok((await c.challenge()).nonce);
    c.ws.close();
    assert.equal((await fetch(`${base}/cg/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
  });

  test('setup codes advertise the public URL (and no fingerprint: the gateway does not serve TLS itself)', async () => {
    const c: GatewayConnection = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    const m = await c.request<{ setupCode: string; gatewayUrl: string; urlSource: string; tlsFingerprint?: string }>('device.pair.setupCode', {});
    await c.close();
    assert.equal(m.gatewayUrl, 'wss://gw.example.test/cg');
    assert.equal(m.urlSource, 'gateway.publicUrl');
    assert.equal(m.tlsFingerprint, undefined);
    const d = decodeSetupCode(m.setupCode);
    assert.ok(d.ok);
    assert.equal(d.payload.url, 'wss://gw.example.test/cg');
    assert.equal(d.payload.tlsFingerprint, undefined);
  });
});

/** Start `clawgate gateway run` as a child process; resolves with its listening URL. */
async function runGateway(args: string[]): Promise<{ url: string; stop(): Promise<void> }> {
  const gw = await spawnGateway(args, { startupTimeoutMs: 15_000 });
  return {
    url: gw.url,
    async stop() {
      await gw.stop();
    },
  };
}

interface DoctorReport {
  ok: boolean;
  checks: Array<{ name: string; status: string; message: string }>;
}

describe('clawgate doctor', () => {
  let dir: string;
  let gw: Awaited<ReturnType<typeof runGateway>>;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'clawgate-doctor-'));
    gw = await runGateway(['--state-dir', dir, '--tls', '--context-path', '/cg']);
  });
  after(async () => {
    await gw.stop();
    removeDir(dir);
  });

  const doctor = async (...args: string[]) => {
    const r = await clawgate(['doctor', '--state-dir', dir, '--json', '--timeout', '3000', ...args]);
    return { code: r.code, report: JSON.parse(r.stdout) as DoctorReport, stderr: r.stderr };
  };
  const check = (r: DoctorReport, name: string) => r.checks.filter((c) => c.name === name);

  test('a healthy TLS gateway: every check passes, and the advertised URL answers a challenge through the pinned certificate', async () => {
    assert.match(gw.url, /^wss:\/\/127\.0\.0\.1:\d+\/cg$/);
    const { code, report } = await doctor('--tls', '--context-path', '/cg', '--public-url', gw.url);
    assert.equal(code, 0, JSON.stringify(report));
    assert.equal(report.ok, true);
    for (const name of ['config', 'credentials', 'store', 'tls-expiry', 'listening', 'advertised-url']) {
      assert.deepEqual(
        check(report, name).map((c) => c.status),
        ['ok'],
        name,
      );
    }
    assert.match(check(report, 'tls-expiry')[0]?.message ?? '', /valid for 82\d more days/);
  });

  test('a public URL that does not reach the gateway fails, with the reason', async () => {
    const { code, report } = await doctor('--public-url', 'ws://127.0.0.1:9/cg');
    assert.equal(code, 1);
    assert.equal(report.ok, false);
    const [adv] = check(report, 'advertised-url');
    assert.equal(adv?.status, 'fail');
    assert.match(adv?.message ?? '', /does not reach the gateway: .*ECONNREFUSED/);
    // The wrong path on the right server is caught too (404 from the context-path check).
    const wrongPath = await doctor('--tls', '--public-url', gw.url.replace(/\/cg$/, '/other'));
    assert.match(check(wrongPath.report, 'advertised-url')[0]?.message ?? '', /HTTP 404/);
  });

  test('trustedProxies sanity: wide ranges and loopback are warned about; a broken entry fails', async () => {
    const wide = await doctor('--trusted-proxy', '0.0.0.0/0');
    const warnings = check(wide.report, 'trusted-proxies');
    assert.ok(warnings.some((c) => c.status === 'warn' && /very wide range/.test(c.message)));
    assert.ok(warnings.some((c) => c.status === 'warn' && /covers loopback/.test(c.message)));
    const narrow = await doctor('--trusted-proxy', '127.0.0.2');
    assert.ok(check(narrow.report, 'trusted-proxies').some((c) => /covers loopback/.test(c.message)));
    const good = await doctor('--trusted-proxy', '192.0.2.10');
    assert.deepEqual(
      check(good.report, 'trusted-proxies').map((c) => c.status),
      ['ok'],
    );
    const broken = await doctor('--trusted-proxy', 'nginx');
    assert.equal(broken.code, 1);
    assert.match(check(broken.report, 'config')[0]?.message ?? '', /not an IP address or CIDR/);
  });

  test('TLS expiry: a certificate close to expiry warns; a key that does not match fails', async () => {
    const d = mkdtempSync(join(tmpdir(), 'clawgate-cert-'));
    try {
      const { certPath: cert, keyPath: key } = ensureSelfSignedCert(d, [], 5);
      const soon = await doctor('--tls-cert', cert, '--tls-key', key);
      const [exp] = check(soon.report, 'tls-expiry');
      assert.equal(exp?.status, 'warn');
      assert.match(exp?.message ?? '', /expires in [45] days/);
      const mismatched = await doctor('--tls-cert', cert, '--tls-key', join(dir, 'tls', 'key.pem'));
      assert.equal(mismatched.code, 1);
      assert.ok(check(mismatched.report, 'tls').some((c) => c.status === 'fail' && /does not belong to the certificate/.test(c.message)));
    } finally {
      removeDir(d);
    }
  });

  test('commands on the gateway host pin the running gateway certificate by themselves; qr shows the pin', async () => {
    const health = await clawgate(['call', 'health', '--state-dir', dir]);
    assert.equal(health.code, 0, health.stderr);
    const qr = await clawgate(['qr', '--state-dir', dir, '--json']);
    assert.equal(qr.code, 0, qr.stderr);
    const minted = JSON.parse(qr.stdout) as { gatewayUrl: string; tlsFingerprint?: string; setupCode: string };
    const runtime = JSON.parse(readFileSync(join(dir, 'gateway.json'), 'utf8')) as { tlsFingerprint: string };
    assert.equal(minted.gatewayUrl, gw.url);
    assert.equal(minted.tlsFingerprint, runtime.tlsFingerprint);
    assert.equal(minted.tlsFingerprint, certFacts(readFileSync(join(dir, 'tls', 'cert.pem'), 'utf8')).fingerprint);
    const human = await clawgate(['qr', '--state-dir', dir]);
    assert.match(human.stdout, new RegExp(`^TLS pin: {2}SHA-256 ${runtime.tlsFingerprint} `, 'm'));
  });

  test('config file type errors are usage errors', async () => {
    const file = join(dir, 'bad-config.json');
    writeFileSync(file, JSON.stringify({ gateway: { publicUrl: 42 } }));
    const r = await clawgate(['doctor', '--state-dir', dir, '--config', file, '--json']);
    assert.equal(r.code, 1);
    assert.match((JSON.parse(r.stdout) as DoctorReport).checks[0]?.message ?? '', /gateway\.publicUrl must be a string/);
    const run2 = await clawgate(['gateway', 'run', '--state-dir', dir, '--config', file]);
    assert.equal(run2.code, 2);
    assert.match(run2.stderr, /gateway\.publicUrl must be a string/);
  });

  test('human output names every check', async () => {
    const r = await clawgate(['doctor', '--state-dir', dir, '--tls']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok {4}config/m);
    assert.match(r.stdout, /^ok {4}listening +wss:\/\//m);
    assert.match(r.stdout, /doctor: no failures/);
  });
});

describe('clawgate gateway install-service --print', () => {
  test('prints a systemd unit that runs this gateway with the given flags', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-unit-'));
    try {
      const unitFor = (publicUrl: string) =>
        clawgate(['gateway', 'install-service', '--print', '--state-dir', dir, '--tls', '--public-url', publicUrl, '--trusted-proxy', '127.0.0.2']);
      const r = await unitFor('ftp://gw.example.test/cg');
      assert.equal(r.code, 2, 'a public URL that is not ws(s)/http(s) is refused');
      const ok = await unitFor('https://gw.example.test/cg');
      assert.equal(ok.code, 0, ok.stderr);
      const unit = ok.stdout;
      assert.match(unit, /^\[Unit\]$/m);
      assert.match(unit, /^\[Install\]\nWantedBy=multi-user\.target$/m);
      const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
      assert.equal(exec, `${process.execPath} ${BIN} gateway run --state-dir ${dir} --public-url https://gw.example.test/cg --tls --trusted-proxy 127.0.0.2`);
      assert.match(unit, new RegExp(`^ReadWritePaths=${dir}$`, 'm'));
      assert.match(unit, /^KillSignal=SIGTERM$/m);
      const secret = await clawgate(['gateway', 'install-service', '--print', '--token', 'cgs_x']);
      assert.equal(secret.code, 2);
      assert.match(secret.stderr, /visible in the unit/);
      const noPrint = await clawgate(['gateway', 'install-service']);
      assert.equal(noPrint.code, 2);
      assert.match(noPrint.stderr, /only prints the unit/);
    } finally {
      removeDir(dir);
    }
  });

  test('systemd accepts the printed unit (systemd-analyze verify)', {
    skip: skipUnlessPresent(missingFile('/usr/bin/systemd-analyze', 'package systemd; scripts/system-deps.sh')),
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'clawgate-unit-'));
    try {
      const ok = await clawgate(['gateway', 'install-service', '--print', '--state-dir', dir, '--tls', '--public-url', 'https://gw.example.test/cg']);
      assert.equal(ok.code, 0, ok.stderr);
      const file = join(dir, 'clawgate.service');
      writeFileSync(file, ok.stdout);
      const v = await run('/usr/bin/systemd-analyze', ['verify', file]).then(
        (x) => ({ code: 0, stderr: x.stderr }),
        (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
      );
      assert.equal(v.code, 0, v.stderr);
      assert.doesNotMatch(v.stderr, /clawgate\.service:\d+/, 'no complaints about the unit');
    } finally {
      removeDir(dir);
    }
  });
});
