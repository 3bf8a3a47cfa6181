/**
 * The e3 loop on one policy, with no Temporal in sight: SFT steps on warm-start traces,
 * and the RL iteration of docs/RECIPE.md in its parts (sample → grade → update), which the
 * activities compose (activities/train.ts). Every step is a pure function of (run seed, node, step) and
 * the state it starts from, so a rerun from a checkpoint reproduces the same bytes.
 */
import * as tf from '@tensorflow/tfjs-core';
import { difficultyProfile, generateCountdown, makeCountdown, countdownPrompt } from './countdown';
import type { CountdownProblem } from './countdown';
import { NonFiniteError, ShapeMismatchError } from './errors';
import { crossEntropyLoss, groupAdvantages, grpoLoss, usesReference } from './grpo';
import type { GrpoConfig, GrpoStats } from './grpo';
import { passAtKMetrics, summarizeResponses } from './metrics';
import type { ResponseRecord } from './metrics';
import { AdamW } from './optim';
import type { AdamWConfig, AdamWState } from './optim';
import { activationBytes, createPolicy, disposePolicy, growContext, tokenLogProbs } from './policy';
import type { Policy, PolicyConfig } from './policy';
import { Rng, deriveSeed } from './rng';
import { sample, scoreResponses } from './sampler';
import type { SampleEngine } from './sampler';
import { deserializeTensors, loadPolicy, serializePolicy, serializeTensors } from './serialize';
import type { Difficulty, Grade, Split } from './task';
import { BOS, EOS, NO, PAD, decode, encode, isMark } from './tokenizer';
import { sftBatch } from './traces';
import type { TraceOptions } from './traces';

export { NonFiniteError, ShapeMismatchError };

/** One sampled response with what the update needs; JSON-able (stored as a rollout shard). */
export interface Rollout {
  /** Prompt index within the iteration and sample index within its group. */
  i: number;
  j: number;
  problemId: string;
  prompt: number[];
  response: number[];
  /** Sampling log-prob of each response token. */
  logp: number[];
  /** Indices of response tokens written by the environment (excluded from the loss). */
  forced: number[];
  truncated: boolean;
}

export interface GradedRollout extends Rollout {
  reward: number;
  grade: Grade;
}

export interface RlSettings {
  seed: number;
  nodeId: string;
  /**
   * Data and sampling stream: problems and sampling seeds derive from (run seed, stream, t,
   * i, j), so arms of one comparison that name the same stream see the same problems with
   * the same seeds (README "Clean data"). Defaults to the node id.
   */
  stream: string;
  difficulty: Difficulty;
  prompts: number;
  samples: number;
  temperature: number;
  topP: number;
  miniBatches: number;
  microBatch: number;
  skipZeroStd: boolean;
  grpo: GrpoConfig;
}

const taskFor = (tool: boolean) => makeCountdown({ toolArithmetic: tool });

/** Problems of RL iteration t (train split): a pure function of (run seed, stream, t); the cursor is t. */
export function iterationProblems(seed: number, stream: string, t: number, prompts: number, d: Difficulty): CountdownProblem[] {
  const s = deriveSeed(seed, 'rl-data', stream);
  return Array.from({ length: prompts }, (_, i) => generateCountdown(s, t * prompts + i, d, 'train'));
}

/**
 * Problem i of an evaluation (split `eval`) or budget selection (split `select`): a pure
 * function of (run seed, split, difficulty, offset + i), the same for every node that
 * evaluates that difficulty, so the base, each stage and each arm are measured on the same
 * problems. Disjoint by content from all training data (ml/countdown.ts `splitOf`).
 */
export const heldOutProblem = (seed: number, split: Exclude<Split, 'train'>, d: Difficulty, index: number): CountdownProblem =>
  generateCountdown(deriveSeed(seed, 'eval-data'), index, d, split);

