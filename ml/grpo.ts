/**
 * The e3 RL objective as pure functions (docs/RECIPE.md "The RL objective"; arXiv 2506.09026).
 *
 * How it differs from plain GRPO (DeepSeekMath, Shao et al. 2024):
 * - clip-higher: asymmetric ratio bounds [1 − epsLow, 1 + epsHigh] (DAPO), not one ε;
 * - dual-clip (Ye et al. 2020): for A < 0 the per-token loss is capped at c·|A|, so a token
 *   whose ratio ran far above 1 cannot dominate a negative update;
 * - token-mean over the whole batch (DAPO): sum over every loss token / their count, so long
 *   responses are not down-weighted per token as in GRPO's per-response mean;
 * - KL to the reference as a loss term with the k3 estimator, clamped (verl's `low_var_kl`),
 *   plus an entropy bonus;
 * - truncated responses keep reward 0 and stay in the loss (the caller's rewards do that);
 * - `positiveOnly` is the paper's GRPOMask ablation: responses with A ≤ 0 leave the loss.
 *
 * Use: `adv = groupAdvantages(rewards, n).adv`, then inside `tf.variableGrads(() => ...)`
 * compute logp/entropy of the sampled tokens and return `grpoLoss({...}, cfg).loss`.
 * Tested against a float64 reference in test/unit/grpo.test.ts.
 */
import * as tf from '@tensorflow/tfjs-core';
// grpoLoss is differentiated by its callers; gradients are not registered by tfjs-core itself.
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { z } from 'zod';
import { InvalidArgumentError, ShapeMismatchError } from './errors';

/**
 * GRPO advantages, one per response (recipe: A = (r − mean_group)/(std_group + 1e-6)).
 * Responses are laid out group after group (`rewards[g*groupSize + j]`).
 * std is the *sample* std (Bessel, n − 1), as the default `torch.std` in verl's GRPO
 * advantage (the common open implementation; the recipe does not say which). A group whose rewards are all equal gets A = 0 exactly (no signal)
 * and is counted in `zeroStdGroups` (metric `train/zero_std_frac`).
 */
export function groupAdvantages(rewards: readonly number[], groupSize: number, eps = 1e-6): { adv: Float32Array; zeroStdGroups: number } {
  if (!Number.isInteger(groupSize) || groupSize < 2)
    throw new InvalidArgumentError(`groupAdvantages: groupSize must be an integer >= 2 (got ${groupSize})`);
  if (rewards.length % groupSize !== 0)
    throw new ShapeMismatchError(`groupAdvantages: rewards.length ${rewards.length} is not a multiple of groupSize ${groupSize}`);
  const adv = new Float32Array(rewards.length);
  let zeroStdGroups = 0;
  for (let g = 0; g < rewards.length; g += groupSize) {
    const r = rewards.slice(g, g + groupSize);
    if (!r.every(Number.isFinite)) throw new InvalidArgumentError(`groupAdvantages: non-finite reward in group ${g / groupSize}`);
    if (r.every((x) => x === r[0])) {
      zeroStdGroups++;
      continue;
    }
    const mean = r.reduce((a, b) => a + b, 0) / groupSize;
    const std = Math.sqrt(r.reduce((a, b) => a + (b - mean) ** 2, 0) / (groupSize - 1));
    for (let j = 0; j < groupSize; j++) adv[g + j] = (r[j] - mean) / (std + eps);
  }
  return { adv, zeroStdGroups };
}

