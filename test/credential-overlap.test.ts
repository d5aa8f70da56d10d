/**
 * A device-token connect reads its token while the failure budget is checked: on a networked
 * store (PostgreSQL) the two are one round trip, not two in a row. Proven with a budget check
 * that answers only once the token read has started (a connect that waited for the check before
 * reading would stall), over a real socket and a real SQLite store; and a locked address is
 * refused whatever the read found.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connectGateway, generateIdentity } from '../src/client/connection.js';
import { systemClock } from '../src/core/env.js';
import { type AuthLimiter, type CredentialKind, DEFAULT_RATE_LIMIT, FailureLimiter } from '../src/core/ratelimit.js';
import { expectRefused, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

/** The gateway's own limiter, whose device-token checks hold their answer until `release`. */
class HeldCheckLimiter implements AuthLimiter {
  private readonly inner = new FailureLimiter(systemClock, DEFAULT_RATE_LIMIT);
  readonly policy = DEFAULT_RATE_LIMIT;
  release: (() => void) | null = null;
  lockedForTest = false;
  private gate: Promise<void> | null = null;
  /** Whether the held check was released by the token read (false: by the fallback). */
  releasedByRead: boolean | null = null;
  holdNextCheck(): void {
    this.releasedByRead = null;
    this.gate = new Promise((resolve) => {
      // Old behaviour (the read waits for the check) must fail the assertion, not hang the run.
      const fallback = setTimeout(() => {
        this.releasedByRead = false;
        resolve();
      }, 5_000);
      this.release = () => {
        clearTimeout(fallback);
        this.releasedByRead ??= true;
        resolve();
      };
    });
  }
  async retryAfterMs(address: string, kind: CredentialKind): Promise<number> {
    if (kind === 'device-token' && this.gate) {
      await this.gate;
      this.gate = null;
      if (this.lockedForTest) return 60_000;
    }
    return this.inner.retryAfterMs(address, kind);
  }
  fail(address: string, kind: CredentialKind): number {
    return this.inner.fail(address, kind);
  }
  succeed(address: string, kind: CredentialKind): void {
    this.inner.succeed(address, kind);
  }
}

const limiter = new HeldCheckLimiter();
let tg: TestGateway;
let tokenReads = 0;
let onTokenRead: (() => void) | null = null;

before(async () => {
  tg = await startTestGateway({ store: 'memory', limiter });
  const getToken = tg.store.getToken.bind(tg.store);
  tg.store.getToken = (id) => {
    tokenReads++;
    onTokenRead?.();
    return getToken(id);
  };
});
after(async () => {
  await tg.stop();
  removeDir(tg.stateDir);
});

async function pairedDevice() {
  const identity = generateIdentity();
  const first = await connectGateway({ url: tg.url, identity, auth: { token: TEST_TOKEN }, scopes: ['operator.read'], client: { id: 'test', mode: 'test' } });
  const deviceToken = first.hello.auth.deviceToken as string;
  await first.close();
  return { identity, deviceToken };
}

test('the budget check and the token read overlap: the check answers only after the read began, and the connect is admitted', async () => {
  const { identity, deviceToken } = await pairedDevice();
  limiter.holdNextCheck();
  // The held check is released by the token read itself; a connect that read the token only
  // after the check answered would be released by the fallback instead.
  onTokenRead = () => limiter.release?.();
  try {
    const conn = await connectGateway({ url: tg.url, identity, auth: { deviceToken }, scopes: ['operator.read'], client: { id: 'test', mode: 'test' } });
    assert.equal(limiter.releasedByRead, true, 'the token read began while the budget check was pending');
    assert.equal(conn.hello.auth.method, 'device-token');
    await conn.close();
  } finally {
    onTokenRead = null;
  }
});

test('a locked address is refused though its token was read and is valid', async () => {
  const { identity, deviceToken } = await pairedDevice();
  const readsBefore = tokenReads;
  limiter.holdNextCheck();
  limiter.lockedForTest = true;
  onTokenRead = () => limiter.release?.();
  try {
    await expectRefused(connectGateway({ url: tg.url, identity, auth: { deviceToken }, client: { id: 'test', mode: 'test' } }), 'AUTH_RATE_LIMITED');
    assert.equal(limiter.releasedByRead, true, 'the token read began while the budget check was pending');
    assert.ok(tokenReads > readsBefore);
  } finally {
    onTokenRead = null;
    limiter.lockedForTest = false;
  }
});
