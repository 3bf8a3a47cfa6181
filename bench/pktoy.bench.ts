/**
 * The p^k toy (paper section 5) over seeds: GRPO (negative gradients kept) against GRPOMask
 * (positive-advantage responses only), same seeds for both arms, at each setting below.
 * Per run, with a trailing window of `--window` steps: initial length, peak length and the
 * step it ends at, final length, first step at which success exceeds 0.5, final success;
 * then mean ± sd [min, max] over seeds. Lengths count the stop token. Prints; never fails
 * on numbers.
 *
 *   npx tsx bench/pktoy.bench.ts [--seeds 0,1,2,3,4] [--window 5] [--only <setting name>]
 *   npx tsx bench/pktoy.bench.ts --preset paper [--seeds 1,2,3,4,5] [--only <variant>[,<variant>]]
 *       [--updates 5000] [--json <curves.json>]
 *   npx tsx bench/pktoy.bench.ts --plot <curves.json> --out <dir> [--only <variants>] [--name <file prefix>]
 *       (renders the SVG figures: one per variant, Fig. 7's panels, and an overview of GRPO's curves)
 *
 * `--preset paper` runs runPkToyPaper (appendix C.3's MDP and recipe) at each reading in
 * PAPER_VARIANTS, both arms (GRPO, GRPOMask), and prints Fig. 7's readouts at checkpoints:
 * reward, length and token entropy as means over 100-update bins, P(stop), P(a*) and state
 * entropy of the policy at the bin's start, each as mean [min, max] over seeds; then the
 * criterion of docs/results/pktoy.md per seed.
 *
 * Settings of the default `--preset section5` (runPkToy): `section5` is §5's sizes (100
 * actions plus stop, budget 100, initial length 15) with the project's training defaults; the
 * others are a longer horizon, and a* as the least likely action of a skewed (Zipf, exponent 1)
 * start.
 */
