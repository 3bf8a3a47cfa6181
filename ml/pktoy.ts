/**
 * The p^k toy (paper section 5): why negative gradients make responses longer. A bigram
 * softmax policy over `actions` actions plus `stop` writes an episode token by token until it writes `stop` or reaches `budget` tokens. One action a*
 * is correct. Reward 1 iff a* occurs in the episode AND the episode stopped within the budget:
 * a truncated episode gets 0, as a response cut off without a final answer does in RL training.
 *
 * Policy: logits table [actions+1 rows × actions+1 columns]; row = previous action, with the
 * last row (the stop index, never a previous action) serving as the start state; column
 * `actions` = stop; π(·|s) = softmax(row s / temperature). Initially every row is the same:
 * action j gets weight (rank_j + 1)^(−initSkew) over a seeded ranking of the actions (initSkew 0:
 * uniform, the default) and the stop logit is set so that P(stop) = 1/initLen, i.e. mean length
 * initLen (stop included). a* is drawn uniformly (default) or placed at a given rank of that
 * initial distribution (rank actions−1 = the least likely action).
 *
 * Two presets (PKTOY_PRESETS). `section5` (runPkToy, DEFAULT_PKTOY) is the MDP above with
 * §5's sizes (100 actions plus stop, budget 100, initial mean length about 15) and the project's
 * training machinery (uniform start, random a*, AdamW lr 0.05, 8 groups × 8, 80 steps,
 * temperature 1); the options let it run at other readings. `paper` (runPkToyPaper,
 * PAPER_PKTOY, at the end of this file) is the MDP and recipe of appendix C.3: reward the
 * moment a* is written, π₀ without a*, M(·|s) ~ U[−3, 3] with M(stop|s) = 4 and M(a*|s) = −4, one
 * trajectory per update, token-mean loss, lr 1e−2; where C.3 leaves a choice (the advantage,
 * SGD vs Adam, the init range) the config names the reading (docs/results/pktoy.md).
 *
 * Training runs the project's real machinery: groupAdvantages, grpoLoss (tfjs, through
 * tf.grads with respect to the per-token logp and entropy) and AdamW. Only the last link of
 * the chain rule, d logp / d table and d entropy / d table, is written by hand here (softmax
 * rows, float64), which keeps a step at a few milliseconds. Each rollout batch is split into
 * `minibatches` optimiser steps, one pass, so later minibatches see ratio ≠ 1.
 * No reference model: the toy runs with klCoef 0.
 */
import * as tf from '@tensorflow/tfjs-core';
import { grpoConfig, grpoLoss, groupAdvantages, type GrpoConfig, type GrpoStats } from './grpo';
import { AdamW } from './optim';
import { summarizeResponses, trainKey, type ResponseRecord } from './metrics';
import { Rng, deriveSeed } from './rng';
import { InvalidArgumentError } from './errors';

export interface PkToyConfig {
  /** Ordinary actions; index `actions` is stop. @default 100 */
  actions: number;
  /** Most tokens an episode may write (stop included); reaching it without stop = truncated. @default 100 */
  budget: number;
  /** Initial mean episode length (sets the stop logit). @default 15 */
  initLen: number;
  /** Episodes per group (advantages are normalised within a group). @default 8 */
  groupSize: number;
  /** Groups per RL step. @default 8 */
  groups: number;
  /** Optimiser steps per rollout batch (one pass). @default 2 */
  minibatches: number;
  /** RL steps. @default 80 */
  steps: number;
  /** AdamW learning rate on the logits (no weight decay). @default 0.05 */
  lr: number;
  /** Sampling temperature; the loss uses the same softmax(logits / temperature), as the sampler. @default 1 */
  temperature: number;
  /** Zipf exponent of the initial action distribution: weight (rank + 1)^(−initSkew) over a
   *  seeded ranking; 0 = uniform. The stop probability is 1/initLen either way. @default 0 */
  initSkew: number;
  /** Where a* is: drawn uniformly from the actions, or the action at `rank` of the initial
   *  distribution (0 = most likely, actions − 1 = least likely). @default 'random' */
  aStar: 'random' | { rank: number };
  /** Seeds a* and every draw. @default 0 */
  seed: number;
  /** Loss settings; klCoef is forced to 0 (no reference). @default DEFAULT_GRPO */
  grpo: Partial<GrpoConfig>;
}

