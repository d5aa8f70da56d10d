import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connectGateway } from '../src/client/connection.js';
import { startTestGateway, TEST_TOKEN, type TestGateway } from './helpers/gateway.js';

let tg: TestGateway;
before(async () => {
  tg = await startTestGateway();
});
after(async () => {
  await tg.stop();
});

test('a device-less cli connect with the shared token reaches health', async () => {
  const conn = await connectGateway({ url: tg.url, auth: { token: TEST_TOKEN }, scopes: ['operator.read'], client: { id: 'cli', mode: 'cli' } });
  assert.deepEqual(conn.hello.auth.scopes, ['operator.read']);
  const health = await conn.request<{ ok: boolean }>('health');
  assert.equal(health.ok, true);
  await conn.close();
});
