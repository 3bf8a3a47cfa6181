import type { Client } from '@temporalio/client';

/**
 * The demo's stage 1 alone, as the rollout benches run it (bench/fanout.bench.ts,
 * bench/scaling.ts): `demo` run overrides that drop every other node and give stage 1 a fixed
 * budget, `iterations` iterations committed once at the end, and `rolloutParts` and
 * `offPolicy` when set; and the stage's times from its history.
 */
export function demoStage1Overrides(o: { budget: number; iterations: number; rolloutParts?: number; offPolicy?: 1 }) {
  return {
    nodes: {
      select1: null,
      select2: null,
      stage2: null,
      'eval-base': null,
      'eval-stage1': null,
      'eval-stage2': null,
      report: null,
      stage1: {
        deps: [],
        budget: o.budget,
        iterations: o.iterations,
        ckptEvery: o.iterations,
        ...(o.rolloutParts !== undefined ? { rolloutParts: o.rolloutParts } : {}),
        ...(o.offPolicy ? { offPolicy: o.offPolicy } : {}),
      },
    },
  };
}

const ms = (t: { seconds?: { toString(): string } | null; nanos?: number | null } | null | undefined): number =>
  Number(t?.seconds ?? 0) * 1000 + (t?.nanos ?? 0) / 1e6;
const ITERATION_ACTIVITIES = new Set(['rlIteration', 'publishPolicy', 'rolloutPart', 'rlIterationFromParts']);

/**
 * The stage's node workflow: its wall seconds, and its iterations' (first iteration activity
 * scheduled to the last completed; NaN for a stage trained in commit windows, whose open trains
 * the first window and whose later windows are `rlIterations`).
 */
export async function stageTimes(c: Client, runId: string): Promise<{ stageS: number; iterS: number }> {
  const h = c.workflow.getHandle(`${runId}/stage1`);
  const d = await h.describe();
  const events = (await h.fetchHistory()).events ?? [];
  const sched = new Map<string, string>();
  let first = Infinity;
  let last = 0;
  for (const e of events) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) {
      sched.set(String(e.eventId), s.activityType?.name ?? '');
      if (ITERATION_ACTIVITIES.has(s.activityType?.name ?? '')) first = Math.min(first, ms(e.eventTime));
    }
    const done = e.activityTaskCompletedEventAttributes;
    if (done && ITERATION_ACTIVITIES.has(sched.get(String(done.scheduledEventId)) ?? '')) last = Math.max(last, ms(e.eventTime));
  }
  // A stage trained in commit windows has no iteration activity of its own: the open trains the first window.
  return { stageS: (d.closeTime!.getTime() - d.startTime.getTime()) / 1000, iterS: first === Infinity ? NaN : (last - first) / 1000 };
}