export const DEFAULT_PKTOY: Readonly<PkToyConfig> = Object.freeze({
  actions: 100,
  budget: 100,
  initLen: 15,
  groupSize: 8,
  groups: 8,
  minibatches: 2,
  steps: 80,
  lr: 0.05,
  temperature: 1,
  initSkew: 0,
  aStar: 'random',
  seed: 0,
  grpo: {},
});

export interface PkToyResult {
  /** The correct action. */
  aStar: number;
  /** One record per step, measured on that step's rollouts (before its update):
   *  train/reward_mean, train/response_len (stop included), train/response_len_correct and
   *  _incorrect, train/truncated_frac, train/zero_std_frac, …, plus pktoy/p_star and pktoy/p_stop
   *  (first-token probabilities), pktoy/distinct (distinct actions per episode: the k of p^k)
   *  and loss stats. */
  history: Array<Record<string, number>>;
}

interface Episode {
  tokens: number[];
  reward: number;
  truncated: boolean;
}

/** Row-wise softmax(z / temp) of the table in float64: probabilities, log-probabilities, entropies. */
function softmaxRows(z: Float32Array, n: number, temp: number): { p: Float64Array; logp: Float64Array; ent: Float64Array } {
  const p = new Float64Array(n * n);
  const logp = new Float64Array(n * n);
  const ent = new Float64Array(n);
  for (let s = 0; s < n; s++) {
    let max = -Infinity;
    for (let j = 0; j < n; j++) max = Math.max(max, z[s * n + j] / temp);
    let sum = 0;
    for (let j = 0; j < n; j++) sum += Math.exp(z[s * n + j] / temp - max);
    const lse = max + Math.log(sum);
    let h = 0;
    for (let j = 0; j < n; j++) {
      const lp = z[s * n + j] / temp - lse;
      logp[s * n + j] = lp;
      p[s * n + j] = Math.exp(lp);
      h -= p[s * n + j] * lp;
    }
    ent[s] = h;
  }
  return { p, logp, ent };
}

function sampleEpisode(p: Float64Array, n: number, stop: number, budget: number, aStar: number, rng: Rng): Episode {
  const tokens: number[] = [];
  let s = stop; // the start state shares the stop row index
  while (tokens.length < budget) {
    let u = rng.next();
    let a = n - 1;
    for (let j = 0; j < n; j++) {
      u -= p[s * n + j];
      if (u < 0) {
        a = j;
        break;
      }
    }
    tokens.push(a);
    if (a === stop) break;
    s = a;
  }
  const stopped = tokens[tokens.length - 1] === stop;
  return { tokens, truncated: !stopped, reward: stopped && tokens.includes(aStar) ? 1 : 0 };
}

