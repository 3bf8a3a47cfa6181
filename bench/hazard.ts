/**
 * Where a policy's search finds its solutions: the hit rate of its k-th attempt (correct,
 * given that attempts 0..k−1 of the response were not), by buckets of 4 attempts, on
 * held-out problems, with the share of attempts that combine every number and the share that
 * land within 5 of the target. A search whose later attempts still reach the target keeps
 * gaining with budget; one whose later attempts never do has a flat pass@1 past its first
 * guesses (docs/results/base-search.md). A second table: the policy's wrong attempts by how
 * far their result is from the target, and how often each kind is marked `ok` (a false `ok`
 * ends the search; docs/RESULTS.md, (b) on the search base).
 *
 *   npx tsx bench/hazard.ts <weights.e3w> '<difficulty json>' [budget=512] [prompts=64] [samples=8] [seed=1]
 *   e.g. npx tsx bench/hazard.ts configs/base/base-search.e3w '{"count":4,"useAll":true}' 512
 */
import { loadPolicy } from '../ml/serialize';
import { disposePolicy } from '../ml/policy';
import { evalRows } from '../ml/evaluation';
import { sampleRows } from '../ml/rollouts';
import { readPolicyArgs } from './policyArgs';
import { gradeAttempt, parseResponse } from '../ml/countdown';
import { decode } from '../ml/tokenizer';

const BUCKET = 4;
/** |result − target| ranges of wrong attempts (0: the target reached by an illegal attempt). */
const MISS_BINS: Array<[number, number]> = [
  [0, 0],
  [1, 2],
  [3, 5],
  [6, 20],
  [21, Infinity],
];

async function main() {
  const { file, weights, difficulty, budgets, prompts, samples, seed, engine } = await readPolicyArgs('hazard', '512', 'budget');
  if (budgets.length !== 1) throw new Error(`hazard: one budget, got ${budgets.join(',')}`);
  const [budget] = budgets;
  const policy = loadPolicy(weights);
  const rows = evalRows({ seed, split: 'eval', difficulty, budgets: [budget], prompts, samples, temperature: 0.6, ks: [1], offset: 0 });
  const rollouts = await sampleRows(policy, { rows, budget, temperature: 0.6, topP: 1, tool: true, engine });
  disposePolicy(policy);
  const buckets: Array<{ n: number; hit: number; full: number; near: number }> = [];
  const misses = MISS_BINS.map(() => ({ n: 0, ok: 0 }));
  rollouts.forEach((r, k) => {
    const p = rows[k].p;
    const attempts = parseResponse(decode(r.response)).attempts;
    for (const t of attempts) {
      const g = gradeAttempt(p, t.steps);
      if (g.correct || g.value === null || !t.mark) continue;
      const miss = Math.abs(g.value - p.target);
      const m = misses[MISS_BINS.findIndex(([lo, hi]) => miss >= lo && miss <= hi)];
      m.n++;
      if (t.mark === 'ok') m.ok++;
    }
    for (let a = 0; a < attempts.length; a++) {
      const b = (buckets[Math.floor(a / BUCKET)] ??= { n: 0, hit: 0, full: 0, near: 0 });
      const g = gradeAttempt(p, attempts[a].steps);
      b.n++;
      if (attempts[a].steps.length === p.numbers.length - 1) b.full++;
      if (g.value !== null && Math.abs(g.value - p.target) <= 5) b.near++;
      if (g.correct) {
        b.hit++;
        break;
      }
    }
  });
  console.log(JSON.stringify({ file, difficulty, budget, prompts, samples, seed, engine }));
  console.log(['attempts', 'reached', 'hit_rate', 'all_numbers', 'within_5'].join('\t'));
  buckets.forEach((b, i) =>
    console.log(
      [
        `${i * BUCKET}-${i * BUCKET + BUCKET - 1}`,
        b.n,
        (b.hit / b.n).toFixed(3),
        (b.full / b.n).toFixed(2),
        (b.near / b.n).toFixed(2),
      ].join('\t'),
    ),
  );
  const wrong = misses.reduce((a, m) => a + m.n, 0);
  console.log(['miss', 'share_of_wrong', 'marked_ok'].join('\t'));
  MISS_BINS.forEach(([lo, hi], i) =>
    console.log(
      [
        `${lo}-${hi === Infinity ? 'inf' : hi}`,
        (misses[i].n / wrong).toFixed(3),
        (misses[i].ok / Math.max(1, misses[i].n)).toFixed(3),
      ].join('\t'),
    ),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
