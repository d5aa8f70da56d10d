/**
 * Rate limits cannot be dodged by choosing another source address: failures count per address
 * bucket (all loopback is one, IPv6 per /64, IPv4-mapped IPv6 as IPv4), and the bounded key
 * table never forgets a lock before it ends.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ConnectError, connectGateway } from '../../src/client/connection.js';
import { ManualClock } from '../../src/core/env.js';
import { addressBucket, DEFAULT_RATE_LIMIT, FailureLimiter, LOOPBACK_BUCKET, limiterKey } from '../../src/core/ratelimit.js';
import { removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from '../helpers/gateway.js';

const PASSWORD = 'the-right-password';

describe('addressBucket', () => {
  test('the table: loopback is one bucket, IPv6 counts per /64, mapped IPv4 as IPv4, other IPv4 per address', () => {
    const table: Array<[string, string]> = [
      ['127.0.0.1', LOOPBACK_BUCKET],
      ['127.0.0.2', LOOPBACK_BUCKET],
      ['127.255.255.254', LOOPBACK_BUCKET],
      ['::1', LOOPBACK_BUCKET],
      ['0:0:0:0:0:0:0:1', LOOPBACK_BUCKET],
      ['[::1]', LOOPBACK_BUCKET],
      ['::ffff:127.0.0.9', LOOPBACK_BUCKET],
      ['::FFFF:7f00:1', LOOPBACK_BUCKET],
      ['192.0.2.7', '192.0.2.7'],
      ['192.0.2.8', '192.0.2.8'],
      ['::ffff:192.0.2.7', '192.0.2.7'],
      ['::ffff:c000:207', '192.0.2.7'],
      ['2001:db8:1:2::1', '2001:db8:1:2::/64'],
      ['2001:db8:1:2:ffff:ffff:ffff:fffe', '2001:db8:1:2::/64'],
      ['2001:0DB8:0001:0002:0000:0000:0000:0003', '2001:db8:1:2::/64'],
      ['2001:db8:1:3::1', '2001:db8:1:3::/64'],
      ['fe80::1%eth0', 'fe80:0:0:0::/64'],
      ['64:ff9b::192.0.2.7', '64:ff9b:0:0::/64'],
      ['::', '0:0:0:0::/64'],
      ['::2', '0:0:0:0::/64'],
      ['unknown', 'other:unknown'],
      ['1::2::3', 'other:1::2::3'],
      ['256.1.1.1', 'other:256.1.1.1'],
    ];
    for (const [address, bucket] of table) assert.equal(addressBucket(address), bucket, address);
    // The storage key joins kind and bucket; the kind keeps budgets apart.
    assert.equal(limiterKey('127.0.0.5', 'password'), limiterKey('::1', 'password'));
    assert.notEqual(limiterKey('127.0.0.5', 'password'), limiterKey('127.0.0.5', 'shared'));
  });
});

describe('FailureLimiter (injected clock)', () => {
  const T0 = 1_700_000_000_000;

  test('an IPv6 client rotating inside its /64 spends one budget; the next /64 has its own', () => {
    const clock = new ManualClock(T0);
    const limiter = new FailureLimiter(clock, { maxFailures: 5, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 100 });
    for (let i = 1; i <= 4; i++) assert.equal(limiter.fail(`2001:db8:aa:bb::${i.toString(16)}`, 'password'), 0);
    assert.equal(limiter.fail('2001:db8:aa:bb:1234:5678:9abc:def0', 'password'), 300_000, 'the fifth guess from the same /64 locks it');
    assert.equal(limiter.retryAfterMs('2001:db8:aa:bb::ffff', 'password'), 300_000, 'any address of the /64 is locked');
    assert.equal(limiter.retryAfterMs('2001:db8:aa:bc::1', 'password'), 0, 'the neighbouring /64 is not');
  });

  test('loopback in all its spellings spends one budget', () => {
    const clock = new ManualClock(T0);
    const limiter = new FailureLimiter(clock, { maxFailures: 3, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 100 });
    assert.equal(limiter.fail('127.0.0.2', 'shared'), 0);
    assert.equal(limiter.fail('::1', 'shared'), 0);
    assert.equal(limiter.fail('::ffff:127.0.0.40', 'shared'), 300_000);
    assert.ok(limiter.retryAfterMs('127.0.0.1', 'shared') > 0);
  });

  test('a flood of new keys cannot evict a locked key; the oldest unlocked key goes first', () => {
    const clock = new ManualClock(T0);
    const limiter = new FailureLimiter(clock, { maxFailures: 2, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 4 });
    limiter.fail('198.51.100.1', 'password');
    assert.equal(limiter.fail('198.51.100.1', 'password'), 300_000, 'the guesser is locked');
    limiter.fail('198.51.100.2', 'password'); // counting: 1 failure
    clock.advance(1);
    limiter.fail('198.51.100.3', 'password'); // counting: 1 failure
    clock.advance(1);
    assert.equal(limiter.fail('198.51.100.2', 'password'), 300_000, 'the second failure of .2 locks it');
    limiter.fail('198.51.100.4', 'password');
    assert.equal(limiter.size, 4);
    // The table is full: .1 and .2 locked, .3 and .4 counting (.3 failed least recently).
    for (let i = 10; i < 200; i++) {
      limiter.fail(`203.0.113.${i}`, 'password');
      assert.ok(limiter.size <= 4, `the table stays bounded (size ${limiter.size})`);
      assert.ok(limiter.retryAfterMs('198.51.100.1', 'password') > 0, `lock of .1 survives new key ${i}`);
      assert.ok(limiter.retryAfterMs('198.51.100.2', 'password') > 0, `lock of .2 survives new key ${i}`);
    }
    // The first new key evicted .3, the oldest unlocked; .4 went next.
    limiter.fail('198.51.100.3', 'password');
    assert.equal(limiter.retryAfterMs('198.51.100.3', 'password'), 0, '.3 starts over with one failure, not locked');
  });

  test('when every key is locked, a new key is refused (fail closed) until the first lock ends', () => {
    const clock = new ManualClock(T0);
    const limiter = new FailureLimiter(clock, { maxFailures: 1, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 3 });
    assert.equal(limiter.fail('198.51.100.1', 'password'), 300_000);
    clock.advance(10_000);
    assert.equal(limiter.fail('198.51.100.2', 'password'), 300_000);
    assert.equal(limiter.fail('198.51.100.3', 'password'), 300_000);
    assert.equal(limiter.size, 3);
    // A newcomer: no room and nothing evictable. It is refused for as long as the first lock lasts.
    assert.equal(limiter.retryAfterMs('192.0.2.50', 'password'), 290_000);
    assert.equal(limiter.fail('192.0.2.50', 'password'), 0, 'not recorded');
    assert.equal(limiter.size, 3, 'no lock was dropped for it');
    assert.ok(limiter.retryAfterMs('198.51.100.1', 'password') > 0);
    // The first lock ends: its slot frees, and the newcomer is judged again.
    clock.advance(290_000);
    assert.equal(limiter.retryAfterMs('198.51.100.1', 'password'), 0);
    assert.equal(limiter.retryAfterMs('192.0.2.50', 'password'), 0);
    assert.ok(limiter.retryAfterMs('198.51.100.2', 'password') > 0, 'the later locks still hold');
  });

  test('a success clears a counting key; the sliding window forgets old failures', () => {
    const clock = new ManualClock(T0);
    const limiter = new FailureLimiter(clock, { maxFailures: 3, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 10 });
    limiter.fail('192.0.2.1', 'shared');
    limiter.fail('192.0.2.1', 'shared');
    limiter.succeed('192.0.2.1', 'shared');
    assert.equal(limiter.fail('192.0.2.1', 'shared'), 0);
    assert.equal(limiter.fail('192.0.2.1', 'shared'), 0);
    clock.advance(60_000);
    assert.equal(limiter.fail('192.0.2.1', 'shared'), 0, 'the two earlier failures left the window');
  });
});

/** One wrong-password guess from `localAddress`; the refusal's details.code. */
async function guess(tg: TestGateway, localAddress: string | undefined, password: string, headers?: Record<string, string>): Promise<string> {
  try {
    const c = await connectGateway({
      url: tg.url,
      identity: null,
      client: { id: 'cli', mode: 'cli' },
      scopes: ['operator.read'],
      auth: { password },
      ...(localAddress ? { localAddress } : {}),
      ...(headers ? { headers } : {}),
    });
    await c.close();
    return 'ADMITTED';
  } catch (err) {
    assert.ok(err instanceof ConnectError, String(err));
    return err.detailCode ?? `no code (${err.message})`;
  }
}

