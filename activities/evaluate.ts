/**
 * Evaluation activities: Eq. 6.1 budget selection and pass@k at several budgets, both on
 * the compute pool in resumable chunks (each chunk's counts in the object store, the heartbeat
 * carries a cursor).
 */
import { Context, heartbeat } from '@temporalio/activity';
import { policySource, promptTokens } from '../configs/schema';
import type { RlNode, EvalNode, SelectBudgetNode } from '../configs/schema';
import { measuredBudgets, selectBudget as eq61 } from '../ml/budget';
import { PooledPolicy } from '../compute/pool';
import { dataMetrics } from '../ml/rollouts';
import { evalMetrics, heldOutSet } from '../ml/evaluation';
import type { EvalCounts } from '../ml/evaluation';
import { keys } from '../storage/layout';
import { MissingObjectError } from '../storage/errors';
import { UncalibratedError } from './errors';
import type { NodeInput, NodeResult } from './types';
import type { Env, Manifest } from './env';
import { checkBackend, modelConfig, runLabels, withHeartbeat } from './env';

export function evaluateActivities(env: Env) {
  const { ctx, readManifest } = env;
  return {
    /**
     * Eq. 6.1 on the `select` split with the policy entering the next stage: J(B) and J(2B)
     * for every candidate B of the grid (one sampling pass at the largest 2B). When J stays
     * below minPassAt1 everywhere, or no candidate qualifies, Eq. 6.1 cannot choose: the node
     * fails (onUncalibrated "fail", UncalibratedData) or warns in its result and takes the
     * largest candidate ("warn").
     */
    async selectBudget(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const node = m.config.nodes[input.nodeId] as SelectBudgetNode;
      // Configs validated since Eq. 6.1 tests every candidate fit J(2 x max) in the context; a run
      // prepared under the older rule (J measured on the grid alone) may not: a double that does
      // not fit is not measured, and its candidate cannot qualify, as under that rule.
      const budgets = measuredBudgets(node.grid).filter(
        (b) => node.grid.includes(b) || b + promptTokens(node.difficulty) <= m.config.model.context,
      );
      const counts = await evaluateResumable(m, input.nodeId, { ...node, split: 'select', budgets, k: [1], offset: 0 });
      const metrics: Record<string, number> = {
        ...evalMetrics(counts, budgets, [1]),
        ...dataMetrics('data', heldOutSet(m.config.seed, 'select', node.difficulty, 0, node.prompts)),
      };
      const J = budgets.map((b) => ({ budget: b, passAt1: metrics[`eval/b${b}/pass@1`] }));
      const maxB = Math.max(...node.grid);
      const lens = counts.flatMap((c) => c[budgets[budgets.length - 1]].records.filter((r) => !r.truncated).map((r) => r.length));
      const meanLen = lens.length ? lens.reduce((a, b) => a + b, 0) / lens.length : 0;
      const b0 = node.b0 > 0 ? node.b0 : meanLen;
      const curve = J.map((j) => `J(${j.budget})=${j.passAt1.toFixed(3)}`).join(' ');
      const choice = eq61(J, { kappa: node.kappa, b0, candidates: node.grid });
      for (const c of choice.candidates) {
        metrics[`select/b${c.budget}/qualifies`] = c.qualifies ? 1 : 0;
        if (c.ratio !== null) metrics[`select/b${c.budget}/ratio`] = c.ratio;
      }
      Object.assign(metrics, { 'select/b0': b0, 'select/kappa': node.kappa });
      const bestJ = Math.max(...J.map((j) => j.passAt1));
      const problem =
        bestJ < node.minPassAt1
          ? `J(B) < minPassAt1 ${node.minPassAt1} at every budget (${curve}; ${node.prompts} problems x ${node.samples} samples): the stage data is too hard for the policy entering it. Make the stage easier (count, minSteps, max) or the policy stronger`
          : choice.budget === null
            ? `Eq. 6.1 found no budget: ${choice.reason} (${curve}; b0=${b0.toFixed(1)}). Extend the grid (prompt + 2 x its largest budget must fit model.context) or make the stage harder`
            : null;
      if (problem !== null) {
        const msg = `nodes.${input.nodeId}: ${problem}`;
        if (node.onUncalibrated === 'fail') throw new UncalibratedError(msg);
        ctx.log(`warning: ${msg}; taking the largest candidate ${maxB} (onUncalibrated "warn")`);
        const uncalibrated = bestJ < node.minPassAt1 ? 1 : 0;
        return {
          kind: 'select-budget',
          budget: maxB,
          warning: `${msg}; took the largest candidate ${maxB} (onUncalibrated "warn")`,
          metrics: { ...metrics, 'select/budget': maxB, 'select/qualified': 0, 'select/uncalibrated': uncalibrated },
        };
      }
      const budget = choice.budget!;
      ctx.log(`select-budget ${input.runId}/${input.nodeId}: ${curve} b0=${b0.toFixed(1)} -> ${budget} (${choice.reason})`);
      return {
        kind: 'select-budget',
        budget,
        metrics: { ...metrics, 'select/budget': budget, 'select/qualified': 1, 'select/uncalibrated': 0 },
      };
    },
    /** pass@k and length / attempt / truncation stats at several budgets. */
    async evaluate(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const node = m.config.nodes[input.nodeId] as EvalNode;
      const counts = await evaluateResumable(m, input.nodeId, { ...node, split: 'eval' });
      const metrics = {
        ...evalMetrics(counts, node.budgets, node.k),
        ...dataMetrics('data', heldOutSet(m.config.seed, 'eval', node.difficulty, node.offset, node.prompts)),
      };
      env.metrics.evaluation(runLabels(input.runId, input.nodeId, m.config), metrics);
      return { kind: 'eval', metrics };
    },
  };

  /** Evaluate in chunks of problems; a retry resumes at the last attempt's heartbeat cursor. */
  async function evaluateResumable(m: Manifest, nodeId: string, node: EvalJob): Promise<EvalCounts[]> {
    let details: unknown;
    try {
      details = Context.current().info.heartbeatDetails;
    } catch {
      /* called outside an activity (tests) */
    }
    return evaluateChunks(env, m, nodeId, node, resumePoint(details), (d) => heartbeat(d));
  }
}