export class Trainer {
  readonly opt: AdamW;
  private readonly paramOf: Map<string, string>;
  private constructor(
    readonly policy: Policy,
    readonly ref: Policy | null,
    optim: Partial<AdamWConfig>,
    readonly toolArithmetic: boolean,
    readonly engine: SampleEngine,
  ) {
    // Keyed by the stable parameter name (tfjs variable names differ between processes).
    this.opt = new AdamW(Object.fromEntries(policy.params), optim, (name) => /\.(wqkv|wo|w1|w2)$|^head$/.test(name));
    this.paramOf = new Map([...policy.params].map(([name, v]) => [v.name, name]));
  }

  /** A trainer from serialised weights (or a seeded init), optimiser state, and an optional frozen reference. */
  static create(o: {
    model: PolicyConfig;
    weights?: Uint8Array;
    optimState?: Uint8Array;
    refWeights?: Uint8Array;
    optim: Partial<AdamWConfig>;
    toolArithmetic: boolean;
    /** A warm start may lengthen the positional table of the weights it starts from (growContext). */
    growContext?: boolean;
    /** What samples (SampleOptions.engine). @default "tfjs" */
    engine?: SampleEngine;
  }): Trainer {
    let policy = o.weights ? loadPolicy(o.weights) : createPolicy(o.model);
    if (o.growContext && policy.cfg.context < o.model.context) {
      const grown = growContext(policy, o.model.context);
      disposePolicy(policy);
      policy = grown;
    }
    for (const k of ['vocab', 'layers', 'dModel', 'heads', 'context'] as const) {
      if (policy.cfg[k] !== o.model[k]) {
        disposePolicy(policy);
        throw new ShapeMismatchError(`checkpoint model.${k} is ${policy.cfg[k]}, the config says ${o.model[k]}`);
      }
    }
    const ref = o.refWeights ? loadPolicy(o.refWeights) : null;
    const tr = new Trainer(policy, ref, o.optim, o.toolArithmetic, o.engine ?? 'tfjs');
    if (o.optimState) {
      try {
        tr.opt.setState(decodeOptState(o.optimState));
      } catch (e) {
        tr.dispose();
        throw new ShapeMismatchError(`optimiser state does not fit the model: ${(e as Error).message}`);
      }
    }
    return tr;
  }

  dispose(): void {
    this.opt.dispose();
    disposePolicy(this.policy);
    if (this.ref) disposePolicy(this.ref);
  }

  /** Weights and optimiser state as bytes (with sha256) for a checkpoint. */
  snapshot(): { weights: Uint8Array; optim: Uint8Array } {
    return { weights: serializePolicy(this.policy).bytes, optim: encodeOptState(this.opt.getState()) };
  }

  /**
   * One supervised step on warm-start traces (batch `step` is a pure function of the seed):
   * the plan's micro-batch gradients summed in order, then one AdamW step. The compute pool
   * (compute/) runs the same three pieces with the micro-batches spread over threads.
   */
  sftStep(seed: number, step: number, batchSize: number, difficulty: Difficulty[], traces: Partial<TraceOptions>, opts: SftOptions = {}): Record<string, number> {
    const plan = sftPlan(this.policy.cfg, seed, step, batchSize, difficulty, traces, opts);
    let acc: Grads | undefined;
    let lossSum = 0;
    for (const chunk of plan.chunks) {
      const r = this.sftGrads(chunk, plan.total);
      acc = addGrads(acc, r.grads);
      lossSum += r.loss;
    }
    const { gradNorm } = this.applyGrads(acc!, `sft step ${step}`);
    return sftMetrics(lossSum, gradNorm, plan.total);
  }

  /** Gradient of one SFT micro-batch's share of the batch loss (rows from sftPlan). */
  sftGrads(chunk: SftRow[], total: number): { grads: Grads; loss: number } {
    const { tokens, mask } = pack(chunk, false);
    const n = chunk.reduce((a, r) => a + sftWeight(r), 0);
    const r = tf.variableGrads(() => tf.tidy(() => tf.mul(crossEntropyLoss(tokenLogProbs(this.policy, tokens).logp, mask), n / total) as tf.Scalar));
    const loss = r.value.dataSync()[0];
    tf.dispose([r.value, tokens, mask]);
    return { grads: this.toArrays(r.grads), loss };
  }