describe('a real gateway', () => {
  test('a guesser rotating loopback source addresses (127.0.0.2 … 127.0.0.40) is locked after the documented 10 failures', async (t) => {
    const tg = await startTestGateway({ store: 'memory', config: { password: PASSWORD } });
    t.after(async () => {
      await tg.stop();
      removeDir(tg.stateDir);
    });
    assert.equal(tg.gateway.config.rateLimit.maxFailures, DEFAULT_RATE_LIMIT.maxFailures);
    assert.equal(DEFAULT_RATE_LIMIT.maxFailures, 10, 'PROTOCOL.md §14 documents 10');
    const outcomes: string[] = [];
    for (let i = 2; i <= 40; i++) outcomes.push(await guess(tg, `127.0.0.${i}`, `wrong-${i}`));
    assert.deepEqual(outcomes.slice(0, 10), new Array(10).fill('AUTH_PASSWORD_MISMATCH'), 'the first 10 guesses are judged');
    assert.deepEqual(outcomes.slice(10), new Array(29).fill('AUTH_RATE_LIMITED'), 'every later one, from any loopback address, is limited');
    // Even the right password, from an address that never guessed, waits for the lockout.
    assert.equal(await guess(tg, '127.0.0.77', PASSWORD), 'AUTH_RATE_LIMITED');
  });

  test('on a dual-stack listener, ::1 and IPv4-mapped 127.x share the loopback budget', async (t) => {
    const tg = await startTestGateway({ store: 'memory', host: '::', config: { password: PASSWORD, rateLimit: { ...DEFAULT_RATE_LIMIT, maxFailures: 4 } } });
    t.after(async () => {
      await tg.stop();
      removeDir(tg.stateDir);
    });
    const v6url = `ws://[::1]:${tg.server.port}`;
    const v4url = `ws://127.0.0.1:${tg.server.port}`;
    const on = (url: string): TestGateway => ({ ...tg, url });
    assert.equal(await guess(on(v6url), '::1', 'wrong-a'), 'AUTH_PASSWORD_MISMATCH');
    assert.equal(await guess(on(v4url), '127.0.0.3', 'wrong-b'), 'AUTH_PASSWORD_MISMATCH', 'arrives as ::ffff:127.0.0.3');
    assert.equal(await guess(on(v6url), '::1', 'wrong-c'), 'AUTH_PASSWORD_MISMATCH');
    assert.equal(await guess(on(v4url), '127.0.0.4', 'wrong-d'), 'AUTH_PASSWORD_MISMATCH');
    assert.equal(await guess(on(v4url), '127.0.0.5', PASSWORD), 'AUTH_RATE_LIMITED');
    assert.equal(await guess(on(v6url), '::1', PASSWORD), 'AUTH_RATE_LIMITED');
  });

  test('behind a trusted proxy, clients rotating inside one IPv6 /64 are locked together; another /64 is not', async (t) => {
    const PROXY = '127.0.0.2';
    const tg = await startTestGateway({
      store: 'memory',
      config: { password: PASSWORD, trustedProxies: [PROXY], rateLimit: { ...DEFAULT_RATE_LIMIT, maxFailures: 5 } },
    });
    t.after(async () => {
      await tg.stop();
      removeDir(tg.stateDir);
    });
    const from = (client: string) => ({ 'X-Forwarded-For': client });
    const outcomes: string[] = [];
    for (let i = 1; i <= 8; i++) outcomes.push(await guess(tg, PROXY, `wrong-${i}`, from(`2001:db8:feed:1:${i.toString(16)}::${i}`)));
    assert.deepEqual(outcomes, [...new Array(5).fill('AUTH_PASSWORD_MISMATCH'), ...new Array(3).fill('AUTH_RATE_LIMITED')]);
    assert.equal(await guess(tg, PROXY, PASSWORD, from('2001:db8:feed:1:ffff:ffff:ffff:ffff')), 'AUTH_RATE_LIMITED');
    assert.equal(await guess(tg, PROXY, PASSWORD, from('2001:db8:feed:2::1')), 'ADMITTED', 'the next /64 is another client');
    // IPv4-mapped forwarded addresses count as the IPv4 address they carry.
    for (let i = 0; i < 5; i++) assert.equal(await guess(tg, PROXY, `v4-${i}`, from(i % 2 ? '::ffff:198.51.100.9' : '198.51.100.9')), 'AUTH_PASSWORD_MISMATCH');
    assert.equal(await guess(tg, PROXY, PASSWORD, from('::ffff:c633:6409')), 'AUTH_RATE_LIMITED');
  });
});

