/**
 * Evaluation activities: Eq. 6.1 budget selection and pass@k at several budgets, both on
 * the compute pool in resumable chunks (each chunk's counts in the object store, the heartbeat
 * carries a cursor); or, for a node with `parts`, from parts sampled on the rollout queue
 * (activities/rollout.ts evalPart; docs/ARCHITECTURE.md "Evaluation fan-out"): the policy is
 * published first, the parts' per-problem counts are joined into the same chunks after.
 */
import { Context, heartbeat } from '@temporalio/activity';
import { policySource, promptTokens } from '../configs/schema';
import type { RlNode, EvalNode, RunConfig, SelectBudgetNode } from '../configs/schema';
import { choiceStability, measuredBudgets, problemCurves, selectBudget as eq61 } from '../ml/budget';
import { deriveSeed } from '../ml/rng';
import { PooledPolicy } from '../compute/pool';
import { dataMetrics } from '../ml/rollouts';
import { evalMetrics, heldOutSet, joinEvalCounts } from '../ml/evaluation';
import type { EvalCounts, ProblemCounts } from '../ml/evaluation';
import { InvalidArgumentError } from '../ml/errors';
import { keys } from '../storage/layout';
import { MissingObjectError } from '../storage/errors';
import { sha256Hex } from '../storage/store';
import { PolicyMismatchError, UncalibratedError } from './errors';
import { SEEDED_INIT } from './types';
import type { EvalPartResult, NodeInput, NodeResult } from './types';
import type { Env, Manifest } from './env';
import { checkBackend, modelConfig, runLabels, withHeartbeat } from './env';

