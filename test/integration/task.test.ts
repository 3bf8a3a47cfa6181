/**
 * Your own task, end to end (docs/TASKS.md "Your own task"): a task defined outside ml/
 * (test/tasks/reverse.ts: reverse a number's digits) is registered in a worker
 * process started here with E3_TASK_MODULES naming that file, and the tiny DAG runs on it
 * (`task: "reverse"`) to completion on the real servers: warm start, two RL stages with
 * Eq. 6.1 budget selection, evaluation and report. A run naming a task no worker registered
 * fails in its first activity with one error naming the `task` field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { TASK_QUEUE } from '../../activities/types';
import { Rng } from '../../ml/rng';
import { taskNamed } from '../../ml/tasks';
import type { PipelineResult } from '../../workflows/pipeline';
import { reverseTrace } from '../tasks/reverse';
import { ROOT, client, uid } from './env';
import { start } from './procs';

const MODULE = path.join('test', 'tasks', 'reverse.ts');

test('a task registered from a module outside ml/ trains and evaluates through the tiny DAG', { timeout: 15 * 60_000 }, async () => {
  // The module registered the task in this process too (imported above): its traces grade as right.
  const rev = taskNamed('reverse').task(false);
  const p = rev.generate(1, 0, { count: 3, min: 1, max: 9, ops: '+' }, 'train');
  assert.equal(rev.verify(p, reverseTrace(p, new Rng(3)), false).reward, 1);

  const worker = start(process.execPath, ['--import', 'tsx', path.join(ROOT, 'workers', 'worker.ts')], {
    ...process.env,
    E3_TASK_MODULES: MODULE,
  });
  const { client: c, close } = await client();
  const id = uid('task-reverse');
  const bad = uid('task-unknown');
  try {
    const h = await c.workflow.start('pipeline', {
      taskQueue: TASK_QUEUE,
      workflowId: id,
      args: [{ config: 'tiny', runId: id, overrides: { task: 'reverse' } }],
    });
    const r = (await h.result()) as PipelineResult;
    assert.deepEqual(Object.keys(r.results).sort(), ['eval', 'report', 'select', 'stage1', 'stage2', 'warmstart']);
    assert.match(worker.output(), /task modules: test\/tasks\/reverse\.ts \(tasks: countdown, reverse\)/);
    const ev = r.results.eval.metrics ?? {};
    for (const b of [16, 32, 64]) {
      const v = ev[`eval/b${b}/pass@1`];
      assert.ok(typeof v === 'number' && v >= 0 && v <= 1, `eval/b${b}/pass@1 = ${v}`);
    }
    // The warm start learned the task's shape: its traces are short, so the RL stages' responses are well formed more often than not.
    assert.ok(Number.isFinite(r.results.stage2.metrics?.['train/reward_mean']), 'stage2 reports its reward');
    assert.equal(
      Object.keys(ev).some((k) => k.startsWith('data/min_steps')),
      false,
      'no countdown solver metrics for another task',
    );

    // A task nobody registered: one clear error naming the field.
    const h2 = await c.workflow.start('pipeline', {
      taskQueue: TASK_QUEUE,
      workflowId: bad,
      args: [{ config: 'tiny', runId: bad, overrides: { task: 'no-such-task' } }],
    });
    const err = await h2.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof WorkflowFailedError, `the run failed: ${String(err)}`);
    const text =
      JSON.stringify(err, Object.getOwnPropertyNames(err)) +
      String(
        (err as { cause?: { message?: string; cause?: { message?: string } } }).cause?.cause?.message ??
          (err as { cause?: { message?: string } }).cause?.message,
      );
    assert.match(text, /task: unknown task "no-such-task" \(registered: countdown/);
  } finally {
    await c.workflow
      .getHandle(id)
      .cancel()
      .catch(() => undefined);
    await close();
    await worker.stop();
  }
});
