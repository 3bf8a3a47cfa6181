/**
 * Where the gain past the training budget goes (ml/beyond.ts), read from finished runs'
 * stored evaluation chunks: for each window b1 → b2 and each eval node, the share of responses
 * still running at b1, how often the window rescues one, the attempts made there and how often
 * they hit; then each policy's rescue rate against the base's within the same problems.
 *
 *   npx tsx bench/beyond.ts <run> [<run> ...] [--base eval-base] [--windows 128:256,256:512]
 */
import { matchedRescue, windowStats } from '../ml/beyond';
import type { WindowInput } from '../ml/beyond';
import type { EvalCounts } from '../ml/evaluation';
import { deriveSeed } from '../ml/rng';
import { ObjectStore } from '../storage/store';
import { keys } from '../storage/layout';

type Node = { kind: string; samples?: number; deps?: string[] };

function option(args: string[], name: string, def: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}

async function main() {
  const args = process.argv.slice(2);
  const baseNode = option(args, '--base', 'eval-base');
  const windows = option(args, '--windows', '128:256,256:512')
    .split(',')
    .map((w) => w.split(':').map(Number) as [number, number]);
  const runs = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
  const store = ObjectStore.fromEnv();
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : '–');
  for (const run of runs) {
    const m = await store.getJson<{ config: { seed: number; nodes: Record<string, Node> } }>(keys.manifest(run));
    const evals = Object.entries(m.config.nodes)
      .filter(([, n]) => n.kind === 'eval')
      .map(([id]) => id);
    const load = async (node: string, b1: number, b2: number): Promise<WindowInput> => {
      const samples = m.config.nodes[node].samples!;
      const parts = (await store.list(`runs/${run}/${node}/eval/`)).sort();
      const w: { problem: number[]; at1: EvalCounts[number]['records']; at2: EvalCounts[number]['records'] } = {
        problem: [],
        at1: [],
        at2: [],
      };
      for (const k of parts) {
        const c = await store.getJson<{ from: number; counts: EvalCounts }>(k);
        if (!c.counts[b1] || !c.counts[b2]) throw new Error(`${k}: no records at ${b1} and ${b2}`);
        c.counts[b1].records.forEach((_, r) => w.problem.push(c.from + Math.floor(r / samples)));
        w.at1.push(...c.counts[b1].records);
        w.at2.push(...c.counts[b2].records);
      }
      return w;
    };
    console.log(`\n### ${run}`);
    for (const [b1, b2] of windows) {
      const inputs = Object.fromEntries(await Promise.all(evals.map(async (e) => [e, await load(e, b1, b2)] as const)));
      console.log(
        `\nwindow ${b1} → ${b2}\n| node | running at ${b1} | rescue | gain | attempts / running row | hit rate | repeat rate | stop: correct / false ok / gave up / other / truncated | gain − base's: fewer running + rescue | rescue, same problems (policy − base [95 %]) |\n|---|---|---|---|---|---|---|---|---|---|`,
      );
      for (const e of evals) {
        const s = windowStats(inputs[e]);
        const st = (k: string) => f(s.stop[k] ?? 0);
        let matched = '';
        let split = '';
        if (e !== baseNode && inputs[baseNode]) {
          // gain_p − gain_b = (running_p − running_b) · rescue_b + running_p · (rescue_p − rescue_b)
          const b = windowStats(inputs[baseNode]);
          const sg = (x: number) => `${x >= 0 ? '+' : ''}${f(x)}`;
          split = `${sg(s.gain - b.gain)} = ${sg((s.running - b.running) * b.rescue)} ${sg(s.running * (s.rescue - b.rescue))}`;
          const r = matchedRescue(inputs[baseNode], inputs[e], deriveSeed(m.config.seed, 'beyond', e, b1, b2));
          matched = `${f(r.policy)} vs ${f(r.base)} on ${r.problems}: ${r.diff.mean >= 0 ? '+' : ''}${f(r.diff.mean)} [${f(r.diff.lo)}, ${f(r.diff.hi)}]`;
        }
        console.log(
          `| ${e} | ${f(s.running)} | ${f(s.rescue)} | ${f(s.gain)} | ${f(s.attempts)} | ${f(s.hitRate)} | ${f(s.repeatRate)} | ${st('correct')} / ${st('false_ok')} / ${st('gave_up')} / ${st('other')} / ${st('truncated')} | ${split} | ${matched} |`,
        );
      }
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
