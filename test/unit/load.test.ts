/**
 * bench/load.ts's idle-while-waiting measure: the part of the time some open waits in which a
 * worker runs no session activity, against an independent count on a 1 ms grid (exact for
 * integer endpoints).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { idleWhileWaiting } from '../../bench/load';
import { Rng } from '../../ml/rng';

/** The same fraction by counting each millisecond [t, t+1) of [lo, hi). */
function byGrid(waits: Array<[number, number]>, busy: Array<[number, number]>, lo: number, hi: number): number {
  let waiting = 0;
  let idle = 0;
  const inside = (iv: Array<[number, number]>, t: number) => iv.some(([a, b]) => a <= t && t + 1 <= b);
  for (let t = lo; t < hi; t++) {
    if (!inside(waits, t)) continue;
    waiting++;
    if (!inside(busy, t)) idle++;
  }
  return waiting === 0 ? 0 : idle / waiting;
}

test('idle while waiting: hand-worked cases', () => {
  // One wait 0..10; the trainer busy 0..4 and 6..10: idle 2 of 10.
  assert.equal(
    idleWhileWaiting(
      [[0, 10]],
      [
        [0, 4],
        [6, 10],
      ],
      0,
      100,
    ),
    0.2,
  );
  // Overlapping waits count once; busy outside the waits does not matter.
  assert.equal(
    idleWhileWaiting(
      [
        [0, 5],
        [3, 10],
      ],
      [[20, 30]],
      0,
      100,
    ),
    1,
  );
  // Nothing waits: no idle.
  assert.equal(idleWhileWaiting([], [[0, 5]], 0, 100), 0);
  // Clipped to the makespan.
  assert.equal(idleWhileWaiting([[-10, 10]], [[0, 5]], 0, 100), 0.5);
});

test('idle while waiting equals a count on a 1 ms grid for random intervals (tolerance 1e-12)', () => {
  const rng = new Rng(2026);
  const iv = (k: number): Array<[number, number]> =>
    Array.from({ length: k }, () => {
      const a = Math.floor(rng.next() * 400);
      return [a, a + 1 + Math.floor(rng.next() * 80)] as [number, number];
    });
  for (let trial = 0; trial < 200; trial++) {
    const waits = iv(1 + Math.floor(rng.next() * 6));
    const busy = iv(Math.floor(rng.next() * 8));
    const lo = Math.floor(rng.next() * 50);
    const hi = 400 + Math.floor(rng.next() * 100);
    assert.ok(
      Math.abs(idleWhileWaiting(waits, busy, lo, hi) - byGrid(waits, busy, lo, hi)) < 1e-12,
      JSON.stringify({ waits, busy, lo, hi }),
    );
  }
});
