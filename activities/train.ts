/**
 * Training on an open session: SFT chunks, and the RL iteration (docs/ARCHITECTURE.md "One RL
 * iteration"): rollouts, then the GRPO update, then a commit when one is due, in one activity
 * (rlIteration). Retries find work already applied in memory and do not apply it twice.
 * The activities that scheduled the parts one by one are in ./legacy.ts, over the same steps.
 */
import type { SftNode } from '../configs/schema';
import type { CountdownProblem } from '../ml/countdown';
import { dataMetrics, gradeAgainst, iterationProblems, rolloutMetrics, shardRows } from '../ml/rollouts';
import type { GradedRollout, RlSettings } from '../ml/rollouts';
import { keys } from '../storage/layout';
import { sha256Hex } from '../storage/store';
import type { RolloutPartResult, Session } from './types';
import type { StoredPart } from './rollout';
import { acceptParts, joinGraded } from './rollout';
import type { Env, IterationRollouts, LiveSession } from './env';
import { trainerSessionActivities } from './session';
import { atStep, rlSettings, runLabels, sftSettings, withHeartbeat } from './env';
import { sampledTokens, since } from './metrics';
import { SessionLostError } from './errors';

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
  return {
    /**
     * Iteration t's rollouts: its problems generated once, every row sampled on the compute
     * pool (split over its threads), graded here, stored once (for audit, and for an update on
     * another attempt), and kept in the session for the update.
     */
    async rollouts(s: Session, l: LiveSession, rl: RlSettings, t: number, budget: number): Promise<IterationRollouts> {
      atStep(s, l, t, 'sample');
      const problems = iterationProblems(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, rl.task);
      const labels = runLabels(s.runId, s.nodeId, l.config);
      const graded = await withHeartbeat(
        () => ({ t, at: (l.lastUsed = Date.now()) }),
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
      return (l.rollouts = { t, problems, graded, metrics: rolloutMetrics(graded, rl.samples) });
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
      l.rollouts = undefined;
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
    async storedRollouts(s: Session, rl: RlSettings, t: number): Promise<IterationRollouts> {
      return fromGraded(rl, t, await store.getJson<GradedRollout[]>(keys.graded(s.runId, s.nodeId, t)));
    },
  };
}

export function trainActivities(env: Env) {
  const { ctx, store, live, drop, writeMetrics } = env;
  const { commitCheckpoint } = trainerSessionActivities(env);
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
  return {
    /** SFT steps [from, to), then a commit at `to`. Resumes from its heartbeat on retry. */
    async sftChunk(s: Session, from: number, to: number): Promise<{ step: number; metrics: Record<string, number> }> {
      const l = live(s);
      const redo = l.applied?.kind === 'sft' && l.applied.from === from && l.applied.to === to && l.step === to;
      if (!redo) atStep(s, l, from, 'train');
      let metrics: Record<string, number> = redo ? l.applied!.metrics : {};
      if (!redo) {
        const node = l.config.nodes[s.nodeId] as SftNode;
        const sft = sftSettings(l.config, s.nodeId);
        try {
          await withHeartbeat(
            () => ({ step: l.step, at: (l.lastUsed = Date.now()) }),
            async (signal) => {
              while (l.step < to && !signal?.aborted) {
                metrics = await l.trainer.sftStep(sft.seed, l.step, node.batchSize, node.difficulty, sft.traces, {
                  markWeight: sft.markWeight,
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
        l.applied = { kind: 'sft', from, to, metrics };
      }
      // A retry that finds the chunk already trained in memory (its commit failed) only commits.
      await writeMetrics(s.runId, s.nodeId, to, metrics);
      await commitCheckpoint(s, to, metrics);
      return { step: to, metrics };
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
        const rollouts = l.rollouts?.t === t ? l.rollouts : await steps.rollouts(s, l, rl, t, budget);
        return steps.update(s, l, rl, rollouts);
      });
    },
    /**
     * Publish the session's policy at iteration t for rollout workers (docs/ARCHITECTURE.md
     * "Rollout fan-out"): its serialised weights under keys.policy, content-addressed by their
     * sha256 (not uploaded again when the key exists). The session remembers the sha: the
     * parts of t it applies must carry it.
     */
    async publishPolicy(s: Session, t: number): Promise<{ sha256: string }> {
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
          return { sha256 };
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
        const sha = l.published.sha256;
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
        return steps.update(s, l, rl, steps.fromGraded(rl, t, graded));
      });
    },
  };
}
