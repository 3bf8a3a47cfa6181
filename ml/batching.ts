/**
 * How a step's rows become forward/backward passes: SFT and RL plans (mini-batches of the
 * rollout batch, one optimiser step each, paper §"The RL objective"), micro-batches sized to
 * the wasm heap, packing into token/mask tensors, and the fixed-order gradient sum that keeps
 * the bytes independent of the thread count.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ShapeMismatchError } from './errors';
import { groupAdvantages } from './grpo';
import type { GrpoStats } from './grpo';
import { activationBytes } from './policy';
import type { PolicyConfig } from './policy';
import { Rng, deriveSeed } from './rng';
import type { Difficulty } from './task';
import { BOS, EOS, NO, PAD, encode, isMark } from './tokenizer';
import { sftExamples } from './tasks';
import type { TraceOptions } from './traces';
import type { GradedRollout, RlSettings } from './rollouts';
import { zeroStdPrompts } from './rollouts';

/** Gradients keyed by parameter name, as float32 arrays (they cross threads). */
export type Grads = Record<string, Float32Array>;

/**
 * acc + g, element-wise in float32 (a JS sum of two float32s rounded to float32 is the IEEE
 * float32 sum, as wasm's add is). Summed in micro-batch order, whichever thread computed
 * each one, so the update is the same bytes for any number of threads. Reuses acc.
 */
export function addGrads(acc: Grads | undefined, g: Grads): Grads {
  if (!acc) return g;
  for (const [name, b] of Object.entries(g)) {
    const a = acc[name];
    if (!a) {
      acc[name] = b;
      continue;
    }
    if (a.length !== b.length) throw new ShapeMismatchError(`gradient "${name}": ${a.length} vs ${b.length} values`);
    for (let k = 0; k < a.length; k++) a[k] += b[k];
  }
  return acc;
}

export interface SftOptions {
  microBatch?: number;
  /** Work cap of a micro-batch in rows of CHUNK_COST_LEN tokens (config `microWork`). @default CHUNK_COST_ROWS */
  microWork?: number;
  /** The run's task (ml/tasks.ts); absent: countdown. */
  task?: string;
  /** Loss weight of the check-mark tokens (ok / no): a mark is one token in ~20 of an attempt, so at weight 1 the comparison it needs is learned last. */
  markWeight?: number;
}

export interface SftRow {
  prompt: number[];
  response: number[];
  forced: number[];
  weights?: number[];
}

export const sftWeight = (r: SftRow) => (r.weights ? r.weights.reduce((a, w) => a + w, 0) : r.response.length);

/** SFT step `step`'s micro-batches and its total (weighted) token count: a pure function of (cfg, seed, step, options). */
export function sftPlan(
  cfg: PolicyConfig,
  seed: number,
  step: number,
  batchSize: number,
  difficulty: Difficulty[],
  traces: Partial<TraceOptions>,
  opts: SftOptions = {},
): { chunks: SftRow[][]; total: number } {
  const { microBatch = 16, microWork = CHUNK_COST_ROWS, markWeight = 1 } = opts;
  const batch = sftExamples(opts.task, seed, step, batchSize, difficulty, { ...traces, budget: cfg.context });
  const rows: SftRow[] = batch.map((ex) => {
    const response = [...encode(ex.response), EOS];
    const weights = markWeight === 1 ? undefined : response.map((id) => (isMark(id) ? markWeight : 1));
    return { prompt: [BOS, ...encode(ex.prompt)], response, forced: [], weights };
  });
  const fits = byLength(rows.filter((r) => r.prompt.length + r.response.length <= cfg.context));
  if (fits.length === 0) throw new ShapeMismatchError(`sft: no trace fits model.context ${cfg.context}`);
  return { chunks: microBatches(fits, microBatch, cfg, microWork), total: fits.reduce((a, r) => a + sftWeight(r), 0) };
}

export const sftMetrics = (lossSum: number, gradNorm: number, tokens: number) => ({
  'sft/loss': lossSum,
  'sft/grad_norm': gradNorm,
  'sft/tokens': tokens,
});

export type PlanRow = GradedRollout & { adv: number };

/**
 * Iteration t's update plan: group advantages (Eq. 2.1), the seeded shuffle into mini-batches
 * (one optimiser step each) and each mini-batch's micro-batches and loss-token count.
 * Mini-batches with no loss token are dropped (no step).
 */
