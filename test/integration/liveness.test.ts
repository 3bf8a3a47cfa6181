/**
 * Liveness without false alarms (docs/OPERATIONS.md "What a failure costs"):
 * - an evaluation's heartbeat is a cursor; its partial counts live in the object store, and a
 *   retry resumes from the cursor with the same counts as an uninterrupted evaluation;
 * - a re-open of a node's session never frees, or trains, the replicas an activity of the old
 *   session is still computing on;
 * - a slow but alive worker (every gradient job longer than the session heartbeat timeout)
 *   is never taken for a lost one: no re-open, no timeout, the run completes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Client } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { createActivities } from '../../activities';
import { readInitFile, workerEnv } from '../../activities/env';
import type { Manifest, WorkerContext } from '../../activities/env';
import { EVAL_CHUNK, evaluateChunks, resumePoint } from '../../activities/evaluate';
import type { EvalCursor } from '../../activities/evaluate';
import { TASK_QUEUE } from '../../activities/types';
import { ComputePool } from '../../compute/pool';
import { loadConfig } from '../../configs/load';
import type { EvalNode, RunConfig } from '../../configs/schema';
import { keys } from '../../storage/layout';
import { TrainerAdmission } from '../../workers/admission';
import { startWorkers } from '../../workers/worker';
import { client, store, uid } from './env';

const BASE = 'configs/base/base.e3w';
/** tiny's DAG on the committed base (3 x 96): a real policy that solves some problems, fast at these sizes. */
const onBase = (nodes: Record<string, unknown>): RunConfig =>
  loadConfig('tiny', { init: `file:${BASE}`, model: { layers: 3, dModel: 96, heads: 4, context: 544 }, nodes });

let pool: ComputePool;
const logs: string[] = [];
const s3 = store();

before(async () => {
  pool = await ComputePool.start(2);
});
after(async () => {
  await pool?.close();
});

/** A worker's context over the test's store and a given compute pool; its log goes to `logs`. */
const workerCtx = (p: ComputePool, maxSessions = 4): WorkerContext => ({
  store: s3,
  queue: 'liveness-test',
  backend: p.backend,
  pool: p,
  reportDir: '/tmp',
  log: (m) => logs.push(m),
  maxSessions,
});
const env = () => workerEnv(workerCtx(pool));

async function manifest(runId: string, config: RunConfig): Promise<Manifest> {
  const m: Manifest = { runId, config, initFrom: { file: BASE, sha256: readInitFile(BASE).sha256 } };
  await s3.putJson(keys.manifest(runId), m);
  return m;
}

test('evaluation heartbeats a cursor; a retry reads the stored chunks below it and counts what an uninterrupted evaluation counts', async () => {
  const cfg = onBase({ eval: { deps: [], from: '@init', prompts: 20, samples: 2, budgets: [16, 48], k: [1, 2] } });
  const node = cfg.nodes.eval as EvalNode;
  const job = { ...node, split: 'eval' as const };
  const e = env();

  const whole = await manifest(uid('eval-whole'), cfg);
  const beats: EvalCursor[] = [];
  const want = await evaluateChunks(e, whole, 'eval', job, resumePoint(undefined), (d) => beats.push(d));
  assert.deepEqual(beats, [{ next: 8 }, { next: 16 }, { next: 20 }]);
  for (const b of beats) assert.ok(JSON.stringify(b).length < 32, 'a heartbeat carries the cursor only');
  assert.equal((await s3.list(`runs/${whole.runId}/eval/eval/`)).length, Math.ceil(20 / EVAL_CHUNK), 'one stored object per chunk');
  assert.ok(
    want.flatMap((c) => Object.values(c)).some((b) => b.problems.some((p) => p.c > 0)),
    'the base solves some problems (the comparison below is not of zeros)',
  );

  // Attempt 1 dies after its first chunk (the heartbeat after it is the last the server got).
  const cut = await manifest(uid('eval-cut'), cfg);
  let last: unknown;
  await assert.rejects(
    evaluateChunks(e, cut, 'eval', job, resumePoint(undefined), (d) => {
      last = d;
      throw new Error('worker lost');
    }),
    /worker lost/,
  );
  assert.deepEqual(last, { next: 8 });
  // Attempt 2 gets that heartbeat as its details.
  logs.length = 0;
  const resumed = await evaluateChunks(e, cut, 'eval', job, resumePoint(last), () => {});
  assert.ok(
    logs.some((l) => l.includes('resuming at problem 8 of 20')),
    logs.join('\n'),
  );
  assert.deepEqual(resumed, want);

  // An attempt of the release before the cursor heartbeated its partial counts (maybe over
  // another problem set): not trusted, evaluated again from 0.
  assert.deepEqual(resumePoint({ counts: want.slice(0, 1), next: 8 }), { next: 0 });

  // A cursor whose chunks are not in the store (removed by hand): evaluated again from 0, said so.
  const gone = await manifest(uid('eval-gone'), cfg);
  logs.length = 0;
  assert.deepEqual(await evaluateChunks(e, gone, 'eval', job, resumePoint({ next: 16 }), () => {}), want);
  assert.ok(
    logs.some((l) => l.includes('evaluating from problem 0')),
    logs.join('\n'),
  );
});

