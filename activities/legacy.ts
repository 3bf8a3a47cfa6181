/**
 * Activities only recorded runs schedule (workflows/legacy.ts): an RL iteration in parts, as
 * the workflows scheduled it before rlIteration did it in one activity. Still registered, so
 * a run recorded then and resumed on this worker completes with the same bytes
 * (test/unit/bytes.test.ts runs both forms):
 *   - rlRollouts → rlUpdate → commitCheckpoint (patch "rollouts-one-activity");
 *   - rlSample per shard → rlGrade → rlUpdate → commitCheckpoint (no patch: the first form).
 * They reuse the current iteration's parts (./train.ts rlSteps).
 */
import { gradeRollouts, rolloutMetrics, shardRows } from '../ml/rollouts';
import type { Rollout } from '../ml/rollouts';
import { keys } from '../storage/layout';
import type { Session } from './types';
import type { Env } from './env';
import { atStep, rlSettings, withHeartbeat } from './env';
import { rlApplied, rlSteps } from './train';

export function legacyActivities(env: Env) {
  const { store, live, readManifest, writeMetrics } = env;
  const steps = rlSteps(env);
  return {
    /** Iteration t's rollouts (sampled, graded, stored, kept in the session); returns the stored key and the train/* metrics. */
    async rlRollouts(s: Session, t: number, budget: number): Promise<{ key: string; rows: number; metrics: Record<string, number> }> {
      const l = live(s);
      const r = (l.rollouts = await steps.sampled(s, l, rlSettings(l.config, s.nodeId), t, budget));
      return { key: keys.graded(s.runId, s.nodeId, t), rows: r.graded.length, metrics: r.metrics };
    },
    /** Sample shard k of iteration t into the store (the node's `shards`, a field configs then had); returns its key. */
    async rlSample(s: Session, t: number, shard: number, budget: number): Promise<{ key: string; rows: number }> {
      const l = live(s);
      atStep(s, l, t, 'sample');
      const shards = (l.config.nodes[s.nodeId] as { shards?: number }).shards ?? 1;
      const rl = rlSettings(l.config, s.nodeId);
      const rollouts = await withHeartbeat(
        () => ({ t, shard, at: (l.lastUsed = Date.now()) }),
        () => l.trainer.sample(rl, shardRows(rl, t, shard, shards), budget),
      );
      const key = keys.rollouts(s.runId, s.nodeId, t, shard);
      await store.putJson(key, rollouts);
      return { key, rows: rollouts.length };
    },
    /** Grade the iteration's shards (the verifier recomputes everything) and store the grades. */
    async rlGrade(s: Session, t: number, shardKeys: string[]): Promise<{ key: string; metrics: Record<string, number> }> {
      const m = await readManifest(s.runId);
      const rl = rlSettings(m.config, s.nodeId);
      const rollouts = (await Promise.all(shardKeys.map((k) => store.getJson<Rollout[]>(k)))).flat();
      const graded = gradeRollouts(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, m.config.toolArithmetic, rollouts, rl.task);
      const key = keys.graded(s.runId, s.nodeId, t);
      await store.putJson(key, graded);
      return { key, metrics: rolloutMetrics(graded, rl.samples) };
    },
    /** The GRPO update from iteration t's rollouts (the session's, else the stored ones); the session advances to t + 1. */
    async rlUpdate(s: Session, t: number): Promise<{ metrics: Record<string, number> }> {
      const l = live(s);
      // A retry after the update was applied in memory: applying it again would train twice on t.
      if (rlApplied(l, t)) {
        await writeMetrics(s.runId, s.nodeId, t + 1, l.applied.metrics);
        return { metrics: l.applied.metrics };
      }
      atStep(s, l, t, 'update');
      const rl = rlSettings(l.config, s.nodeId);
      const rollouts = l.rollouts?.t === t ? l.rollouts : await steps.stored(s, rl, t);
      return { metrics: await steps.update(s, l, rl, rollouts) };
    },
  };
}
