/**
 * Failures that fail: a run whose input or config is wrong in a way no retry can fix ends
 * FAILED within seconds, and the failure's type and message reach the client. The pipeline
 * input is checked before anything starts (workflows/input.ts: not an object, an unknown
 * key, a wrong type; a bare string is a config name); a config that passes the schema but
 * fails a deterministic ml/ check or does not fit its checkpoint fails on the first attempt;
 * every activity's retry policy carries the one non-retryable list (activities/types.ts).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import {
  ErrorTypes,
  HEARTBEAT_TIMEOUT_TYPE,
  NON_RETRYABLE_ERROR_TYPES,
  SESSION_NON_RETRYABLE_ERROR_TYPES,
  TASK_QUEUE,
} from '../../activities/types';
import type { RunConfig } from '../../configs/schema';
import { keys } from '../../storage/layout';
import { client, inProcessWorker, store, uid } from './env';

/** "Within seconds": far below what retrying (backoff to 10-15 s per attempt, 8+ attempts) would take. */
const FAST_MS = 30_000;

let worker: Awaited<ReturnType<typeof inProcessWorker>>;
let c: { client: Client; close: () => Promise<void> };

before(async () => {
  worker = await inProcessWorker();
  c = await client();
});

after(async () => {
  await c?.close();
  await worker?.stop();
});

const start = (workflowId: string, arg: unknown) =>
  c.client.workflow.start('pipeline', { taskQueue: TASK_QUEUE, workflowId, args: [arg] as never });

/** The cause chain of a failure, outermost first. */
function causes(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let x: unknown = e; x; x = (x as { cause?: unknown }).cause) out.push(x);
  return out;
}

/** Wait for the run to fail (not hang retrying): its WorkflowFailedError, the innermost ApplicationFailure, and the time taken. */
async function failure(h: WorkflowHandle, t0: number): Promise<{ err: WorkflowFailedError; app: ApplicationFailure; ms: number }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>(
    (_, reject) => (timer = setTimeout(() => reject(new Error(`${h.workflowId} still running after ${FAST_MS} ms`)), FAST_MS)),
  );
  const err = await Promise.race([
    h.result().then(
      () => assert.fail(`${h.workflowId} completed`),
      (e: unknown) => e,
    ),
    timeout,
  ]).finally(() => clearTimeout(timer));
  const ms = Date.now() - t0;
  assert.ok(err instanceof WorkflowFailedError, String(err));
  const apps = causes(err).filter((x): x is ApplicationFailure => x instanceof ApplicationFailure);
  assert.ok(apps.length > 0, `no ApplicationFailure in ${causes(err).map(String).join(' <- ')}`);
  assert.equal((await h.describe()).status.name, 'FAILED');
  return { err, app: apps[apps.length - 1], ms };
}

type Event = temporal.api.history.v1.IHistoryEvent;
const events = async (workflowId: string): Promise<Event[]> => (await c.client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];

/** Scheduled activities of a workflow: type and the retry policy's non-retryable types. */
const scheduled = (evs: Event[]) =>
  evs
    .filter((e) => e.activityTaskScheduledEventAttributes)
    .map((e) => ({
      type: e.activityTaskScheduledEventAttributes!.activityType!.name!,
      nonRetryable: e.activityTaskScheduledEventAttributes!.retryPolicy?.nonRetryableErrorTypes ?? [],
    }));

const attempts = (evs: Event[]) =>
  evs.filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt);

/** The input is refused by the workflow itself: BadConfig, before any activity, without a failed workflow task. */
async function refused(arg: unknown, message: RegExp): Promise<void> {
  const runId = uid('badinput');
  const t0 = Date.now();
  const { app, ms } = await failure(await start(runId, arg), t0);
  assert.equal(app.type, ErrorTypes.config);
  assert.equal(app.nonRetryable, true);
  assert.match(app.message, message);
  assert.ok(ms < FAST_MS, `${ms} ms`);
  const evs = await events(runId);
  assert.deepEqual(scheduled(evs), [], 'an activity ran for a refused input');
  assert.equal(
    evs.filter((e) => e.workflowTaskFailedEventAttributes).length,
    0,
    'the workflow task failed (Temporal would retry it) instead of the run',
  );
}

test('input that is not an object (a number) fails the run at once: BadConfig, saying what came', async () => {
  await refused(3, /^pipeline input: must be an object such as \{"config":"tiny"\} .* got a number \(3\)$/);
});

test('an unknown input key (a typo) fails the run at once, naming the key', async () => {
  await refused(
    { config: 'tiny', overide: { seed: 3 } },
    /^pipeline input: overide: unknown key \(expected config, overrides, runId, lineage\)$/,
  );
});

test('a wrongly typed input field fails the run at once, naming the field', async () => {
  await refused({ config: 'tiny', overrides: 'seed=3' }, /^pipeline input: overrides: must be an object/);
  await refused({ config: ['tiny'] }, /^pipeline input: config: must be a string, got an array$/);
});

test('a Workflow ID that is not a valid run id fails prepareRun once: BadConfig naming runId', async () => {
  const id = `${uid('bad')} id`;
  const t0 = Date.now();
  const { app, ms } = await failure(await start(id, 'tiny'), t0);
  assert.equal(app.type, ErrorTypes.config);
  assert.ok(app.message.startsWith(`runId: "${id}" is not a valid id (letters, digits`), app.message);
  assert.ok(ms < FAST_MS, `${ms} ms`);
  const evs = await events(id);
  assert.deepEqual(scheduled(evs), [{ type: 'prepareRun', nonRetryable: [...NON_RETRYABLE_ERROR_TYPES] }]);
  assert.deepEqual(attempts(evs), [1]);
});

