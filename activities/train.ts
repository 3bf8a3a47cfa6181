/**
 * Training on an open session: SFT chunks, and the RL iteration (docs/ARCHITECTURE.md "One RL
 * iteration"): rollouts, then the GRPO update, then a commit when one is due, in one activity
 * (rlIteration), or a commit window of iterations in one (rlIterations, docs/ARCHITECTURE.md
 * "Commit windows"), the first of which the open trains too (openTrainer with `first`).
 * Retries find work already applied in memory and do not apply it twice.
 * The activities that scheduled the parts one by one are in ./legacy.ts, over the same steps.
 */
import type { RlNode, SftNode } from '../configs/schema';
import type { CountdownProblem } from '../ml/countdown';
import { dataMetrics, gradeAgainst, iterationProblems, rolloutMetrics, shardRows } from '../ml/rollouts';
import type { GradedRollout, RlSettings } from '../ml/rollouts';
import { keys } from '../storage/layout';
import { sha256Hex } from '../storage/store';
import type { FirstWindow, NodeInput, OpenedSession, RolloutPartResult, Session, WindowStats } from './types';
import { windowEnd } from './types';
import type { StoredPart } from './rollout';
import { acceptParts, joinGraded } from './rollout';
import type { Env, IterationRollouts, LiveSession } from './env';
import { trainerSessionActivities } from './session';
import { atStep, rlSettings, runLabels, sftSettings, withHeartbeat } from './env';
import { sampledTokens, since } from './metrics';
import { MissingCheckpointError, SessionLostError } from './errors';
import { InvalidArgumentError } from '../ml/errors';
import { ReplicaLostError } from '../compute/errors';
import { asyncLocalStorage } from '@temporalio/activity';

/** The session already applied RL iteration t's update in memory (a retry after it must not train twice). */
export const rlApplied = (l: LiveSession, t: number): l is LiveSession & Required<Pick<LiveSession, 'applied'>> =>
  l.applied?.kind === 'rl' && l.applied.from === t && l.step === t + 1;

