/**
 * One child workflow per DAG node, id `<runId>/<nodeId>` (docs/ARCHITECTURE.md "A run is a DAG").
 * Training nodes (sft, rl) keep their state in a trainer session and commit checkpoints;
 * evaluation nodes are single heartbeating activities that resume from their heartbeat, or,
 * with `parts`, parts on the rollout queue joined by one activity.
 */
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  isCancellation,
  defineQuery,
  defineSignal,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import type { Activities } from '../activities';
import type {
  FirstWindow,
  IterationStats,
  NodeInput,
  NodeResult,
  Progress,
  RolloutPartResult,
  Session,
  WindowStats,
} from '../activities/types';
import { ErrorTypes, NON_RETRYABLE_ERROR_TYPES, ROLLOUT_QUEUE, windowEnd } from '../activities/types';
import type { EvalNode, RlNode, SelectBudgetNode, SftNode } from '../configs/schema';
import { legacyRlIteration } from './legacy';
import { E3Budget, E3Iteration, E3Node, E3PassAt1, E3Run } from './search';
import { openSession, sessionActivities, withRewind } from './session';
import { evalDetails, trainingDetails } from './story';

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const progressQuery = defineQuery<Progress>('progress');

const general = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '60 seconds',
  retry: { initialInterval: '1s', maximumInterval: '15s', backoffCoefficient: 2, nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES] },
});

/**
 * Activities of a rollout or evaluation part, on the queue every worker serves (any worker may
 * take a part). A worker killed mid-part misses its 10 s heartbeat window and the part runs
 * again on another: it samples the same rows from the same published policy.
 */
const rolloutActivities = (summary: string) =>
  proxyActivities<Activities>({
    taskQueue: ROLLOUT_QUEUE,
    summary,
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout: '10 seconds',
    retry: { initialInterval: '1s', maximumInterval: '10s', backoffCoefficient: 2, nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES] },
  });

/** Continue-as-new well before the history grows large (the limit for a stored config without maxHistoryEvents). */
const MAX_HISTORY_EVENTS = 4000;

interface Carry {
  iteration: number;
  /** A pause received in the run before continue-as-new holds in the next one. */
  paused?: boolean;
  session: Session;
  rewinds: number;
  metrics: Record<string, number>;
}

function controls(input: NodeInput, kind: string, total: number, carry: Partial<Carry>) {
  // updatedAt: workflow time (deterministic), read only by the progress query.
  const st = {
    paused: carry.paused ?? false,
    iteration: carry.iteration ?? 0,
    rewinds: carry.rewinds ?? 0,
    metrics: carry.metrics ?? {},
    budget: undefined as number | undefined,
    updatedAt: Date.now(),
  };
  setHandler(progressQuery, (): Progress => ({
    runId: input.runId,
    nodeId: input.nodeId,
    kind,
    iteration: st.iteration,
    total,
    paused: st.paused,
    budget: st.budget,
    metrics: st.metrics,
    rewinds: st.rewinds,
    updatedAt: st.updatedAt,
  }));
  upsertSearchAttributes([
    { key: E3Run, value: input.runId },
    { key: E3Node, value: input.nodeId },
  ]);
  /** Refresh the live details the Web UI shows for this node. */
  const show = () =>
    setCurrentDetails(
      trainingDetails({
        nodeId: input.nodeId,
        kind,
        iteration: st.iteration,
        total,
        budget: st.budget,
        paused: st.paused,
        rewinds: st.rewinds,
        metrics: st.metrics,
      }),
    );
  setHandler(pauseSignal, () => {
    st.paused = true;
    show();
  });
  setHandler(resumeSignal, () => {
    st.paused = false;
    show();
  });
  return Object.assign(st, { show });
}

const shouldContinueAsNew = (input: NodeInput): boolean =>
  workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > (input.config.maxHistoryEvents ?? MAX_HISTORY_EVENTS);

type Controls = ReturnType<typeof controls>;

/**
 * Steps in commit windows (docs/ARCHITECTURE.md "Commit windows"; patch "commit-windows"): each
 * activity trains from the node's step to its next commit (windowEnd) and commits there, the
 * open trains the first window, and the window that ends the node closes the session. The
 * trainer then waits for the workflow only between windows, not between steps, nor after the
 * open or before the close. Recorded histories without the patch replay step by step.
 */
const COMMIT_WINDOWS = 'commit-windows';

/** How a node kind trains in commit windows. */
interface Windows {
  /** What the open needs to train the first window. */
  first: FirstWindow;
  ckptEvery: number;
  /** Steps [from, to) and the commit at `to`; with `close`, the session closes after it. */
  run: (s: Session, from: number, to: number, close: boolean) => Promise<WindowStats>;
}

