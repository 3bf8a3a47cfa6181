/**
 * Scheduled retraining (docs/ARCHITECTURE.md: Temporal Schedules; each scheduled run warm-starts from
 * the latest checkpoint of its lineage), on the real servers: a schedule of the tiny config
 * is triggered twice; the second run starts from the first run's final commit, which is
 * checked on the weights themselves, and the lineage pointer advances. Then the `e3 schedule`
 * commands through the real CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import type { Client, ScheduleDescription } from '@temporalio/client';
import { modelConfig, sftSettings } from '../../activities';
import { TASK_QUEUE } from '../../activities/types';
import type { RunConfig, SftNode } from '../../configs/schema';
import { initBackend } from '../../ml/backend';
import { Trainer } from '../../ml/trainer';
import { loadCheckpoint } from '../../storage/checkpoints';
import { keys } from '../../storage/layout';
import { sha256Hex } from '../../storage/store';
import type { PipelineResult } from '../../workflows/pipeline';
import { client, e3, inProcessWorker, store, uid } from './env';

const DAY = 86_400_000;
const LAST_TRAINING_NODE = 'stage2'; // tiny: warmstart → stage1 → select → stage2 → eval → report

interface Manifest {
  runId: string;
  config: RunConfig;
  initFrom?: { runId: string; nodeId: string; step: number };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** The pipeline action `e3 schedule create` makes, with the phase put ~12 h away so only triggers start runs. */
async function createSchedule(c: Client, scheduleId: string, lineage: string) {
  return c.schedule.create({
    scheduleId,
    spec: { intervals: [{ every: '1d', offset: (Date.now() + DAY / 2) % DAY }] },
    action: { type: 'startWorkflow', workflowType: 'pipeline', taskQueue: TASK_QUEUE, args: [{ config: 'tiny', lineage }] },
    policies: { overlap: ScheduleOverlapPolicy.SKIP },
  });
}

/** Weights of `steps` SFT steps of the config's warmstart node from `weights` (scratch when undefined), as the sftChunk activity runs them. */
async function replayWarmstart(cfg: RunConfig, weights: Uint8Array | undefined): Promise<string> {
  await initBackend(); // the worker's tensor work runs on its compute threads, not here
  const ws = cfg.nodes.warmstart as SftNode;
  const tr = Trainer.create({ model: modelConfig(cfg), weights, optim: ws.optim, toolArithmetic: cfg.toolArithmetic });
  try {
    const sft = sftSettings(cfg, 'warmstart');
    for (let step = 0; step < ws.steps; step++)
      tr.sftStep(sft.seed, step, ws.batchSize, ws.difficulty, sft.traces, { markWeight: sft.markWeight });
    return sha256Hex(tr.snapshot().weights);
  } finally {
    tr.dispose();
  }
}

