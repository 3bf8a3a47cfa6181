/**
 * Probe a policy file: pass@k and the exploration diagnostics (marks_true, false_ok, stop
 * reasons, unique attempts, …) on held-out problems of one difficulty, at several budgets,
 * outside any run. For measuring a committed base (README "Base checkpoint").
 *
 *   npx tsx bench/probe.ts <weights.e3w> '<difficulty json>' [budgets=32,64,128] [prompts=64] [samples=8] [seed=1] [split=eval]
 *   e.g. npx tsx bench/probe.ts configs/base/base.e3w '{"count":4,"useAll":true}' 32,64,128,256
 */
import { loadPolicy } from '../ml/serialize';
import { disposePolicy } from '../ml/policy';
import { Trainer } from '../ml/trainer';
import { evalMetrics } from '../ml/evaluation';
import { readPolicyArgs } from './policyArgs';

async function main() {
  const { file, weights, difficulty, budgets, prompts, samples, seed, split, backend, engine } = await readPolicyArgs(
    'probe',
    '32,64,128',
    'budgets',
  );
  const probe = loadPolicy(weights);
  const model = probe.cfg;
  disposePolicy(probe);
  const tr = Trainer.create({ model, weights, optim: {}, toolArithmetic: true, engine });
  const t0 = Date.now();
  const counts = await tr.evaluate({
    seed,
    split,
    difficulty,
    budgets,
    prompts,
    samples,
    temperature: 0.6,
    ks: [1, 4, 8].filter((k) => k <= samples),
    offset: 0,
  });
  tr.dispose();
  const m = evalMetrics(
    [counts],
    budgets,
    [1, 4, 8].filter((k) => k <= samples),
  );
  console.log(
    JSON.stringify({ file, difficulty, budgets, prompts, samples, seed, split, backend, engine, seconds: (Date.now() - t0) / 1000 }),
  );
  const cols = [
    'pass@1',
    'pass@8',
    'marks_true',
    'false_ok',
    'false_no',
    'target_copy_true',
    'attempts',
    'unique_attempts',
    'repeats',
    'response_len',
    'stop_correct',
    'stop_false_ok',
    'stop_gave_up',
    'stop_truncated',
    'stop_other',
  ];
  console.log(['budget', ...cols].join('\t'));
  for (const b of budgets) console.log([b, ...cols.map((c) => (m[`eval/b${b}/${c}`] ?? NaN).toFixed(3))].join('\t'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
