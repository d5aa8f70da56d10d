/**
 * A WebSocket close makes no thrown-away stream errors: `ws` calls end() again on its frame
 * receiver and on the TCP socket after both have ended, and Node answers each such call by
 * building an error it then drops. Over a real gateway socket, the gateway side's streams get no
 * end() call that could only build such an error, for a close the client starts and for one the
 * gateway starts; the connection still closes cleanly on both sides.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Duplex, Writable } from 'node:stream';
import { test } from 'node:test';
import { WebSocket } from 'ws';
import { waitFor } from './helpers/wait.js';

interface State {
  ending: boolean;
  errored: unknown;
  corked: number;
}

/**
 * Count the gateway side's end() calls that Node would answer with a built-and-dropped error:
 * no argument, the stream already ending (or failed), not corked.
 */
function countWastedEnds(): { wasted: () => number; restore: () => void } {
  let wasted = 0;
  type End = (this: Writable, ...args: unknown[]) => Writable;
  const protos = [Writable.prototype, Duplex.prototype] as unknown as Array<{ end: End }>;
  const originals = protos.map((p) => p.end);
  const wrap = (end: End): End =>
    function (this: Writable, ...args: unknown[]) {
      const self = this as unknown as { _writableState?: State; _isServer?: boolean; server?: unknown };
      const state = self._writableState;
      const gatewaySide = self._isServer === true || self.server != null;
      if (gatewaySide && args.length === 0 && state && (state.ending || state.errored) && state.corked === 0) wasted++;
      return end.apply(this, args);
    };
  protos.forEach((p, i) => {
    p.end = wrap(originals[i] as End);
  });
  return {
    wasted: () => wasted,
    restore: () =>
      protos.forEach((p, i) => {
        p.end = originals[i] as End;
      }),
  };
}

test('closing a gateway socket, from either side, calls no end() that could only build a dropped error', async (t) => {
  // Counting starts before the gateway's modules load: whatever they keep of Node's end() is
  // the counted one.
  const counter = countWastedEnds();
  const { startTestGateway } = await import('./helpers/gateway.js');
  const tg = await startTestGateway({ store: 'memory' });
  t.after(async () => {
    counter.restore();
    await tg.stop();
  });
  const serverSockets: Socket[] = [];
  tg.server.server.on('connection', (s: Socket) => serverSockets.push(s));
  const closedOnServer = () => serverSockets.filter((s) => s.closed).length;

  for (const [round, who] of [
    [1, 'client'],
    [2, 'gateway'],
  ] as const) {
    const ws = new WebSocket(tg.url);
    const challenge = new Promise<void>((resolve, reject) => {
      ws.once('message', () => resolve());
      ws.once('error', reject);
    });
    await challenge;
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    if (who === 'client') ws.close(1000);
    // The gateway closes a socket whose first frame is not a connect request.
    else ws.send(Buffer.from([1, 2, 3]));
    const code = await closed;
    assert.equal(code, who === 'client' ? 1000 : 1008, `${who}-initiated close code`);
    await waitFor(() => closedOnServer() === round, `the gateway side of socket ${round} to close`);
    assert.equal(counter.wasted(), 0, `after the ${who}-initiated close`);
  }
});