/**
 * Problems [0, prompts) in chunks of EVAL_CHUNK. Each chunk's counts go to the object store
 * (keys.evalChunk) before the cursor passes it, so the heartbeat carries only the cursor
 * `{ next }` (a few bytes, whatever the size of the evaluation) and a retry reads the chunks
 * below it back instead of sampling them again. `beat` is the activity heartbeat.
 */
export async function evaluateChunks(
  env: Env,
  m: Manifest,
  nodeId: string,
  node: EvalJob,
  resume: EvalCursor,
  beat: (details: EvalCursor) => void,
): Promise<EvalCounts[]> {
  const { ctx, store, computePool, nextEvalSeq, nodeWeights, startWeights } = env;
  let next = resume.next;
  const counts: EvalCounts[] = [];
  for (let at = 0; at < next; at += EVAL_CHUNK) {
    const key = keys.evalChunk(m.runId, nodeId, at);
    // Missing is an answer (start over, below); any other store error is retried as an error.
    const c = await store.getJson<StoredChunk>(key).catch((e: Error) => {
      if (e instanceof MissingObjectError) return undefined;
      throw e;
    });
    if (!c || c.from !== at || c.to !== Math.min(node.prompts, at + EVAL_CHUNK)) {
      // Not what the cursor promised (removed by hand, or another layout): evaluate it all again.
      ctx.log(
        `evaluate ${m.runId}/${nodeId}: ${key} ${c ? `holds problems [${c.from}, ${c.to})` : 'is missing'}; evaluating from problem 0`,
      );
      counts.length = 0;
      next = 0;
      break;
    }
    counts.push(c.counts);
  }
  if (next >= node.prompts) return counts;
  if (next > 0) ctx.log(`evaluate ${m.runId}/${nodeId}: resuming at problem ${next} of ${node.prompts}`);
  checkBackend(m, ctx.backend, `evaluating ${nodeId}`);
  const src = policySource(m.config, nodeId);
  const weights = src ? await nodeWeights(m.runId, src) : await startWeights(m, nodeId);
  // Weights (or the run's seeded init) only, no optimiser state; a key of its own (a retry may overlap the attempt it replaces).
  const opening = computePool().then((pool) =>
    PooledPolicy.open(
      pool,
      `${m.runId}/${nodeId}#eval${nextEvalSeq()}`,
      weights ?? modelConfig(m.config),
      m.config.toolArithmetic,
      m.config.evalEngine ?? m.config.engine,
    ),
  );
  let policy: PooledPolicy;
  try {
    policy = await withHeartbeat(
      () => ({ next }),
      () => opening,
    );
  } catch (e) {
    // Cancelled while loading: the load still finishes on the threads; free it then.
    void opening.then(
      (p) => p.dispose(),
      () => undefined,
    );
    throw e;
  }
  try {
    for (let at = next; at < node.prompts; at += EVAL_CHUNK) {
      const range: [number, number] = [at, Math.min(node.prompts, at + EVAL_CHUNK)];
      const c = await withHeartbeat(
        () => ({ next: at }),
        () => policy.evaluate({ seed: m.config.seed, ...node, ks: node.k, range }),
      );
      await store.putJson(keys.evalChunk(m.runId, nodeId, at), { from: range[0], to: range[1], counts: c } satisfies StoredChunk);
      counts.push(c);
      beat({ next: range[1] });
    }
  } finally {
    await policy.dispose();
  }
  return counts;
}

type EvalJob = {
  difficulty: RlNode['difficulty'];
  split: 'eval' | 'select';
  budgets: number[];
  prompts: number;
  samples: number;
  temperature: number;
  k: number[];
  offset: number;
};

/** Problems per evaluation chunk (one stored object, one step of the cursor). */
export const EVAL_CHUNK = 8;

/** An evaluation's heartbeat: problems [0, next) are counted and stored. */
export type EvalCursor = { next: number };
type StoredChunk = { from: number; to: number; counts: EvalCounts };

/**
 * Where a retried evaluation resumes, from the previous attempt's heartbeat: the cursor. An
 * attempt of a release before the cursor (still in flight during an upgrade) heartbeated its
 * partial counts, `{ counts, next }`, possibly over another problem set (the held-out splits
 * changed since): those are not trusted, the evaluation starts again from problem 0.
 */
export function resumePoint(details: unknown): EvalCursor {
  const d = details as { next?: unknown; counts?: unknown } | undefined;
  if (d?.counts !== undefined) return { next: 0 };
  return { next: typeof d?.next === 'number' && Number.isInteger(d.next) && d.next >= 0 ? d.next : 0 };
}
