/**
 * Trainer admission (workers/admission.ts, docs/OPERATIONS.md "Workers"): with one worker of
 * one session slot, opens that find it full wait in the trainer queue, `e3 status` says how
 * many are ahead of each, and they are served by priority key, then in arrival order, with
 * no refused attempt.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Client } from '@temporalio/client';
import { TASK_QUEUE } from '../../activities/types';
import { formatTrainerQueue, trainerQueue, trainingNodes } from '../../cli/trainers';
import { client, e3, inProcessWorker, pauseOnceStarted, uid } from './env';
import { until } from './webui';

/** Server time (ms) the node's first openTrainer started, if it has. */
async function openStarted(c: Client, workflowId: string): Promise<number | undefined> {
  const events =
    (
      await c.workflow
        .getHandle(workflowId)
        .fetchHistory()
        .catch(() => undefined)
    )?.events ?? [];
  const opens = new Set<string>();
  for (const e of events) {
    if (e.activityTaskScheduledEventAttributes?.activityType?.name === 'openTrainer') opens.add(String(e.eventId));
    const st = e.activityTaskStartedEventAttributes;
    if (st && opens.has(String(st.scheduledEventId))) return Number(e.eventTime!.seconds) * 1000 + (e.eventTime!.nanos ?? 0) / 1e6;
  }
  return undefined;
}

test('waiting opens: N ahead in e3 status, served by priority then arrival, none refused', { timeout: 20 * 60_000 }, async () => {
  const w = await inProcessWorker();
  const { client: c, close } = await client();
  const ids = { holder: uid('adm-a'), b: uid('adm-b'), c: uid('adm-c'), d: uid('adm-d'), urgent: uid('adm-e') };
  const start = (id: string, priorityKey?: number) =>
    c.workflow.start('pipeline', {
      taskQueue: TASK_QUEUE,
      workflowId: id,
      args: [{ config: 'tiny', runId: id }],
      ...(priorityKey ? { priority: { priorityKey } } : {}),
    });
  try {
    // The holder opens the only slot and pauses there, so every later open has to wait. Its
    // open is pending and started (a started activity shows in history only once it ends, and
    // the open trains the first commit window first): the pause holds at that window's commit.
    await start(ids.holder);
    await pauseOnceStarted(c, `${ids.holder}/warmstart`);
    await until('the holder to open its session', async () =>
      trainerQueue(await trainingNodes(c)).holders.some((h) => h.workflowId === `${ids.holder}/warmstart`) ? true : undefined,
    );
    for (const id of [ids.b, ids.c, ids.d]) {
      await start(id);
      await until(`${id} to wait`, async () =>
        trainerQueue(await trainingNodes(c)).waiting.some((x) => x.workflowId === `${id}/warmstart`) ? true : undefined,
      );
    }
    await start(ids.urgent, 1);
    const q = await until('four waiting opens', async () => {
      const q = trainerQueue(await trainingNodes(c));
      return q.waiting.length === 4 ? q : undefined;
    });
    assert.deepEqual(
      q.waiting.map((x) => [x.workflowId, x.ahead]),
      [
        [`${ids.urgent}/warmstart`, 0],
        [`${ids.b}/warmstart`, 1],
        [`${ids.c}/warmstart`, 2],
        [`${ids.d}/warmstart`, 3],
      ],
    );
    assert.deepEqual(
      q.holders.map((h) => h.workflowId),
      [`${ids.holder}/warmstart`],
    );
    const status = await e3(['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`held: ${ids.holder}/warmstart on \\d+@`));
    assert.match(
      status.stdout,
      new RegExp(`waiting for a trainer: 3 ahead of it \\(run ${ids.d}, node warmstart, since \\d\\d:\\d\\d:\\d\\d`),
    );
    assert.ok(formatTrainerQueue(q, Date.now()).length === 6);
    // No open has failed: they wait in the task queue, not in retries.
    for (const x of q.waiting) assert.equal(x.attempt, 1, `${x.workflowId} is on attempt ${x.attempt}`);

    await c.workflow.getHandle(`${ids.holder}/warmstart`).signal('resume');
    const order = [ids.urgent, ids.b, ids.c, ids.d];
    const t = await Promise.all(order.map((id) => until(`${id} to open`, () => openStarted(c, `${id}/warmstart`), 600_000)));
    for (let k = 1; k < t.length; k++) assert.ok(t[k - 1] < t[k], `${order[k - 1]} opened at ${t[k - 1]}, after ${order[k]} at ${t[k]}`);
    // The holder's next node queued after all of them: it opens after the last.
    const next = await until("the holder's stage1 to open", () => openStarted(c, `${ids.holder}/stage1`), 600_000);
    assert.ok(next > t[t.length - 1], "the holder's stage1 open went ahead of opens that arrived before it");
  } finally {
    for (const id of Object.values(ids))
      await c.workflow
        .getHandle(id)
        .cancel()
        .catch(() => undefined);
    await close();
    await w.stop();
  }
});