/** Train the toy; deterministic for a seed and backend. Call after `initBackend()`. */
export function runPkToy(partial: Partial<PkToyConfig> = {}): PkToyResult {
  for (const k of Object.keys(partial)) if (!(k in DEFAULT_PKTOY)) throw new InvalidArgumentError(`runPkToy: unknown config key "${k}"`);
  const cfg: PkToyConfig = { ...DEFAULT_PKTOY, ...partial };
  const grpo = grpoConfig({ ...cfg.grpo, klCoef: 0 });
  const n = cfg.actions + 1;
  const stop = cfg.actions;
  if (cfg.groups % cfg.minibatches !== 0)
    throw new InvalidArgumentError(`runPkToy: groups ${cfg.groups} not divisible by minibatches ${cfg.minibatches}`);
  if (!(cfg.temperature > 0)) throw new InvalidArgumentError(`runPkToy: temperature must be > 0 (got ${cfg.temperature})`);
  if (!(cfg.initSkew >= 0)) throw new InvalidArgumentError(`runPkToy: initSkew must be >= 0 (got ${cfg.initSkew})`);
  if (!(cfg.initLen > 1)) throw new InvalidArgumentError(`runPkToy: initLen must be > 1 (got ${cfg.initLen})`);
  const { logits: initLogits, byRank } = initialLogits(cfg);
  let aStar: number;
  if (cfg.aStar === 'random') aStar = new Rng(deriveSeed(cfg.seed, 'pktoy', 'a*')).int(0, cfg.actions - 1);
  else {
    const r = cfg.aStar.rank;
    if (!Number.isInteger(r) || r < 0 || r >= cfg.actions)
      throw new InvalidArgumentError(`runPkToy: aStar.rank must be an integer in [0, ${cfg.actions}) (got ${r})`);
    aStar = byRank[r];
  }

  // Every row starts as the same distribution (start state included).
  const init = new Float32Array(n * n);
  for (let s = 0; s < n; s++) init.set(initLogits, s * n);
  const initT = tf.tensor2d(init, [n, n]);
  const table = tf.variable(initT, true);
  initT.dispose();
  const opt = new AdamW({ table }, { lr: cfg.lr, weightDecay: 0 });
  const history: Array<Record<string, number>> = [];
  try {
    let z = Float32Array.from(table.dataSync());
    for (let step = 0; step < cfg.steps; step++) {
      const old = softmaxRows(z, n, cfg.temperature);
      const rng = new Rng(deriveSeed(cfg.seed, 'pktoy', 'sample', step));
      const eps = Array.from({ length: cfg.groups * cfg.groupSize }, () => sampleEpisode(old.p, n, stop, cfg.budget, aStar, rng));
      const { adv } = groupAdvantages(
        eps.map((e) => e.reward),
        cfg.groupSize,
      );
      const records: ResponseRecord[] = eps.map((e) => ({ reward: e.reward, length: e.tokens.length, truncated: e.truncated }));
      const rec = summarizeResponses('train', records, cfg.groupSize);
      rec['pktoy/p_star'] = old.p[stop * n + aStar];
      rec['pktoy/p_stop'] = old.p[stop * n + stop];
      rec['pktoy/distinct'] = eps.reduce((a, e) => a + new Set(e.tokens.filter((t) => t !== stop)).size, 0) / eps.length;

      const per = eps.length / cfg.minibatches;
      for (let mb = 0; mb < cfg.minibatches; mb++) {
        const batch = eps.slice(mb * per, (mb + 1) * per);
        const stats = updateOnce(batch, adv.subarray(mb * per, (mb + 1) * per), z, old.logp, n, stop, cfg.temperature, grpo, opt);
        z = Float32Array.from(table.dataSync());
        if (mb === 0) for (const [k, v] of Object.entries(stats)) rec[trainKey(`loss/${k}`)] = v;
      }
      history.push(rec);
    }
  } finally {
    opt.dispose();
    table.dispose();
  }
  return { aStar, history };
}

/**
 * One row of initial logits (sampling scale, i.e. already multiplied by the temperature):
 * action j gets log-weight −initSkew·ln(rank_j + 1) over a seeded ranking (identity order
 * when initSkew is 0), stop gets the logit that makes P(stop) = 1/initLen. `byRank[r]` is the
 * action at rank r (0 = most likely).
 */
function initialLogits(cfg: PkToyConfig): { logits: Float32Array; byRank: number[] } {
  const byRank = Array.from({ length: cfg.actions }, (_, j) => j);
  if (cfg.initSkew > 0) new Rng(deriveSeed(cfg.seed, 'pktoy', 'init rank')).shuffle(byRank);
  const u = new Float64Array(cfg.actions + 1);
  let weight = 0; // Σ_j e^{u_j} over the actions
  byRank.forEach((j, r) => {
    u[j] = cfg.initSkew > 0 ? -cfg.initSkew * Math.log(r + 1) : 0;
    weight += Math.exp(u[j]);
  });
  // P(stop) = e^b / (e^b + weight) = 1 / initLen
  u[cfg.actions] = Math.log(weight / (cfg.initLen - 1));
  return { logits: Float32Array.from(u, (x) => x * cfg.temperature), byRank };
}