/** The parts of an RL iteration, shared by rlIteration and the activities in ./legacy.ts. */
export function rlSteps(env: Env) {
  const { store, drop, writeMetrics } = env;
  /** Iteration t's rollouts from their graded rows (graded elsewhere: another attempt, or rollout parts). */
  const fromGraded = (rl: RlSettings, t: number, graded: GradedRollout[]): IterationRollouts => {
    const problems: CountdownProblem[] = iterationProblems(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, rl.task);
    return { t, problems, graded, metrics: rolloutMetrics(graded, rl.samples) };
  };
  const steps = {
    /**
     * Iteration t's rollouts: its problems generated once, every row sampled on the compute
     * pool (split over its threads) from the session's policy at step `at`, graded here, stored
     * once (for audit, and for an update on another attempt). Not kept in the session: callers do.
     */
    async sampled(s: Session, l: LiveSession, rl: RlSettings, t: number, budget: number, at = t): Promise<IterationRollouts> {
      atStep(s, l, at, 'sample');
      const problems = iterationProblems(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, rl.task);
      const labels = runLabels(s.runId, s.nodeId, l.config);
      const graded = await withHeartbeat(
        () => ({ t: at, at: (l.lastUsed = Date.now()) }),
        async () => {
          let t0 = performance.now();
          const rollouts = await l.trainer.sample(rl, shardRows(rl, t, 0, 1, problems), budget);
          env.metrics.phase(labels, 'sample', since(t0));
          env.metrics.sampled(labels, sampledTokens(rollouts), since(t0));
          t0 = performance.now();
          const g = gradeAgainst(problems, t, l.config.toolArithmetic, rollouts, rl.task);
          await store.putJson(keys.graded(s.runId, s.nodeId, t), g);
          env.metrics.phase(labels, 'grade', since(t0));
          return g;
        },
      );
      return { t, problems, graded, metrics: rolloutMetrics(graded, rl.samples) };
    },
    /**
     * Iteration t's rollouts for its update, kept in the session. On-policy (the default):
     * sampled now from the policy at t, unless the session holds them already. One-step
     * off-policy (node `offPolicy: 1`; prime-rl's and AReaL's schedule): iteration t's rows
     * were sampled from the policy at t − 1 (iteration 0's from the stage's first policy) and
     * are in the session or, for a session opened at commit t, in the store; then, still
     * before update t, iteration t + 1's rows are sampled from the policy at t and stored, so
     * every commit at t + 1 finds them stored.
     */
    async forUpdate(s: Session, l: LiveSession, rl: RlSettings, t: number, budget: number): Promise<IterationRollouts> {
      const node = l.config.nodes[s.nodeId] as RlNode;
      if (!node.offPolicy) return l.rollouts?.t === t ? l.rollouts : (l.rollouts = await steps.sampled(s, l, rl, t, budget));
      if (l.rollouts?.t !== t) {
        if (t === 0) l.rollouts = await steps.sampled(s, l, rl, 0, budget);
        else {
          const key = keys.graded(s.runId, s.nodeId, t);
          if (!(await store.exists(key)))
            throw new MissingCheckpointError(
              `off-policy rollouts of ${s.runId}/${s.nodeId} iteration ${t} are not in the store (${key}): they are sampled before update ${t - 1} and stored before its commit`,
            );
          l.rollouts = await steps.stored(s, rl, t);
        }
      }
      const r = l.rollouts;
      if (t + 1 < node.iterations && l.ahead?.t !== t + 1) l.ahead = await steps.sampled(s, l, rl, t + 1, budget, t);
      return r;
    },
    /**
     * The GRPO update from iteration t's rollouts; the session advances to t + 1. The
     * iteration's metrics are its rollouts' train/*, its problems' data/* and the update's.
     */
    async update(s: Session, l: LiveSession, rl: RlSettings, r: IterationRollouts): Promise<Record<string, number>> {
      atStep(s, l, r.t, 'update');
      let metrics: Record<string, number>;
      const t0 = performance.now();
      try {
        metrics = await withHeartbeat(
          () => ({ t: r.t, at: (l.lastUsed = Date.now()) }),
          (signal) => l.trainer.update(rl, r.t, r.graded, signal),
        );
      } catch (e) {
        // Mini-batches before the failing one may have stepped: the in-memory state is no
        // longer the state at t, so drop the session (a re-open loads the last commit).
        await drop(s, l);
        throw e;
      }
      const all = { ...r.metrics, ...dataMetrics('data', r.problems, rl.task), ...metrics };
      l.step = r.t + 1;
      // Off-policy: the next iteration's rows, sampled before this update, are now the current ones.
      l.rollouts = l.ahead?.t === r.t + 1 ? l.ahead : undefined;
      l.ahead = undefined;
      l.applied = { kind: 'rl', from: r.t, to: r.t + 1, metrics: all };
      const labels = runLabels(s.runId, s.nodeId, l.config);
      env.metrics.phase(labels, 'update', since(t0));
      env.metrics.rlIteration(labels);
      env.metrics.reward(labels, all['train/reward_mean']);
      await writeMetrics(s.runId, s.nodeId, r.t + 1, all);
      return all;
    },
    fromGraded,
    /** Iteration t's rollouts as another attempt stored them (the session did not keep them). */
    async stored(s: Session, rl: RlSettings, t: number): Promise<IterationRollouts> {
      return fromGraded(rl, t, await store.getJson<GradedRollout[]>(keys.graded(s.runId, s.nodeId, t)));
    },
  };
  return steps;
}

/**
 * Off-policy fan-out: the published policy iteration t's parts must come from: the one the
 * session published before update t − 1 (recorded in memory, or in the commit it opened at),
 * or at t = 0 the session's first, which it has just published.
 */
function samplerOf(s: Session, l: LiveSession, t: number): string {
  if (l.sampler?.t === t) return l.sampler.sha256;
  if (t === 0 && l.published?.t === 0) return (l.sampler = { t: 0, sha256: l.published.sha256 }).sha256;
  throw new MissingCheckpointError(
    `session ${s.runId}/${s.nodeId} at ${l.step} does not know which policy iteration ${t}'s off-policy rollouts come from (its commit records none)`,
  );
}