  /** Gradient of one RL micro-batch's share of its mini-batch loss (rows from rlPlan), with its loss statistics. */
  rlGrads(s: RlSettings, chunk: PlanRow[], tokensInMb: number): { grads: Grads; stats?: GrpoStats } {
    const { tokens, mask, oldLogp, adv: advT, marks, noMarks } = pack(chunk, true, { marks: s.grpo.klMarkCoef !== undefined, noMarks: s.grpo.pgMarks === 'ok' });
    const n = chunk.reduce((a, r) => a + lossTokens(r, s.grpo.positiveOnly), 0);
    const refLogp = this.ref && usesReference(s.grpo) ? tf.tidy(() => tokenLogProbs(this.ref!, tokens, { temperature: s.temperature }).logp) : undefined;
    let st: GrpoStats | undefined;
    const r = tf.variableGrads(() => {
      const { logp, entropy } = tokenLogProbs(this.policy, tokens, { temperature: s.temperature });
      const out = grpoLoss({ logp, oldLogp: oldLogp!, refLogp, entropy, adv: advT!, mask, marks, noMarks }, s.grpo);
      st = out.stats;
      return tf.mul(out.loss, n / tokensInMb) as tf.Scalar;
    });
    tf.dispose([r.value, tokens, mask, oldLogp!, advT!, ...(refLogp ? [refLogp] : []), ...(marks ? [marks] : []), ...(noMarks ? [noMarks] : [])]);
    return { grads: this.toArrays(r.grads), ...(st && n > 0 ? { stats: st } : {}) };
  }

  /** One AdamW step from summed gradients (keyed by parameter name). */
  applyGrads(grads: Grads, where: string): { gradNorm: number } {
    const tensors = Object.fromEntries(Object.entries(grads).map(([name, g]) => [name, tf.tensor(g, this.policy.params.get(name)!.shape, 'float32')]));
    try {
      return this.opt.step(tensors);
    } catch (e) {
      if (e instanceof NonFiniteError) throw new NonFiniteError(`${where}: ${e.message}`);
      throw e;
    } finally {
      tf.dispose(Object.values(tensors));
    }
  }

  private toArrays(grads: tf.NamedTensorMap): Grads {
    const out: Grads = {};
    for (const [v, g] of Object.entries(grads)) {
      out[this.paramOf.get(v) ?? v] = g.dataSync() as Float32Array;
      g.dispose();
    }
    return out;
  }

  /** Sample shard `shard` of iteration t's rollouts (prompts are split across shards). */
  async sampleShard(s: RlSettings, t: number, shard: number, shards: number, budget: number): Promise<Rollout[]> {
    return sampleRows(this.policy, { rows: shardRows(s, t, shard, shards), budget, temperature: s.temperature, topP: s.topP, tool: this.toolArithmetic, engine: this.engine, rescore: true });
  }

  /** GRPO update on graded rollouts: mini-batches, each one AdamW step (docs/RECIPE.md). */
  async update(s: RlSettings, t: number, graded: GradedRollout[]): Promise<Record<string, number>> {
    const plan = rlPlan(this.policy.cfg, s, t, graded);
    const stats: GrpoStats[] = [];
    const norms: number[] = [];
    for (const mb of plan.miniBatches) {
      let acc: Grads | undefined;
      for (const chunk of mb.chunks) {
        const r = this.rlGrads(s, chunk, mb.tokens);
        acc = addGrads(acc, r.grads);
        if (r.stats) stats.push(r.stats);
      }
      norms.push(this.applyGrads(acc!, `rl iteration ${t}`).gradNorm);
      // Let the event loop breathe (heartbeats) between optimiser steps when run in-process.
      await new Promise<void>((r) => setImmediate(r));
    }
    return updateMetrics(stats, norms, plan.zeroStdGroups);
  }