/** One AdamW step on a minibatch: grpoLoss through tf.grads, then the table's chain rule. */
function updateOnce(
  batch: Episode[],
  adv: Float32Array,
  z: Float32Array,
  oldLogpTable: Float64Array,
  n: number,
  stop: number,
  temp: number,
  grpo: GrpoConfig,
  opt: AdamW,
): GrpoStats {
  const cur = softmaxRows(z, n, temp);
  const B = batch.length;
  const T = Math.max(...batch.map((e) => e.tokens.length));
  const logp = new Float32Array(B * T),
    oldLogp = new Float32Array(B * T),
    ent = new Float32Array(B * T),
    mask = new Float32Array(B * T);
  const state = new Int32Array(B * T);
  batch.forEach((e, b) => {
    let s = stop;
    e.tokens.forEach((a, t) => {
      const i = b * T + t;
      state[i] = s;
      logp[i] = cur.logp[s * n + a];
      oldLogp[i] = oldLogpTable[s * n + a];
      ent[i] = cur.ent[s];
      mask[i] = 1;
      s = a;
    });
  });
  let stats: GrpoStats | undefined;
  const [gLogp, gEnt] = tf.tidy(() => {
    const oldT = tf.tensor2d(oldLogp, [B, T]),
      maskT = tf.tensor2d(mask, [B, T]),
      advT = tf.tensor1d(adv);
    const f = (lp: tf.Tensor, en: tf.Tensor) => {
      const out = grpoLoss({ logp: lp, oldLogp: oldT, entropy: en, adv: advT, mask: maskT }, grpo);
      stats = out.stats;
      return out.loss;
    };
    return tf.grads(f)([tf.tensor2d(logp, [B, T]), tf.tensor2d(ent, [B, T])]);
  });
  const w = gLogp.dataSync(),
    u = gEnt.dataSync();
  // With u = z / temp: d logp(s→a)/du[s,j] = δ_aj − π_sj;  dH_s/du[s,j] = −π_sj (log π_sj + H_s);
  // d/dz = (d/du) / temp.
  const G = new Float32Array(n * n);
  const wRow = new Float64Array(n),
    uRow = new Float64Array(n),
    Gsa = new Float64Array(n * n);
  batch.forEach((e, b) =>
    e.tokens.forEach((a, t) => {
      const i = b * T + t;
      wRow[state[i]] += w[i];
      uRow[state[i]] += u[i];
      Gsa[state[i] * n + a] += w[i];
    }),
  );
  for (let s = 0; s < n; s++) {
    for (let j = 0; j < n; j++) {
      const k = s * n + j;
      G[k] = (Gsa[k] - cur.p[k] * wRow[s] - uRow[s] * cur.p[k] * (cur.logp[k] + cur.ent[s])) / temp;
    }
  }
  gLogp.dispose();
  gEnt.dispose();
  const g = tf.tensor2d(G, [n, n]);
  try {
    opt.step({ table: g });
  } finally {
    g.dispose();
  }
  return stats!;
}

// ---------------------------------------------------------------------------------------------
// The `paper` preset: the MDP, initialisation and training of appendix C.3 (section 5, Fig. 7).
// ---------------------------------------------------------------------------------------------

/**
 * How a one-trajectory update weights its tokens (C.3 writes the loss with A(a_i, a_1:i−1) but
 * does not say what A is). Every token of a trajectory gets the same A:
 *  - 'half': A = r − 0.5 (a constant baseline: +0.5 on success, −0.5 on failure);
 *  - 'pm1': A = 2r − 1 (reward ±1, no baseline; 'half' with twice the step under SGD);
 *  - 'r': A = r (REINFORCE without a baseline: failures carry no gradient);
 *  - 'ema': A = r − b with b an exponential moving average of past rewards (b₀ = 0, decay `emaDecay`);
 *  - 'group': `groupSize` trajectories per update, A = (r − mean)/(std + 1e−6) within the
 *    group (sample std; groupAdvantages of ml/grpo.ts), 0 when all rewards are equal.
 */
export type PaperAdvantage = 'half' | 'pm1' | 'r' | 'ema' | 'group';

export interface PkToyPaperConfig {
  /** Standard actions 𝒜 = [actions]; index `actions` is stop (§5). @default 100 */
  actions: number;
  /** B_tr: an episode that has written this many actions without a* or stop ends with reward 0 (§5). @default 100 */
  budget: number;
  /** Optimiser steps ("iterations" of Fig. 7). @default 5000 */
  updates: number;
  /** Learning rate (C.3: 1e−2). @default 0.01 */
  lr: number;
  /** 'sgd' (C.3: "stochastic gradient descent") or 'adam' (β 0.9/0.999, ε 1e−8, bias-corrected). @default 'sgd' */
  optimizer: 'sgd' | 'adam';
  /** See PaperAdvantage. @default 'half' */
  advantage: PaperAdvantage;
  /** Trajectories per update for advantage 'group' (C.3 samples one; 1 for every other advantage). @default 8 */
  groupSize: number;
  /** Decay of the 'ema' baseline. @default 0.99 */
  emaDecay: number;
  /** GRPOMask (Fig. 7b): only trajectories with A > 0 contribute; an update with none is no step. @default false */
  mask: boolean;
  /** M(a|s) ~ U[initLo, initHi] for every standard action a before M(stop|s), M(a*|s) are set (C.3: [−3, 3]). @default -3 */
  initLo: number;
  /** @default 3 */
  initHi: number;
  /** M(stop|s) at init (C.3: 4). @default 4 */
  stopLogit: number;
  /** M(a*|s) at init (C.3: −4). @default -4 */
  aStarLogit: number;
  /** The policy's readouts (P(stop), P(a*), state entropy) are taken every this many updates. @default 50 */
  evalEvery: number;
  /** Seeds a*, the init and every draw. @default 0 */
  seed: number;
}