/** The loss's knobs; defaults are the paper's (docs/RECIPE.md "The RL objective"). */
export interface GrpoConfig {
  /** Lower ratio bound is 1 − epsLow. @default 0.2 */
  epsLow: number;
  /** Upper ratio bound is 1 + epsHigh ("clip-higher"; the paper uses 0.35 to 0.5). @default 0.35 */
  epsHigh: number;
  /** Dual-clip constant c: for A < 0 the per-token loss is at most c·|A|. @default 3 */
  dualClip: number;
  /** Weight of the k3 KL to the reference policy (0 or no `refLogp`: no KL term). @default 0.001 */
  klCoef: number;
  /** The per-token k3 KL is clamped to [−klClamp, klClamp] (k3 ≥ 0, so only the top bites). @default 10 */
  klClamp: number;
  /** Weight of the entropy bonus (subtracted from the loss). @default 0.001 */
  entropyCoef: number;
  /** GRPOMask ablation: drop every response with A ≤ 0 from the loss. @default false */
  positiveOnly: boolean;
  /**
   * The policy's check marks (`ok` / `no`) leave the loss: RL shapes which attempts the
   * policy makes and how long it searches, never its verdicts, which stay the warm start's.
   * Outcome-only advantages blame every token of a failed response, its true `no` marks
   * included, and a failed search writes many of them. The marks also leave the KL and
   * entropy terms, so nothing anchors them: measured, they drift more than without the mask
   * (docs/RESULTS.md, "(b) with the marks out of the loss"). @default false
   */
  maskMarks: boolean;
  /**
   * Weight of the KL term on the policy's check-mark tokens (`ok` / `no`; `GrpoInputs.marks`),
   * where it differs from klCoef's on every other token: anchors the verdicts to the
   * reference while the search moves freely (docs/RESULTS.md: the verifier erodes under RL,
   * and a KL of 0.05 on all tokens holds it). Absent: klCoef everywhere. @default klCoef
   */
  klMarkCoef?: number;
  /**
   * Which check marks the policy-gradient term sees. 'all' (absent, the paper's objective):
   * every token of a response carries its outcome advantage. 'ok': the `no` marks (the
   * policy's decisions to go on searching) leave the policy-gradient term and stay in the KL
   * and entropy terms; the `ok` marks (its decisions to stop) keep the advantage. Why: a
   * failed search writes many true `no` marks, and outcome credit pushes each of them down,
   * i.e. towards stopping; the paper's mechanism (§5: negative gradients push probability off
   * the end of an answer) acts on the stop decision alone (docs/RESULTS.md, "(b) with the
   * `no` marks out of the policy gradient"). @default 'all'
   */
  pgMarks?: 'all' | 'ok';
  /**
   * What a response cut at the token budget teaches. 'penalize' (absent, the paper's
   * objective): reward 0 and an advantage like any failure's, so a long search that ran out of
   * tokens is pushed down, towards stopping; §6.1 names training where most responses are cut
   * as the regime that teaches stopping early. 'mask': the group's advantages are computed as
   * before (a cut response still counts as a failure in its group's mean and spread), then a
   * cut response's advantage is 0, so it leaves the policy-gradient term and keeps its KL and
   * entropy terms (the overlong filtering of DAPO, arXiv 2503.14476 §3.4; ml/batching.ts
   * rlPlan). @default 'penalize'
   */
  truncated?: 'penalize' | 'mask';
}

export const GrpoConfigSchema = z
  .object({
    epsLow: z.number().min(0).lt(1).default(0.2),
    epsHigh: z.number().min(0).default(0.35),
    dualClip: z.number().gt(1).default(3),
    klCoef: z.number().min(0).default(0.001),
    klClamp: z.number().gt(0).default(10),
    entropyCoef: z.number().min(0).default(0.001),
    positiveOnly: z.boolean().default(false),
    maskMarks: z.boolean().default(false),
    klMarkCoef: z.number().min(0).optional(),
    pgMarks: z.enum(['all', 'ok']).optional(),
    truncated: z.enum(['penalize', 'mask']).optional(),
  })
  .strict();

/** Whether the loss has a KL term anywhere (on every token, or on the marks alone): the reference policy is needed. */
export const usesReference = (c: Pick<GrpoConfig, 'klCoef' | 'klMarkCoef'>): boolean => c.klCoef > 0 || (c.klMarkCoef ?? 0) > 0;

/** Defaults filled in; unknown keys and wrong types throw (zod's message names the field). */
export function grpoConfig(partial: Partial<GrpoConfig> = {}): GrpoConfig {
  return GrpoConfigSchema.parse(partial);
}

export const DEFAULT_GRPO: Readonly<GrpoConfig> = Object.freeze(grpoConfig());

/** One micro-batch of sampled responses, all [B, T] float32 except `adv` [B]. */
export interface GrpoInputs {
  /** log π_θ(token) under the current parameters (carries the gradient). */
  logp: tf.Tensor;
  /** log π_old(token) from the policy that sampled (no gradient). */
  oldLogp: tf.Tensor;
  /** log π_ref(token) of the reference policy; omit for no KL term. */
  refLogp?: tf.Tensor;
  /** Entropy of π_θ at each position (carries the gradient of the bonus). */
  entropy: tf.Tensor;
  /** One advantage per response. */
  adv: tf.Tensor;
  /** 1 for policy-written response tokens; 0 for padding and environment-forced tokens. */
  mask: tf.Tensor;
  /** 1 where the token is a check mark (GrpoConfig.klMarkCoef); needed only when klMarkCoef is set. */
  marks?: tf.Tensor;
  /** 1 where the token is a `no` mark (GrpoConfig.pgMarks 'ok'); needed only then. */
  noMarks?: tf.Tensor;
}