  /** J(pi; D, B) at several budgets (evalRows → sampleRows → countEval). */
  async evaluate(o: EvalSpec): Promise<EvalCounts> {
    const rows = evalRows(o);
    const rollouts = await sampleRows(this.policy, { rows, budget: Math.max(...o.budgets), temperature: o.temperature, topP: 1, tool: this.toolArithmetic, engine: this.engine });
    return countEval(rows, rollouts, o.budgets, this.toolArithmetic);
  }
}

/** One row to sample: problem i of the set, sample j, and its own sampling seed (a pure function of its coordinates). */
export interface SampleRow {
  i: number;
  j: number;
  p: CountdownProblem;
  seed: number;
}

/** A sampling job: JSON-able, so a compute thread can run any part of it. */
export interface SampleJob {
  rows: SampleRow[];
  budget: number;
  temperature: number;
  topP: number;
  tool: boolean;
  /** What computes the logits (SampleOptions.engine). @default "tfjs" */
  engine?: SampleEngine;
  /**
   * The rollouts feed an update: when another engine than tfjs sampled, their log-probs (the
   * update's old log-probs) are recomputed by the tfjs forward (scoreResponses).
   */
  rescore?: boolean;
}

/** Rows of iteration t's shard `shard`: prompts i with i mod shards = shard, `samples` rows each. */
export function shardRows(s: RlSettings, t: number, shard: number, shards: number, problems: readonly CountdownProblem[] = iterationProblems(s.seed, s.stream, t, s.prompts, s.difficulty)): SampleRow[] {
  const rows: SampleRow[] = [];
  problems.forEach((p, i) => {
    if (i % shards !== shard) return;
    for (let j = 0; j < s.samples; j++) rows.push({ i, j, p, seed: deriveSeed(s.seed, 'sample', s.stream, t, i, j) });
  });
  return rows;
}

/**
 * Sample the job's rows with `policy`. Each row's tokens and log-probs depend only on its own
 * seed and prompt, not on the rows sampled with it, so a job split over threads and joined in
 * row order gives the same rollouts (test/unit/pool.test.ts checks it).
 */
export async function sampleRows(policy: Policy, job: SampleJob): Promise<Rollout[]> {
  const { rows } = job;
  const task = taskFor(job.tool);
  const prompts = rows.map((r) => [BOS, ...encode(countdownPrompt(r.p))]);
  const forced = task.forced
    ? (row: number, soFar: number[]) => {
        const text = task.forced!(rows[row].p, decode(soFar));
        return text ? encode(text) : [];
      }
    : undefined;
  const out = await sample(policy, prompts, { budget: job.budget, temperature: job.temperature, topP: job.topP, seeds: rows.map((r) => r.seed), eos: EOS, forced, engine: job.engine });
  if (job.rescore && (job.engine ?? 'tfjs') !== 'tfjs' && job.temperature > 0) out.logp = scoreResponses(policy, prompts, out.responses, out.forcedMask, job.temperature);
  return rows.map((r, k) => ({
    i: r.i,
    j: r.j,
    problemId: r.p.id,
    prompt: prompts[k],
    response: out.responses[k],
    logp: Array.from(out.logp[k]),
    forced: Array.from(out.forcedMask[k]).flatMap((f, idx) => (f ? [idx] : [])),
    truncated: out.truncated[k],
  }));
}

export interface EvalSpec {
  seed: number;
  split: Exclude<Split, 'train'>;
  difficulty: Difficulty;
  budgets: number[];
  prompts: number;
  samples: number;
  temperature: number;
  ks: number[];
  offset: number;
  /** Evaluate problems [from, to) only (resumable chunks); default all. */
  range?: [number, number];
}

/**
 * The rows of an evaluation of J(pi; D, B). Sampling seeds derive from (run seed, split,
 * problem index, sample index), not from the node, so every policy evaluated on a set meets
 * the same problems with the same seeds.
 */
export function evalRows(o: EvalSpec): SampleRow[] {
  const [from, to] = o.range ?? [0, o.prompts];
  const rows: SampleRow[] = [];
  for (let i = from; i < to; i++) {
    const p = heldOutProblem(o.seed, o.split, o.difficulty, o.offset + i);
    for (let j = 0; j < o.samples; j++) rows.push({ i, j, p, seed: deriveSeed(o.seed, 'eval', o.split, o.offset + i, j) });
  }
  return rows;
}

