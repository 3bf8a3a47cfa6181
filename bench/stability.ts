/**
 * How much each select-budget node's Eq. 6.1 choice hinges on the problems it drew
 * (ml/budget.ts choiceStability), recomputed from the runs' stored select chunks, so runs
 * recorded before the node reported it are covered too: J(2B)/J(B) with a 95 % interval and
 * the share of 1000 bootstrap resamples choosing each candidate.
 *
 *   npx tsx bench/stability.ts <run> [<run> ...]
 */
import type { SelectBudgetNode } from '../configs/schema';
import { choiceStability, measuredBudgets, problemCurves } from '../ml/budget';
import type { EvalCounts } from '../ml/evaluation';
import { deriveSeed } from '../ml/rng';
import { ObjectStore } from '../storage/store';
import { keys } from '../storage/layout';
import type { NodeResult } from '../activities/types';

async function main() {
  const store = ObjectStore.fromEnv();
  const f = (x: number) => x.toFixed(3);
  console.log('| run | node | chosen | J(2B)/J(B) [95 %] per candidate | share of resamples choosing |\n|---|---|---|---|---|');
  for (const run of process.argv.slice(2)) {
    const m = await store.getJson<{ config: { seed: number; nodes: Record<string, SelectBudgetNode | { kind: string }> } }>(
      keys.manifest(run),
    );
    for (const [id, n] of Object.entries(m.config.nodes)) {
      if (n.kind !== 'select-budget') continue;
      const node = n as SelectBudgetNode;
      const res = await store.getJson<NodeResult>(keys.result(run, id));
      const chunks = await Promise.all(
        (await store.list(`runs/${run}/${id}/eval/`)).sort().map((k) => store.getJson<{ counts: EvalCounts }>(k)),
      );
      // The budgets the node measured: those its chunks hold (a double past the context was not measured).
      const budgets = measuredBudgets(node.grid).filter((b) => chunks[0].counts[b] !== undefined);
      const s = choiceStability(
        problemCurves(
          chunks.map((c) => c.counts),
          budgets,
          node.samples,
        ),
        { kappa: node.kappa, b0: node.b0, candidates: node.grid, seed: deriveSeed(m.config.seed, 'select-stability', id) },
      );
      const ratios = [...s.ratio]
        .map(([b, r]) => `${b}: ${f(res.metrics?.[`select/b${b}/ratio`] ?? NaN)} [${f(r.lo)}, ${f(r.hi)}]`)
        .join('; ');
      const shares = [...s.chosen]
        .sort((a, b) => b[1] - a[1])
        .map(([b, v]) => `${b}: ${Math.round(100 * v)} %`)
        .join(', ');
      console.log(`| ${run} | ${id} | ${res.budget} | ${ratios} | ${shares} |`);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
