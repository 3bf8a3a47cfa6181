/**
 * Evaluation activities: Eq. 6.1 budget selection and pass@k at several budgets, both on
 * the compute pool in resumable chunks (heartbeat details carry the partial counts).
 */
import { Context, heartbeat } from '@temporalio/activity';
import { policySource } from '../configs/schema';
import type { RlNode, EvalNode, SelectBudgetNode } from '../configs/schema';
import { selectBudget as eq61 } from '../ml/budget';
import { PooledPolicy } from '../compute/pool';
import { dataMetrics, evalMetrics, heldOutSet } from '../ml/trainer';
import type { EvalCounts } from '../ml/trainer';
import { UncalibratedError } from './errors';
import type { NodeInput, NodeResult } from './types';
import type { Env, Manifest } from './env';
import { modelConfig, withHeartbeat } from './env';

export function evaluateActivities(env: Env) {
  const { ctx, computePool, nextEvalSeq, readManifest, nodeWeights, startWeights } = env;
  return {
    /**
     * Eq. 6.1 on J(B) measured at the node's grid of budgets, on the `select` split with the
     * policy entering the next stage. When J stays below minPassAt1 on the whole grid the
     * stage data is too hard for that policy and Eq. 6.1 has nothing to measure: the node
     * fails (onUncalibrated "fail") or warns in its result and takes the largest budget.
     */
    async selectBudget(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const node = m.config.nodes[input.nodeId] as SelectBudgetNode;
      const counts = await evaluateResumable(m, input.nodeId, { ...node, split: 'select', budgets: node.grid, k: [1], offset: 0 });
      const metrics = { ...evalMetrics(counts, node.grid, [1]), ...dataMetrics('data', heldOutSet(m.config.seed, 'select', node.difficulty, 0, node.prompts)) };
      const J = node.grid.map((b) => ({ budget: b, passAt1: metrics[`eval/b${b}/pass@1`] }));
      const maxB = Math.max(...node.grid);
      const lens = counts.flatMap((c) => c[maxB].records.filter((r) => !r.truncated).map((r) => r.length));
      const meanLen = lens.length ? lens.reduce((a, b) => a + b, 0) / lens.length : 0;
      const b0 = node.b0 > 0 ? node.b0 : meanLen;
      const curve = J.map((j) => `J(${j.budget})=${j.passAt1.toFixed(3)}`).join(' ');
      const bestJ = Math.max(...J.map((j) => j.passAt1));
      if (bestJ < node.minPassAt1) {
        const msg = `nodes.${input.nodeId}: J(B) < minPassAt1 ${node.minPassAt1} on the whole grid (${curve}; ${node.prompts} problems x ${node.samples} samples): the stage data is too hard for the policy entering it, so Eq. 6.1 cannot pick a budget. Make the stage easier (count, minSteps, max) or the policy stronger`;
        if (node.onUncalibrated === 'fail') throw new UncalibratedError(msg);
        ctx.log(`warning: ${msg}; taking the largest budget ${maxB}`);
        return { kind: 'select-budget', budget: maxB, warning: msg, metrics: { ...metrics, 'select/b0': b0, 'select/budget': maxB, 'select/qualified': 0, 'select/uncalibrated': 1 } };
      }
      const choice = eq61(J, { kappa: node.kappa, b0 });
      const budget = choice.budget ?? choice.fallback ?? maxB;
      ctx.log(`select-budget ${input.runId}/${input.nodeId}: ${curve} b0=${b0.toFixed(1)} -> ${budget} (${choice.reason})`);
      return {
        kind: 'select-budget',
        budget,
        ...(choice.budget === null ? { warning: `Eq. 6.1: ${choice.reason}; took ${budget}` } : {}),
        metrics: { ...metrics, 'select/b0': b0, 'select/budget': budget, 'select/qualified': choice.budget === null ? 0 : 1, 'select/uncalibrated': 0 },
      };
    },
    /** pass@k and length / attempt / truncation stats at several budgets. */
    async evaluate(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const node = m.config.nodes[input.nodeId] as EvalNode;
      const counts = await evaluateResumable(m, input.nodeId, { ...node, split: 'eval' });
      return { kind: 'eval', metrics: { ...evalMetrics(counts, node.budgets, node.k), ...dataMetrics('data', heldOutSet(m.config.seed, 'eval', node.difficulty, node.offset, node.prompts)) } };
    },
  };

  /** Evaluate in chunks of problems, heartbeating the partial counts so a retry resumes. */
  async function evaluateResumable(
    m: Manifest,
    nodeId: string,
    node: { difficulty: RlNode['difficulty']; split: 'eval' | 'select'; budgets: number[]; prompts: number; samples: number; temperature: number; k: number[]; offset: number },
  ): Promise<EvalCounts[]> {
    const src = policySource(m.config, nodeId);
    const weights = src ? await nodeWeights(m.runId, src) : await startWeights(m, nodeId);
    // Weights (or the run's seeded init) only, no optimiser state; a key of its own (a retry may overlap the attempt it replaces).
    const policy = await PooledPolicy.open(await computePool(), `${m.runId}/${nodeId}#eval${nextEvalSeq()}`, weights ?? modelConfig(m.config), m.config.toolArithmetic);
    let info: { heartbeatDetails?: unknown } = {};
    try {
      info = Context.current().info;
    } catch {
      /* called outside an activity (tests) */
    }
    const done = (info.heartbeatDetails as { counts?: EvalCounts[]; next?: number } | undefined) ?? {};
    const counts = done.counts ?? [];
    const chunk = 8;
    try {
      for (let from = done.next ?? 0; from < node.prompts; from += chunk) {
        const range: [number, number] = [from, Math.min(node.prompts, from + chunk)];
        // Heartbeat a copy: the SDK may encode a queued heartbeat later, after the push below,
        // and {counts with this chunk, next: from} would count the chunk twice on resume.
        counts.push(await withHeartbeat(() => ({ counts: [...counts], next: from }), () => policy.evaluate({ seed: m.config.seed, ...node, ks: node.k, range })));
        try {
          heartbeat({ counts, next: range[1] });
        } catch {
          /* outside an activity */
        }
      }
    } finally {
      await policy.dispose();
    }
    return counts;
  }
}