test('a re-open never frees or trains replicas an activity of the old session still computes on; the new session ends on the uninterrupted bytes', async () => {
  const cfg = onBase({ stage1: { from: '@init', budget: 48, prompts: 4, samples: 4, miniBatches: 2, microBatch: 4 } });
  // Gradient jobs of 3 s: the update (two optimiser steps) is surely still running when the re-open lands.
  const slow = await ComputePool.start(2, { slowOps: ['grad'], delayMs: 3000 });
  after(() => slow.close());
  const acts = createActivities(workerCtx(slow));

  /** Open, one iteration, commit: the weights' sha256. */
  async function iteration(runId: string, interfere?: (update: Promise<unknown>) => Promise<void>): Promise<string> {
    const s = await acts.openTrainer({ runId, nodeId: 'stage1', config: cfg, upstream: {} });
    await acts.rlRollouts(s, 0, 48);
    const update = acts.rlUpdate(s, 0);
    if (interfere) {
      await interfere(update);
      return '';
    }
    await update;
    const c = await acts.commitCheckpoint(s, 1, {});
    await acts.closeTrainer(s);
    return c.sha256;
  }

  const want = await iteration((await manifest(uid('reopen-ref'), cfg)).runId);
  const runId = (await manifest(uid('reopen'), cfg)).runId;
  let old = '';
  // The workflow gave up on the first session while its update runs (a timeout it did not see), and re-opens it.
  await iteration(runId, async (update) => {
    const settled = update.then(
      () => 'completed',
      (e: Error) => e.message,
    );
    const s2 = await acts.openTrainer({ runId, nodeId: 'stage1', config: cfg, upstream: {} });
    assert.equal(s2.step, 0, 'nothing was committed: the re-open starts from the init');
    old = await settled;
    // The new session then does the iteration itself.
    await acts.rlRollouts(s2, 0, 48);
    await acts.rlUpdate(s2, 0);
    const c = await acts.commitCheckpoint(s2, 1, {});
    await acts.closeTrainer(s2);
    assert.equal(c.sha256, want, `the re-opened session's bytes differ from an uninterrupted one's (the old update ${old})`);
  });
  assert.match(
    old,
    /was closed \(re-opened or evicted\) while an activity still used it/,
    'the old update stops at its next optimiser step',
  );
  const mem = await slow.memory();
  for (const m of mem) assert.equal(m.sessions, 0, 'every replica was freed once its activity stopped');
});

test('a slow but alive worker (each gradient, sampling and snapshot job 7 s, past the 6 s session heartbeat timeout) is never taken for a lost one', async () => {
  const slow = await ComputePool.start(2, { slowOps: ['grad', 'sample', 'snapshot'], delayMs: 7000 });
  const w = await startWorkers({ queues: 'all', concurrency: 2, log: () => {}, pool: slow });
  let c: { client: Client; close: () => Promise<void> } | undefined;
  try {
    c = await client();
    const runId = uid('slow');
    const overrides = {
      nodes: {
        warmstart: { steps: 1, ckptEvery: 1 },
        stage1: { iterations: 1, ckptEvery: 1, miniBatches: 1 },
        stage2: { iterations: 1, ckptEvery: 1, miniBatches: 1 },
      },
    };
    const h = await c.client.workflow.start('pipeline', {
      taskQueue: TASK_QUEUE,
      workflowId: runId,
      args: [{ config: 'tiny', runId, overrides }] as never,
    });
    await h.result();
    type Event = temporal.api.history.v1.IHistoryEvent;
    for (const node of ['warmstart', 'stage1', 'stage2']) {
      const events: Event[] = (await c.client.workflow.getHandle(`${runId}/${node}`).fetchHistory()).events ?? [];
      const scheduled = events
        .filter((e) => e.activityTaskScheduledEventAttributes)
        .map((e) => e.activityTaskScheduledEventAttributes!.activityType!.name);
      assert.equal(scheduled.filter((n) => n === 'openTrainer').length, 1, `${node}: the session was re-opened (${scheduled.join(', ')})`);
      assert.equal(events.filter((e) => e.activityTaskTimedOutEventAttributes).length, 0, `${node}: an activity timed out`);
      // The slow activity really was slower than the heartbeat timeout.
      const byId = new Map(events.map((e) => [String(e.eventId), e]));
      const longest = Math.max(
        ...events
          .filter((e) => e.activityTaskCompletedEventAttributes)
          .map((e) => {
            const started = byId.get(String(e.activityTaskCompletedEventAttributes!.startedEventId))!;
            return Number(e.eventTime!.seconds) - Number(started.eventTime!.seconds);
          }),
      );
      assert.ok(longest >= 6, `${node}: no activity ran past the heartbeat timeout (longest ${longest} s): the test tests nothing`);
    }
  } finally {
    await c?.close();
    w.shutdown();
    await w.run;
  }
});

test('a full trainer is not polled: its slot reservation waits until the session closes; an open that reaches it anyway is refused', async () => {
  const cfg = onBase({ stage1: { from: '@init' } });
  const admission = new TrainerAdmission();
  const acts = createActivities({ ...workerCtx(pool, 1), admission });
  const [a, b] = await Promise.all(['full-a', 'full-b'].map(async (p) => (await manifest(uid(p), cfg)).runId));
  const open = (runId: string) => acts.openTrainer({ runId, nodeId: 'stage1', config: cfg, upstream: {} });
  const sa = await open(a);
  assert.equal(admission.available(), 0);
  let granted = false;
  const slot = { slotType: 'activity', taskQueue: 'e3-trainer', workerIdentity: 'test', workerBuildId: '', isSticky: false } as const;
  const reserved = admission
    .supplier()
    .reserveSlot(slot, new AbortController().signal)
    .then(() => (granted = true));
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(granted, false, 'a worker holding its only session reserved a poll of the trainer queue');
  await assert.rejects(open(b), /busy with session/);
  await acts.closeTrainer(sa);
  await reserved;
  const sb = await open(b);
  await acts.closeTrainer(sb);
});