/**
 * The loop both training node kinds share: open (or carry) the session, then step until
 * `total` — waiting while paused, rewinding to the last commit when the session is lost,
 * publishing progress (search attributes, live details), continuing-as-new when the history
 * is long — and close the session at the end. With `windows` (and the patch), it steps a
 * commit window at a time, so a pause holds, and progress shows, at the next commit.
 */
async function trainLoop(
  input: NodeInput & { carry?: Carry },
  st: Controls,
  total: number,
  step: (s: Session, from: number) => Promise<IterationStats>,
  attrs: (metrics: Record<string, number>) => SearchAttributeUpdatePair[] = () => [],
  windows?: Windows,
): Promise<void> {
  /** Progress from a step or window the session has applied (and committed, when due). */
  const advance = (v: IterationStats) => {
    st.iteration = v.iteration;
    st.metrics = v.metrics;
    st.updatedAt = Date.now();
    upsertSearchAttributes([{ key: E3Iteration, value: st.iteration }, ...attrs(st.metrics)]);
    st.show();
  };
  let session: Session;
  /** The last window closed the session itself. */
  let closed = false;
  if (input.carry) session = input.carry.session;
  else {
    const { first, ...opened } = await openSession(input, windows && patched(COMMIT_WINDOWS) ? windows.first : undefined);
    session = opened;
    st.iteration = session.step;
    if (first) {
      advance(first);
      closed = first.closed;
    }
  }
  st.show();
  const steps = async (): Promise<void> => {
    while (st.iteration < total) {
      await condition(() => !st.paused);
      const from = st.iteration;
      const windowed = windows !== undefined && patched(COMMIT_WINDOWS);
      const r = await withRewind(
        () => session,
        (s) => (session = s),
        input,
        async (s): Promise<WindowStats> => {
          if (!windowed) return { ...(await step(s, from)), closed: false };
          const to = windowEnd(from, total, windows.ckptEvery);
          return windows.run(s, from, to, to === total);
        },
      );
      if (!r.ok) {
        st.iteration = r.rewindTo;
        st.rewinds++;
        st.show();
        continue;
      }
      advance(r.value);
      closed = r.value.closed;
      if (shouldContinueAsNew(input) && st.iteration < total) {
        // Same workflow type, same node: the carried state replaces what the history held.
        await continueAsNew({
          ...input,
          carry: { iteration: st.iteration, paused: st.paused, session, rewinds: st.rewinds, metrics: st.metrics },
        });
      }
    }
  };
  try {
    await steps();
  } catch (err) {
    // A cancelled run (Web UI "Request Cancellation", `e3 cancel`) frees its session on the
    // worker at once; its commits stay, and `e3 resume` continues from the last one. Behind a
    // patch: recorded histories without this close end the node without scheduling it.
    if (isCancellation(err) && patched('close-session-on-cancel')) {
      await CancellationScope.nonCancellable(() => sessionActivities(session, 'close session (cancelled)').closeTrainer(session)).catch(
        () => undefined,
      );
    }
    throw err;
  }
  if (closed) return;
  await sessionActivities(session, 'close session')
    .closeTrainer(session)
    .catch(() => undefined);
}

/** Warm start: supervised steps on attempt → check → retry traces, committed every ckptEvery. */
export async function sftNode(input: NodeInput & { carry?: Carry }): Promise<NodeResult> {
  const node = input.config.nodes[input.nodeId] as SftNode;
  const st = controls(input, 'sft', node.steps, input.carry ?? {});
  const chunk = async (s: Session, from: number, to: number, close: boolean): Promise<WindowStats> => {
    const r = await sessionActivities(s, `sft steps ${from}→${to}, commit${close ? ', close session' : ''}`).sftChunk(
      s,
      from,
      to,
      ...(close ? [true] : []),
    );
    return { iteration: to, metrics: r.metrics, closed: close };
  };
  await trainLoop(input, st, node.steps, (s, from) => chunk(s, from, windowEnd(from, node.steps, node.ckptEvery), false), undefined, {
    first: {},
    ckptEvery: node.ckptEvery,
    run: chunk,
  });
  return { kind: 'sft', checkpoint: { step: st.iteration }, metrics: st.metrics };
}

/**
 * RL iteration t of a stage in one activity: rollouts (sample + grade), the GRPO update, and
 * the commit at t + 1 every ckptEvery iterations and at the end (docs/ARCHITECTURE.md "One RL
 * iteration"). Histories recorded without the "iteration-one-activity" patch replay through
 * the parts they scheduled (./legacy.ts).
 */
