/**
 * Commit windows (activities/types.ts windowEnd): a window from step `from` ends at the first
 * step after it at which training step by step commits — an RL iteration t commits at t + 1
 * when t + 1 is a multiple of ckptEvery or the node's last — checked against that rule
 * applied step by step, over every start of small nodes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { windowEnd } from '../../activities/types';

/** The reference: walk the steps one by one until one commits (workflows/nodes.ts rlIteration's rule). */
function firstCommitAfter(from: number, total: number, ckptEvery: number): number {
  for (let t = from; ; t++) if ((t + 1) % ckptEvery === 0 || t + 1 === total) return t + 1;
}

test('a window ends at the first commit the steps one by one would make', () => {
  for (let total = 1; total <= 13; total++)
    for (let ckptEvery = 1; ckptEvery <= 15; ckptEvery++)
      for (let from = 0; from < total; from++)
        assert.equal(
          windowEnd(from, total, ckptEvery),
          firstCommitAfter(from, total, ckptEvery),
          `from ${from} total ${total} ckptEvery ${ckptEvery}`,
        );
  // The tiny config's nodes: warm start 12 steps every 6, stage1 4 iterations every 2.
  assert.deepEqual(
    [0, 6].map((f) => windowEnd(f, 12, 6)),
    [6, 12],
  );
  assert.deepEqual(
    [0, 1, 2, 3].map((f) => windowEnd(f, 4, 2)),
    [2, 2, 4, 4],
  );
});

test('a window from outside the node, or with a bad ckptEvery, is refused naming the argument', () => {
  assert.throws(() => windowEnd(4, 4, 2), /windowEnd: from must be an integer step in \[0, 4\), got 4/);
  assert.throws(() => windowEnd(-1, 4, 2), /windowEnd: from must be/);
  assert.throws(() => windowEnd(1.5, 4, 2), /windowEnd: from must be/);
  assert.throws(() => windowEnd(0, 4, 0), /windowEnd: ckptEvery must be a positive integer, got 0/);
});