test("a schedule retrains a lineage: overlap SKIP, and the second run warm-starts from the first run's final commit", async () => {
  // No worker yet: the first scheduled run cannot finish before the second trigger arrives,
  // so the overlap policy is exercised deterministically.
  let w: Awaited<ReturnType<typeof inProcessWorker>> | undefined;
  const c = await client();
  const s = store();
  const scheduleId = uid('retrain');
  const lineage = uid('lineage');
  const h = await createSchedule(c.client, scheduleId, lineage);
  const describe = () => h.describe();
  try {
    let d: ScheduleDescription = await describe();
    assert.equal(d.policies.overlap, ScheduleOverlapPolicy.SKIP);
    assert.equal(d.state.paused, false);
    assert.ok(
      d.info.nextActionTimes[0].getTime() > Date.now() + 6 * 3_600_000,
      `next action ${d.info.nextActionTimes[0].toISOString()} is too close`,
    );
    assert.equal(d.info.numActionsTaken, 0);

    // Trigger twice (as `e3 schedule trigger` does, with SKIP): the second finds the first
    // run still running and is skipped. The second trigger waits for the first to be
    // taken and for the next second (scheduled workflow ids carry the time to the second).
    await h.trigger(ScheduleOverlapPolicy.SKIP);
    await waitFor('first trigger taken', async () => ((await describe()).info.numActionsTaken >= 1 ? true : undefined));
    await new Promise((r) => setTimeout(r, 1100));
    await h.trigger(ScheduleOverlapPolicy.SKIP);
    d = await waitFor('both triggers processed', async () => {
      const x = await describe();
      return x.info.numActionsTaken + x.info.numActionsSkippedOverlap >= 2 ? x : undefined;
    });
    w = await inProcessWorker();
    assert.equal(d.info.numActionsTaken, 1, 'one run started');
    assert.equal(d.info.numActionsSkippedOverlap, 1, 'the overlapping trigger was skipped');
    const first = d.info.recentActions[0].action.workflow.workflowId;

    const r1 = (await c.client.workflow.getHandle(first).result()) as PipelineResult;
    // A scheduled workflow id ends in an RFC 3339 time; the run id is that id without ':'.
    assert.match(first, new RegExp(`^${scheduleId}-workflow-\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$`));
    assert.equal(r1.runId, first.replace(/-(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$/, '-$1$2$3T$4$5$6Z'));
    const m1 = await s.getJson<Manifest>(keys.manifest(r1.runId));
    assert.equal(m1.config.lineage, lineage);
    assert.equal(m1.initFrom, undefined, 'the first run of a new lineage starts from the config (scratch)');
    const step1 = r1.results[LAST_TRAINING_NODE].checkpoint?.step;
    assert.equal(step1, 2);
    const ptr1 = { runId: r1.runId, nodeId: LAST_TRAINING_NODE, step: step1 };
    assert.deepEqual(await s.getJson(keys.lineage(lineage)), ptr1);

    await h.trigger(ScheduleOverlapPolicy.SKIP);
    d = await waitFor('the second run to start', async () => {
      const x = await describe();
      return x.info.numActionsTaken >= 2 ? x : undefined;
    });
    const second = d.info.recentActions.map((a) => a.action.workflow.workflowId).find((id) => id !== first)!;
    assert.ok(second);
    const r2 = (await c.client.workflow.getHandle(second).result()) as PipelineResult;
    assert.notEqual(r2.runId, r1.runId);
    const m2 = await s.getJson<Manifest>(keys.manifest(r2.runId));
    assert.deepEqual(m2.initFrom, ptr1, 'run 2 records the lineage commit it starts from');
    assert.deepEqual(await s.getJson(keys.lineage(lineage)), {
      runId: r2.runId,
      nodeId: LAST_TRAINING_NODE,
      step: r2.results[LAST_TRAINING_NODE].checkpoint?.step,
    });

    // The warm start is real: run 2's warmstart node trained from run 1's stage2 weights.
    // Replaying the node's SFT steps reproduces run 1's warmstart from scratch (so the replay
    // is faithful) and run 2's warmstart from the lineage's weights (so those were loaded).
    const lin = await loadCheckpoint(s, r1.runId, LAST_TRAINING_NODE);
    const ws1 = await loadCheckpoint(s, r1.runId, 'warmstart');
    const ws2 = await loadCheckpoint(s, r2.runId, 'warmstart');
    assert.ok(lin && ws1 && ws2);
    assert.equal(lin.manifest.step, step1);
    assert.equal(ws1.manifest.step, 12);
    assert.equal(ws2.manifest.step, 12);
    const sha1 = sha256Hex(ws1.files['weights.bin']);
    const sha2 = sha256Hex(ws2.files['weights.bin']);
    assert.notEqual(sha2, sha1, 'run 2 trained its warmstart from the same weights as run 1');
    assert.equal(await replayWarmstart(m1.config, undefined), sha1, 'run 1 warmstart = SFT from scratch');
    assert.equal(await replayWarmstart(m2.config, lin.files['weights.bin']), sha2, 'run 2 warmstart = SFT from run 1 stage2');

    // Runs are findable by lineage (search attribute E3Lineage).
    await waitFor('both runs listed under E3Lineage', async () => {
      const ids: string[] = [];
      for await (const wf of c.client.workflow.list({ query: `E3Lineage = "${lineage}"` })) ids.push(wf.workflowId);
      return ids.sort().join() === [first, second].sort().join() ? ids : undefined;
    });

    // The CLI sees the schedule's runs and can follow a scheduled run by its run id.
    const desc = await e3(['schedule', 'describe', scheduleId]);
    assert.equal(desc.code, 0, desc.stderr);
    const j = JSON.parse(desc.stdout) as { overlap: string; paused: boolean; recentActions: string[] };
    assert.equal(j.overlap, 'SKIP');
    assert.equal(j.paused, false);
    assert.deepEqual([...j.recentActions].sort(), [first, second].sort());
    const watched = await e3(['watch', r2.runId]);
    assert.equal(watched.code, 0, watched.stderr);
    assert.match(watched.stdout, new RegExp(`run ${r2.runId} completed`));
  } finally {
    await h.delete().catch(() => undefined);
    await c.close();
    await w?.stop();
  }
});

test('e3 schedule create / list / describe / pause / unpause / delete through the CLI', async () => {
  const c = await client();
  const id = uid('cli-sched');
  const lineage = uid('cli-lineage');
  const listed = (want: string) =>
    waitFor(`schedule list to show "${want}"`, async () => {
      const r = await e3(['schedule', 'list']);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.split('\n').includes(want) ? r : undefined;
    });
  const describe = async () => {
    const r = await e3(['schedule', 'describe', id]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { id: string; paused: boolean; overlap: string; recentActions: string[]; next: string[] };
  };
  try {
    let r = await e3(['schedule', 'create', id, '--config', 'tiny', '--lineage', lineage, '--every', '1d']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `schedule ${id} created: tiny every 1d, lineage ${lineage}, overlap skip`);
    // What it created: the pipeline with the lineage, SKIP, every day.
    const d = await c.client.schedule.getHandle(id).describe();
    assert.equal(d.policies.overlap, ScheduleOverlapPolicy.SKIP);
    assert.equal(d.action.type, 'startWorkflow');
    assert.equal(d.action.workflowType, 'pipeline');
    assert.equal(d.action.taskQueue, TASK_QUEUE);
    assert.deepEqual(d.action.args, [{ config: 'tiny', lineage }]);
    assert.equal(d.spec.intervals?.[0].every, DAY);

    let j = await describe();
    assert.equal(j.id, id);
    assert.equal(j.paused, false);
    assert.equal(j.overlap, 'SKIP');
    const next = Date.parse(j.next[0]) - Date.now();
    assert.ok(next > 0 && next <= DAY, `next action in ${next} ms`);
    await listed(id);

    r = await e3(['schedule', 'pause', id]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `schedule ${id} paused`);
    j = await describe();
    assert.equal(j.paused, true);
    await listed(`${id} (paused)`);

    r = await e3(['schedule', 'unpause', id]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await describe()).paused, false);

    // Errors name what is wrong, and change nothing.
    r = await e3(['schedule', 'create', id, '--config', 'tiny', '--lineage', lineage]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`schedule ${id} already exists`));
    r = await e3(['schedule', 'create', `${id}-b`, '--config', 'tiny', '--lineage', lineage, '--every', 'fortnightly']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--every: "fortnightly"/);
    r = await e3(['schedule', 'create', `${id}-c`, '--config', 'tiny', '--lineage', '../up']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--lineage: "\.\.\/up" is not a valid id/);
    for (const bad of [`${id}-b`, `${id}-c`]) await assert.rejects(c.client.schedule.getHandle(bad).describe(), ScheduleNotFoundError);

    r = await e3(['schedule', 'delete', id]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `schedule ${id} deleted`);
    await assert.rejects(c.client.schedule.getHandle(id).describe(), ScheduleNotFoundError);
    for (const cmd of ['describe', 'pause', 'delete']) {
      r = await e3(['schedule', cmd, id]);
      assert.notEqual(r.code, 0, `schedule ${cmd} of a deleted schedule`);
      assert.match(r.stderr, new RegExp(`schedule ${id} does not exist`));
    }
  } finally {
    await c.client.schedule
      .getHandle(id)
      .delete()
      .catch(() => undefined);
    await c.close();
  }
});
