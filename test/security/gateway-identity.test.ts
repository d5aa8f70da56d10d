/**
 * The gateway proves its own key on the connect challenge of every client that asks
 * (`gatewayProof=1`), so a client can tell the gateway it means from a process squatting on the
 * port before it sends any secret. A client that does not ask (OpenClaw's) gets a bare challenge.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requestGatewayProof, withoutGatewayProofRequest } from '@clawgate/protocol/gateway-proof';
import WebSocket from 'ws';
import { checkGatewayChallenge } from '../../src/core/gateway-identity.js';
import { readGatewayKeyFingerprint } from '../../src/server/gateway-key.js';
import { removeDir, startTestGateway } from '../helpers/gateway.js';

function firstChallenge(url: string, askForProof = true): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(askForProof ? requestGatewayProof(url) : url);
    ws.once('message', (data) => {
      resolve((JSON.parse(data.toString()) as { payload: unknown }).payload);
      ws.close();
    });
    ws.once('error', reject);
  });
}

test('every challenge a client asks to be signed is signed by the state dir key, which survives a restart', async (t) => {
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

test('a client that does not ask gets a bare {nonce, ts} challenge; the parameter is found among others', async (t) => {
  const tg = await startTestGateway();
  t.after(async () => {
    await tg.stop();
    removeDir(tg.stateDir);
  });
  const fingerprint = readGatewayKeyFingerprint(tg.stateDir);
  const bare = (await firstChallenge(tg.url, false)) as Record<string, unknown>;
  assert.deepEqual(Object.keys(bare).sort(), ['nonce', 'ts']);
  // Asked for along with other query parameters, or with another value (not asked): as written.
  const url = new URL(tg.url);
  url.search = '?x=1&gatewayProof=1&y=2';
  assert.equal(checkGatewayChallenge(await firstChallenge(url.toString(), false), fingerprint).ok, true);
  url.search = '?gatewayProof=0';
  assert.equal(((await firstChallenge(url.toString(), false)) as Record<string, unknown>).gateway, undefined);
  // requestGatewayProof keeps what the URL already says and adds the parameter once.
  assert.equal(requestGatewayProof('ws://h:1/p?a=b#f'), 'ws://h:1/p?a=b&gatewayProof=1#f');
  assert.equal(requestGatewayProof('ws://h:1/?gatewayProof=1'), 'ws://h:1/?gatewayProof=1');
  assert.equal(requestGatewayProof('ws://h:1'), 'ws://h:1?gatewayProof=1');
  // And messages name the URL as it was given.
  for (const u of ['ws://h:1/p?a=b#f', 'ws://h:1', 'ws://h:1/?x=1', 'wss://h/ctx', 'ws://h:1/?gatewayProof=1&z=2'])
    assert.equal(withoutGatewayProofRequest(requestGatewayProof(u)), u.replace('gatewayProof=1&', ''));
});