async function rlIteration(s: Session, t: number, budget: number, node: RlNode, ahead: Ahead): Promise<IterationStats> {
  const next = t + 1;
  const commit = next % node.ckptEvery === 0 || next === node.iterations;
  if (!patched('iteration-one-activity')) return legacyRlIteration(s, t, budget, node, commit);
  // Only nodes with rolloutParts take the fan-out, so histories of other nodes never reach this patch.
  if (node.rolloutParts !== undefined && patched('rollout-fanout')) {
    // Likewise only off-policy nodes reach this one.
    if (node.offPolicy === 1 && patched('off-policy-fanout')) return offPolicyFannedIteration(s, t, budget, node, commit, ahead);
    return fannedRlIteration(s, t, budget, node.rolloutParts, commit);
  }
  const r = await sessionActivities(s, `iteration B=${budget}${commit ? `, commit ${next}` : ''} t=${t}`).rlIteration(s, t, budget, commit);
  return { iteration: next, metrics: r.metrics };
}

/**
 * RL iteration t with its rollouts fanned out (docs/ARCHITECTURE.md "Rollout fan-out"): the
 * session publishes its policy (content-addressed in the object store), `parts` activities
 * on the rollout queue sample and grade the iteration's rows from it on whichever workers
 * serve that queue, then the session checks every part was sampled from the policy it
 * published, updates and commits. A part refused for another policy (PolicyMismatch) fails
 * the node: it would mean the published bytes changed under the iteration.
 */
async function fannedRlIteration(s: Session, t: number, budget: number, parts: number, commit: boolean): Promise<IterationStats> {
  const next = t + 1;
  const { sha256 } = await sessionActivities(s, `publish policy t=${t}`).publishPolicy(s, t);
  const done = await rolloutParts(s, t, budget, parts, sha256);
  const r = await sessionActivities(s, `update${commit ? `, commit ${next}` : ''} t=${t}`).rlIterationFromParts(s, t, commit, done);
  return { iteration: next, metrics: r.metrics };
}

/** The parts of iteration `t`, sampled from `policy`. */
function rolloutParts(s: Session, t: number, budget: number, parts: number, policy: string): Promise<RolloutPartResult[]> {
  return Promise.all(
    Array.from({ length: parts }, (_, part) =>
      rolloutActivities(`rollouts part ${part + 1}/${parts} B=${budget} t=${t}`).rolloutPart({
        runId: s.runId,
        nodeId: s.nodeId,
        t,
        budget,
        part,
        parts,
        policy,
      }),
    ),
  );
}

/** Off-policy fan-out: the next iteration's parts, scheduled while this iteration's update runs. */
interface Ahead {
  next?: { t: number; policy: string; parts: Promise<RolloutPartResult[]> };
}

/**
 * RL iteration t with one-step off-policy rollouts fanned out (docs/ARCHITECTURE.md
 * "Off-policy rollouts"): the session publishes its policy at t; iteration t + 1's parts are
 * scheduled from it at once, and run on the rollout workers while the session updates on
 * iteration t's parts, sampled from the policy it published at t − 1 (scheduled one iteration
 * earlier, or, after a re-open or a continue-as-new, now, from the policy its commit records).
 */
async function offPolicyFannedIteration(
  s: Session,
  t: number,
  budget: number,
  node: RlNode,
  commit: boolean,
  ahead: Ahead,
): Promise<IterationStats> {
  const next = t + 1;
  const parts = node.rolloutParts!;
  const { sha256, sampler } = await sessionActivities(s, `publish policy t=${t}`).publishPolicy(s, t);
  if (sampler === undefined)
    throw ApplicationFailure.nonRetryable(`publishPolicy of off-policy node ${s.nodeId} returned no sampler`, ErrorTypes.config);
  const current = ahead.next?.t === t && ahead.next.policy === sampler ? ahead.next.parts : rolloutParts(s, t, budget, parts, sampler);
  ahead.next = undefined;
  if (next < node.iterations) {
    const p = rolloutParts(s, next, budget, parts, sha256);
    // Awaited by the next iteration; a rewind before then drops it (its parts are sampled again from the commit's record).
    p.catch(() => undefined);
    ahead.next = { t: next, policy: sha256, parts: p };
  }
  const done = await current;
  const r = await sessionActivities(s, `update${commit ? `, commit ${next}` : ''} t=${t} (off-policy)`).rlIterationFromParts(
    s,
    t,
    commit,
    done,
  );
  return { iteration: next, metrics: r.metrics };
}