export const PAPER_PKTOY: Readonly<PkToyPaperConfig> = Object.freeze({
  actions: 100,
  budget: 100,
  updates: 5000,
  lr: 0.01,
  optimizer: 'sgd',
  advantage: 'half',
  groupSize: 8,
  emaDecay: 0.99,
  mask: false,
  initLo: -3,
  initHi: 3,
  stopLogit: 4,
  aStarLogit: -4,
  evalEvery: 50,
  seed: 0,
});

/** The presets of the toy: `section5` is runPkToy's default, `paper` is runPkToyPaper's. */
export const PKTOY_PRESETS = { section5: DEFAULT_PKTOY, paper: PAPER_PKTOY } as const;

export interface PkToyPaperResult {
  aStar: number;
  /** Per update (mean over that update's trajectories, sampled before it): reward, length
   *  (actions written, a₁ and the final a* or stop included) and the mean entropy of
   *  π(·|s_t) over the policy's tokens (t ≥ 2; token-level entropy, Fig. 7d). */
  reward: Float64Array;
  length: Float64Array;
  tokenEntropy: Float64Array;
  /** Update index of each readout below (0, evalEvery, …, updates), taken before that update. */
  evalAt: number[];
  /** Mean over the states s ∈ 𝒜∖{a*} of π(stop|s), π(a*|s) and H(π(·|s)). These states are
   *  π₀'s support with equal weight, so pStop and pStar are also the marginal probabilities of
   *  stop and of a* at the policy's first step (t = 2). */
  pStop: number[];
  pStar: number[];
  stateEntropy: number[];
  /** Optimiser steps taken (updates whose gradient was not identically zero). */
  steps: number;
}

/** One episode of the §5 MDP: tokens a₁…a_T and reward. a₁ ~ π₀ = U(𝒜∖{a*}); a_t ~ π_M(·|a_{t−1}). */
export interface PaperEpisode {
  tokens: number[];
  reward: number;
}

/** π_M(·|s) of one row of M (C.1), float64, written into `out`; returns the row's entropy. */
function rowSoftmax(M: Float64Array, s: number, n: number, out: Float64Array): number {
  let max = -Infinity;
  for (let j = 0; j < n; j++) max = Math.max(max, M[s * n + j]);
  let sum = 0;
  for (let j = 0; j < n; j++) sum += out[j] = Math.exp(M[s * n + j] - max);
  const lse = max + Math.log(sum);
  let h = 0;
  for (let j = 0; j < n; j++) {
    out[j] /= sum;
    if (out[j] > 0) h -= out[j] * (M[s * n + j] - lse);
  }
  return h;
}

/**
 * The initial logits of C.3: every row (state s ∈ 𝒜) gets M(·|s) ~ U[initLo, initHi], then
 * M(stop|s) = stopLogit and M(a*|s) = aStarLogit. Shape [actions × (actions + 1)], row-major.
 */
export function paperInitialLogits(
  cfg: Pick<PkToyPaperConfig, 'actions' | 'initLo' | 'initHi' | 'stopLogit' | 'aStarLogit'>,
  aStar: number,
  rng: Rng,
): Float64Array {
  const n = cfg.actions + 1;
  const M = new Float64Array(cfg.actions * n);
  for (let s = 0; s < cfg.actions; s++) {
    for (let j = 0; j < n; j++) M[s * n + j] = cfg.initLo + (cfg.initHi - cfg.initLo) * rng.next();
    M[s * n + cfg.actions] = cfg.stopLogit;
    M[s * n + aStar] = cfg.aStarLogit;
  }
  return M;
}