describe('a real gateway with a full table', () => {
  test('when every tracked key is locked, a new client is refused as rate-limited (fail closed) and no lock is evicted', async (t) => {
    const PROXY = '127.0.0.2';
    const tg = await startTestGateway({
      store: 'memory',
      config: { password: PASSWORD, trustedProxies: [PROXY], rateLimit: { maxFailures: 1, windowMs: 60_000, lockoutMs: 300_000, maxKeys: 2 } },
    });
    t.after(async () => {
      await tg.stop();
      removeDir(tg.stateDir);
    });
    const from = (client: string) => ({ 'X-Forwarded-For': client });
    assert.equal(await guess(tg, PROXY, 'wrong', from('198.51.100.1')), 'AUTH_PASSWORD_MISMATCH');
    assert.equal(await guess(tg, PROXY, 'wrong', from('198.51.100.2')), 'AUTH_PASSWORD_MISMATCH');
    // Both keys are locked and the table holds two: a third client cannot get in, nor evict them.
    assert.equal(await guess(tg, PROXY, PASSWORD, from('203.0.113.3')), 'AUTH_RATE_LIMITED');
    assert.equal(await guess(tg, PROXY, PASSWORD, from('198.51.100.1')), 'AUTH_RATE_LIMITED');
    // The table holds every credential kind: a newcomer's gateway-token attempt is a new key too.
    const byToken = await connectGateway({
      url: tg.url,
      identity: null,
      client: { id: 'cli', mode: 'cli' },
      auth: { token: TEST_TOKEN },
      localAddress: PROXY,
      headers: from('203.0.113.3'),
    }).then(
      () => assert.fail('admitted while the table is full of locks'),
      (err: ConnectError) => err,
    );
    assert.equal(byToken.detailCode, 'AUTH_RATE_LIMITED');
    const retryAfterMs = byToken.error?.retryAfterMs ?? 0;
    assert.ok(retryAfterMs > 0 && retryAfterMs <= 300_000, `retryAfterMs ${retryAfterMs}: until the first lock ends`);
  });
});