/** One curriculum stage of RL (docs/RECIPE.md): its budget (fixed, or chosen by a select-budget node), then its iterations. */
export async function rlStage(input: NodeInput & { carry?: Carry }): Promise<NodeResult> {
  const node = input.config.nodes[input.nodeId] as RlNode;
  const budget = typeof node.budget === 'number' ? node.budget : input.upstream[node.budget.fromNode]?.budget;
  if (budget === undefined) {
    throw ApplicationFailure.create({
      message: `nodes.${input.nodeId}.budget: upstream node did not report a budget`,
      type: ErrorTypes.config,
      nonRetryable: true,
    });
  }
  const st = controls(input, 'rl', node.iterations, input.carry ?? {});
  st.budget = budget;
  upsertSearchAttributes([{ key: E3Budget, value: budget }]);
  const passAt1 = (m: Record<string, number>) =>
    Number.isFinite(m['train/reward_mean']) ? [{ key: E3PassAt1, value: m['train/reward_mean'] }] : [];
  // A node with rollout parts steps one iteration at a time: its parts run between the session's activities.
  const windows: Windows | undefined =
    node.rolloutParts === undefined
      ? {
          first: { budget },
          ckptEvery: node.ckptEvery,
          run: (s, from, to, close) =>
            sessionActivities(s, `iterations ${from}→${to} B=${budget}, commit ${to}${close ? ', close session' : ''}`).rlIterations(
              s,
              from,
              to,
              budget,
              close,
            ),
        }
      : undefined;
  const ahead: Ahead = {};
  await trainLoop(input, st, node.iterations, (s, t) => rlIteration(s, t, budget, node, ahead), passAt1, windows);
  return { kind: 'rl', checkpoint: { step: st.iteration }, budget, metrics: st.metrics };
}

/**
 * An evaluation or select-budget node's counts fanned out (docs/ARCHITECTURE.md "Evaluation
 * fan-out"): the node publishes the policy it evaluates (content-addressed in the object
 * store), `parts` activities on the rollout queue sample and count its problems from it on
 * whichever workers serve that queue, then one activity joins their counts into the stored
 * chunks and computes the node's result, as the single activity would have.
 */
async function fannedEvaluation(input: NodeInput, parts: number, kind: 'eval' | 'select'): Promise<NodeResult> {
  const { policy } = await general.publishEvalPolicy(input);
  const done = await Promise.all(
    Array.from({ length: parts }, (_, part) =>
      rolloutActivities(`${kind} part ${part + 1}/${parts}`).evalPart({ runId: input.runId, nodeId: input.nodeId, part, parts, policy }),
    ),
  );
  return kind === 'eval' ? general.evaluateFromParts(input, policy, done) : general.selectBudgetFromParts(input, policy, done);
}

/** Eq. 6.1: measure J(B) on a grid of budgets, pick the smallest B >= B0 with J(2B) <= kappa J(B). */
export async function selectBudgetNode(input: NodeInput): Promise<NodeResult> {
  controls(input, 'select-budget', 1, {});
  setCurrentDetails(`**${input.nodeId}** (select-budget) — measuring J(B) on the select split`);
  const parts = (input.config.nodes[input.nodeId] as SelectBudgetNode).parts;
  // Only nodes with parts take the fan-out, so histories of other nodes never reach this patch.
  const r =
    parts !== undefined && patched('eval-fanout') ? await fannedEvaluation(input, parts, 'select') : await general.selectBudget(input);
  upsertSearchAttributes([{ key: E3Budget, value: r.budget! }]);
  setCurrentDetails(evalDetails(input.nodeId, r));
  return r;
}

/** pass@k and length / retry / truncation stats at several budgets (the extrapolation curve). */
export async function evalNode(input: NodeInput): Promise<NodeResult> {
  controls(input, 'eval', 1, {});
  setCurrentDetails(`**${input.nodeId}** (eval) — evaluating on the eval split`);
  const parts = (input.config.nodes[input.nodeId] as EvalNode).parts;
  const r = parts !== undefined && patched('eval-fanout') ? await fannedEvaluation(input, parts, 'eval') : await general.evaluate(input);
  setCurrentDetails(evalDetails(input.nodeId, r));
  const p1 = Object.entries(r.metrics ?? {}).filter(([k]) => k.endsWith('/pass@1'));
  if (p1.length) upsertSearchAttributes([{ key: E3PassAt1, value: Math.max(...p1.map(([, v]) => v)) }]);
  return r;
}

/** HTML report with plots, into the object store and to disk. */
export async function reportNode(input: NodeInput): Promise<NodeResult> {
  controls(input, 'report', 1, {});
  const r = await general.renderReport(input);
  if (r.report) setCurrentDetails(`**report**: \`${r.report.key}\` in the object store; on disk \`${r.report.path}\``);
  return r;
}