/** Token-means over the loss tokens (after positive-only masking), as plain numbers. */
export interface GrpoStats {
  loss: number;
  /** Token-mean clipped policy-gradient term. */
  pg: number;
  /** Fraction of loss tokens whose ratio clip is active (= clipLowFrac + clipHighFrac). */
  clipFrac: number;
  /** A < 0 and ratio < 1 − epsLow. */
  clipLowFrac: number;
  /** A > 0 and ratio > 1 + epsHigh. */
  clipHighFrac: number;
  /** A < 0 and the dual-clip cap c·|A| is active (ratio > c). */
  dualClipFrac: number;
  /** Token-mean clamped k3 KL to the reference (0 without `refLogp`). */
  kl: number;
  entropy: number;
  ratioMean: number;
  /** ½·(logp − oldLogp)² token-mean: how far this update has moved from the sampler. */
  approxKlOld: number;
  /** Number of loss tokens. */
  tokens: number;
}

/** Pre-exp clamp of log(π_ref/π) in k3, as verl: keeps exp finite (and its gradient non-NaN). */
const KL_LOGRATIO_CLAMP = 20;

function checkShapes(x: GrpoInputs): void {
  const want = x.logp.shape;
  if (want.length !== 2) throw new ShapeMismatchError(`grpoLoss: logp must be [B, T] (got [${want}])`);
  const named: Array<[string, tf.Tensor | undefined]> = [
    ['oldLogp', x.oldLogp],
    ['refLogp', x.refLogp],
    ['entropy', x.entropy],
    ['mask', x.mask],
    ['marks', x.marks],
    ['noMarks', x.noMarks],
  ];
  for (const [name, t] of named) {
    if (t && (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1])) {
      throw new ShapeMismatchError(`grpoLoss: ${name} has shape [${t.shape}], logp has [${want}]`);
    }
  }
  if (x.adv.shape.length !== 1 || x.adv.shape[0] !== want[0])
    throw new ShapeMismatchError(`grpoLoss: adv must be [${want[0]}] (got [${x.adv.shape}])`);
}

/**
 * The e3 policy loss (recipe "The RL objective"), per token t of response b:
 *   r = exp(logp − oldLogp)
 *   pg = max(−A·r, −A·clip(r, 1 − epsLow, 1 + epsHigh));  if A < 0: pg = min(pg, c·|A|)
 *   kl = clamp(exp(d) − d − 1, ±klClamp),  d = clamp(refLogp − logp, ±20)      (k3)
 *   loss = Σ mask·(pg + klCoef·kl − entropyCoef·entropy) / Σ mask      (token-mean, DAPO)
 * With `klMarkCoef`, the KL weight on mark tokens (x.marks = 1) is klMarkCoef instead of klCoef.
 * With `pgMarks` 'ok', pg := 0 on the `no` marks (x.noMarks = 1); they keep the KL and entropy
 * terms and the token count, and the clip statistics count only tokens in the pg term.
 * With `positiveOnly`, mask := mask·[A > 0]. No loss tokens → loss 0.
 * Masked positions are zeroed before any exp, so garbage there (even ±inf) cannot make NaN.
 * Stats are read synchronously (one small download); the returned `loss` is the caller's.
 */
