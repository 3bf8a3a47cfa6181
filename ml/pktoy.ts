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
 * Settings: the defaults keep what section 5 is known to use (100 actions plus stop, budget
 * 100, initial mean length about 15). The section's initial distribution over actions, where a*
 * sits in it, learning rate, group size, number of steps and temperature were not found
 * (docs/results/pktoy.md), so those keep the project's defaults (uniform start, random a*,
 * AdamW lr 0.05, 8 groups × 8, 80 steps, temperature 1); the options let the toy run at other
 * readings.
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
  actions: 100, budget: 100, initLen: 15, groupSize: 8, groups: 8, minibatches: 2, steps: 80, lr: 0.05,
  temperature: 1, initSkew: 0, aStar: 'random', seed: 0, grpo: {},
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
  if (cfg.groups % cfg.minibatches !== 0) throw new InvalidArgumentError(`runPkToy: groups ${cfg.groups} not divisible by minibatches ${cfg.minibatches}`);
  if (!(cfg.temperature > 0)) throw new InvalidArgumentError(`runPkToy: temperature must be > 0 (got ${cfg.temperature})`);
  if (!(cfg.initSkew >= 0)) throw new InvalidArgumentError(`runPkToy: initSkew must be >= 0 (got ${cfg.initSkew})`);
  if (!(cfg.initLen > 1)) throw new InvalidArgumentError(`runPkToy: initLen must be > 1 (got ${cfg.initLen})`);
  const { logits: initLogits, byRank } = initialLogits(cfg);
  let aStar: number;
  if (cfg.aStar === 'random') aStar = new Rng(deriveSeed(cfg.seed, 'pktoy', 'a*')).int(0, cfg.actions - 1);
  else {
    const r = cfg.aStar.rank;
    if (!Number.isInteger(r) || r < 0 || r >= cfg.actions) throw new InvalidArgumentError(`runPkToy: aStar.rank must be an integer in [0, ${cfg.actions}) (got ${r})`);
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
      const { adv } = groupAdvantages(eps.map((e) => e.reward), cfg.groupSize);
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
  batch: Episode[], adv: Float32Array, z: Float32Array, oldLogpTable: Float64Array, n: number, stop: number,
  temp: number, grpo: GrpoConfig, opt: AdamW,
): GrpoStats {
  const cur = softmaxRows(z, n, temp);
  const B = batch.length;
  const T = Math.max(...batch.map((e) => e.tokens.length));
  const logp = new Float32Array(B * T), oldLogp = new Float32Array(B * T), ent = new Float32Array(B * T), mask = new Float32Array(B * T);
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
    const oldT = tf.tensor2d(oldLogp, [B, T]), maskT = tf.tensor2d(mask, [B, T]), advT = tf.tensor1d(adv);
    const f = (lp: tf.Tensor, en: tf.Tensor) => {
      const out = grpoLoss({ logp: lp, oldLogp: oldT, entropy: en, adv: advT, mask: maskT }, grpo);
      stats = out.stats;
      return out.loss;
    };
    return tf.grads(f)([tf.tensor2d(logp, [B, T]), tf.tensor2d(ent, [B, T])]);
  });
  const w = gLogp.dataSync(), u = gEnt.dataSync();
  // With u = z / temp: d logp(s→a)/du[s,j] = δ_aj − π_sj;  dH_s/du[s,j] = −π_sj (log π_sj + H_s);
  // d/dz = (d/du) / temp.
  const G = new Float32Array(n * n);
  const wRow = new Float64Array(n), uRow = new Float64Array(n), Gsa = new Float64Array(n * n);
  batch.forEach((e, b) => e.tokens.forEach((a, t) => {
    const i = b * T + t;
    wRow[state[i]] += w[i];
    uRow[state[i]] += u[i];
    Gsa[state[i] * n + a] += w[i];
  }));
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