/** Samples one episode (§5): reward 1 the moment a* is written, 0 at stop or after `budget` actions. */
export function samplePaperEpisode(
  M: Float64Array,
  actions: number,
  budget: number,
  aStar: number,
  rng: Rng,
  row = new Float64Array(actions + 1),
): PaperEpisode {
  const n = actions + 1;
  // π₀: uniform over 𝒜∖{a*}
  let a = rng.int(0, actions - 2);
  if (a >= aStar) a++;
  const tokens = [a];
  if (a === aStar) return { tokens, reward: 1 }; // unreachable; kept so the loop below is the whole rule
  while (tokens.length < budget) {
    rowSoftmax(M, a, n, row);
    let u = rng.next();
    let next = n - 1;
    for (let j = 0; j < n; j++) {
      u -= row[j];
      if (u < 0) {
        next = j;
        break;
      }
    }
    tokens.push(next);
    if (next === aStar) return { tokens, reward: 1 };
    if (next === actions) return { tokens, reward: 0 };
    a = next;
  }
  return { tokens, reward: 0 };
}

/**
 * Adds to `grad` (shape of M) the gradient of C.3's token-mean loss of one trajectory,
 * L = −(1/|τ|) Σ_{i≥2} A · log π_M(a_i | a_{i−1}), times `weight`. |τ| counts the policy's tokens
 * a₂…a_T (a₁ comes from the fixed π₀ and carries no gradient). With π = softmax(M(·|s)),
 * ∂ log π(a|s)/∂M(j|s) = δ_aj − π(j|s). Returns the mean entropy of π(·|a_{i−1}) over those tokens.
 */
export function addPaperGradient(
  M: Float64Array,
  actions: number,
  tokens: readonly number[],
  adv: number,
  weight: number,
  grad: Float64Array,
  row = new Float64Array(actions + 1),
): number {
  const n = actions + 1;
  const T = tokens.length - 1;
  if (T < 1) return NaN;
  const c = (-adv * weight) / T;
  let h = 0;
  for (let i = 1; i <= T; i++) {
    const s = tokens[i - 1],
      a = tokens[i];
    h += rowSoftmax(M, s, n, row);
    if (c === 0) continue;
    for (let j = 0; j < n; j++) grad[s * n + j] -= c * row[j];
    grad[s * n + a] += c;
  }
  return h / T;
}

/**
 * Train the §5 toy with C.3's recipe (or a reading of it, see PkToyPaperConfig); pure float64,
 * deterministic for a seed. Readings fixed here: "stochastic gradient descent" is plain SGD by
 * default (`optimizer: 'adam'` is the other reading); A is r − 0.5 by default (PaperAdvantage);
 * |τ| in the token mean counts the policy's tokens a₂…a_T; an update whose gradient is
 * identically zero (GRPOMask on a failure, a zero-variance group) takes no optimiser step.
 */
