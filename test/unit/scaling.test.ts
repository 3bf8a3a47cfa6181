/**
 * bench/scalingModel.ts: the rows of each part against ml/rollouts.ts shardRows (the code's own
 * split, an independent count), and the stage-time model and its cost scaling against values
 * computed by hand (exact up to 1e-12).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { iterationTime, parameters, flopsPerToken, partRows, scaleCosts, stageTime, workerRows } from '../../bench/scalingModel';
import type { StageCosts } from '../../bench/scalingModel';
import { shardRows } from '../../ml/rollouts';
import type { RlSettings } from '../../ml/rollouts';
import type { CountdownProblem } from '../../ml/countdown';
import { InvalidArgumentError } from '../../ml/errors';

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

test('partRows: each part holds the rows shardRows gives it', () => {
  for (const [prompts, samples, parts] of [
    [16, 8, 2],
    [16, 8, 3],
    [5, 2, 2],
    [3, 1, 5],
    [32, 8, 64],
    [128, 16, 7],
  ]) {
    const problems = Array.from({ length: prompts }, () => ({}) as CountdownProblem);
    const s = { seed: 1, stream: 's', samples } as RlSettings;
    const expected = Array.from({ length: parts }, (_, k) => shardRows(s, 0, k, parts, problems).length);
    assert.deepEqual(partRows(prompts, samples, parts), expected, `${prompts} prompts × ${samples} in ${parts} parts`);
  }
  assert.deepEqual(partRows(5, 2, 2), [6, 4]);
  assert.deepEqual(partRows(3, 1, 5), [1, 1, 1, 0, 0]);
});

test('workerRows: part k on worker k mod N', () => {
  // 5 prompts × 2 in 3 parts: [4, 4, 2]; worker 0 runs parts 0 and 2, worker 1 part 1.
  assert.deepEqual(workerRows(5, 2, 3, 2), [6, 4]);
  assert.deepEqual(workerRows(16, 8, 2, 4), [64, 64, 0, 0]);
});

const costs: StageCosts = { publishS: 1, loadS: 0.5, rowS: 0.1, updateS: 2, roundTripS: 0.05 };

test('iterationTime: publish + slowest worker (load + rows × row) + update + 3 round trips', () => {
  close(iterationTime(costs, [6, 4]), 1 + (0.5 + 0.6) + 2 + 0.15); // 4.25
  close(iterationTime(costs, [0, 3]), 1 + (0.5 + 0.3) + 2 + 0.15); // 3.95: a worker without rows loads nothing
  close(stageTime(costs, { iterations: 10, prompts: 5, samples: 2, parts: 3 }, 2), 42.5);
  // More workers than parts: the extra ones idle.
  close(stageTime(costs, { iterations: 1, prompts: 16, samples: 8, parts: 2 }, 4), 1 + 0.5 + 6.4 + 2 + 0.15);
});

test('scaleCosts: rows by budget × FLOPs per token, update also by rows, weights by parameters', () => {
  const from = { layers: 1, dModel: 2, vocab: 3, context: 5, budget: 4 };
  const to = { layers: 2, dModel: 2, vocab: 3, context: 5, budget: 8 };
  assert.equal(parameters(from), 12 * 1 * 4 + 8 * 2); // 64
  assert.equal(parameters(to), 112);
  assert.equal(flopsPerToken(from), 96 + 12 + 16); // 124
  assert.equal(flopsPerToken(to), 192 + 12 + 64); // 268
  const one = { publishS: 1, loadS: 1, rowS: 1, updateS: 1, roundTripS: 1 };
  const k = scaleCosts(one, from, { iterations: 1, prompts: 2, samples: 2, parts: 1 }, to, {
    iterations: 9,
    prompts: 4,
    samples: 2,
    parts: 3,
  });
  close(k.publishS, 112 / 64);
  close(k.loadS, 112 / 64);
  close(k.rowS, (8 * 268) / (4 * 124));
  close(k.updateS, (2 * (8 * 268)) / (4 * 124));
  close(k.roundTripS, 1);
});

test('bad input: one error naming the field', () => {
  assert.throws(
    () => partRows(0, 8, 2),
    (e: Error) => e instanceof InvalidArgumentError && /prompts/.test(e.message),
  );
  assert.throws(
    () => workerRows(16, 8, 2, 0),
    (e: Error) => e instanceof InvalidArgumentError && /workers/.test(e.message),
  );
  assert.throws(
    () => iterationTime({ ...costs, rowS: -1 }, [1]),
    (e: Error) => e instanceof InvalidArgumentError && /costs\.rowS/.test(e.message),
  );
  assert.throws(
    () => iterationTime(costs, []),
    (e: Error) => e instanceof InvalidArgumentError && /rowsPerWorker/.test(e.message),
  );
});
