/**
 * What a start leaves for later must still be right: the params schema of every registered method
 * (compiled on a method's first call, not at start) compiles, and a method called with bad params
 * is refused by its schema on the very first call.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connectGateway, GatewayRequestError } from '../src/client/connection.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

let tg: TestGateway;
before(async () => {
  tg = await startTestGateway({ store: 'memory' });
});
after(async () => {
  await tg.stop();
});

test('every registered method has a params schema that compiles', () => {
  assert.ok(tg.gateway.methods.compileAll() > 50);
});

test('the first call of a method with bad params is refused by its schema', async () => {
  const conn = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, scopes: ['operator.read'], client: { id: 'cli', mode: 'cli' } });
  try {
    await assert.rejects(
      conn.request('health', { unexpected: true }),
      (err: unknown) => err instanceof GatewayRequestError && err.detailCode === 'INVALID_PARAMS',
    );
  } finally {
    await conn.close();
  }
});