export function rlPlan(
  cfg: PolicyConfig,
  s: RlSettings,
  t: number,
  graded: GradedRollout[],
): { miniBatches: Array<{ chunks: PlanRow[][]; tokens: number }>; zeroStdGroups: number } {
  const order = [...graded].sort((a, b) => a.i - b.i || a.j - b.j);
  const { adv, zeroStdGroups } = groupAdvantages(
    order.map((g) => g.reward),
    s.samples,
  );
  const masked = (g: GradedRollout) => s.grpo.truncated === 'mask' && g.truncated; // GrpoConfig.truncated
  let rows: PlanRow[] = order.map((g, k) => ({
    ...g,
    adv: masked(g) ? 0 : adv[k],
    forced: s.grpo.maskMarks ? withMarks(g) : g.forced,
  }));
  if (s.skipZeroStd) {
    const flat = zeroStdPrompts(order);
    rows = rows.filter((r) => !flat.has(r.i));
  }
  const shuffled = new Rng(deriveSeed(s.seed, 'minibatch', s.stream, t)).shuffle(rows);
  const mbSize = Math.ceil(shuffled.length / s.miniBatches);
  const miniBatches: Array<{ chunks: PlanRow[][]; tokens: number }> = [];
  for (let m = 0; m < shuffled.length; m += mbSize) {
    const mb = shuffled.slice(m, m + mbSize);
    const tokens = mb.reduce((a, r) => a + lossTokens(r, s.grpo.positiveOnly), 0);
    if (tokens > 0) miniBatches.push({ chunks: microBatches(byLength(mb), s.microBatch, cfg, s.microWork), tokens });
  }
  return { miniBatches, zeroStdGroups };
}

/** train/* loss metrics of one update: token-weighted means of the micro-batch statistics. */
export function updateMetrics(stats: GrpoStats[], norms: number[], zeroStdGroups: number): Record<string, number> {
  const w = stats.reduce((a, x) => a + x.tokens, 0) || 1;
  const avg = (f: (x: GrpoStats) => number) => stats.reduce((a, x) => a + f(x) * x.tokens, 0) / w;
  return {
    'train/loss': avg((x) => x.loss),
    'train/clip_frac': avg((x) => x.clipFrac),
    'train/dual_clip_frac': avg((x) => x.dualClipFrac),
    'train/kl_ref': avg((x) => x.kl),
    'train/entropy': avg((x) => x.entropy),
    'train/approx_kl_old': avg((x) => x.approxKlOld),
    'train/grad_norm': norms.length ? norms.reduce((a, b) => a + b, 0) / norms.length : 0,
    'train/optimizer_steps': norms.length,
    'train/zero_std_groups': zeroStdGroups,
  };
}

/** A rollout's forced positions plus its check-mark positions (GrpoConfig.maskMarks), ascending. */
export const withMarks = (r: { response: number[]; forced: number[] }): number[] =>
  [...new Set([...r.forced, ...r.response.flatMap((id, k) => (isMark(id) ? [k] : []))])].sort((a, b) => a - b);

export const lossTokens = (r: { response: number[]; forced: number[]; adv?: number }, positiveOnly: boolean): number =>
  positiveOnly && !((r.adv ?? 0) > 0) ? 0 : r.response.length - r.forced.length;

/**
 * Rows in order of length (stable): micro-batches are padded to their longest row, so
 * grouping rows of similar length cuts the padded work (traces and responses are
 * long-tailed). Each micro-batch's loss is scaled by its token share, so the grouping
 * changes only float rounding, never the objective.
 */
export const byLength = <R extends { prompt: number[]; response: number[] }>(rows: R[]): R[] =>
  rows
    .map((r, k) => ({ r, k, n: r.prompt.length + r.response.length }))
    .sort((a, b) => a.n - b.n || a.k - b.k)
    .map((x) => x.r);

/**
 * Micro-batches of rows already in length order: at most `micro` rows, no more rows than keep
 * the padded pass under PASS_BYTES of activations (policy.ts activationBytes: long traces get
 * smaller micro-batches instead of exhausting wasm's heap), and no more estimated work than
 * CHUNK_COST (rows × T × (T + 6d) for padded length T: attention grows with T, the
 * projections with d), so micro-batches cost about the same and a compute pool's threads
 * share a step evenly. A pure function of the rows and the model shape (never of the thread
 * count), so the split, and the gradient's rounding, is the same on every rerun.
 */
