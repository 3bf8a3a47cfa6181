/**
 * The trainer: one policy with its optimiser (and the reference policy of the KL term), with
 * no Temporal in sight: SFT steps on warm-start traces, and the RL iteration of
 * docs/RECIPE.md in its parts (sample → grade → update), which the activities compose
 * (activities/train.ts). Every step is a pure function of (run seed, node, step) and the
 * state it starts from, so a rerun from a checkpoint reproduces the same bytes.
 * The rest lives by concern: an iteration's data path in ./rollouts.ts, evaluation in
 * ./evaluation.ts, plans, micro-batches and packing in ./batching.ts, the optimiser state's
 * bytes in ./optimcodec.ts.
 */
import * as tf from '@tensorflow/tfjs-core';
import { NonFiniteError, ShapeMismatchError } from './errors';
import { crossEntropyLoss, grpoLoss, usesReference } from './grpo';
import type { GrpoStats } from './grpo';
import { AdamW } from './optim';
import type { AdamWConfig } from './optim';
import { createPolicy, disposePolicy, growContext, tokenLogProbs } from './policy';
import type { Policy, PolicyConfig } from './policy';
import type { SampleEngine } from './sampler';
import { loadPolicy, serializePolicy } from './serialize';
import type { Difficulty } from './task';
import type { TraceOptions } from './traces';
import type { Grads, PlanRow, SftOptions, SftRow } from './batching';
import { addGrads, lossTokens, pack, rlPlan, sftMetrics, sftPlan, sftWeight, updateMetrics } from './batching';
import type { EvalCounts, EvalSpec } from './evaluation';
import { countEval, evalRows } from './evaluation';
import { decodeOptState, encodeOptState } from './optimcodec';
import type { GradedRollout, RlSettings, Rollout } from './rollouts';
import { sampleRows, shardRows } from './rollouts';

export { NonFiniteError, ShapeMismatchError };

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
  sftStep(
    seed: number,
    step: number,
    batchSize: number,
    difficulty: Difficulty[],
    traces: Partial<TraceOptions>,
    opts: SftOptions = {},
  ): Record<string, number> {
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
    const r = tf.variableGrads(() =>
      tf.tidy(() => tf.mul(crossEntropyLoss(tokenLogProbs(this.policy, tokens).logp, mask), n / total) as tf.Scalar),
    );
    const loss = r.value.dataSync()[0];
    tf.dispose([r.value, tokens, mask]);
    return { grads: this.toArrays(r.grads), loss };
  }

  /** Gradient of one RL micro-batch's share of its mini-batch loss (rows from rlPlan), with its loss statistics. */
  rlGrads(s: RlSettings, chunk: PlanRow[], tokensInMb: number): { grads: Grads; stats?: GrpoStats } {
    const {
      tokens,
      mask,
      oldLogp,
      adv: advT,
      marks,
      noMarks,
    } = pack(chunk, true, { marks: s.grpo.klMarkCoef !== undefined, noMarks: s.grpo.pgMarks === 'ok' });
    const n = chunk.reduce((a, r) => a + lossTokens(r, s.grpo.positiveOnly), 0);
    const refLogp =
      this.ref && usesReference(s.grpo) ? tf.tidy(() => tokenLogProbs(this.ref!, tokens, { temperature: s.temperature }).logp) : undefined;
    let st: GrpoStats | undefined;
    const r = tf.variableGrads(() => {
      const { logp, entropy } = tokenLogProbs(this.policy, tokens, { temperature: s.temperature });
      const out = grpoLoss({ logp, oldLogp: oldLogp!, refLogp, entropy, adv: advT!, mask, marks, noMarks }, s.grpo);
      st = out.stats;
      return tf.mul(out.loss, n / tokensInMb) as tf.Scalar;
    });
    tf.dispose([
      r.value,
      tokens,
      mask,
      oldLogp!,
      advT!,
      ...(refLogp ? [refLogp] : []),
      ...(marks ? [marks] : []),
      ...(noMarks ? [noMarks] : []),
    ]);
    return { grads: this.toArrays(r.grads), ...(st && n > 0 ? { stats: st } : {}) };
  }

  /** One AdamW step from summed gradients (keyed by parameter name). */
  applyGrads(grads: Grads, where: string): { gradNorm: number } {
    const tensors = Object.fromEntries(
      Object.entries(grads).map(([name, g]) => [name, tf.tensor(g, this.policy.params.get(name)!.shape, 'float32')]),
    );
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
    return sampleRows(this.policy, {
      rows: shardRows(s, t, shard, shards),
      budget,
      temperature: s.temperature,
      topP: s.topP,
      tool: this.toolArithmetic,
      engine: this.engine,
      rescore: true,
    });
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
    const rollouts = await sampleRows(this.policy, {
      rows,
      budget: Math.max(...o.budgets),
      temperature: o.temperature,
      topP: 1,
      tool: this.toolArithmetic,
      engine: this.engine,
    });
    return countEval(rows, rollouts, o.budgets, this.toolArithmetic);
  }
}