export function grpoLoss(x: GrpoInputs, cfg: Partial<GrpoConfig> = {}): { loss: tf.Scalar; stats: GrpoStats } {
  const c = grpoConfig(cfg);
  checkShapes(x);
  const [loss, statVec] = tf.tidy(() => {
    const adv = tf.expandDims(tf.cast(x.adv, 'float32'), 1); // [B, 1]
    let m = tf.cast(x.mask, 'float32');
    if (c.positiveOnly) m = tf.mul(m, tf.cast(tf.greater(adv, 0), 'float32'));
    const on = tf.greater(m, 0);
    const zero = tf.zerosLike(x.logp);
    const n = tf.maximum(tf.sum(m), 1);
    const tmean = (t: tf.Tensor) => tf.div(tf.sum(tf.mul(t, m)), n);

    const logRatio = tf.where(on, tf.sub(x.logp, x.oldLogp), zero);
    const ratio = tf.exp(logRatio);
    const negAdv = tf.neg(adv);
    const pg1 = tf.mul(negAdv, ratio);
    const pg2 = tf.mul(negAdv, tf.clipByValue(ratio, 1 - c.epsLow, 1 + c.epsHigh));
    const clipped = tf.maximum(pg1, pg2);
    const negA = tf.less(adv, 0);
    const cap = tf.mul(tf.abs(adv), c.dualClip);
    let pg = tf.where(negA, tf.minimum(clipped, cap), clipped);
    let inPg = (b: tf.Tensor): tf.Tensor => b;
    if (c.pgMarks === 'ok') {
      if (!x.noMarks) throw new ShapeMismatchError("grpoLoss: pgMarks is 'ok' but no noMarks tensor was given");
      const pgOn = tf.equal(x.noMarks, 0);
      pg = tf.where(pgOn, pg, zero);
      inPg = (b) => tf.logicalAnd(b, pgOn);
    }

    const byMark = c.klMarkCoef !== undefined && c.klMarkCoef !== c.klCoef;
    let kl: tf.Tensor = zero;
    if (x.refLogp && usesReference(c)) {
      const d = tf.clipByValue(tf.where(on, tf.sub(x.refLogp, x.logp), zero), -KL_LOGRATIO_CLAMP, KL_LOGRATIO_CLAMP);
      kl = tf.clipByValue(tf.sub(tf.sub(tf.exp(d), d), 1), -c.klClamp, c.klClamp);
    }
    // Per-token KL weight: klCoef, or klMarkCoef on the marks (a tensor only when they differ).
    let klWeighted: tf.Tensor = tf.mul(kl, c.klCoef);
    if (byMark) {
      if (!x.marks) throw new ShapeMismatchError('grpoLoss: klMarkCoef is set but no marks tensor was given');
      const w = tf.add(tf.mul(tf.cast(x.marks, 'float32'), c.klMarkCoef! - c.klCoef), c.klCoef);
      klWeighted = tf.mul(kl, w);
    }
    const ent = tf.where(on, x.entropy, zero);
    const perToken = tf.sub(tf.add(pg, klWeighted), tf.mul(ent, c.entropyCoef));
    const loss = tmean(perToken) as tf.Scalar;

    const frac = (b: tf.Tensor) => tmean(tf.cast(b, 'float32'));
    const clipLow = inPg(tf.logicalAnd(negA, tf.less(ratio, 1 - c.epsLow)));
    const clipHigh = inPg(tf.logicalAnd(tf.greater(adv, 0), tf.greater(ratio, 1 + c.epsHigh)));
    const dual = inPg(tf.logicalAnd(negA, tf.greater(clipped, cap)));
    const stats = tf.stack([
      loss,
      tmean(pg),
      frac(tf.logicalOr(clipLow, clipHigh)),
      frac(clipLow),
      frac(clipHigh),
      frac(dual),
      tmean(kl),
      tmean(ent),
      tmean(ratio),
      tmean(tf.mul(tf.square(logRatio), 0.5)),
      tf.sum(m),
    ]);
    return [loss, stats] as [tf.Scalar, tf.Tensor];
  });
  const s = statVec.dataSync();
  statVec.dispose();
  const stats: GrpoStats = {
    loss: s[0],
    pg: s[1],
    clipFrac: s[2],
    clipLowFrac: s[3],
    clipHighFrac: s[4],
    dualClipFrac: s[5],
    kl: s[6],
    entropy: s[7],
    ratioMean: s[8],
    approxKlOld: s[9],
    tokens: s[10],
  };
  return { loss, stats };
}

/** SFT loss: −token-mean of logp over mask (same aggregation as grpoLoss). */
export function crossEntropyLoss(logp: tf.Tensor, mask: tf.Tensor): tf.Scalar {
  if (logp.shape.join() !== mask.shape.join())
    throw new ShapeMismatchError(`crossEntropyLoss: mask [${mask.shape}] vs logp [${logp.shape}]`);
  return tf.tidy(() => {
    const m = tf.cast(mask, 'float32');
    const lp = tf.where(tf.greater(m, 0), logp, tf.zerosLike(logp));
    return tf.neg(tf.div(tf.sum(tf.mul(lp, m)), tf.maximum(tf.sum(m), 1))) as tf.Scalar;
  });
}