export function trainActivities(env: Env) {
  const { ctx, store, live, drop, writeMetrics, sessions, sessionKey, sessionsChanged } = env;
  const { commitCheckpoint, closeTrainer, openTrainer: open } = trainerSessionActivities(env);
  const steps = rlSteps(env);
  /**
   * The shared tail of an RL iteration activity: an update the session already applied for t
   * only has its metrics written again; otherwise `update` runs; then the commit at t + 1 when due.
   */
  async function iteration(
    s: Session,
    l: LiveSession,
    t: number,
    commit: boolean,
    update: () => Promise<Record<string, number>>,
  ): Promise<{ metrics: Record<string, number> }> {
    let metrics: Record<string, number>;
    if (rlApplied(l, t)) {
      metrics = l.applied.metrics;
      await writeMetrics(s.runId, s.nodeId, t + 1, metrics);
    } else {
      metrics = await update();
    }
    if (commit) {
      const t0 = performance.now();
      await commitCheckpoint(s, t + 1, metrics);
      env.metrics.phase(runLabels(s.runId, s.nodeId, l.config), 'commit', since(t0));
    }
    return { metrics };
  }
  /**
   * SFT steps [from, to) on session `l`, recorded as applied (no commit); stops early, leaving
   * nothing applied, when `go` turns false (the session was given up while working ahead).
   */
  async function sftSteps(s: Session, l: LiveSession, from: number, to: number, go: () => boolean = () => true): Promise<void> {
    atStep(s, l, from, 'train');
    let metrics: Record<string, number> = {};
    const node = l.config.nodes[s.nodeId] as SftNode;
    const sft = sftSettings(l.config, s.nodeId);
    try {
      await withHeartbeat(
        () => ({ step: l.step, at: (l.lastUsed = Date.now()) }),
        async (signal) => {
          while (l.step < to && !signal?.aborted && go()) {
            metrics = await l.trainer.sftStep(sft.seed, l.step, node.batchSize, node.difficulty, sft.traces, {
              markWeight: sft.markWeight,
              microWork: sft.microWork,
              ...(sft.task ? { task: sft.task } : {}),
            });
            l.step++;
            env.metrics.sftSteps(runLabels(s.runId, s.nodeId, l.config), 1);
          }
        },
      );
    } catch (e) {
      // Cancelled (or failed) between commits: the session is ahead of its last commit.
      await drop(s, l);
      throw e;
    }
    if (l.step === to) l.applied = { kind: 'sft', from, to, metrics };
  }

  /** SFT steps [from, to) on session `l`, then a commit at `to`. */
  async function sftWindow(
    s: Session,
    l: LiveSession,
    from: number,
    to: number,
  ): Promise<{ step: number; metrics: Record<string, number> }> {
    // A retry that finds the chunk already trained in memory (its commit failed, or the session worked ahead) only commits.
    const redo = l.applied?.kind === 'sft' && l.applied.from === from && l.applied.to === to && l.step === to;
    if (!redo) await sftSteps(s, l, from, to);
    const metrics = l.applied?.kind === 'sft' && l.applied.to === to ? l.applied.metrics : {};
    await writeMetrics(s.runId, s.nodeId, to, metrics);
    await commitCheckpoint(s, to, metrics);
    return { step: to, metrics };
  }

  /**
   * RL iterations [t, to) on session `l`, each as rlIteration runs it, the commit at `to` only
   * (`to` is a commit window's end: windowEnd). A retry resumes where the attempt stopped: the
   * session at t' in (t, to] with the update of t' - 1 applied redoes only that iteration's
   * tail (its metrics written again, the commit when t' = to); anywhere else it is lost.
   */
  async function rlWindow(
    s: Session,
    l: LiveSession,
    t: number,
    to: number,
    budget: number,
    ahead?: { go: () => boolean },
  ): Promise<Record<string, number>> {
    const resumed = l.step > t && l.step <= to && l.applied?.kind === 'rl' && rlApplied(l, l.step - 1);
    let metrics: Record<string, number> = {};
    // Working ahead (LiveSession.workingAhead): the same steps, without the commit, while the session is still held.
    for (let i = resumed ? l.step - 1 : t; i < to && (!ahead || ahead.go()); i++) {
      ({ metrics } = await iteration(s, l, i, i + 1 === to && !ahead, async () => {
        const rl = rlSettings(l.config, s.nodeId);
        return steps.update(s, l, rl, await steps.forUpdate(s, l, rl, i, budget));
      }));
    }
    return metrics;
  }

  /** A window that ends the node closes its session once committed: the slot frees with the last commit. */
  async function closeIf(s: Session, close: boolean | undefined): Promise<boolean> {
    if (close) await closeTrainer(s);
    return close === true;
  }

  /**
   * Start training the node's next commit window, from `from`, without its commit
   * (LiveSession.workingAhead), outside the activity that returns now: no heartbeats, no
   * cancellation but the session's end (closed, replaced or dropped: it stops at its next step).
   * Only for windows (an RL node without rollout parts), and only with ctx.workAhead.
   */
  function workAhead(s: Session, l: LiveSession, from: number, budget?: number): void {
    if (!ctx.workAhead) return;
    const node = l.config.nodes[s.nodeId] as RlNode | SftNode;
    if (node.kind === 'rl' && (node.rolloutParts !== undefined || budget === undefined)) return;
    const total = node.kind === 'sft' ? node.steps : node.iterations;
    if (from >= total || l.step !== from) return;
    const to = windowEnd(from, total, node.ckptEvery);
    const key = sessionKey(s.runId, s.nodeId);
    const go = () => sessions.get(key) === l;
    const t0 = Date.now();
    const w = { from, to, done: Promise.resolve() };
    w.done = asyncLocalStorage.exit(async () => {
      try {
        if (node.kind === 'sft') await sftSteps(s, l, from, to, go);
        else await rlWindow(s, l, from, to, budget!, { go });
        const t1 = Date.now();
        ctx.log(
          `session ${key} worked ahead ${from}→${l.step} in ${((t1 - t0) / 1000).toFixed(2)} s (${new Date(t0).toISOString()} → ${new Date(t1).toISOString()})`,
        );
      } catch (e) {
        // The window's activity finds the session where this left it: lost (dropped), or at a step to resume from.
        ctx.log(`session ${key}: working ahead ${from}→${to} stopped at ${l.step}: ${(e as Error).message}`);
      } finally {
        if (l.workingAhead === w) l.workingAhead = undefined;
      }
    });
    l.workingAhead = w;
  }

  /** Wait (heartbeating) until the session held for `s` no longer works ahead. */
  async function settled(s: Session): Promise<void> {
    const w = sessions.get(sessionKey(s.runId, s.nodeId))?.workingAhead;
    if (w)
      await withHeartbeat(
        () => ({ workingAhead: `${w.from}→${w.to}` }),
        () => w.done,
      );
  }

  return {
    /**
     * Open a trainer session on this worker (./session.ts); with `first`, also train its first
     * commit window from the step it opened at, as rlIterations / sftChunk would, and close it
     * when that window ends the node: one activity, so the trainer waits for no workflow task
     * between the open and the first steps. A failure after the open frees the session (the
     * workflow never saw it); a retry opens again from the last commit.
     */
    async openTrainer(input: NodeInput, first?: FirstWindow): Promise<OpenedSession> {
      const s = await open(input);
      if (!first) return s;
      const key = sessionKey(s.runId, s.nodeId);
      const l = sessions.get(key);
      if (!l) throw new SessionLostError(`session ${key} was replaced while it opened`);
      const node = l.config.nodes[s.nodeId] as RlNode | SftNode;
      const total = node.kind === 'sft' ? node.steps : node.iterations;
      if (s.step >= total) return s;
      const to = windowEnd(s.step, total, node.ckptEvery);
      try {
        let metrics: Record<string, number>;
        if (node.kind === 'sft') metrics = (await sftWindow(s, l, s.step, to)).metrics;
        else {
          if (first.budget === undefined)
            throw new InvalidArgumentError(`openTrainer first.budget: required to train the first window of RL node ${s.nodeId}`);
          metrics = await rlWindow(s, l, s.step, to, first.budget);
        }
        const closed = await closeIf(s, to === total);
        if (!closed) workAhead(s, l, to, first.budget);
        return { ...s, first: { iteration: to, metrics, closed } };
      } catch (e) {
        if (sessions.get(key) === l) {
          sessions.delete(key);
          sessionsChanged();
          // Freed now, or once an operation still computing on it stops (a cancelled attempt).
          const freed = l.trainer.dispose();
          if (!l.trainer.busy) await freed;
        }
        // Lost here (its replicas gone under it) is not the node's failure: the open is retried
        // (any trainer, from the last commit), as a lost session activity makes the workflow re-open.
        if (e instanceof SessionLostError || e instanceof ReplicaLostError)
          throw new Error(`session ${key} was lost while training its first window (${e.message}); opening it again`);
        throw e;
      }
    },
    /**
     * SFT steps [from, to), then a commit at `to`; with `close`, the session closes after the
     * commit (the node's last chunk). Resumes from its heartbeat on retry.
     */
    async sftChunk(s: Session, from: number, to: number, close?: boolean): Promise<{ step: number; metrics: Record<string, number> }> {
      await settled(s);
      const l = live(s);
      const r = await sftWindow(s, l, from, to);
      if (!(await closeIf(s, close))) workAhead(s, l, to);
      return r;
    },
    /**
     * RL iterations [t, to) in one activity, `to` being a commit window's end (windowEnd): the
     * steps rlIteration would take one by one, the commit at `to`, and, with `close`, the
     * session closed after it (the node's last window). The workflow hears of the window once,
     * with its last iteration's metrics; each iteration's are in the store as rlIteration writes them.
     */
    async rlIterations(s: Session, t: number, to: number, budget: number, close?: boolean): Promise<WindowStats> {
      await settled(s);
      const l = live(s);
      const metrics = await rlWindow(s, l, t, to, budget);
      const closed = await closeIf(s, close);
      if (!closed) workAhead(s, l, to, budget);
      return { iteration: to, metrics, closed };
    },
    /**
     * RL iteration t in one activity: rollouts, the update, and the commit at t + 1 when
     * `commit` says one is due (one workflow round trip per iteration: bench/NOTES.md "Lean
     * iterations"). A retry resumes where the attempt stopped: rollouts the session holds are
     * not sampled again, an update already applied in memory is not applied twice (its metrics
     * are written again), and a commit is the same bytes when written again.
     */
    async rlIteration(s: Session, t: number, budget: number, commit: boolean): Promise<{ metrics: Record<string, number> }> {
      const l = live(s);
      return iteration(s, l, t, commit, async () => {
        const rl = rlSettings(l.config, s.nodeId);
        return steps.update(s, l, rl, await steps.forUpdate(s, l, rl, t, budget));
      });
    },
    /**
     * Publish the session's policy at iteration t for rollout workers (docs/ARCHITECTURE.md
     * "Rollout fan-out"): its serialised weights under keys.policy, content-addressed by their
     * sha256 (not uploaded again when the key exists). The session remembers the sha: the
     * parts of t it applies must carry it.
     */
    async publishPolicy(s: Session, t: number): Promise<{ sha256: string; sampler?: string }> {
      const l = live(s);
      atStep(s, l, t, 'publish its policy');
      return withHeartbeat(
        () => ({ publishing: t, at: (l.lastUsed = Date.now()) }),
        async () => {
          const t0 = performance.now();
          const { weights } = await l.trainer.snapshot();
          const sha256 = sha256Hex(weights);
          const key = keys.policy(s.runId, sha256);
          if (!(await store.exists(key))) await store.put(key, weights);
          l.published = { t, sha256 };
          env.metrics.phase(runLabels(s.runId, s.nodeId, l.config), 'publish', since(t0));
          if (!(l.config.nodes[s.nodeId] as RlNode).offPolicy) return { sha256 };
          return { sha256, sampler: samplerOf(s, l, t) };
        },
      );
    },
    /**
     * RL iteration t from rollout parts sampled elsewhere: the parts are checked against the
     * policy this session published for t (acceptParts), joined in row order, stored as the
     * iteration's graded rollouts, then the update and the commit as in rlIteration (a retry
     * after the update only writes its metrics and commits).
     */
    async rlIterationFromParts(
      s: Session,
      t: number,
      commit: boolean,
      parts: RolloutPartResult[],
    ): Promise<{ metrics: Record<string, number> }> {
      const l = live(s);
      return iteration(s, l, t, commit, async () => {
        atStep(s, l, t, 'update');
        // Re-opened since it published (the same weights, unless it changed backend): publish again.
        if (l.published?.t !== t)
          throw new SessionLostError(`session ${s.runId}/${s.nodeId} did not publish its policy for iteration ${t} (re-opened since)`);
        const off = (l.config.nodes[s.nodeId] as RlNode).offPolicy === 1;
        const sha = off ? samplerOf(s, l, t) : l.published.sha256;
        const rl = rlSettings(l.config, s.nodeId);
        const accepted = acceptParts(t, sha, parts, (m) => ctx.log(`${s.runId}/${s.nodeId}: ${m}`));
        const stored = await withHeartbeat(
          () => ({ t, at: (l.lastUsed = Date.now()) }),
          () => Promise.all(accepted.map((p) => store.getJson<StoredPart>(p.key))),
        );
        // What the store holds must be what the part reported (a write from another policy under the same key is refused too).
        acceptParts(
          t,
          sha,
          stored.map((x, k) => ({ ...accepted[k], t: x.t, part: x.part, parts: x.parts, policy: x.policy })),
          () => undefined,
        );
        const graded = joinGraded(
          stored.map((x) => x.graded),
          rl.prompts * rl.samples,
        );
        await store.putJson(keys.graded(s.runId, s.nodeId, t), graded);
        const metrics = await steps.update(s, l, rl, steps.fromGraded(rl, t, graded));
        // Off-policy: iteration t + 1's parts are sampled from the policy published at t (before this update).
        if (off) l.sampler = { t: t + 1, sha256: l.published.sha256 };
        return metrics;
      });
    },
  };
}