import { execSync } from 'node:child_process';
import os from 'node:os';
import { initBackend } from '../ml/backend';
import { writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { runPkToy, runPkToyPaper, type PkToyConfig, type PkToyPaperConfig, type PkToyPaperResult } from '../ml/pktoy';
import { renderSvg } from '../activities/report';

interface Setting {
  name: string;
  note: string;
  cfg: Partial<PkToyConfig>;
}

const SETTINGS: Setting[] = [
  {
    name: 'section5',
    note: 'known section-5 values (100 actions, budget 100, initLen 15) + project defaults (uniform start, random a*, lr 0.05, 8x8, 80 steps, T 1)',
    cfg: {},
  },
  { name: 'long', note: "as section5, 200 steps (the section's step count was not found)", cfg: { steps: 200 } },
  {
    name: 'rare-a*',
    note: 'Zipf(1) start over the actions, a* = least likely action (rank 99), 200 steps',
    cfg: { initSkew: 1, aStar: { rank: 99 }, steps: 200 },
  },
];

const ARMS = [
  { name: 'GRPO', grpo: {} },
  { name: 'GRPOMask', grpo: { positiveOnly: true } },
] as const;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const preset = arg('preset') ?? 'section5';
const seeds = (arg('seeds') ?? (preset === 'paper' ? '1,2,3,4,5' : '0,1,2,3,4')).split(',').map(Number);
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
  const len = trailing(
    h.map((r) => r['train/response_len']),
    window,
  );
  const succ = trailing(
    h.map((r) => r['train/reward_mean']),
    window,
  );
  const inc = trailing(
    h.map((r) => r['train/response_len_incorrect'] ?? NaN),
    window,
  );
  const dist = trailing(
    h.map((r) => r['pktoy/distinct']),
    window,
  );
  let peakStep = window - 1;
  for (let t = window - 1; t < len.length; t++) if (len[t] > len[peakStep]) peakStep = t;
  const cross = succ.findIndex((s) => s > 0.5);
  const last = len.length - 1;
  return {
    seed,
    init: len[window - 1],
    peak: len[peakStep],
    peakStep,
    final: len[last],
    finalIncorrect: inc[last],
    cross: cross >= 0 ? cross : undefined,
    finalSucc: succ[last],
    finalDistinct: dist[last],
    wall,
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

async function section5(): Promise<void> {
  const backend = await initBackend();
  let commit = 'unknown';
  try {
    commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
    if (execSync('git status --porcelain -- ml bench', { encoding: 'utf8' }).trim()) commit += ' (+ uncommitted changes in ml/ or bench/)';
  } catch {
    /* not a git checkout */
  }
  console.log(
    `p^k toy bench — commit ${commit}; backend ${backend}; node ${process.version}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'} (${os.arch()})`,
  );
  console.log(
    `seeds ${seeds.join(',')}; trailing window ${window} steps; lengths count the stop token; "succ>0.5" = last step of the first window whose mean success exceeds 0.5`,
  );
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
}

// --------------------------------------------------------------------------------------------
// --preset paper: appendix C.3's toy at each reading of what the text leaves open.
// --------------------------------------------------------------------------------------------

interface PaperVariant {
  name: string;
  note: string;
  cfg: Partial<PkToyPaperConfig>;
}

/** The readings (docs/results/pktoy.md). `as-written` is C.3 taken literally. */
const PAPER_VARIANTS: PaperVariant[] = [
  { name: 'as-written', note: 'U[-3,3] init, SGD lr 1e-2, A = r - 0.5, 1 trajectory/update', cfg: {} },
  { name: 'sgd-pm1', note: 'as-written, A = 2r - 1 (reward +-1)', cfg: { advantage: 'pm1' } },
  { name: 'sgd-lr1', note: 'as-written, SGD lr 1 (100x)', cfg: { lr: 1 } },
  { name: 'adam', note: 'as-written, Adam lr 1e-2', cfg: { optimizer: 'adam' } },
  { name: 'adam-pm1', note: 'adam, A = 2r - 1', cfg: { optimizer: 'adam', advantage: 'pm1' } },
  { name: 'adam-r', note: 'adam, A = r (no baseline)', cfg: { optimizer: 'adam', advantage: 'r' } },
  { name: 'adam-ema', note: 'adam, A = r - EMA(r) (decay 0.99, b0 = 0)', cfg: { optimizer: 'adam', advantage: 'ema' } },
  { name: 'adam-group8', note: 'adam, 8 trajectories/update, group-normalised A', cfg: { optimizer: 'adam', advantage: 'group' } },
  { name: 'adam-U0-3', note: 'adam, init U[0,3]', cfg: { optimizer: 'adam', initLo: 0 } },
  {
    name: 'adam-U1.5-2.5',
    note: "adam, init U[1.5,2.5] (fitted to Fig. 7's start: length ~15, entropy ~4.5; not in the text)",
    cfg: { optimizer: 'adam', initLo: 1.5, initHi: 2.5 },
  },
  { name: 'sgd-U0-3', note: 'as-written, init U[0,3]', cfg: { initLo: 0 } },
];

const PAPER_ARMS = [
  { name: 'GRPO', mask: false },
  { name: 'GRPOMask', mask: true },
] as const;

/** Bins of this many updates for reward, length and token entropy. */
const BIN = 100;
/** Checkpoints printed: the bins starting at these updates. */
const CHECK_EVERY = 500;

interface Curves {
  /** Per bin: start update, then per seed the bin means. */
  binStart: number[];
  reward: number[][];
  length: number[][];
  tokenEntropy: number[][];
  /** At evalAt (per seed). */
  evalAt: number[];
  pStop: number[][];
  pStar: number[][];
  stateEntropy: number[][];
  aStar: number[];
  steps: number[];
  wall: number[];
}

function binMeans(x: Float64Array): number[] {
  const out: number[] = [];
  for (let i = 0; i + BIN <= x.length; i += BIN) out.push(x.subarray(i, i + BIN).reduce((a, b) => a + b, 0) / BIN);
  return out;
}

function collect(runs: Array<{ r: PkToyPaperResult; wall: number }>): Curves {
  const nBins = Math.floor(runs[0].r.reward.length / BIN);
  return {
    binStart: Array.from({ length: nBins }, (_, i) => i * BIN),
    reward: runs.map(({ r }) => binMeans(r.reward)),
    length: runs.map(({ r }) => binMeans(r.length)),
    tokenEntropy: runs.map(({ r }) => binMeans(r.tokenEntropy)),
    evalAt: runs[0].r.evalAt,
    pStop: runs.map(({ r }) => r.pStop),
    pStar: runs.map(({ r }) => r.pStar),
    stateEntropy: runs.map(({ r }) => r.stateEntropy),
    aStar: runs.map(({ r }) => r.aStar),
    steps: runs.map(({ r }) => r.steps),
    wall: runs.map(({ wall }) => wall),
  };
}

/** mean [min, max] over seeds of column i; dp < 0: 1 significant digit after the point, exponent form. */
function mmm(rows: number[][], i: number, dp: number): string {
  const v = rows.map((r) => r[i]);
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  const f = (x: number) => (dp < 0 ? x.toExponential(1) : x.toFixed(dp));
  return `${f(m)} [${f(Math.min(...v))}, ${f(Math.max(...v))}]`;
}

interface Verdict {
  seed: number;
  initLen: number;
  peakLen: number;
  ratio: number;
  /** First bin start where GRPO's bin reward exceeds 0.8 (undefined: never). */
  t80: number | undefined;
  /** GRPOMask's largest bin reward up to and including that bin. */
  maskReward: number;
  pass: boolean;
}

/**
 * The criterion, per seed on 100-update bins: GRPO's peak bin length up to the first bin whose
 * reward exceeds 0.8 is >= 2.5x its first bin's, and GRPOMask's bin reward (same seed) stays
 * below 0.3 up to that bin.
 */
function verdicts(g: Curves, m: Curves): Verdict[] {
  return seeds.map((seed, k) => {
    const i80 = g.reward[k].findIndex((x) => x > 0.8);
    const upTo = i80 >= 0 ? i80 : g.length[k].length - 1;
    const initLen = g.length[k][0];
    const peakLen = Math.max(...g.length[k].slice(0, upTo + 1));
    const maskReward = Math.max(...m.reward[k].slice(0, upTo + 1));
    return {
      seed,
      initLen,
      peakLen,
      ratio: peakLen / initLen,
      t80: i80 >= 0 ? g.binStart[i80] : undefined,
      maskReward,
      pass: i80 >= 0 && peakLen >= 2.5 * initLen && maskReward < 0.3,
    };
  });
}

function paper(): void {
  const only = arg('only')?.split(',');
  const updates = Number(arg('updates') ?? 5000);
  const jsonOut = arg('json');
  let commit = 'unknown';
  try {
    commit = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
    if (execSync('git status --porcelain -- ml bench', { encoding: 'utf8' }).trim()) commit += ' (+ uncommitted changes in ml/ or bench/)';
  } catch {
    /* not a git checkout */
  }
  console.log(
    `p^k toy, paper preset (appendix C.3) — commit ${commit}; node ${process.version}; ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'} (${os.arch()})`,
  );
  console.log(
    `seeds ${seeds.join(',')}; ${updates} updates; reward/length/token entropy = mean over the ${BIN}-update bin starting at the checkpoint;`,
  );
  console.log('P(stop), P(a*), state entropy = policy at the checkpoint, mean over states s != a*; every cell mean [min, max] over seeds');
  const t0 = performance.now();
  const all: Record<string, Record<string, Curves>> = {};
  for (const v of PAPER_VARIANTS.filter((x) => !only || only.includes(x.name))) {
    console.log(`\n## ${v.name}: ${v.note}`);
    all[v.name] = {};
    for (const arm of PAPER_ARMS) {
      const runs = seeds.map((seed) => {
        const t = performance.now();
        const r = runPkToyPaper({ ...v.cfg, updates, seed, mask: arm.mask });
        return { r, wall: (performance.now() - t) / 1000 };
      });
      const c = collect(runs);
      all[v.name][arm.name] = c;
      console.log(`\n${arm.name} (wall ${c.wall.reduce((a, b) => a + b, 0).toFixed(1)} s; optimiser steps ${c.steps.join(',')})`);
      console.log(
        'update  reward               length               P(stop)                 P(a*)                      token entropy     state entropy',
      );
      for (let i = 0; i < c.binStart.length; i += CHECK_EVERY / BIN) {
        const e = c.evalAt.indexOf(c.binStart[i]);
        console.log(
          `${String(c.binStart[i]).padStart(6)}  ${mmm(c.reward, i, 2).padEnd(19)}  ${mmm(c.length, i, 1).padEnd(19)}  ${mmm(c.pStop, e, 3).padEnd(22)}  ${mmm(c.pStar, e, -1).padEnd(25)}  ${mmm(c.tokenEntropy, i, 2).padEnd(16)}  ${mmm(c.stateEntropy, e, 2)}`,
        );
      }
      const e = c.evalAt.length - 1;
      console.log(
        `${String(c.evalAt[e]).padStart(6)}  ${''.padEnd(19)}  ${''.padEnd(19)}  ${mmm(c.pStop, e, 3).padEnd(22)}  ${mmm(c.pStar, e, -1).padEnd(25)}  ${''.padEnd(16)}  ${mmm(c.stateEntropy, e, 2)}`,
      );
    }
    const vs = verdicts(all[v.name].GRPO, all[v.name].GRPOMask);
    console.log(
      '\ncriterion (GRPO peak length before its reward bin first > 0.8 >= 2.5x its first bin; GRPOMask reward < 0.3 up to then):',
    );
    console.log('seed  init_len  peak_len  ratio  GRPO>0.8@update  GRPOMask_max_reward  pass');
    for (const x of vs) {
      console.log(
        `${String(x.seed).padStart(4)}  ${x.initLen.toFixed(1).padStart(8)}  ${x.peakLen.toFixed(1).padStart(8)}  ${x.ratio.toFixed(2).padStart(5)}  ${String(x.t80 ?? 'never').padStart(15)}  ${x.maskReward.toFixed(2).padStart(19)}  ${x.pass ? 'yes' : 'no'}`,
      );
    }
    console.log(`passes on ${vs.filter((x) => x.pass).length}/${vs.length} seeds`);
  }
  console.log(`\ntotal wall ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  if (jsonOut) {
    writeFileSync(
      jsonOut,
      JSON.stringify({ commit, seeds, updates, bin: BIN, variants: PAPER_VARIANTS.filter((v) => all[v.name]), curves: all }),
    );
    console.log(`curves written to ${jsonOut}`);
  }
}

/** Long-format rows {update, metric, arm, mean, lo, hi} of one variant's curves. */
function longRows(c: Record<string, Curves>): Array<Record<string, number | string>> {
  const out: Array<Record<string, number | string>> = [];
  const push = (arm: string, metric: string, xs: number[], rows: number[][]) =>
    xs.forEach((x, i) => {
      const v = rows.map((r) => r[i]);
      out.push({ arm, metric, update: x, mean: v.reduce((a, b) => a + b, 0) / v.length, lo: Math.min(...v), hi: Math.max(...v) });
    });
  for (const [arm, k] of Object.entries(c)) {
    const mid = k.binStart.map((b) => b + BIN / 2);
    push(arm, 'reward', mid, k.reward);
    push(arm, 'length', mid, k.length);
    push(arm, 'token entropy', mid, k.tokenEntropy);
    push(arm, 'P(stop)', k.evalAt, k.pStop);
    push(arm, 'P(a*)', k.evalAt, k.pStar);
  }
  return out;
}

const METRICS = ['reward', 'length', 'P(stop)', 'P(a*)', 'token entropy'];

/** Fig. 7's panels for one variant: one chart per readout, GRPO and GRPOMask, mean and [min, max] band over seeds. */
function variantSpec(name: string, c: Record<string, Curves>, nSeeds: number): TopLevelSpec {
  const values = longRows(c);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `p^k toy, ${name}: mean and [min, max] over ${nSeeds} seeds`,
    data: { values },
    hconcat: METRICS.map((metric) => ({
      width: 190,
      height: 150,
      transform: [{ filter: { field: 'metric', equal: metric } }],
      layer: [
        {
          mark: { type: 'area', opacity: 0.2 },
          encoding: {
            x: { field: 'update', type: 'quantitative', title: 'update' },
            y: { field: 'lo', type: 'quantitative', title: metric },
            y2: { field: 'hi' },
            color: { field: 'arm', type: 'nominal' },
          },
        },
        {
          mark: { type: 'line', strokeWidth: 1.5 },
          encoding: {
            x: { field: 'update', type: 'quantitative' },
            y: { field: 'mean', type: 'quantitative' },
            color: { field: 'arm', type: 'nominal' },
          },
        },
      ],
    })),
    config: { font: 'system-ui, sans-serif', title: { anchor: 'start' } },
  } as TopLevelSpec;
}

/** GRPO's mean length and reward for every variant. */
function overviewSpec(curves: Record<string, Record<string, Curves>>, nSeeds: number): TopLevelSpec {
  const values: Array<Record<string, number | string>> = [];
  for (const [variant, c] of Object.entries(curves)) {
    for (const r of longRows({ GRPO: c.GRPO })) if (r.metric === 'length' || r.metric === 'reward') values.push({ ...r, variant });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `p^k toy, GRPO arm of every reading: mean over ${nSeeds} seeds`,
    data: { values },
    hconcat: ['length', 'reward'].map((metric) => ({
      width: 320,
      height: 220,
      transform: [{ filter: { field: 'metric', equal: metric } }],
      mark: { type: 'line', strokeWidth: 1.5 },
      encoding: {
        x: { field: 'update', type: 'quantitative', title: 'update' },
        y: { field: 'mean', type: 'quantitative', title: metric },
        color: { field: 'variant', type: 'nominal' },
      },
    })),
    config: { font: 'system-ui, sans-serif', title: { anchor: 'start' } },
  } as TopLevelSpec;
}

/** Writes <out>/<name>-<variant>.svg for each variant (all, or those of --only) and, for two or more variants in the JSON, <out>/<name>-overview.svg. */
async function renderFigures(jsonPath: string, outDir: string): Promise<void> {
  const j = JSON.parse(readFileSync(jsonPath, 'utf8')) as { seeds: number[]; curves: Record<string, Record<string, Curves>> };
  const only = arg('only')?.split(',');
  const prefix = arg('name') ?? 'pktoy-paper';
  mkdirSync(outDir, { recursive: true });
  const slug = (s: string) => s.replace(/[^A-Za-z0-9.-]+/g, '_').replace(/_+$/, '');
  for (const [name, c] of Object.entries(j.curves)) {
    if (only && !only.includes(name)) continue;
    const file = path.join(outDir, `${prefix}-${slug(name)}.svg`);
    writeFileSync(file, await renderSvg(variantSpec(name, c, j.seeds.length)));
    console.log(`wrote ${file}`);
  }
  if (Object.keys(j.curves).length < 2) return; // an overview of one variant adds nothing
  const file = path.join(outDir, `${prefix}-overview.svg`);
  writeFileSync(file, await renderSvg(overviewSpec(j.curves, j.seeds.length)));
  console.log(`wrote ${file}`);
}

(async () => {
  const plot = arg('plot');
  if (plot) await renderFigures(plot, arg('out') ?? 'docs/results');
  else if (preset === 'paper') paper();
  else if (preset === 'section5') await section5();
  else throw new Error(`--preset must be section5 or paper (got ${preset})`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