export function microBatches<R extends { prompt: number[]; response: number[] }>(
  rows: R[],
  micro: number,
  cfg: PolicyConfig,
  work = CHUNK_COST_ROWS,
  passBytes = PASS_BYTES,
): R[][] {
  const out: R[][] = [];
  let cur: R[] = [];
  let longest = 0;
  const cost = (n: number, t: number) => n * t * (t + 6 * cfg.dModel);
  const budget = work * CHUNK_COST_LEN * (CHUNK_COST_LEN + 6 * cfg.dModel);
  for (const r of rows) {
    const t = Math.max(longest, r.prompt.length + r.response.length);
    if (
      cur.length > 0 &&
      (cur.length >= micro || activationBytes(cfg, cur.length + 1, t) > passBytes || cost(cur.length + 1, t) > budget)
    ) {
      out.push(cur);
      cur = [];
    }
    cur.push(r);
    longest = Math.max(...cur.map((c) => c.prompt.length + c.response.length));
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * A micro-batch does at most the work of `work` rows of CHUNK_COST_LEN tokens (see
 * microBatches; the run config's `microWork`). By default 4: with 16 the demo's SFT steps came
 * in micro-batches too few and too uneven for two threads to share (bench/NOTES.md "Smaller
 * micro-batches, measured"). MICRO_WORK_UNRECORDED is what a run whose resolved config
 * predates `microWork` trains with.
 */
export const CHUNK_COST_ROWS = 4;
export const MICRO_WORK_UNRECORDED = 16;
export const CHUNK_COST_LEN = 128;

/**
 * Activation bytes (estimated) one micro-batch may take: 768 MiB. A [16, 544] pass, estimated at
 * 1.7 GiB, died with "memory access out of bounds" (the heap's pointers break past 2 GiB of
 * wasm's 4 GiB address space) and the estimate is rough, so stay well under it.
 */
export const PASS_BYTES = 3 * 2 ** 28;

/**
 * Right-pad rows of (prompt, response) to one length. logp index k predicts token k + 1,
 * so response token r of a row with prompt length P sits at logp index P + r − 1.
 */
export function pack(
  rows: Array<{ prompt: number[]; response: number[]; forced: number[]; logp?: number[]; adv?: number; weights?: number[] }>,
  rl: boolean,
  want: { marks?: boolean; noMarks?: boolean } = {},
) {
  const T = Math.max(...rows.map((r) => r.prompt.length + r.response.length));
  const B = rows.length;
  const tok = new Int32Array(B * T).fill(PAD);
  const mask = new Float32Array(B * (T - 1));
  const old = new Float32Array(B * (T - 1));
  const marks = want.marks ? new Float32Array(B * (T - 1)) : undefined;
  const noMarks = want.noMarks ? new Float32Array(B * (T - 1)) : undefined;
  rows.forEach((r, b) => {
    const P = r.prompt.length;
    tok.set(r.prompt, b * T);
    tok.set(r.response, b * T + P);
    const forced = new Set(r.forced);
    for (let k = 0; k < r.response.length; k++) {
      if (forced.has(k)) continue;
      mask[b * (T - 1) + P + k - 1] = r.weights ? r.weights[k] : 1;
      if (r.logp) old[b * (T - 1) + P + k - 1] = r.logp[k];
      if (marks && isMark(r.response[k])) marks[b * (T - 1) + P + k - 1] = 1;
      if (noMarks && r.response[k] === NO) noMarks[b * (T - 1) + P + k - 1] = 1;
    }
  });
  return {
    tokens: tf.tensor2d(tok, [B, T], 'int32'),
    mask: tf.tensor2d(mask, [B, T - 1]),
    oldLogp: rl ? tf.tensor2d(old, [B, T - 1]) : undefined,
    adv: rl ? tf.tensor1d(rows.map((r) => r.adv ?? 0)) : undefined,
    marks: marks ? tf.tensor2d(marks, [B, T - 1]) : undefined,
    noMarks: noMarks ? tf.tensor2d(noMarks, [B, T - 1]) : undefined,
  };
}
