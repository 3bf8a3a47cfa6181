/**
 * Training on an open session: SFT chunks, and the RL iteration (rollouts, then the GRPO
 * update, then a commit when one is due: one activity, rlIteration; runs recorded before it
 * scheduled the parts one by one). Retries find work already applied in memory and do not
 * apply it twice.
 */
import type { SftNode } from '../configs/schema';
import { dataMetrics, gradeRollouts, iterationProblems, rolloutMetrics } from '../ml/trainer';
import type { GradedRollout, Rollout } from '../ml/trainer';
import { keys } from '../storage/layout';
import { SessionLostError } from './errors';
import type { Session } from './types';
import type { Env, LiveSession } from './env';
import { trainerSessionActivities } from './session';
import { rlSettings, runLabels, sftSettings, withHeartbeat } from './env';
import { sampledTokens, since } from './metrics';

/** The session already applied RL iteration t's update in memory (a retry after it must not train twice). */
const rlApplied = (l: LiveSession, t: number): l is LiveSession & Required<Pick<LiveSession, 'applied'>> => l.applied?.kind === 'rl' && l.applied.from === t && l.step === t + 1;

export function trainActivities(env: Env) {
  const { store, readManifest, live, drop, writeMetrics } = env;
  const { commitCheckpoint } = trainerSessionActivities(env);
  const acts = {
    /** SFT steps [from, to), then a commit at `to`. Resumes from its heartbeat on retry. */
    async sftChunk(s: Session, from: number, to: number): Promise<{ step: number; metrics: Record<string, number> }> {
      const l = live(s);
      const redo = l.applied?.kind === 'sft' && l.applied.from === from && l.applied.to === to && l.step === to;
      if (!redo && l.step !== from) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at step ${l.step}, asked to run from ${from}`);
      let metrics: Record<string, number> = redo ? l.applied!.metrics : {};
      if (!redo) {
        const node = l.config.nodes[s.nodeId] as SftNode;
        const sft = sftSettings(l.config, s.nodeId);
        try {
          await withHeartbeat(() => ({ step: l.step, at: (l.lastUsed = Date.now()) }), async (signal) => {
            while (l.step < to && !signal?.aborted) {
              metrics = await l.trainer.sftStep(sft.seed, l.step, node.batchSize, node.difficulty, sft.traces, { markWeight: sft.markWeight });
              l.step++;
              env.metrics.sftSteps(runLabels(s.runId, s.nodeId, l.config), 1);
            }
          });
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
     * Iteration t's rollouts: every row sampled on the compute pool (split over its threads),
     * graded here, stored once (for audit and for an update on another attempt) and kept in
     * the session for rlUpdate. Returns the stored key and the train/* metrics.
     */
    async rlRollouts(s: Session, t: number, budget: number): Promise<{ key: string; rows: number; metrics: Record<string, number> }> {
      const l = live(s);
      if (l.step !== t) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at iteration ${l.step}, asked to sample ${t}`);
      const rl = rlSettings(l.config, s.nodeId);
      const key = keys.graded(s.runId, s.nodeId, t);
      const labels = runLabels(s.runId, s.nodeId, l.config);
      const graded = await withHeartbeat(() => ({ t, at: (l.lastUsed = Date.now()) }), async () => {
        let t0 = performance.now();
        const rollouts = await l.trainer.sampleShard(rl, t, 0, 1, budget);
        env.metrics.phase(labels, 'sample', since(t0));
        env.metrics.sampled(labels, sampledTokens(rollouts), since(t0));
        t0 = performance.now();
        const g = gradeRollouts(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, l.config.toolArithmetic, rollouts);
        await store.putJson(key, g);
        env.metrics.phase(labels, 'grade', since(t0));
        return g;
      });
      l.graded = { t, rows: graded };
      return { key, rows: graded.length, metrics: rolloutMetrics(graded, rl.samples) };
    },
    /** Sample shard k of iteration t into the store; returns its key (runs recorded before rlRollouts). */
    async rlSample(s: Session, t: number, shard: number, budget: number): Promise<{ key: string; rows: number }> {
      const l = live(s);
      if (l.step !== t) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at iteration ${l.step}, asked to sample ${t}`);
      const shards = (l.config.nodes[s.nodeId] as { shards?: number }).shards ?? 1;
      const rollouts = await withHeartbeat(() => ({ t, shard, at: (l.lastUsed = Date.now()) }), () => l.trainer.sampleShard(rlSettings(l.config, s.nodeId), t, shard, shards, budget));
      const key = keys.rollouts(s.runId, s.nodeId, t, shard);
      await store.putJson(key, rollouts);
      return { key, rows: rollouts.length };
    },
    /** Grade the iteration's shards (the verifier recomputes everything) and store the grades. */
    async rlGrade(s: Session, t: number, shardKeys: string[]): Promise<{ key: string; metrics: Record<string, number> }> {
      const m = await readManifest(s.runId);
      const rl = rlSettings(m.config, s.nodeId);
      const rollouts = (await Promise.all(shardKeys.map((k) => store.getJson<Rollout[]>(k)))).flat();
      const graded = gradeRollouts(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, m.config.toolArithmetic, rollouts);
      const key = keys.graded(s.runId, s.nodeId, t);
      await store.putJson(key, graded);
      // The iteration's data/* metrics come with rlUpdate's (the workflow merges both).
      return { key, metrics: rolloutMetrics(graded, rl.samples) };
    },
    /** GRPO update from the graded rollouts of iteration t; the session advances to t + 1. */
    async rlUpdate(s: Session, t: number): Promise<{ metrics: Record<string, number> }> {
      const l = live(s);
      // A retry after the update was applied in memory (the metrics write failed, or the
      // completion never reached the server): applying it again would train twice on t.
      if (rlApplied(l, t)) {
        await writeMetrics(s.runId, s.nodeId, t + 1, l.applied.metrics);
        return { metrics: l.applied.metrics };
      }
      if (l.step !== t) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at iteration ${l.step}, asked to update ${t}`);
      const graded = l.graded?.t === t ? l.graded.rows : await store.getJson<GradedRollout[]>(keys.graded(s.runId, s.nodeId, t));
      const settings = rlSettings(l.config, s.nodeId);
      let metrics: Record<string, number>;
      const t0 = performance.now();
      try {
        metrics = await withHeartbeat(() => ({ t, at: (l.lastUsed = Date.now()) }), (signal) => l.trainer.update(settings, t, graded, signal));
      } catch (e) {
        // Mini-batches before the failing one may have stepped: the in-memory state is no
        // longer the state at t, so drop the session (a re-open loads the last commit).
        await drop(s, l);
        throw e;
      }
      const data = dataMetrics('data', iterationProblems(settings.seed, settings.stream, t, settings.prompts, settings.difficulty));
      const all = { ...rolloutMetrics(graded, settings.samples), ...data, ...metrics };
      l.step = t + 1;
      l.graded = undefined;
      l.applied = { kind: 'rl', from: t, to: t + 1, metrics: all };
      const labels = runLabels(s.runId, s.nodeId, l.config);
      env.metrics.phase(labels, 'update', since(t0));
      env.metrics.rlIteration(labels);
      env.metrics.reward(labels, all['train/reward_mean']);
      await writeMetrics(s.runId, s.nodeId, t + 1, all);
      return { metrics: all };
    },
    /**
     * The whole of iteration t in one activity: rollouts, update, and the commit at t + 1 when
     * `commit` says one is due (one workflow round trip per iteration instead of two or three:
     * bench/NOTES.md "Lean iterations"). A retry resumes where the attempt stopped: an update
     * already applied in memory is neither sampled again nor applied twice (rlUpdate), and a
     * commit is the same bytes when written again. The metrics are rlUpdate's (which hold the
     * rollouts' train/* metrics).
     */
    async rlIteration(s: Session, t: number, budget: number, commit: boolean): Promise<{ metrics: Record<string, number> }> {
      const l = live(s);
      if (!rlApplied(l, t) && l.graded?.t !== t) await acts.rlRollouts(s, t, budget);
      const { metrics } = await acts.rlUpdate(s, t);
      if (commit) {
        const t0 = performance.now();
        await commitCheckpoint(s, t + 1, metrics);
        env.metrics.phase(runLabels(s.runId, s.nodeId, l.config), 'commit', since(t0));
      }
      return { metrics };
    },
  };
  return acts;
}