/**
 * Counts at several budgets from one sampling pass at the largest: with a per-row seeded PRNG,
 * the first B tokens of a response do not depend on the budget, so a response cut at B is
 * exactly what sampling at budget B would have produced.
 */
export function countEval(rows: SampleRow[], rollouts: Rollout[], budgets: number[], tool: boolean): EvalCounts {
  const task = taskFor(tool);
  const counts: EvalCounts = {};
  for (const b of budgets) {
    const per = new Map<number, { n: number; c: number }>();
    const recs: ResponseRecord[] = [];
    rollouts.forEach((r, k) => {
      const cut = r.response.slice(0, b);
      const ended = cut.length > 0 && cut[cut.length - 1] === EOS;
      const g = task.verify(rows[k].p, decode(cut), !ended);
      const e = per.get(r.i) ?? { n: 0, c: 0 };
      e.n++;
      e.c += g.reward;
      per.set(r.i, e);
      recs.push({ reward: g.reward, length: cut.length, truncated: g.truncated, attempts: g.attempts, checks: g.checks, explore: g.explore });
    });
    counts[b] = { problems: [...per.values()], records: recs };
  }
  return counts;
}

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
  /** Loss weight of the check-mark tokens (ok / no): a mark is one token in ~20 of an attempt, so at weight 1 the comparison it needs is learned last. */
  markWeight?: number;
}

export interface SftRow {
  prompt: number[];
  response: number[];
  forced: number[];
  weights?: number[];
}

const sftWeight = (r: SftRow) => (r.weights ? r.weights.reduce((a, w) => a + w, 0) : r.response.length);

/** SFT step `step`'s micro-batches and its total (weighted) token count: a pure function of (cfg, seed, step, options). */
export function sftPlan(cfg: PolicyConfig, seed: number, step: number, batchSize: number, difficulty: Difficulty[], traces: Partial<TraceOptions>, opts: SftOptions = {}): { chunks: SftRow[][]; total: number } {
  const { microBatch = 16, markWeight = 1 } = opts;
  const batch = sftBatch(seed, step, batchSize, difficulty, { ...traces, budget: cfg.context });
  const rows: SftRow[] = batch.map((ex) => {
    const response = [...encode(ex.response), EOS];
    const weights = markWeight === 1 ? undefined : response.map((id) => (isMark(id) ? markWeight : 1));
    return { prompt: [BOS, ...encode(ex.prompt)], response, forced: [], weights };
  });
  const fits = byLength(rows.filter((r) => r.prompt.length + r.response.length <= cfg.context));
  if (fits.length === 0) throw new ShapeMismatchError(`sft: no trace fits model.context ${cfg.context}`);
  return { chunks: microBatches(fits, microBatch, cfg), total: fits.reduce((a, r) => a + sftWeight(r), 0) };
}

export const sftMetrics = (lossSum: number, gradNorm: number, tokens: number) => ({ 'sft/loss': lossSum, 'sft/grad_norm': gradNorm, 'sft/tokens': tokens });

export type PlanRow = GradedRollout & { adv: number };

/**
 * Iteration t's update plan: group advantages (Eq. 2.1), the seeded shuffle into mini-batches
 * (one optimiser step each) and each mini-batch's micro-batches and loss-token count.
 * Mini-batches with no loss token are dropped (no step).
 */