export function evaluateActivities(env: Env) {
  const { ctx, store, readManifest } = env;
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
      return selectResult(m, input.nodeId, await evaluateResumable(m, input.nodeId, evalJob(m.config, input.nodeId)));
    },
    /** pass@k and length / attempt / truncation stats at several budgets. */
    async evaluate(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      return evalResult(m, input.nodeId, await evaluateResumable(m, input.nodeId, evalJob(m.config, input.nodeId)));
    },
    /**
     * The policy an evaluation or select-budget node with `parts` evaluates, published for the
     * rollout workers as an RL session publishes its own (keys.policy: content-addressed by the
     * sha256 of its bytes, not uploaded again when the key exists): the weights the
     * single-activity path loads (the source node's committed checkpoint, else the run's init
     * file or lineage). The run's seeded init has no bytes to publish: SEEDED_INIT, which each
     * part builds from the manifest's config.
     */
    async publishEvalPolicy(input: NodeInput): Promise<{ policy: string }> {
      const m = await readManifest(input.runId);
      return withHeartbeat(
        () => ({ publishing: input.nodeId }),
        async () => {
          const weights = await evaluatedWeights(env, m, input.nodeId);
          if (!weights) return { policy: SEEDED_INIT };
          const sha256 = sha256Hex(weights);
          const key = keys.policy(m.runId, sha256);
          if (!(await store.exists(key))) await store.put(key, weights);
          return { policy: sha256 };
        },
      );
    },
    /** `selectBudget` from the node's parts (sampled on the rollout queue from `policy`): the same result and stored chunks. */
    async selectBudgetFromParts(input: NodeInput, policy: string, parts: EvalPartResult[]): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      return selectResult(m, input.nodeId, await countsFromParts(m, input.nodeId, policy, parts));
    },
    /** `evaluate` from the node's parts (sampled on the rollout queue from `policy`): the same metrics and stored chunks. */
    async evaluateFromParts(input: NodeInput, policy: string, parts: EvalPartResult[]): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      return evalResult(m, input.nodeId, await countsFromParts(m, input.nodeId, policy, parts));
    },
  };

  /**
   * Eq. 6.1 on the `select` split with the policy entering the next stage: J(B) and J(2B)
   * for every candidate B of the grid, from the node's counts (one sampling pass at the largest 2B).
   */
  function selectResult(m: Manifest, nodeId: string, counts: EvalCounts[]): NodeResult {
    const node = m.config.nodes[nodeId] as SelectBudgetNode;
    const { budgets } = evalJob(m.config, nodeId);
    const metrics: Record<string, number> = {
      ...evalMetrics(counts, budgets, [1]),
      ...dataMetrics('data', heldOutSet(m.config.seed, 'select', node.difficulty, 0, node.prompts, m.config.task), m.config.task),
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
    // How much the choice hinges on the problems drawn: Eq. 6.1 under a bootstrap over them.
    const problems = problemCurves(counts, budgets, node.samples);
    const stable = choiceStability(problems, {
      kappa: node.kappa,
      b0: node.b0,
      candidates: node.grid,
      seed: deriveSeed(m.config.seed, 'select-stability', nodeId),
    });
    for (const [b, share] of stable.chosen) metrics[`select/stability/${b === 'none' ? 'none' : `b${b}`}`] = share;
    for (const [b, r] of stable.ratio) Object.assign(metrics, { [`select/b${b}/ratio_lo`]: r.lo, [`select/b${b}/ratio_hi`]: r.hi });
    const bestJ = Math.max(...J.map((j) => j.passAt1));
    const problem =
      bestJ < node.minPassAt1
        ? `J(B) < minPassAt1 ${node.minPassAt1} at every budget (${curve}; ${node.prompts} problems x ${node.samples} samples): the stage data is too hard for the policy entering it. Make the stage easier (count, minSteps, max) or the policy stronger`
        : choice.budget === null
          ? `Eq. 6.1 found no budget: ${choice.reason} (${curve}; b0=${b0.toFixed(1)}). Extend the grid (prompt + 2 x its largest budget must fit model.context) or make the stage harder`
          : null;
    if (problem !== null) {
      const msg = `nodes.${nodeId}: ${problem}`;
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
    ctx.log(`select-budget ${m.runId}/${nodeId}: ${curve} b0=${b0.toFixed(1)} -> ${budget} (${choice.reason})`);
    return {
      kind: 'select-budget',
      budget,
      metrics: { ...metrics, 'select/budget': budget, 'select/qualified': 1, 'select/uncalibrated': 0 },
    };
  }

  /** pass@k and length / attempt / truncation stats at the node's budgets, from its counts. */
  function evalResult(m: Manifest, nodeId: string, counts: EvalCounts[]): NodeResult {
    const node = m.config.nodes[nodeId] as EvalNode;
    const metrics = {
      ...evalMetrics(counts, node.budgets, node.k),
      ...dataMetrics('data', heldOutSet(m.config.seed, 'eval', node.difficulty, node.offset, node.prompts, m.config.task), m.config.task),
    };
    env.metrics.evaluation(runLabels(m.runId, nodeId, m.config), metrics);
    return { kind: 'eval', metrics };
  }

  /**
   * The node's counts by chunk from its parts: every part 0..N-1 once, each sampled from the
   * policy the node published (another is refused: PolicyMismatch, as an RL iteration's
   * parts are), joined per EVAL_CHUNK chunk and written under keys.evalChunk as the
   * single-activity path writes them (a retry writes the same bytes again).
   */
  async function countsFromParts(m: Manifest, nodeId: string, policy: string, parts: EvalPartResult[]): Promise<EvalCounts[]> {
    const job = evalJob(m.config, nodeId);
    return withHeartbeat(
      () => ({ joining: nodeId }),
      async () => {
        const accepted = acceptEvalParts(policy, parts);
        const stored = await Promise.all(accepted.map((p) => store.getJson<StoredEvalPart>(p.key)));
        // What the store holds must be what the part reported.
        acceptEvalParts(
          policy,
          stored.map((x, k) => ({ ...accepted[k], part: x.part, parts: x.parts, policy: x.policy })),
        );
        const pieces = stored.flatMap((x) => x.counts);
        const counts: EvalCounts[] = [];
        for (let at = 0; at < job.prompts; at += EVAL_CHUNK) {
          const range: [number, number] = [at, Math.min(job.prompts, at + EVAL_CHUNK)];
          const c = joinEvalCounts(pieces, range[0], range[1], job.budgets);
          await store.putJson(keys.evalChunk(m.runId, nodeId, at), { from: range[0], to: range[1], counts: c } satisfies StoredChunk);
          counts.push(c);
        }
        return counts;
      },
    );
  }

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
  const { ctx, store, computePool, nextEvalSeq } = env;
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
  const weights = await evaluatedWeights(env, m, nodeId);
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
        () => policy.evaluate({ seed: m.config.seed, ...node, ks: node.k, range, ...(m.config.task ? { task: m.config.task } : {}) }),
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

/** The weights node `nodeId` evaluates: its source node's committed checkpoint, else the run's init (undefined: the seeded init). */
async function evaluatedWeights(env: Env, m: Manifest, nodeId: string): Promise<Uint8Array | undefined> {
  const src = policySource(m.config, nodeId);
  return src ? env.nodeWeights(m.runId, src) : env.startWeights(m, nodeId);
}

/**
 * What an evaluation or select-budget node samples and counts. A select-budget node measures
 * J at every candidate B and 2B (Eq. 6.1) on the `select` split, pass@1 only. Configs
 * validated since Eq. 6.1 tests every candidate fit J(2 x max) in the context; a run prepared
 * under the older rule (J measured on the grid alone) may not: a double that does not fit is
 * not measured, and its candidate cannot qualify, as under that rule.
 */
export function evalJob(cfg: RunConfig, nodeId: string): EvalJob {
  const node = cfg.nodes[nodeId];
  if (node?.kind === 'eval') return { ...node, split: 'eval' };
  if (node?.kind !== 'select-budget') throw new InvalidArgumentError(`nodes.${nodeId}: not an eval or select-budget node`);
  const budgets = measuredBudgets(node.grid).filter((b) => node.grid.includes(b) || b + promptTokens(node.difficulty) <= cfg.model.context);
  return { ...node, split: 'select', budgets, k: [1], offset: 0 };
}

/** A stored evaluation part: its coordinates, the policy that sampled it, and its problems' counts. */
export interface StoredEvalPart {
  part: number;
  parts: number;
  policy: string;
  counts: ProblemCounts[];
}

/**
 * The parts of an evaluation node to join, in part order: each part 0..N-1 exactly once, all
 * sampled from `policy` (the one the node published). A part from another policy is refused
 * (PolicyMismatch, non-retryable: its counts are of another policy); a missing, repeated or
 * mis-sized part is an InvalidArgument.
 */
export function acceptEvalParts(policy: string, parts: readonly EvalPartResult[]): EvalPartResult[] {
  const n = parts[0]?.parts;
  if (n === undefined) throw new InvalidArgumentError('evaluation parts: none given');
  const out: EvalPartResult[] = new Array<EvalPartResult>(n);
  for (const p of parts) {
    if (p.policy !== policy)
      throw new PolicyMismatchError(
        `evaluation part ${p.part} of ${p.parts} was sampled with policy ${p.policy.slice(0, 16)}, the node published ${policy.slice(0, 16)}`,
      );
    if (p.parts !== n) throw new InvalidArgumentError(`evaluation part ${p.part} is one of ${p.parts} parts, another of ${n}`);
    if (!Number.isInteger(p.part) || p.part < 0 || p.part >= n)
      throw new InvalidArgumentError(`evaluation part ${p.part} is not in [0, ${n})`);
    if (out[p.part]) throw new InvalidArgumentError(`evaluation part ${p.part} of ${n} given twice`);
    out[p.part] = p;
  }
  const missing = Array.from({ length: n }, (_, k) => k).filter((k) => !out[k]);
  if (missing.length) throw new InvalidArgumentError(`evaluation parts ${missing.join(', ')} of ${n} are missing`);
  return out;
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