export function runPkToyPaper(partial: Partial<PkToyPaperConfig> = {}): PkToyPaperResult {
  for (const k of Object.keys(partial)) if (!(k in PAPER_PKTOY)) throw new InvalidArgumentError(`runPkToyPaper: unknown config key "${k}"`);
  const cfg: PkToyPaperConfig = { ...PAPER_PKTOY, ...partial };
  const posInt = (k: 'actions' | 'budget' | 'updates' | 'groupSize' | 'evalEvery', min: number) => {
    if (!Number.isInteger(cfg[k]) || cfg[k] < min)
      throw new InvalidArgumentError(`runPkToyPaper: ${k} must be an integer >= ${min} (got ${cfg[k]})`);
  };
  posInt('actions', 2);
  posInt('budget', 2);
  posInt('updates', 0);
  posInt('groupSize', 2);
  posInt('evalEvery', 1);
  if (!(cfg.lr > 0)) throw new InvalidArgumentError(`runPkToyPaper: lr must be > 0 (got ${cfg.lr})`);
  if (cfg.optimizer !== 'sgd' && cfg.optimizer !== 'adam')
    throw new InvalidArgumentError(`runPkToyPaper: optimizer must be 'sgd' or 'adam' (got ${String(cfg.optimizer)})`);
  if (!['half', 'pm1', 'r', 'ema', 'group'].includes(cfg.advantage))
    throw new InvalidArgumentError(`runPkToyPaper: advantage must be half, pm1, r, ema or group (got ${String(cfg.advantage)})`);
  if (!(cfg.emaDecay >= 0 && cfg.emaDecay < 1))
    throw new InvalidArgumentError(`runPkToyPaper: emaDecay must be in [0, 1) (got ${cfg.emaDecay})`);
  if (!(cfg.initHi >= cfg.initLo))
    throw new InvalidArgumentError(`runPkToyPaper: initHi must be >= initLo (got ${cfg.initLo}, ${cfg.initHi})`);

  const K = cfg.actions,
    n = K + 1;
  const aStar = new Rng(deriveSeed(cfg.seed, 'pktoy-paper', 'a*')).int(0, K - 1);
  const M = paperInitialLogits(cfg, aStar, new Rng(deriveSeed(cfg.seed, 'pktoy-paper', 'init')));
  const rng = new Rng(deriveSeed(cfg.seed, 'pktoy-paper', 'sample'));
  const perUpdate = cfg.advantage === 'group' ? cfg.groupSize : 1;
  const grad = new Float64Array(M.length);
  const m1 = cfg.optimizer === 'adam' ? new Float64Array(M.length) : undefined;
  const m2 = cfg.optimizer === 'adam' ? new Float64Array(M.length) : undefined;
  const [b1, b2, eps] = [0.9, 0.999, 1e-8];
  const row = new Float64Array(n);
  const out: PkToyPaperResult = {
    aStar,
    reward: new Float64Array(cfg.updates),
    length: new Float64Array(cfg.updates),
    tokenEntropy: new Float64Array(cfg.updates),
    evalAt: [],
    pStop: [],
    pStar: [],
    stateEntropy: [],
    steps: 0,
  };
  const readout = (u: number) => {
    let ps = 0,
      pa = 0,
      h = 0;
    for (let s = 0; s < K; s++) {
      if (s === aStar) continue;
      h += rowSoftmax(M, s, n, row);
      ps += row[K];
      pa += row[aStar];
    }
    out.evalAt.push(u);
    out.pStop.push(ps / (K - 1));
    out.pStar.push(pa / (K - 1));
    out.stateEntropy.push(h / (K - 1));
  };
  let baseline = 0;
  for (let u = 0; u < cfg.updates; u++) {
    if (u % cfg.evalEvery === 0) readout(u);
    const eps_ = Array.from({ length: perUpdate }, () => samplePaperEpisode(M, K, cfg.budget, aStar, rng, row));
    const r = eps_.map((e) => e.reward);
    let adv: ArrayLike<number>;
    switch (cfg.advantage) {
      case 'half':
        adv = r.map((x) => x - 0.5);
        break;
      case 'pm1':
        adv = r.map((x) => 2 * x - 1);
        break;
      case 'r':
        adv = r;
        break;
      case 'ema':
        adv = r.map((x) => x - baseline);
        break;
      case 'group':
        adv = groupAdvantages(r, cfg.groupSize).adv;
        break;
    }
    grad.fill(0);
    let h = 0,
      any = false;
    eps_.forEach((e, i) => {
      const a = cfg.mask && !(adv[i] > 0) ? 0 : adv[i];
      if (a !== 0) any = true;
      h += addPaperGradient(M, K, e.tokens, a, 1 / perUpdate, grad, row);
    });
    out.reward[u] = r.reduce((x, y) => x + y, 0) / perUpdate;
    out.length[u] = eps_.reduce((x, e) => x + e.tokens.length, 0) / perUpdate;
    out.tokenEntropy[u] = h / perUpdate;
    if (cfg.advantage === 'ema') for (const x of r) baseline = cfg.emaDecay * baseline + (1 - cfg.emaDecay) * x;
    if (!any) continue; // nothing contributes: no optimiser step (GRPOMask on failures, a zero-variance group, A = 0)
    out.steps++;
    if (m1 && m2) {
      const c1 = 1 - b1 ** out.steps,
        c2 = 1 - b2 ** out.steps;
      for (let k = 0; k < M.length; k++) {
        const g = grad[k];
        m1[k] = b1 * m1[k] + (1 - b1) * g;
        m2[k] = b2 * m2[k] + (1 - b2) * g * g;
        M[k] -= (cfg.lr * (m1[k] / c1)) / (Math.sqrt(m2[k] / c2) + eps);
      }
    } else {
      for (let k = 0; k < M.length; k++) M[k] -= cfg.lr * grad[k];
    }
  }
  readout(cfg.updates);
  return out;
}
