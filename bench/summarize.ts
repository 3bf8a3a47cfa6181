/**
 * Tables for docs/RESULTS.md from finished runs in the object store: per node, the select
 * curves and chosen budgets, training metrics (mean of the first and last 5 iterations) and
 * evaluation metrics by budget, as mean [min, max] over the runs given (one run per seed).
 *
 *   npx tsx bench/summarize.ts <run> [<run> ...] [--keys pass@1,attempts,...]
 */
import { keys } from '../storage/layout';
import { ObjectStore } from '../storage/store';
import type { NodeResult } from '../activities/types';

const EVAL_KEYS = [
  'pass@1',
  'pass@8',
  'attempts',
  'unique_attempts',
  'marks_true',
  'false_ok',
  'stop_correct',
  'stop_false_ok',
  'stop_truncated',
  'response_len',
];
const TRAIN_KEYS = [
  'train/reward_mean',
  'train/response_len',
  'train/attempts',
  'train/unique_attempts',
  'train/marks_true',
  'train/false_ok',
  'train/entropy',
  'train/truncated_frac',
  'train/zero_std_frac',
];

const stat = (xs: number[]): string => {
  const v = xs.filter(Number.isFinite);
  if (!v.length) return '–';
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const f = (x: number) => (Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(3));
  return v.length === 1 ? f(mean) : `${f(mean)} [${f(Math.min(...v))}, ${f(Math.max(...v))}]`;
};

async function main() {
  const args = process.argv.slice(2);
  const ki = args.indexOf('--keys');
  const evalKeys = ki >= 0 ? args[ki + 1].split(',') : EVAL_KEYS;
  const runs = args.filter((a, i) => !a.startsWith('--') && (ki < 0 || i !== ki + 1));
  const store = ObjectStore.fromEnv();
  const perRun: Array<{
    config: { nodes: Record<string, { kind: string }> };
    results: Record<string, NodeResult>;
    rows: Array<Record<string, number | string>>;
  }> = [];
  for (const run of runs) {
    const m = await store.getJson<{ config: { nodes: Record<string, { kind: string }> } }>(keys.manifest(run));
    const results: Record<string, NodeResult> = {};
    for (const id of Object.keys(m.config.nodes))
      if (await store.exists(keys.result(run, id))) results[id] = await store.getJson<NodeResult>(keys.result(run, id));
    const parts = await store.list(`runs/${run}/metrics/`);
    const rows = await Promise.all(parts.map((k) => store.getJson<Record<string, number | string>>(k)));
    perRun.push({ config: m.config, results, rows });
  }
  console.log(`runs: ${runs.join(', ')}  (mean [min, max] over runs)`);
  const nodes = Object.keys(perRun[0].config.nodes);
  for (const id of nodes) {
    const kind = perRun[0].config.nodes[id].kind;
    const res = perRun.map((r) => r.results[id]).filter(Boolean);
    if (!res.length) continue;
    if (kind === 'select-budget') {
      const budgets = [
        ...new Set(
          res.flatMap((r) =>
            Object.keys(r.metrics ?? {})
              .map((k) => /^eval\/b(\d+)\/pass@1$/.exec(k)?.[1])
              .filter(Boolean)
              .map(Number),
          ),
        ),
      ].sort((a, b) => a - b);
      console.log(
        `\n### ${id} (select-budget): chosen ${res.map((r) => r.budget).join(', ')}; b0 ${stat(res.map((r) => r.metrics?.['select/b0'] ?? NaN))}`,
      );
      console.log(`| J(B) | ${budgets.join(' | ')} |\n|---|${budgets.map(() => '---|').join('')}`);
      console.log(`| pass@1 | ${budgets.map((b) => stat(res.map((r) => r.metrics?.[`eval/b${b}/pass@1`] ?? NaN))).join(' | ')} |`);
      for (const r of res) if (r.warning) console.log(`warning: ${r.warning}`);
    } else if (kind === 'eval') {
      const budgets = [
        ...new Set(
          res.flatMap((r) =>
            Object.keys(r.metrics ?? {})
              .map((k) => /^eval\/b(\d+)\/pass@1$/.exec(k)?.[1])
              .filter(Boolean)
              .map(Number),
          ),
        ),
      ].sort((a, b) => a - b);
      console.log(
        `\n### ${id} (eval; data: min_steps_mean ${stat(res.map((r) => r.metrics?.['data/min_steps_mean'] ?? NaN))}, needs_all ${stat(res.map((r) => r.metrics?.['data/needs_all'] ?? NaN))})`,
      );
      console.log(`| budget | ${evalKeys.join(' | ')} |\n|---|${evalKeys.map(() => '---|').join('')}`);
      for (const b of budgets)
        console.log(`| ${b} | ${evalKeys.map((k) => stat(res.map((r) => r.metrics?.[`eval/b${b}/${k}`] ?? NaN))).join(' | ')} |`);
    } else if (kind === 'rl' || kind === 'sft') {
      const rowsOf = (r: (typeof perRun)[number]) => r.rows.filter((x) => x.node === id).sort((a, b) => Number(a.step) - Number(b.step));
      const win = (rows: Array<Record<string, number | string>>, key: string, last: boolean) => {
        const w = last ? rows.slice(-5) : rows.slice(0, 5);
        const v = w.map((x) => Number(x[key])).filter(Number.isFinite);
        return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
      };
      const tk = kind === 'sft' ? ['sft/loss'] : TRAIN_KEYS;
      console.log(`\n### ${id} (${kind}; budget ${res.map((r) => r.budget ?? '').join(', ')}; ${rowsOf(perRun[0]).length} iterations)`);
      console.log(`| metric | first 5 | last 5 |\n|---|---|---|`);
      for (const k of tk)
        console.log(
          `| ${k} | ${stat(perRun.map((r) => win(rowsOf(r), k, false)))} | ${stat(perRun.map((r) => win(rowsOf(r), k, true)))} |`,
        );
    } else if (kind === 'report') {
      gainSummary(res);
    }
  }
}

