/**
 * The gateway proves its own key on every connect challenge, so a client can tell the gateway it
 * means from a process squatting on the port before it sends any secret.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import WebSocket from 'ws';
import { checkGatewayChallenge } from '../../src/core/gateway-identity.js';
import { readGatewayKeyFingerprint } from '../../src/server/gateway-key.js';
import { removeDir, startTestGateway } from '../helpers/gateway.js';

function firstChallenge(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('message', (data) => {
      resolve((JSON.parse(data.toString()) as { payload: unknown }).payload);
      ws.close();
    });
    ws.once('error', reject);
  });
}

test('every challenge is signed by the state dir key, which survives a restart', async (t) => {
  let tg = await startTestGateway();
  t.after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });
  const keyPath = join(tg.stateDir, 'gateway-key.pem');
  assert.ok(existsSync(keyPath));
  assert.equal(statSync(keyPath).mode & 0o777, 0o600);
  const fingerprint = readGatewayKeyFingerprint(tg.stateDir);
  assert.match(fingerprint ?? '', /^[0-9a-f]{64}$/);

  const a = await firstChallenge(tg.url);
  const b = await firstChallenge(tg.url);
  assert.deepEqual(checkGatewayChallenge(a, fingerprint), { ok: true, publicKey: (a as { gateway: { publicKey: string } }).gateway.publicKey, fingerprint });
  assert.equal(checkGatewayChallenge(b, fingerprint).ok, true);
  assert.notEqual((a as { nonce: string }).nonce, (b as { nonce: string }).nonce);

  // A signature moved onto another nonce, or a different expected key, is refused.
  const moved = { ...(a as object), nonce: (b as { nonce: string }).nonce };
  assert.equal(checkGatewayChallenge(moved, fingerprint).ok, false);
  assert.equal(checkGatewayChallenge(a, '0'.repeat(64)).ok, false);
  assert.equal(checkGatewayChallenge({ nonce: 'n', ts: 1 }, null).ok, false);

  tg = await tg.restart();
  assert.equal(checkGatewayChallenge(await firstChallenge(tg.url), fingerprint).ok, true);
});