export function rlPlan(cfg: PolicyConfig, s: RlSettings, t: number, graded: GradedRollout[]): { miniBatches: Array<{ chunks: PlanRow[][]; tokens: number }>; zeroStdGroups: number } {
  const order = [...graded].sort((a, b) => a.i - b.i || a.j - b.j);
  const { adv, zeroStdGroups } = groupAdvantages(order.map((g) => g.reward), s.samples);
  let rows: PlanRow[] = order.map((g, k) => ({ ...g, adv: adv[k], forced: s.grpo.maskMarks ? withMarks(g) : g.forced }));
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
    if (tokens > 0) miniBatches.push({ chunks: microBatches(byLength(mb), s.microBatch, cfg), tokens });
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

export type EvalCounts = Record<number, { problems: Array<{ n: number; c: number }>; records: ResponseRecord[] }>;

/**
 * What a set of problems is made of, as `<prefix>/min_steps_mean`, `<prefix>/min_steps_<k>`
 * (share needing at least k steps, solver-measured) and `<prefix>/needs_all` (share whose
 * every solution uses every number): difficulty reported per set, not assumed from the count.
 */
export function dataMetrics(prefix: string, ps: readonly CountdownProblem[]): Record<string, number> {
  const prof = difficultyProfile(ps);
  const out: Record<string, number> = { [`${prefix}/min_steps_mean`]: prof.meanMinSteps, [`${prefix}/needs_all`]: prof.needsAll };
  for (const [k, share] of Object.entries(prof.minSteps)) out[`${prefix}/min_steps_${k}`] = share;
  return out;
}

/** The held-out problems an evaluation of `prompts` problems from `offset` meets. */
export const heldOutSet = (seed: number, split: Exclude<Split, 'train'>, d: Difficulty, offset: number, prompts: number): CountdownProblem[] =>
  Array.from({ length: prompts }, (_, i) => heldOutProblem(seed, split, d, offset + i));

/** Merge partial evaluations (resumed chunks) into metric keys like eval/b64/pass@1. */
export function evalMetrics(counts: EvalCounts[], budgets: number[], ks: number[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const b of budgets) {
    const problems = counts.flatMap((c) => c[b]?.problems ?? []);
    const records = counts.flatMap((c) => c[b]?.records ?? []);
    Object.assign(out, passAtKMetrics(`eval/b${b}`, problems, ks), summarizeResponses(`eval/b${b}`, records));
  }
  return out;
}

/** Grade a shard of rollouts of iteration t (the grader recomputes every step itself). */
export const gradeRollouts = (seed: number, stream: string, t: number, prompts: number, d: Difficulty, tool: boolean, rollouts: Rollout[]): GradedRollout[] =>
  gradeAgainst(iterationProblems(seed, stream, t, prompts, d), t, tool, rollouts);

/** Grade rollouts of iteration t against its problems (`iterationProblems`). */
export function gradeAgainst(problems: readonly CountdownProblem[], t: number, tool: boolean, rollouts: Rollout[]): GradedRollout[] {
  const task = taskFor(tool);
  return rollouts.map((r) => {
    const p = problems[r.i];
    if (p.id !== r.problemId) throw new ShapeMismatchError(`rollout for problem ${r.problemId} does not match iteration ${t}'s problem ${p.id}`);
    const grade = task.verify(p, decode(r.response), r.truncated);
    return { ...r, reward: grade.reward, grade };
  });
}

/** train/* metrics of one iteration's graded rollouts. */
export function rolloutMetrics(graded: GradedRollout[], samples: number): Record<string, number> {
  const order = [...graded].sort((a, b) => a.i - b.i || a.j - b.j);
  const recs: ResponseRecord[] = order.map((g) => ({ reward: g.reward, length: g.response.length, truncated: g.truncated, attempts: g.grade.attempts, checks: g.grade.checks, explore: g.grade.explore }));
  return summarizeResponses('train', recs, samples);
}

/** Prompts whose group of rewards is all equal (no signal), in one pass. */
function zeroStdPrompts(rows: GradedRollout[]): Set<number> {
  const first = new Map<number, number>();
  const mixed = new Set<number>();
  for (const r of rows) {
    if (!first.has(r.i)) first.set(r.i, r.reward);
    else if (first.get(r.i) !== r.reward) mixed.add(r.i);
  }
  return new Set([...first.keys()].filter((i) => !mixed.has(i)));
}

/** A rollout's forced positions plus its check-mark positions (GrpoConfig.maskMarks), ascending. */
const withMarks = (r: { response: number[]; forced: number[] }): number[] =>
  [...new Set([...r.forced, ...r.response.flatMap((id, k) => (isMark(id) ? [k] : []))])].sort((a, b) => a - b);

const lossTokens = (r: { response: number[]; forced: number[]; adv?: number }, positiveOnly: boolean): number =>
  positiveOnly && !((r.adv ?? 0) > 0) ? 0 : r.response.length - r.forced.length;

/**
 * Rows in order of length (stable): micro-batches are padded to their longest row, so
 * grouping rows of similar length cuts the padded work (traces and responses are
 * long-tailed). Each micro-batch's loss is scaled by its token share, so the grouping
 * changes only float rounding, never the objective.
 */
const byLength = <R extends { prompt: number[]; response: number[] }>(rows: R[]): R[] =>
  rows.map((r, k) => ({ r, k, n: r.prompt.length + r.response.length })).sort((a, b) => a.n - b.n || a.k - b.k).map((x) => x.r);

/**
 * Micro-batches of rows already in length order: at most `micro` rows, no more rows than keep
 * the padded pass under PASS_BYTES of activations (policy.ts activationBytes: long traces get
 * smaller micro-batches instead of exhausting wasm's heap), and no more estimated work than
 * CHUNK_COST (rows × T × (T + 6d) for padded length T: attention grows with T, the
 * projections with d), so micro-batches cost about the same and a compute pool's threads
 * share a step evenly. A pure function of the rows and the model shape (never of the thread
 * count), so the split, and the gradient's rounding, is the same on every rerun.
 */
export function microBatches<R extends { prompt: number[]; response: number[] }>(rows: R[], micro: number, cfg: PolicyConfig, passBytes = PASS_BYTES): R[][] {
  const out: R[][] = [];
  let cur: R[] = [];
  let longest = 0;
  const cost = (n: number, t: number) => n * t * (t + 6 * cfg.dModel);
  const budget = CHUNK_COST_ROWS * CHUNK_COST_LEN * (CHUNK_COST_LEN + 6 * cfg.dModel);
  for (const r of rows) {
    const t = Math.max(longest, r.prompt.length + r.response.length);
    if (cur.length > 0 && (cur.length >= micro || activationBytes(cfg, cur.length + 1, t) > passBytes || cost(cur.length + 1, t) > budget)) {
      out.push(cur);
      cur = [];
    }
    cur.push(r);
    longest = Math.max(...cur.map((c) => c.prompt.length + c.response.length));
  }
  if (cur.length) out.push(cur);
  return out;
}

/** A micro-batch does at most the work of CHUNK_COST_ROWS rows of CHUNK_COST_LEN tokens (see microBatches). */
export const CHUNK_COST_ROWS = 16;
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
export function pack(rows: Array<{ prompt: number[]; response: number[]; forced: number[]; logp?: number[]; adv?: number; weights?: number[] }>, rl: boolean, want: { marks?: boolean; noMarks?: boolean } = {}) {
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

function encodeOptState(s: AdamWState): Uint8Array {
  const map = new Map<string, Float32Array>();
  for (const [k, v] of Object.entries(s.m)) map.set(`m/${k}`, v);
  for (const [k, v] of Object.entries(s.v)) map.set(`v/${k}`, v);
  return serializeTensors(map, { kind: 'adamw', step: s.step }).bytes;
}

function decodeOptState(bytes: Uint8Array): AdamWState {
  const { meta, tensors } = deserializeTensors(bytes);
  const step = (meta as { step?: unknown } | null)?.step;
  if (typeof step !== 'number') throw new ShapeMismatchError('optimiser state: header has no step');
  const s: AdamWState = { step, m: {}, v: {} };
  for (const [k, t] of tensors) {
    if (!(t.data instanceof Float32Array)) throw new ShapeMismatchError(`optimiser state: ${k} is not float32`);
    if (k.startsWith('m/')) s.m[k.slice(2)] = t.data;
    else if (k.startsWith('v/')) s.v[k.slice(2)] = t.data;
  }
  return s;
}
