/**
 * A stage's wall time for N rollout workers, from measured per-iteration costs (bench/scaling.ts
 * measures them; bench/NOTES.md "Scaling: rollout workers, measured and modelled" holds the
 * numbers). Pure: no I/O, no clock.
 *
 * One fanned-out RL iteration (docs/ARCHITECTURE.md "Rollout fan-out") is three activity round
 * trips in sequence: the trainer publishes its policy, the parts sample and grade on the rollout
 * workers (each worker loads the published policy once per iteration, then samples its parts'
 * rows one after another), then the trainer updates (and commits when due). So
 *
 *   iteration = publish + max over workers w of (load + rows(w) × row) + update + 3 × roundTrip
 *
 * where a worker with no rows costs nothing. Rows split into parts as ml/rollouts.ts shardRows
 * splits them (prompt i goes to part i mod parts, with all its samples); part k runs on worker
 * k mod N (Temporal hands parts to whichever worker polls; round robin is the even case).
 */
import { InvalidArgumentError } from '../ml/errors';

/** Measured (or scaled) costs, in seconds. */
export interface StageCosts {
  /** Serialise, hash and put the policy (trainer). */
  publishS: number;
  /** Get and load the published policy onto a rollout worker's threads (once per worker per iteration). */
  loadS: number;
  /** Sample and grade one row (prompt, sample) on a rollout worker. */
  rowS: number;
  /** The update from the joined parts, and the commit when due, averaged over iterations (trainer). */
  updateS: number;
  /** One activity's overhead beyond its own execution: schedule to start, completion to the workflow's next command. */
  roundTripS: number;
}

/** What a stage samples per iteration, and into how many parts. */
export interface StageShape {
  iterations: number;
  prompts: number;
  samples: number;
  /** rolloutParts. */
  parts: number;
}

const positiveInt = (x: number, field: string) => {
  if (!Number.isInteger(x) || x < 1) throw new InvalidArgumentError(`${field} must be a positive integer (got ${x})`);
};

/** Rows of each part, as shardRows splits an iteration's prompts (prompt i to part i mod parts). */
export function partRows(prompts: number, samples: number, parts: number): number[] {
  positiveInt(prompts, 'prompts');
  positiveInt(samples, 'samples');
  positiveInt(parts, 'parts');
  return Array.from({ length: parts }, (_, k) => (k < prompts ? Math.floor((prompts - 1 - k) / parts) + 1 : 0) * samples);
}

/** Rows each of `workers` rollout workers samples when part k runs on worker k mod workers. */
export function workerRows(prompts: number, samples: number, parts: number, workers: number): number[] {
  positiveInt(workers, 'workers');
  const out = new Array<number>(workers).fill(0);
  partRows(prompts, samples, parts).forEach((r, k) => (out[k % workers] += r));
  return out;
}

/** One iteration's seconds, given the rows each worker samples in it. */
export function iterationTime(c: StageCosts, rowsPerWorker: readonly number[]): number {
  for (const [k, v] of Object.entries(c))
    if (!(Number.isFinite(v) && v >= 0)) throw new InvalidArgumentError(`costs.${k} must be ≥ 0 (got ${v})`);
  if (!rowsPerWorker.length) throw new InvalidArgumentError('rowsPerWorker must name at least one worker');
  const slowest = Math.max(...rowsPerWorker.map((r) => (r > 0 ? c.loadS + r * c.rowS : 0)));
  return c.publishS + slowest + c.updateS + 3 * c.roundTripS;
}

/** A stage's seconds on `workers` rollout workers (its iterations only: the session's open and the node's bookkeeping are not modelled). */
export function stageTime(c: StageCosts, s: StageShape, workers: number): number {
  positiveInt(s.iterations, 'iterations');
  return s.iterations * iterationTime(c, workerRows(s.prompts, s.samples, s.parts, workers));
}

/** A model's size, as the cost scaling needs it. */
export interface ModelSize {
  layers: number;
  dModel: number;
  /** Vocabulary size (embedding and output rows). */
  vocab: number;
  /** Position-embedding rows. */
  context: number;
  /** Tokens sampled per row: the stage's budget. */
  budget: number;
}

/** Parameters: 12·L·d² in the blocks (attention 4d², MLP 8d²), plus token and position embeddings. */
export function parameters(m: ModelSize): number {
  return 12 * m.layers * m.dModel * m.dModel + (m.vocab + m.context) * m.dModel;
}

/**
 * Forward FLOPs per sampled token: 2 per block weight (24·L·d²), the output projection
 * (2·V·d), and attention over the KV cache at its mean length over a response (budget / 2):
 * 2·L·d·budget (scores and values, 2·L·d·(budget/2) each).
 */
export function flopsPerToken(m: ModelSize): number {
  return 24 * m.layers * m.dModel * m.dModel + 2 * m.vocab * m.dModel + 2 * m.layers * m.dModel * m.budget;
}

/**
 * Costs measured at size `from` (rows of `fromShape`) carried to size `to` (rows of `toShape`),
 * on the same kind of compute thread:
 * - a row samples `budget` tokens at flopsPerToken each: row ∝ budget × flopsPerToken;
 * - the update runs forward and backward over every row of the iteration: update ∝
 *   prompts × samples × budget × flopsPerToken (the commit, a few hundred ms at the demo's
 *   size, scales with it; an overestimate of its share);
 * - publish (serialise, hash, put) and load (get, build the replicas) move the weights:
 *   ∝ parameters;
 * - a round trip is the servers' and does not change.
 */
export function scaleCosts(c: StageCosts, from: ModelSize, fromShape: StageShape, to: ModelSize, toShape: StageShape): StageCosts {
  const row = (to.budget * flopsPerToken(to)) / (from.budget * flopsPerToken(from));
  const rows = (toShape.prompts * toShape.samples) / (fromShape.prompts * fromShape.samples);
  const weights = parameters(to) / parameters(from);
  return {
    publishS: c.publishS * weights,
    loadS: c.loadS * weights,
    rowS: c.rowS * row,
    updateS: c.updateS * row * rows,
    roundTripS: c.roundTripS,
  };
}
