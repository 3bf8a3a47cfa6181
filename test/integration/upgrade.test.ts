/**
 * A rolling upgrade under a running run (docs/OPERATIONS.md "Upgrading workers under running
 * runs"): a run started on a worker of an older release (3e81007, the oldest with recorded
 * histories: before every patch in use) is mid-stage when the old worker is stopped with
 * SIGTERM and a worker of this release starts. The run completes on the new worker; no workflow
 * task fails (no non-determinism); the stage that was in flight replays its recorded iterations
 * on the old command path (rlSample/rlGrade, rlUpdate: `patched('iteration-one-activity')`,
 * `patched('rollouts-one-activity')` and `patched('commit-windows')` are false where the history
 * has no marker) and runs the rest on the new one (rlIterations: the iterations up to the next
 * commit in one activity); the stage that starts after the upgrade is new throughout (its open
 * trains its first window); and the mixed histories replay from scratch.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Client } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { TASK_QUEUE } from '../../activities/types';
import { workflowBundle } from '../../workers/worker';
import { ROOT, client, inProcessWorker, uid } from './env';

const OLD = '3e81007';
type Event = temporal.api.history.v1.IHistoryEvent;

let dir = '';
let old: ChildProcess | undefined;
let c: { client: Client; close: () => Promise<void> };

/**
 * The old release's sources (what its worker runs), kept in the repository so the test needs no
 * git history (a shallow clone has none): `git archive --format=tar.gz -o
 * test/fixtures/releases/3e81007.tar.gz 3e81007 activities cli configs/schema.ts
 * configs/load.ts configs/tiny.json ml storage workers workflows package.json tsconfig.json`.
 */
const RELEASE = path.join(ROOT, 'test', 'fixtures', 'releases', `${OLD}.tar.gz`);

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), `e3-${OLD}-`));
  const arch = spawnSync('tar', ['-xzf', RELEASE, '-C', dir]);
  assert.equal(arch.status, 0, `${RELEASE}: ${arch.stderr}`);
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  c = await client();
});

after(async () => {
  if (old && old.exitCode === null) old.kill('SIGKILL');
  await c?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The old release's worker, in its own checkout; resolves once it polls. */
function startOldWorker(): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(dir, 'cli', 'e3.ts'), 'worker'], {
      cwd: dir,
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      if (out.includes('polling')) resolve(p);
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', (d) => (out += d));
    p.on('exit', (code) => reject(new Error(`the ${OLD} worker exited (${code}) before polling:\n${out}`)));
  });
}

const history = async (workflowId: string): Promise<Event[]> => (await c.client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
const ITERATIONS = 40;
/** Activity types completed in a workflow's history. */
async function completed(workflowId: string): Promise<string[]> {
  const events = await history(workflowId);
  const names = new Map(
    events
      .filter((e) => e.activityTaskScheduledEventAttributes)
      .map((e) => [String(e.eventId), e.activityTaskScheduledEventAttributes!.activityType!.name!]),
  );
  return events
    .filter((e) => e.activityTaskCompletedEventAttributes)
    .map((e) => names.get(String(e.activityTaskCompletedEventAttributes!.scheduledEventId))!);
}
const scheduled = (events: Event[]) =>
  events.filter((e) => e.activityTaskScheduledEventAttributes).map((e) => e.activityTaskScheduledEventAttributes!.activityType!.name!);

async function until<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test(`a run in flight on a ${OLD} worker completes on this release's workers after a rolling upgrade`, async () => {
  old = await startOldWorker();
  const runId = uid('upgrade');
  // stage1 long enough to be mid-stage when the new workers are up (they bundle the workflows first).
  const overrides = { nodes: { stage1: { iterations: ITERATIONS, ckptEvery: 5 } } };
  const h = await c.client.workflow.start('pipeline', {
    taskQueue: TASK_QUEUE,
    workflowId: runId,
    args: [{ config: 'tiny', runId, overrides }] as never,
  });
  await until('stage1 to complete an update on the old worker', 180_000, async () =>
    (await completed(`${runId}/stage1`)).includes('rlUpdate') ? true : undefined,
  );
  // The deploy: the old worker stopped the way a deploy stops it (SIGTERM), then this release's
  // worker started. (Started the other way round, an old worker may for a moment pick up a
  // task whose history already has a new marker, fail it and leave it to a new worker:
  // harmless, but this test asserts that no workflow task fails at all.)
  const exited = new Promise((r) => old!.once('exit', r));
  const done = (await completed(`${runId}/stage1`)).filter((n) => n === 'rlUpdate').length;
  assert.ok(done < ITERATIONS, 'stage1 ended on the old worker before the upgrade: nothing was in flight (raise ITERATIONS)');
  old.kill('SIGTERM');
  await exited;
  const fresh = await inProcessWorker();
  let result: { results: Record<string, { checkpoint?: { step: number } }> };
  try {
    result = (await h.result()) as typeof result;
  } finally {
    await fresh.stop();
  }
  const nodes = ['warmstart', 'stage1', 'select', 'stage2', 'eval', 'report'];
  for (const id of [runId, ...nodes.map((n) => `${runId}/${n}`)]) {
    const events = await history(id);
    const failed = events.filter((e) => e.workflowTaskFailedEventAttributes);
    assert.equal(
      failed.length,
      0,
      `${id}: workflow task failed: ${failed.map((e) => e.workflowTaskFailedEventAttributes!.failure?.message).join('; ')}`,
    );
  }
  // stage1: the iterations recorded by the old worker replay on the old path; the first one
  // this release runs records the patch marker and takes the new one, for good.
  const stage1 = scheduled(await history(`${runId}/stage1`));
  const first = stage1.indexOf('rlIterations');
  assert.ok(
    stage1.indexOf('rlSample') >= 0 && stage1.indexOf('rlSample') < first,
    `stage1 should start on the old path: ${stage1.join(', ')}`,
  );
  const after = stage1.slice(first);
  assert.ok(
    first > 0 && !['rlSample', 'rlGrade', 'rlRollouts', 'rlUpdate', 'rlIteration', 'commitCheckpoint'].some((n) => after.includes(n)),
    `stage1 should switch once, to rlIterations: ${stage1.join(', ')}`,
  );
  assert.equal(result.results.stage1.checkpoint?.step, ITERATIONS, `stage1 did not run all ${ITERATIONS} iterations: ${stage1.join(', ')}`);
  const stage2 = scheduled(await history(`${runId}/stage2`));
  assert.ok(
    stage2.includes('rlIterations') && !['rlSample', 'rlRollouts', 'rlUpdate', 'rlIteration'].some((n) => stage2.includes(n)),
    `stage2 (started after the upgrade) should take the new path: ${stage2.join(', ')}`,
  );
  // And the mixed histories replay from the start with this release's workflows (a worker restart).
  const histories = await Promise.all(
    [runId, ...nodes.map((n) => `${runId}/${n}`)].map(async (workflowId) => ({
      workflowId,
      history: await c.client.workflow.getHandle(workflowId).fetchHistory(),
    })),
  );
  let n = 0;
  for await (const r of Worker.runReplayHistories({ workflowBundle: await workflowBundle() }, histories)) {
    assert.equal(r.error, undefined, `${r.workflowId}: ${r.error}`);
    n++;
  }
  assert.equal(n, histories.length);
});
