/**
 * `npx e3 status` beside the servers: the workers polling each shared queue (from Temporal's
 * task-queue description) and each running node's iteration and last progress time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import type { Progress } from '../../activities/types';
import { TASK_QUEUE } from '../../activities/types';
import { client, e3, inProcessWorker, uid } from './env';
import { waitFor } from './procs';

test('e3 status lists the polling workers and a running node with its iteration and last progress', { timeout: 900_000 }, async () => {
  const w = await inProcessWorker();
  const c = await client();
  const runId = uid('status');
  try {
    const idle = await e3(['status']);
    assert.equal(idle.code, 0, idle.stderr);
    const me = `${process.pid}@${hostname()}`;
    // Workers of earlier tests stay in Temporal's poller list for a few minutes after they stop:
    // this worker must be listed, under both queues, whatever else is.
    assert.match(idle.stdout, /task queue e3: \d+ workers?\n/);
    assert.ok(idle.stdout.includes(`  ${me} (workflow + activity tasks), last poll`), idle.stdout);
    assert.match(idle.stdout, /task queue e3-trainer: \d+ workers?\n/);
    assert.ok(idle.stdout.includes(`  ${me} (activity tasks), last poll`), idle.stdout);
    assert.match(idle.stdout, /no run running/);

    // A tiny run whose stage1 lasts long enough to be seen running.
    const h = await c.client.workflow.start('pipeline', {
      taskQueue: TASK_QUEUE,
      workflowId: runId,
      args: [{ config: 'tiny', runId, overrides: { nodes: { stage1: { iterations: 400, ckptEvery: 2 } } } }],
    });
    const node = c.client.workflow.getHandle(`${runId}/stage1`);
    const p = await waitFor('stage1 to complete an iteration', 600_000, async () => {
      const q = await node.query<Progress>('progress');
      return q.iteration >= 1 ? q : undefined;
    });
    assert.ok(p.updatedAt && p.updatedAt <= Date.now(), String(p.updatedAt));
    const busy = await e3(['status']);
    assert.equal(busy.code, 0, busy.stderr);
    assert.ok(busy.stdout.includes(`running: ${runId}\n`), busy.stdout);
    const line = new RegExp(`\\n  stage1 \\(rl\\) iteration (\\d+)/400, last progress (\\S+) \\(\\d+(s|m) ago\\)\\n`).exec(busy.stdout);
    assert.ok(line, busy.stdout);
    assert.ok(Number(line[1]) >= p.iteration);
    assert.ok(Date.parse(line[2]) >= p.updatedAt!, `${line[2]} is before the progress already seen`);
    await h.cancel();
  } finally {
    await c.close();
    await w.stop();
  }
});
