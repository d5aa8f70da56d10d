/**
 * The wheel that holds every socket's handshake deadline and keep-alive ping: deadlines fire in
 * order and never before they are due, a cancelled one never fires, periodic work reschedules
 * itself, and an empty wheel holds no timer past its next tick. The socket-level behaviour (handshake timeout,
 * dead-peer ping) is covered over real sockets by handshake.test.ts and transport.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TimerWheel } from '../src/server/timer-wheel.js';
import { waitFor } from './helpers/wait.js';

test('deadlines fire in order, never early, and a cancelled one never fires', async () => {
  const wheel = new TimerWheel(5, 8);
  const fired: Array<{ name: string; lateMs: number }> = [];
  const at = (name: string, delayMs: number) => {
    const due = performance.now() + delayMs;
    return wheel.schedule(delayMs, () => fired.push({ name, lateMs: performance.now() - due }));
  };
  at('c', 60);
  at('a', 12);
  const cancelled = at('x', 30);
  at('b', 35);
  // Beyond one revolution of the wheel (8 slots × 5 ms): kept for a later pass, not fired early.
  at('d', 95);
  cancelled.cancel();
  cancelled.cancel();
  assert.equal(wheel.pending, 4);
  await waitFor(() => fired.length === 4, 'all four deadlines');
  assert.deepEqual(
    fired.map((f) => f.name),
    ['a', 'b', 'c', 'd'],
  );
  for (const f of fired) assert.ok(f.lateMs >= -0.5, `${f.name} fired ${-f.lateMs} ms early`);
  assert.equal(wheel.pending, 0);
});

test('periodic work that reschedules itself keeps running until cancelled', async () => {
  const wheel = new TimerWheel(5, 16);
  let runs = 0;
  let timer = wheel.schedule(10, function again() {
    runs++;
    timer = wheel.schedule(10, again);
  });
  await waitFor(() => runs >= 5, 'five runs');
  timer.cancel();
  const seen = runs;
  // Another deadline after the cancel: once it has fired, the cancelled work has had its chance.
  let later = false;
  wheel.schedule(40, () => {
    later = true;
  });
  await waitFor(() => later, 'a later deadline');
  assert.equal(runs, seen);
  assert.equal(wheel.pending, 0);
});

test('a deadline firing may cancel another one due in the same tick, which then never fires', async () => {
  const wheel = new TimerWheel(5, 8);
  const fired: string[] = [];
  let second: { cancel(): void } | null = null;
  wheel.schedule(10, () => {
    fired.push('first');
    second?.cancel();
  });
  second = wheel.schedule(10, () => fired.push('second'));
  let later = false;
  wheel.schedule(30, () => {
    later = true;
  });
  await waitFor(() => later, 'a later deadline');
  assert.deepEqual(fired, ['first']);
  assert.equal(wheel.pending, 0);
});

test('an object that is its own entry is woken once per arming; re-arming replaces its deadline, disarming drops it', async () => {
  const wheel = new TimerWheel(5, 16);
  const woken: number[] = [];
  const entry = {
    wheelAtMs: 0,
    wheelPrev: null,
    wheelNext: null,
    runs: 0,
    onWheel() {
      woken.push(performance.now());
      if (++this.runs < 3) wheel.arm(this, 10);
    },
  };
  const armedAt = performance.now();
  wheel.arm(entry, 1000);
  // Re-armed before it fired: only the second deadline counts (one entry, not two).
  wheel.arm(entry, 10);
  assert.equal(wheel.pending, 1);
  await waitFor(() => entry.runs === 3, 'three wakes');
  assert.equal(woken.length, 3);
  assert.ok((woken[0] as number) - armedAt >= 9.5, 'not early');
  assert.equal(wheel.pending, 0);
  wheel.arm(entry, 10);
  wheel.disarm(entry);
  wheel.disarm(entry);
  assert.equal(wheel.pending, 0);
  let later = false;
  wheel.schedule(40, () => {
    later = true;
  });
  await waitFor(() => later, 'a later deadline');
  assert.equal(entry.runs, 3);
});

test('entries that come and go between ticks share one interval; the first tick that finds the wheel empty stops it', () => {
  // Node's interval functions replaced: which intervals run, and when a tick happens, is the test's.
  const ticks: Array<() => void> = [];
  let cleared = 0;
  const timers = {
    setInterval: (fn: () => void) => {
      ticks.push(fn);
      return ticks.length;
    },
    clearInterval: () => {
      cleared++;
    },
  };
  let nowMs = 1000;
  const wheel = new TimerWheel(10, 8, () => nowMs, timers);
  let fired = 0;
  const entry = {
    wheelAtMs: 0,
    wheelPrev: null,
    wheelNext: null,
    onWheel() {
      fired++;
    },
  };
  // A socket at a time, each gone before the next arrives (sequential connects).
  for (let i = 0; i < 100; i++) {
    wheel.arm(entry, 50);
    wheel.disarm(entry);
    nowMs += 0.05;
  }
  assert.equal(wheel.pending, 0);
  assert.equal(ticks.length, 1, 'one interval for all of them');
  assert.equal(cleared, 0, 'still running until a tick finds the wheel empty');
  nowMs += 10;
  (ticks[0] as () => void)();
  assert.equal(cleared, 1, 'stopped by the empty tick');
  // Armed again: a new interval, and the deadline fires on it (then that interval stops too).
  wheel.arm(entry, 25);
  assert.equal(ticks.length, 2);
  for (let i = 0; i < 4; i++) {
    nowMs += 10;
    (ticks[1] as () => void)();
  }
  assert.equal(fired, 1);
  assert.equal(cleared, 2);
});
