/**
 * Sessions admitted without scopes share one immutable scope set (an empty Set per idle session
 * would cost ~150 bytes each): changing a session's scopes replaces its set, so widening one
 * scope-less session live (an approved scope upgrade) leaves every other one, and the shared
 * set, empty. Over a real socket and the real SQLite store.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connectGateway, type DeviceIdentity, generateIdentity } from '../src/client/connection.js';
import { NO_SCOPES, scopeSetOf } from '../src/core/principal.js';
import { asOwner, expectRefused, removeDir, startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

const REMOTE = { 'x-forwarded-for': '198.51.100.41' };

test('the shared empty scope set cannot be changed in place', () => {
  assert.equal(scopeSetOf([]), NO_SCOPES);
  assert.notEqual(scopeSetOf(['operator.read']), NO_SCOPES);
  assert.throws(() => NO_SCOPES.add('operator.admin'), /immutable/);
  assert.throws(() => NO_SCOPES.delete('operator.admin'), /immutable/);
  assert.throws(() => NO_SCOPES.clear(), /immutable/);
  assert.equal(NO_SCOPES.size, 0);
});

describe('scope-less sessions', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway({ config: { trustedProxies: ['127.0.0.1'] } });
  });
  after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });

  const connect = (identity: DeviceIdentity, scopes: string[]) =>
    connectGateway({ url: tg.url, identity, client: { id: 'test', mode: 'test' }, auth: { token: TEST_TOKEN }, headers: REMOTE, scopes });

  /** Pair `identity` as an operator with no scopes (a request approved by the owner). */
  async function pairWithoutScopes(identity: DeviceIdentity): Promise<void> {
    const refused = await expectRefused(connect(identity, []), 'PAIRING_REQUIRED');
    const owner = await connectGateway({ url: tg.url, client: { id: 'cli', mode: 'cli' }, ...asOwner(tg), scopes: ['operator.admin'] });
    await owner.request('device.pair.approve', { requestId: (refused.error!.details as { requestId: string }).requestId });
    await owner.close();
  }

  test('share one set; an approved upgrade widens one of them with a new set, the others stay empty', async () => {
    const a = generateIdentity();
    const b = generateIdentity();
    await pairWithoutScopes(a);
    await pairWithoutScopes(b);
    const other = await connect(b, []);
    // Asks for a scope its grant lacks: admitted without it, with a pending upgrade.
    const widened = await connect(a, ['operator.read']);
    assert.deepEqual(widened.hello.auth.scopes, []);
    const requestId = widened.hello.auth.pendingRequestId;
    assert.ok(requestId, 'hello-ok names the pending upgrade');
    const live = () => [...tg.gateway.sessions.values()];
    const sessionOf = (identity: DeviceIdentity) => live().find((s) => s.deviceId === identity.deviceId);
    assert.equal(sessionOf(a)?.scopes, NO_SCOPES);
    assert.equal(sessionOf(b)?.scopes, NO_SCOPES);

    const updated = widened.waitForEvent<{ scopes: string[] }>('auth.updated');
    const owner = await connectGateway({ url: tg.url, client: { id: 'cli', mode: 'cli' }, ...asOwner(tg), scopes: ['operator.admin'] });
    await owner.request('device.pair.approve', { requestId });
    await owner.close();
    assert.deepEqual((await updated).scopes, ['operator.read']);
    assert.deepEqual([...(sessionOf(a)?.scopes ?? [])], ['operator.read']);
    assert.equal(sessionOf(b)?.scopes, NO_SCOPES);
    assert.equal(NO_SCOPES.size, 0);
    // The widened session may now call what the new scope allows.
    await widened.request('status', {});
    await widened.close();
    await other.close();
  });
});
