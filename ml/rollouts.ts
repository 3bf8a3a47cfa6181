/**
 * An RL iteration's data path (docs/RECIPE.md "The RL objective"): its problems (a pure
 * function of run seed, stream and t), the rows to sample with their seeds, sampling them,
 * and grading against the problems; plus the data/* and train/* metrics of a set of
 * rollouts. Every function is pure in its inputs, so a rerun reproduces the same rollouts.
 */
import type { CountdownProblem } from './countdown';
import { ShapeMismatchError } from './errors';
import type { GrpoConfig } from './grpo';
import { summarizeResponses } from './metrics';
import type { ResponseRecord } from './metrics';
import type { Policy } from './policy';
import { deriveSeed } from './rng';
import { sample, scoreResponses } from './sampler';
import type { SampleEngine } from './sampler';
import type { Difficulty, Grade, Problem, Split } from './task';
import { taskNamed } from './tasks';
import { BOS, EOS, decode, encode } from './tokenizer';

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
  /** Work cap of a micro-batch in rows of 128 tokens (config `microWork`; ml/batching.ts microBatches). */
  microWork: number;
  skipZeroStd: boolean;
  grpo: GrpoConfig;
  /** The run's task (ml/tasks.ts); absent: countdown. */
  task?: string;
}

/** The run's task (absent: countdown), tool-computed or not (config `toolArithmetic`). */
export const taskFor = (tool: boolean, task?: string) => taskNamed(task).task(tool);

/** Problems of RL iteration t (train split): a pure function of (run seed, stream, t); the cursor is t. */
export function iterationProblems(
  seed: number,
  stream: string,
  t: number,
  prompts: number,
  d: Difficulty,
  task?: string,
): CountdownProblem[] {
  const s = deriveSeed(seed, 'rl-data', stream);
  const gen = taskFor(false, task);
  // Countdown's problem type; another task's problems carry the same fields (ml/task.ts Problem).
  return Array.from({ length: prompts }, (_, i) => gen.generate(s, t * prompts + i, d, 'train') as CountdownProblem);
}

/**
 * Problem i of an evaluation (split `eval`) or budget selection (split `select`): a pure
 * function of (run seed, split, difficulty, offset + i), the same for every node that
 * evaluates that difficulty, so the base, each stage and each arm are measured on the same
 * problems. Disjoint by content from all training data (ml/countdown.ts `splitOf`).
 */
export const heldOutProblem = (
  seed: number,
  split: Exclude<Split, 'train'>,
  d: Difficulty,
  index: number,
  task?: string,
): CountdownProblem => taskFor(false, task).generate(deriveSeed(seed, 'eval-data'), index, d, split) as CountdownProblem;

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
  /** The run's task (ml/tasks.ts); absent: countdown. */
  task?: string;
  /** What computes the logits (SampleOptions.engine). @default "tfjs" */
  engine?: SampleEngine;
  /**
   * The rollouts feed an update: when another engine than tfjs sampled, their log-probs (the
   * update's old log-probs) are recomputed by the tfjs forward (scoreResponses).
   */
  rescore?: boolean;
}

/** Rows of iteration t's shard `shard`: prompts i with i mod shards = shard, `samples` rows each. */
export function shardRows(
  s: RlSettings,
  t: number,
  shard: number,
  shards: number,
  problems: readonly CountdownProblem[] = iterationProblems(s.seed, s.stream, t, s.prompts, s.difficulty, s.task),
): SampleRow[] {
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
  const task = taskFor(job.tool, job.task);
  const prompts = rows.map((r) => [BOS, ...encode(task.prompt(r.p))]);
  const forced = task.forced
    ? (row: number, soFar: number[]) => {
        const text = task.forced!(rows[row].p, decode(soFar));
        return text ? encode(text) : [];
      }
    : undefined;
  const out = await sample(policy, prompts, {
    budget: job.budget,
    temperature: job.temperature,
    topP: job.topP,
    seeds: rows.map((r) => r.seed),
    eos: EOS,
    forced,
    engine: job.engine,
  });
  if (job.rescore && (job.engine ?? 'tfjs') !== 'tfjs' && job.temperature > 0)
    out.logp = scoreResponses(policy, prompts, out.responses, out.forcedMask, job.temperature);
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

/**
 * What a set of problems is made of, as `<prefix>/min_steps_mean`, `<prefix>/min_steps_<k>`
 * (share needing at least k steps, solver-measured) and `<prefix>/needs_all` (share whose
 * every solution uses every number): difficulty reported per set, not assumed from the count.
 */
export function dataMetrics(prefix: string, ps: readonly Problem[], task?: string): Record<string, number> {
  const prof = taskNamed(task).profile?.(ps) ?? {};
  return Object.fromEntries(Object.entries(prof).map(([k, v]) => [`${prefix}/${k}`, v]));
}

/** Grade a shard of rollouts of iteration t (the grader recomputes every step itself). */
export const gradeRollouts = (
  seed: number,
  stream: string,
  t: number,
  prompts: number,
  d: Difficulty,
  tool: boolean,
  rollouts: Rollout[],
  task?: string,
): GradedRollout[] => gradeAgainst(iterationProblems(seed, stream, t, prompts, d, task), t, tool, rollouts, task);

/** Grade rollouts of iteration t against its problems (`iterationProblems`). */
export function gradeAgainst(
  problems: readonly CountdownProblem[],
  t: number,
  tool: boolean,
  rollouts: Rollout[],
  taskName?: string,
): GradedRollout[] {
  const task = taskFor(tool, taskName);
  return rollouts.map((r) => {
    const p = problems[r.i];
    if (p.id !== r.problemId)
      throw new ShapeMismatchError(`rollout for problem ${r.problemId} does not match iteration ${t}'s problem ${p.id}`);
    const grade = task.verify(p, decode(r.response), r.truncated);
    return { ...r, reward: grade.reward, grade };
  });
}

/** train/* metrics of one iteration's graded rollouts. */
export function rolloutMetrics(graded: GradedRollout[], samples: number): Record<string, number> {
  const order = [...graded].sort((a, b) => a.i - b.i || a.j - b.j);
  const recs: ResponseRecord[] = order.map((g) => ({
    reward: g.reward,
    length: g.response.length,
    truncated: g.truncated,
    attempts: g.grade.attempts,
    checks: g.grade.checks,
    explore: g.grade.explore,
  }));
  return summarizeResponses('train', recs, samples);
}

/** Prompts whose group of rewards is all equal (no signal), in one pass. */
export function zeroStdPrompts(rows: GradedRollout[]): Set<number> {
  const first = new Map<number, number>();
  const mixed = new Set<number>();
  for (const r of rows) {
    if (!first.has(r.i)) first.set(r.i, r.reward);
    else if (first.get(r.i) !== r.reward) mixed.add(r.i);
  }
  return new Set([...first.keys()].filter((i) => !mixed.has(i)));
}
