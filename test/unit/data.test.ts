/**
 * Clean data, asserted over every shipped config: evaluation and budget-selection problems
 * are disjoint by content (sorted numbers + target) from every training and warm-start
 * problem the run draws, and arms that share a stream see the same problems.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configNames, loadConfig } from '../../configs/load';
import type { RunConfig } from '../../configs/schema';
import { problemIdentity, splitOf } from '../../ml/countdown';
import { heldOutProblem, iterationProblems } from '../../ml/rollouts';
import { sftProblem, sftSeed } from '../../ml/traces';

/** Most draws checked per node (the warm start of `gpu` draws 256k problems; the split guarantees the rest). */
const CAP = 6000;

function draws(cfg: RunConfig): { train: Map<string, string>; heldOut: Map<string, string> } {
  const train = new Map<string, string>();
  const heldOut = new Map<string, string>();
  for (const [id, n] of Object.entries(cfg.nodes)) {
    if (n.kind === 'sft') {
      for (let k = 0; k < Math.min(CAP, n.steps * n.batchSize); k++) {
        const p = sftProblem(sftSeed(cfg.seed, n.stream), Math.floor(k / n.batchSize), k % n.batchSize, n.batchSize, n.difficulty).problem;
        train.set(problemIdentity(p), `${id} ${p.id}`);
      }
    } else if (n.kind === 'rl') {
      for (let t = 0; t < Math.min(n.iterations, Math.ceil(CAP / n.prompts)); t++) {
        for (const p of iterationProblems(cfg.seed, n.stream ?? id, t, n.prompts, n.difficulty))
          train.set(problemIdentity(p), `${id} ${p.id}`);
      }
    } else if (n.kind === 'eval' || n.kind === 'select-budget') {
      const split = n.kind === 'eval' ? 'eval' : 'select';
      const offset = n.kind === 'eval' ? n.offset : 0;
      for (let i = 0; i < n.prompts; i++) {
        const p = heldOutProblem(cfg.seed, split, n.difficulty, offset + i);
        assert.equal(splitOf(p), split);
        heldOut.set(problemIdentity(p), `${id} ${p.id}`);
      }
    }
  }
  return { train, heldOut };
}

for (const name of configNames()) {
  void test(`config ${name}: evaluation and budget-selection problems never appear in training or warm-start data`, () => {
    const { train, heldOut } = draws(loadConfig(name));
    for (const [identity, where] of heldOut)
      assert.ok(!train.has(identity), `${where} is also drawn by ${train.get(identity)} (${identity})`);
    for (const identity of train.keys())
      assert.equal(splitOf({ numbers: identity.split('>')[0].split(' ').map(Number), target: Number(identity.split('>')[1]) }), 'train');
  });
}

void test('an index offset is not a split: without the content split, small spaces collide', () => {
  // The old scheme (same generator, eval at index offset 10^6) would have shared identities with
  // a warm start of this size; the content split makes the overlap impossible.
  const d = { count: 3, min: 1, max: 9, ops: '+-*' };
  const train = new Set<string>();
  for (let k = 0; k < 4000; k++) train.add(problemIdentity(sftProblem(1, Math.floor(k / 32), k % 32, 32, d).problem));
  const evalIds = Array.from({ length: 64 }, (_, i) => problemIdentity(heldOutProblem(1, 'eval', d, i)));
  assert.equal(evalIds.filter((x) => train.has(x)).length, 0);
  assert.ok(train.size > 800, `${train.size} distinct warm-start identities in a space of a few thousand`);
});

void test('arms naming the same stream draw the same problems; default streams differ', () => {
  const d = { count: 3, min: 1, max: 9, ops: '+-*' };
  assert.deepEqual(iterationProblems(1, 'arm', 5, 8, d), iterationProblems(1, 'arm', 5, 8, d));
  assert.notDeepEqual(iterationProblems(1, 'grpo', 5, 8, d), iterationProblems(1, 'positive-only', 5, 8, d));
  const ab = loadConfig('ablation');
  const streams = Object.entries(ab.nodes)
    .filter(([, n]) => n.kind === 'rl')
    .map(([id, n]) => (n.kind === 'rl' ? (n.stream ?? id) : ''));
  assert.ok(streams.length >= 2 && new Set(streams).size === 1, `ablation arms share one stream: ${streams.join(', ')}`);
});
