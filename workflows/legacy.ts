/**
 * Workflow paths only recorded histories take: an RL iteration scheduled in parts, as runs
 * recorded without the "iteration-one-activity" patch did (workflows/nodes.ts takes the
 * current path, one rlIteration activity). Replaying such a history must schedule the same
 * activities in the same order (test/unit/replay.test.ts); the activities are in
 * activities/legacy.ts.
 */
import { patched } from '@temporalio/workflow';
import type { IterationStats, Session } from '../activities/types';
import type { RlNode } from '../configs/schema';
import { sessionActivities } from './session';

/**
 * Iteration t in parts: rollouts (one activity with the "rollouts-one-activity" patch; without
 * it, one sampling activity per shard of the node's `shards`, a field configs then had, and a
 * grading activity), then the update, then the commit when due.
 */
export async function legacyRlIteration(s: Session, t: number, budget: number, node: RlNode, commit: boolean): Promise<IterationStats> {
  const acts = (what: string) => sessionActivities(s, `${what} t=${t}`);
  const next = t + 1;
  const shards = (node as { shards?: number }).shards ?? 1;
  const graded = patched('rollouts-one-activity')
    ? await acts(`rollouts B=${budget}`).rlRollouts(s, t, budget)
    : await acts('grade').rlGrade(
        s,
        t,
        (await Promise.all(Array.from({ length: shards }, (_, k) => acts(`sample shard ${k}`).rlSample(s, t, k, budget)))).map(
          (x) => x.key,
        ),
      );
  const updated = await acts('update').rlUpdate(s, t);
  const metrics = { ...graded.metrics, ...updated.metrics };
  if (commit) await acts(`commit step ${next}`).commitCheckpoint(s, next, metrics);
  return { iteration: next, metrics };
}
