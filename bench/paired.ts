/**
 * Two arms run as separate runs of the same seed, compared problem by problem: for each pair
 * of runs (arm A, arm B) the held-out pass@1 of one eval node in each, and A − B at every
 * budget with its 95 % paired bootstrap interval over problems (ml/bootstrap.ts). Pairing
 * holds because a run's evaluation problems and sampling seeds derive from its run seed, the
 * split and the problem alone (ml/trainer.ts evalRows): both runs of a pair must have the same
 * seed and the same eval node settings, which this checks. Also each RL node's training
 * reward, mean of the first and of the last 5 iterations.
 *
 *   npx tsx bench/paired.ts --node eval-stage2 <runA>:<runB> [<runA>:<runB> ...]
 */
import { keys } from '../storage/layout';
import { ObjectStore } from '../storage/store';
import type { NodeResult } from '../activities/types';
import type { RunConfig } from '../configs/schema';
import { evalRates } from '../activities/report';
import { gainOverBase } from '../ml/bootstrap';
import { deriveSeed } from '../ml/rng';

const args = process.argv.slice(2);
const ni = args.indexOf('--node');
const node = ni >= 0 ? args[ni + 1] : 'eval-stage2';
const pairs = args.filter((a, i) => a.includes(':') && i !== ni + 1).map((a) => a.split(':') as [string, string]);
if (pairs.length === 0) {
  console.error('usage: npx tsx bench/paired.ts --node <eval node> <runA>:<runB> [...]');
  process.exit(2);
}

interface Run {
  id: string;
  config: RunConfig;
  results: Record<string, NodeResult>;
  rows: Array<Record<string, number | string>>;
}

async function load(store: ObjectStore, id: string): Promise<Run> {
  const m = await store.getJson<{ config: RunConfig }>(keys.manifest(id));
  const results: Record<string, NodeResult> = {};
  for (const n of Object.keys(m.config.nodes))
    if (await store.exists(keys.result(id, n))) results[n] = await store.getJson<NodeResult>(keys.result(id, n));
  const rows = await Promise.all((await store.list(`runs/${id}/metrics/`)).map((k) => store.getJson<Record<string, number | string>>(k)));
  return { id, config: m.config, results, rows };
}

const f = (x: number) => (x >= 0 ? '+' : '−') + Math.abs(x).toFixed(3);

async function main(): Promise<void> {
  const store = ObjectStore.fromEnv();
  for (const [ia, ib] of pairs) {
    const [a, b] = await Promise.all([load(store, ia), load(store, ib)]);
    const na = a.config.nodes[node],
      nb = b.config.nodes[node];
    if (a.config.seed !== b.config.seed) throw new Error(`${ia} (seed ${a.config.seed}) and ${ib} (seed ${b.config.seed}): not one seed`);
    if (na?.kind !== 'eval' || nb?.kind !== 'eval') throw new Error(`${node} is not an eval node of both runs`);
    const same = (n: typeof na) => JSON.stringify([n.difficulty, n.offset, n.prompts, n.samples, n.temperature, n.budgets]);
    if (same(na) !== same(nb)) throw new Error(`${node} differs between ${ia} and ${ib}: not paired`);
    const [ra, rb] = [(await evalRates(store, ia, a.config, a.results))[node], (await evalRates(store, ib, b.config, b.results))[node]];
    if (!ra || !rb) throw new Error(`${node} has not finished in ${!ra ? ia : ib}`);
    const g = gainOverBase(ra, rb, null, { seed: deriveSeed(a.config.seed, 'bootstrap', node) });
    console.log(`\n${ia} − ${ib} (seed ${a.config.seed}), ${node}: ${na.prompts} problems × ${na.samples} samples`);
    console.log('| budget | A pass@1 | B pass@1 | A − B [95 %] |\n|---|---|---|---|');
    for (const [budget, iv] of g.gain) {
      const mean = (r: number[]) => r.reduce((x, y) => x + y, 0) / r.length;
      console.log(
        `| ${budget} | ${mean(ra.get(budget)!).toFixed(3)} | ${mean(rb.get(budget)!).toFixed(3)} | ${f(iv.mean)} [${f(iv.lo)}, ${f(iv.hi)}] |`,
      );
    }
    for (const n of Object.keys(a.config.nodes).filter((n) => a.config.nodes[n].kind === 'rl')) {
      const curve = (r: Run, last: boolean) => {
        const rows = r.rows.filter((x) => x.node === n).sort((x, y) => Number(x.step) - Number(y.step));
        const w = (last ? rows.slice(-5) : rows.slice(0, 5)).map((x) => Number(x['train/reward_mean']));
        return (w.reduce((x, y) => x + y, 0) / w.length).toFixed(3);
      };
      console.log(
        `${n}: budget ${a.results[n]?.budget} vs ${b.results[n]?.budget}; train reward first 5 → last 5: A ${curve(a, false)} → ${curve(a, true)}, B ${curve(b, false)} → ${curve(b, true)}`,
      );
    }
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
