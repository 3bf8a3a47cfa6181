/**
 * The p^k toy (paper section 5; E3_RECIPE.md "The p^k toy"): why negative gradients make
 * responses longer. A bigram softmax policy over `actions` actions plus `stop` writes an
 * episode token by token until it writes `stop` or reaches `budget` tokens. One action a*
 * is correct. Reward 1 iff a* occurs in the episode AND the episode stopped within the budget:
 * a truncated episode gets 0, as a response cut off without a final answer does in the recipe.
 *
 * Policy: logits table [actions+1 rows × actions+1 columns]; row = previous action, with the
 * last row (the stop index, never a previous action) serving as the start state; column
 * `actions` = stop. Initially all action logits are 0 and the stop logit is set so that
 * P(stop) = 1/initLen in every row, i.e. mean length initLen (stop included).
 *
 * Training runs the project's real machinery: groupAdvantages, grpoLoss (tfjs, through
 * tf.grads with respect to the per-token logp and entropy) and AdamW. Only the last link of
 * the chain rule, d logp / d table and d entropy / d table, is written by hand here (softmax
 * rows, float64), which keeps a step at a few milliseconds. Each rollout batch is split into
 * `minibatches` optimiser steps, one pass (recipe), so later minibatches see ratio ≠ 1.
 * No reference model: the toy runs with klCoef 0. Sampling at temperature 1.
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
  /** Seeds a* and every draw. @default 0 */
  seed: number;
  /** Loss settings; klCoef is forced to 0 (no reference). @default DEFAULT_GRPO */
  grpo: Partial<GrpoConfig>;
}

export const DEFAULT_PKTOY: Readonly<PkToyConfig> = Object.freeze({
  actions: 100, budget: 100, initLen: 15, groupSize: 8, groups: 8, minibatches: 2, steps: 80, lr: 0.05, seed: 0, grpo: {},
});

export interface PkToyResult {
  /** The correct action. */
  aStar: number;
  /** One record per step, measured on that step's rollouts (before its update):
   *  train/reward_mean, train/response_len, train/truncated_frac, train/zero_std_frac, …,
   *  plus pktoy/p_star and pktoy/p_stop (first-token probabilities) and loss stats. */
  history: Array<Record<string, number>>;
}

interface Episode {
  tokens: number[];
  reward: number;
  truncated: boolean;
}

/** Row-wise softmax of the table in float64: probabilities, log-probabilities, entropies. */
function softmaxRows(z: Float32Array, n: number): { p: Float64Array; logp: Float64Array; ent: Float64Array } {
  const p = new Float64Array(n * n);
  const logp = new Float64Array(n * n);
  const ent = new Float64Array(n);
  for (let s = 0; s < n; s++) {
    let max = -Infinity;
    for (let j = 0; j < n; j++) max = Math.max(max, z[s * n + j]);
    let sum = 0;
    for (let j = 0; j < n; j++) sum += Math.exp(z[s * n + j] - max);
    const lse = max + Math.log(sum);
    let h = 0;
    for (let j = 0; j < n; j++) {
      const lp = z[s * n + j] - lse;
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
  const aStar = new Rng(deriveSeed(cfg.seed, 'pktoy', 'a*')).int(0, cfg.actions - 1);

  // P(stop) = e^b / (e^b + actions) = 1 / initLen
  const stopLogit = Math.log(cfg.actions / (cfg.initLen - 1));
  const init = new Float32Array(n * n);
  for (let s = 0; s < n; s++) init[s * n + stop] = stopLogit;
  const initT = tf.tensor2d(init, [n, n]);
  const table = tf.variable(initT, true);
  initT.dispose();
  const opt = new AdamW({ table }, { lr: cfg.lr, weightDecay: 0 });
  const history: Array<Record<string, number>> = [];
  try {
    let z = Float32Array.from(table.dataSync());
    for (let step = 0; step < cfg.steps; step++) {
      const old = softmaxRows(z, n);
      const rng = new Rng(deriveSeed(cfg.seed, 'pktoy', 'sample', step));
      const eps = Array.from({ length: cfg.groups * cfg.groupSize }, () => sampleEpisode(old.p, n, stop, cfg.budget, aStar, rng));
      const { adv } = groupAdvantages(eps.map((e) => e.reward), cfg.groupSize);
      const records: ResponseRecord[] = eps.map((e) => ({ reward: e.reward, length: e.tokens.length, truncated: e.truncated }));
      const rec = summarizeResponses('train', records, cfg.groupSize);
      rec['pktoy/p_star'] = old.p[stop * n + aStar];
      rec['pktoy/p_stop'] = old.p[stop * n + stop];

      const per = eps.length / cfg.minibatches;
      for (let mb = 0; mb < cfg.minibatches; mb++) {
        const batch = eps.slice(mb * per, (mb + 1) * per);
        const stats = updateOnce(batch, adv.subarray(mb * per, (mb + 1) * per), z, old.logp, n, stop, grpo, opt);
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

/** One AdamW step on a minibatch: grpoLoss through tf.grads, then the table's chain rule. */
function updateOnce(
  batch: Episode[], adv: Float32Array, z: Float32Array, oldLogpTable: Float64Array, n: number, stop: number,
  grpo: GrpoConfig, opt: AdamW,
): GrpoStats {
  const cur = softmaxRows(z, n);
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
  // d logp(s→a)/dz[s,j] = δ_aj − π_sj;  dH_s/dz[s,j] = −π_sj (log π_sj + H_s)
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
      G[k] = Gsa[k] - cur.p[k] * wRow[s] - uRow[s] * cur.p[k] * (cur.logp[k] + cur.ent[s]);
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
