/**
 * Thin activity wrappers over ml/ and storage/ (docs/ARCHITECTURE.md), split by concern: run
 * (run.ts), trainer sessions (session.ts), training (train.ts), evaluation (evaluate.ts) and
 * the report (report.ts), over one shared environment (env.ts); legacy.ts holds the
 * activities only recorded runs schedule. `createActivities` binds them
 * to one worker: its object store, its own task queue (where its trainer sessions live) and
 * its compute pool. Long activities heartbeat and resume from their details.
 */
import { SessionLostError, classified } from './errors';
import { workerEnv } from './env';
import type { WorkerContext } from './env';
import { evaluateActivities } from './evaluate';
import { legacyActivities } from './legacy';
import { reportActivities } from './report';
import { rolloutActivities } from './rollout';
import { runActivities } from './run';
import { trainerSessionActivities } from './session';
import { trainActivities } from './train';

export { modelConfig, readInitFile, rlSettings, scheduledRunId, sftSettings } from './env';
export type { WorkerContext } from './env';

export function createActivities(ctx: WorkerContext) {
  const env = workerEnv(ctx);
  const { metrics } = env;
  return classified(
    {
      ...runActivities(env),
      ...trainerSessionActivities(env),
      // After the session's: its openTrainer opens through the session's and may train the first window.
      ...trainActivities(env),
      ...rolloutActivities(env),
      ...legacyActivities(env),
      ...evaluateActivities(env),
      ...reportActivities(env),
    },
    (activity, arg, err, type) => {
      const a = arg as { runId?: unknown; nodeId?: unknown } | undefined;
      const l = { run: typeof a?.runId === 'string' ? a.runId : '', node: typeof a?.nodeId === 'string' ? a.nodeId : '', config: '' };
      metrics.activityFailed(l, activity, type);
      if (err instanceof SessionLostError) metrics.rewind(l);
    },
  );
}

export type Activities = ReturnType<typeof createActivities>;