test('a config that passes the schema but fails a deterministic ml check fails on the first attempt: InvalidArgument, message intact', async () => {
  const runId = uid('mlcheck');
  // The schema allows difficulty.min 0; the countdown generator needs numbers >= 1.
  const overrides = { nodes: { warmstart: { difficulty: [{ count: 3, min: 0, max: 9, ops: '+-*' }] } } };
  const t0 = Date.now();
  const { app, ms } = await failure(await start(runId, { config: 'tiny', overrides }), t0);
  assert.equal(app.type, ErrorTypes.invalid);
  assert.equal(app.nonRetryable, true);
  assert.match(app.message, /^countdown: bad difficulty \{"count":3,"min":0,"max":9,"ops":"\+-\*".*\(count 2\.\.9, 1 <= min <= max/);
  assert.ok(ms < FAST_MS, `${ms} ms`);
  const evs = await events(`${runId}/warmstart`);
  const acts = scheduled(evs);
  // The open trains the first window (commit windows) and fails in it; it frees the session
  // itself, so the trainer is free for the next run (the test below opens one at once).
  assert.deepEqual(
    acts.map((a) => a.type),
    ['openTrainer'],
  );
  assert.deepEqual(acts[0].nonRetryable, [...NON_RETRYABLE_ERROR_TYPES]);
  assert.deepEqual(attempts(evs), [1], 'an activity was retried');
  assert.deepEqual(scheduled(await events(runId))[0], { type: 'prepareRun', nonRetryable: [...NON_RETRYABLE_ERROR_TYPES] });
});

test('a checkpoint that does not fit the model fails on the first attempt: ShapeMismatch naming the field', async () => {
  const runId = uid('shape');
  // The committed base checkpoint is 3 layers x 96; tiny's model is 1 layer x 32.
  const t0 = Date.now();
  const { app, ms } = await failure(await start(runId, { config: 'tiny', overrides: { init: 'file:configs/base/base.e3w' } }), t0);
  assert.equal(app.type, ErrorTypes.shape);
  assert.equal(app.nonRetryable, true);
  assert.equal(app.message, 'checkpoint model.layers is 3, the config says 1');
  assert.ok(ms < FAST_MS, `${ms} ms`);
  const evs = await events(`${runId}/warmstart`);
  assert.deepEqual(
    scheduled(evs).map((a) => a.type),
    ['openTrainer'],
  );
  assert.deepEqual(attempts(evs), [1]);
});

// Last: the terminated run leaves its trainer session on the worker until it is evicted as idle.
test('a bare string input is a config name: "tiny" starts the tiny config', async () => {
  const runId = uid('bare');
  const h = await start(runId, 'tiny');
  try {
    const s = store();
    const node = c.client.workflow.getHandle(`${runId}/warmstart`);
    const end = Date.now() + 60_000;
    let started = false;
    while (!started) {
      if (Date.now() > end) assert.fail('the warm start of the tiny config did not start');
      await new Promise((r) => setTimeout(r, 250));
      started =
        (await s.exists(keys.manifest(runId))) &&
        (await node.describe().then(
          () => true,
          () => false,
        ));
    }
    const m = await s.getJson<{ config: RunConfig }>(keys.manifest(runId));
    assert.equal(m.config.name, 'tiny');
    assert.deepEqual(Object.keys(m.config.nodes), ['warmstart', 'stage1', 'select', 'stage2', 'eval', 'report']);
    assert.equal((await h.describe()).status.name, 'RUNNING');
  } finally {
    await h.terminate('test: the bare config name started the tiny run');
  }
});

test('stage data too hard for the policy entering it: select-budget fails once (UncalibratedData) or, with "warn", reports a warning', async () => {
  // minPassAt1 1 cannot be met by a 12-step warm start: the J(B) curve is "~0" for it.
  const runId = uid('uncal');
  const h = await start(runId, { config: 'tiny', overrides: { nodes: { select: { onUncalibrated: 'fail', minPassAt1: 1 } } } });
  const err = await h.result().then(
    () => assert.fail('completed'),
    (e: unknown) => e,
  );
  const app = causes(err)
    .filter((x): x is ApplicationFailure => x instanceof ApplicationFailure)
    .pop()!;
  assert.equal(app.type, ErrorTypes.uncalibrated);
  assert.equal(app.nonRetryable, true);
  assert.match(app.message, /nodes\.select: J\(B\) < minPassAt1 1 at every budget \(J\(16\)=.* J\(64\)=.*\): the stage data is too hard/);
  const evs = await events(`${runId}/select`);
  assert.deepEqual(
    scheduled(evs).map((a) => a.type),
    ['selectBudget'],
  );
  assert.deepEqual(attempts(evs), [1]);
  // stage2 never started: a clean failure, not a silent smallest budget
  assert.equal(await store().exists(keys.result(runId, 'stage2')), false);
  // stage1 (4 iterations, ckptEvery 2): the open trains 0→2, a session activity 2→4 commits and closes.
  const stage1 = scheduled(await events(`${runId}/stage1`));
  assert.deepEqual(
    stage1.map((a) => a.type),
    ['openTrainer', 'rlIterations'],
  );
  assert.deepEqual(stage1[0].nonRetryable, [...NON_RETRYABLE_ERROR_TYPES]);
  // A session activity's missed heartbeat window re-opens the session rather than retrying on the dead worker's queue.
  assert.deepEqual(stage1[1].nonRetryable, [...SESSION_NON_RETRYABLE_ERROR_TYPES, HEARTBEAT_TIMEOUT_TYPE]);
});