/** Root and iproute2 give a client real IPv6 addresses of its own, in a namespace. */
function netnsUnavailable(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for a network namespace';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
  } catch {
    return 'ip netns is not available';
  }
  return false;
}

describe('real IPv6 source addresses (network namespace)', { skip: netnsUnavailable() }, () => {
  const run = promisify(execFile);
  const tag = `${process.pid % 10000}`;
  const ns = `cgr${tag}`;
  const hostIf = `cgrh${tag}`;
  const nsIf = `cgrn${tag}`;
  // A ULA prefix of our own (fdc1:<pid>:…), unlike anything else on this host.
  const prefix = `fdc1:${(process.pid % 0xffff).toString(16)}:0`;
  const hostAddr = `${prefix}:1::1`;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let tg: TestGateway;

  before(async () => {
    ip('netns', 'add', ns);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    for (const net of ['1', '2']) ip('-6', 'addr', 'add', `${prefix}:${net}::1/64`, 'dev', hostIf, 'nodad');
    ip('link', 'set', hostIf, 'up');
    // The guesser holds many addresses of one /64, and one address of the next /64.
    for (let i = 2; i <= 13; i++) ip('netns', 'exec', ns, 'ip', '-6', 'addr', 'add', `${prefix}:1::${i.toString(16)}/64`, 'dev', nsIf, 'nodad');
    ip('netns', 'exec', ns, 'ip', '-6', 'addr', 'add', `${prefix}:2::2/64`, 'dev', nsIf, 'nodad');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up');
    ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    tg = await startTestGateway({ store: 'memory', host: hostAddr, config: { password: PASSWORD } });
  });
  after(async () => {
    await tg?.stop();
    if (tg) removeDir(tg.stateDir);
    try {
      ip('netns', 'del', ns); // takes the veth pair with it
    } catch {
      // already gone
    }
    try {
      ip('link', 'del', hostIf);
    } catch {
      // deleted with the namespace
    }
  });

  async function guessFrom(from: string[], password: string): Promise<string[]> {
    const script = join(process.cwd(), 'dist', 'test', 'security', 'ipv6-guesser.js');
    const r = await run('ip', ['netns', 'exec', ns, process.execPath, script, JSON.stringify({ url: tg.url, password, from })]);
    return JSON.parse(r.stdout.trim().split('\n').pop() as string) as string[];
  }

  test('a guesser rotating its source address inside one /64 is locked after 10 failures; its next /64 is another bucket', async () => {
    const from = Array.from({ length: 12 }, (_, i) => `${prefix}:1::${(i + 2).toString(16)}`);
    const outcomes = await guessFrom(from, 'wrong');
    assert.deepEqual(outcomes, [...new Array(10).fill('AUTH_PASSWORD_MISMATCH'), 'AUTH_RATE_LIMITED', 'AUTH_RATE_LIMITED']);
    assert.deepEqual(await guessFrom([`${prefix}:1::d`], PASSWORD), ['AUTH_RATE_LIMITED'], 'the right password waits too');
    assert.deepEqual(await guessFrom([`${prefix}:2::2`], PASSWORD), ['ADMITTED'], 'another /64 is another client');
  });
});
