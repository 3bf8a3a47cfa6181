/**
 * The p^k toy (paper section 5) over seeds: GRPO (negative gradients kept) against GRPOMask
 * (positive-advantage responses only), same seeds for both arms, at each setting below.
 * Per run, with a trailing window of `--window` steps: initial length, peak length and the
 * step it ends at, final length, first step at which success exceeds 0.5, final success;
 * then mean ± sd [min, max] over seeds. Lengths count the stop token. Prints; never fails
 * on numbers.
 *
 *   npx tsx bench/pktoy.bench.ts [--seeds 0,1,2,3,4] [--window 5] [--only <setting name>]
 *
 * Settings: `section5` is what section 5 is known to fix (100 actions plus stop, budget 100,
 * initial length 15) with the project's defaults for the rest (the section's other values
 * were not found). The others are readings of what is not known, fixed before any was run:
 * a longer horizon, and a* as the least likely action of a skewed (Zipf, exponent 1) start.
 */
import { execSync } from 'node:child_process';
import os from 'node:os';
import { initBackend } from '../ml/backend';
import { runPkToy, type PkToyConfig } from '../ml/pktoy';

interface Setting {
  name: string;
  note: string;
  cfg: Partial<PkToyConfig>;
}

const SETTINGS: Setting[] = [
  { name: 'section5', note: 'known section-5 values (100 actions, budget 100, initLen 15) + project defaults (uniform start, random a*, lr 0.05, 8x8, 80 steps, T 1)', cfg: {} },
  { name: 'long', note: 'as section5, 200 steps (the section\'s step count was not found)', cfg: { steps: 200 } },
  { name: 'rare-a*', note: 'Zipf(1) start over the actions, a* = least likely action (rank 99), 200 steps', cfg: { initSkew: 1, aStar: { rank: 99 }, steps: 200 } },
];

const ARMS = [
  { name: 'GRPO', grpo: {} },
  { name: 'GRPOMask', grpo: { positiveOnly: true } },
] as const;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const seeds = (arg('seeds') ?? '0,1,2,3,4').split(',').map(Number);
const window = Number(arg('window') ?? 5);
const only = arg('only');

/** Trailing means: out[t] = mean of x[t-w+1..t], defined for t >= w-1 (NaN before). */
function trailing(x: number[], w: number): number[] {
  return x.map((_, t) => (t < w - 1 ? NaN : x.slice(t - w + 1, t + 1).reduce((a, b) => a + b, 0) / w));
}

interface RunRow {
  seed: number;
  init: number;
  peak: number;
  peakStep: number;
  final: number;
  finalIncorrect: number;
  cross: number | undefined;
  finalSucc: number;
  finalDistinct: number;
  wall: number;
}

function summarize(seed: number, h: Array<Record<string, number>>, wall: number): RunRow {
  const len = trailing(h.map((r) => r['train/response_len']), window);
  const succ = trailing(h.map((r) => r['train/reward_mean']), window);
  const inc = trailing(h.map((r) => r['train/response_len_incorrect'] ?? NaN), window);
  const dist = trailing(h.map((r) => r['pktoy/distinct']), window);
  let peakStep = window - 1;
  for (let t = window - 1; t < len.length; t++) if (len[t] > len[peakStep]) peakStep = t;
  const cross = succ.findIndex((s) => s > 0.5);
  const last = len.length - 1;
  return {
    seed, init: len[window - 1], peak: len[peakStep], peakStep, final: len[last], finalIncorrect: inc[last],
    cross: cross >= 0 ? cross : undefined, finalSucc: succ[last], finalDistinct: dist[last], wall,
  };
}

function stats(xs: number[]): string {
  const v = xs.filter(Number.isFinite);
  if (!v.length) return 'n/a';
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  const sd = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1)) : 0;
  const dp = Math.abs(m) < 2 ? 3 : 1;
  return `${m.toFixed(dp)} ± ${sd.toFixed(dp)} [${Math.min(...v).toFixed(dp)}, ${Math.max(...v).toFixed(dp)}]`;
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');

(async () => {
  const backend = await initBackend();
  let commit = 'unknown';
  try {
    commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
    if (execSync('git status --porcelain -- ml bench', { encoding: 'utf8' }).trim()) commit += ' (+ uncommitted changes in ml/ or bench/)';
  } catch {
    /* not a git checkout */
  }
  console.log(`p^k toy bench — commit ${commit}; backend ${backend}; node ${process.version}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'} (${os.arch()})`);
  console.log(`seeds ${seeds.join(',')}; trailing window ${window} steps; lengths count the stop token; "succ>0.5" = last step of the first window whose mean success exceeds 0.5`);
  const t0 = performance.now();
  for (const s of SETTINGS.filter((x) => !only || x.name === only)) {
    console.log(`\n## ${s.name}: ${s.note}`);
    for (const arm of ARMS) {
      const rows: RunRow[] = [];
      for (const seed of seeds) {
        const t = performance.now();
        const { history } = runPkToy({ ...s.cfg, seed, grpo: arm.grpo });
        rows.push(summarize(seed, history, (performance.now() - t) / 1000));
      }
      console.log(`\n${arm.name}`);
      console.log('seed  init_len  peak_len@step  final_len  final_len_incorrect  succ>0.5@step  final_succ  final_distinct  wall_s');
      for (const r of rows) {
        console.log(
          `${String(r.seed).padStart(4)}  ${f1(r.init).padStart(8)}  ${`${f1(r.peak)}@${r.peakStep}`.padStart(13)}  ${f1(r.final).padStart(9)}  ${f1(r.finalIncorrect).padStart(19)}  ${(r.cross === undefined ? 'never' : String(r.cross)).padStart(13)}  ${f3(r.finalSucc).padStart(10)}  ${f1(r.finalDistinct).padStart(14)}  ${r.wall.toFixed(1).padStart(6)}`,
        );
      }
      const crossed = rows.filter((r) => r.cross !== undefined);
      console.log(`mean ± sd [min, max] over ${rows.length} seeds:`);
      console.log(`  init_len        ${stats(rows.map((r) => r.init))}`);
      console.log(`  peak_len        ${stats(rows.map((r) => r.peak))}   at step ${stats(rows.map((r) => r.peakStep))}`);
      console.log(`  final_len       ${stats(rows.map((r) => r.final))}   (incorrect only: ${stats(rows.map((r) => r.finalIncorrect))})`);
      console.log(`  succ>0.5 step   ${stats(crossed.map((r) => r.cross!))}   (${crossed.length}/${rows.length} seeds crossed)`);
      console.log(`  final_succ      ${stats(rows.map((r) => r.finalSucc))}`);
      console.log(`  final_distinct  ${stats(rows.map((r) => r.finalDistinct))}`);
      console.log(`  wall            ${rows.reduce((a, r) => a + r.wall, 0).toFixed(1)} s`);
    }
  }
  console.log(`\ntotal wall ${((performance.now() - t0) / 1000).toFixed(1)} s`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