/**
 * The report's paired-bootstrap gains over the base (activities/report.ts gainMetrics): per
 * policy and budget, each run's gain [95 % interval]; and gain at 2x / 4x minus gain at 1x with
 * how many runs' intervals lie wholly above zero.
 */
function gainSummary(res: NodeResult[]) {
  const policies = [
    ...new Set(
      res.flatMap((r) =>
        Object.keys(r.metrics ?? {})
          .map((k) => /^gain\/(.+)\/(b\d+|x\d+_vs_x1)\/mean$/.exec(k)?.[1])
          .filter((x): x is string => x !== undefined),
      ),
    ),
  ];
  const iv = (r: NodeResult, key: string) => {
    const m = r.metrics ?? {};
    return m[`${key}/mean`] === undefined
      ? '–'
      : `${m[`${key}/mean`] >= 0 ? '+' : ''}${m[`${key}/mean`].toFixed(3)} [${m[`${key}/lo`].toFixed(3)}, ${m[`${key}/hi`].toFixed(3)}]`;
  };
  for (const p of policies) {
    const prefix = `gain/${p}/`;
    const colOf = (k: string) => (k.startsWith(prefix) && k.endsWith('/mean') ? k.slice(prefix.length, -'/mean'.length) : undefined);
    const order = (c: string) => (c.startsWith('b') ? Number(c.slice(1)) : 1e9 + Number(c.slice(1).split('_')[0]));
    const cols = [
      ...new Set(
        res.flatMap((r) =>
          Object.keys(r.metrics ?? {})
            .map(colOf)
            .filter((x): x is string => x !== undefined && !x.includes('/')),
        ),
      ),
    ].sort((a, b) => order(a) - order(b));
    console.log(`\n### gain of ${p} over the base (pass@1; mean [95 % paired bootstrap interval over problems], one row per run)`);
    console.log(`| run | ${cols.join(' | ')} |\n|---|${cols.map(() => '---|').join('')}`);
    res.forEach((r, i) => console.log(`| ${i + 1} | ${cols.map((c) => iv(r, `gain/${p}/${c}`)).join(' | ')} |`));
    console.log(`| mean | ${cols.map((c) => stat(res.map((r) => r.metrics?.[`gain/${p}/${c}/mean`] ?? NaN))).join(' | ')} |`);
    for (const c of cols.filter((x) => x.startsWith('x'))) {
      const above = res.filter((r) => (r.metrics?.[`gain/${p}/${c}/lo`] ?? -1) > 0).length;
      const positive = res.filter((r) => (r.metrics?.[`gain/${p}/${c}/mean`] ?? -1) >= 0).length;
      console.log(
        `${c.replace('_vs_', ' vs ')}: gain at least the 1x gain in ${positive} of ${res.length} runs; interval wholly above 0 in ${above} of ${res.length}`,
      );
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
