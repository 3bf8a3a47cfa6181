/**
 * Worker Deployments (docs/OPERATIONS.md "Deploying a new version"): a run started on version A
 * (a worker process with E3_DEPLOYMENT and E3_BUILD_ID=A) is paused mid-stage when version B's
 * worker starts and `e3 deploy set-current B` makes B current. The paused run, resumed, finishes
 * on A: every workflow task of the pipeline and of each node (children of a pinned parent,
 * through the stage's continue-as-new) is completed by A's worker, PINNED to A, and its
 * activities run there too; a run started after the switch runs on B alone; neither history has
 * a failed workflow task; `e3 deploy status` shows A draining while the run is open and drained
 * after. `e3 deploy off` leaves the server with no current version, so the tests after this file
 * keep their unversioned workers.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { TASK_QUEUE } from '../../activities/types';
import type { PipelineResult } from '../../workflows/pipeline';
import { ROOT, client, e3, uid } from './env';
import { start, waitFor } from './procs';
import type { Proc } from './procs';

type Event = temporal.api.history.v1.IHistoryEvent;
const DEPLOYMENT = `e3-deploy-test-${process.pid}`;
const env = { E3_DEPLOYMENT: DEPLOYMENT };
const NODES = ['warmstart', 'stage1', 'select', 'stage2', 'eval', 'report'];

let c: { client: Client; close: () => Promise<void> };
const workers: Proc[] = [];

before(async () => {
  c = await client();
});

after(async () => {
  // Whatever happened, leave no current version behind: later files run unversioned workers.
  await e3(['deploy', 'off'], env).catch(() => undefined);
  for (const w of workers) await w.stop(10_000);
  await c?.close();
});

/** A worker process of build `buildId`; resolves once it polls (and its version is registered). */
async function versionWorker(buildId: string): Promise<Proc> {
  const p = start(process.execPath, ['--import', 'tsx', path.join(ROOT, 'cli', 'e3.ts'), 'worker'], {
    ...process.env,
    ...env,
    E3_BUILD_ID: buildId,
    E3_THREADS: '1',
  });
  workers.push(p);
  await Promise.race([
    waitFor(`worker ${buildId} polling`, 120_000, async () => (p.output().includes('polling') ? true : undefined)),
    p.exited.then((code) => {
      throw new Error(`worker ${buildId} exited (${code}) before polling:\n${p.output()}`);
    }),
  ]);
  return p;
}

const history = async (workflowId: string, runId?: string): Promise<Event[]> =>
  (await c.client.workflow.getHandle(workflowId, runId).fetchHistory()).events ?? [];

/** Every run of a workflow id (a stage may have continued-as-new), oldest first. */
async function runsOf(workflowId: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const wf of c.client.workflow.list({ query: `WorkflowId = "${workflowId}"` })) ids.push(wf.runId);
  return ids;
}

/**
 * Asserts every run of the run's pipeline and node workflows: each workflow task completed by
 * the worker `pid` with deployment version `buildId`, PINNED; no failed workflow task; every
 * activity started by that worker. Returns the number of workflow runs checked.
 */
async function assertOn(runId: string, buildId: string, pid: number): Promise<number> {
  let checked = 0;
  for (const workflowId of [runId, ...NODES.map((n) => `${runId}/${n}`)]) {
    const runs = await runsOf(workflowId);
    assert.ok(runs.length >= 1, `${workflowId}: no run`);
    for (const r of runs) {
      const events = await history(workflowId, r);
      const failed = events.filter((e) => e.workflowTaskFailedEventAttributes);
      assert.equal(
        failed.length,
        0,
        `${workflowId}: workflow task failed: ${failed.map((e) => e.workflowTaskFailedEventAttributes!.failure?.message).join('; ')}`,
      );
      const done = events.filter((e) => e.workflowTaskCompletedEventAttributes).map((e) => e.workflowTaskCompletedEventAttributes!);
      assert.ok(done.length > 0, `${workflowId}: no completed workflow task`);
      for (const t of done) {
        assert.equal(
          t.deploymentVersion?.buildId,
          buildId,
          `${workflowId} (${r}): a workflow task completed by version ${t.deploymentVersion?.buildId} (${t.identity})`,
        );
        assert.equal(t.deploymentVersion?.deploymentName, DEPLOYMENT);
        assert.ok(t.identity?.startsWith(`${pid}@`), `${workflowId}: a workflow task completed by ${t.identity}, not worker ${pid}`);
      }
      // Every task after the first records the behaviour; the first of a run says PINNED too.
      assert.ok(
        done.every((t) => t.versioningBehavior === 1),
        `${workflowId}: not every workflow task is PINNED (${done.map((t) => t.versioningBehavior).join(',')})`,
      );
      for (const e of events.filter((x) => x.activityTaskStartedEventAttributes)) {
        const who = e.activityTaskStartedEventAttributes!.identity ?? '';
        assert.ok(who.startsWith(`${pid}@`), `${workflowId}: an activity started by ${who}, not worker ${pid}`);
      }
      checked++;
    }
    // The execution's own record: pinned to the version (a child inherits its parent's).
    const d = await c.client.workflowService.describeWorkflowExecution({
      namespace: c.client.options.namespace,
      execution: { workflowId },
    });
    const v = d.workflowExecutionInfo?.versioningInfo;
    assert.equal(v?.behavior, 1, `${workflowId}: versioning behaviour ${v?.behavior}, not PINNED`);
    assert.equal(v?.deploymentVersion?.buildId, buildId, `${workflowId}: pinned to ${v?.deploymentVersion?.buildId}`);
  }
  return checked;
}

test('a run pinned to version A finishes on A after `e3 deploy set-current B`, while a new run starts and finishes on B', async () => {
  const a = await versionWorker('A');
  assert.match(a.output(), new RegExp(`version ${DEPLOYMENT}/A; no current version: made this one current`));
  const first = uid('deploy-a');
  // A longer stage 1, continuing-as-new every few iterations (one commit window each), so it is paused mid-stage.
  const overrides = { maxHistoryEvents: 40, nodes: { stage1: { iterations: 12, ckptEvery: 1 } } };
  const h1 = await c.client.workflow.start('pipeline', {
    taskQueue: TASK_QUEUE,
    workflowId: first,
    args: [{ config: 'tiny', runId: first, overrides }] as never,
  });
  const stage = c.client.workflow.getHandle(`${first}/stage1`);
  type P = { iteration: number; paused: boolean; total: number };
  await waitFor('stage1 running on A', 180_000, async () =>
    ((await stage.query<P>('progress').catch(() => null))?.iteration ?? -1) >= 1 ? true : undefined,
  );
  await stage.signal('pause');
  await waitFor('stage1 paused', 30_000, async () => ((await stage.query<P>('progress')).paused ? true : undefined));

  const b = await versionWorker('B');
  assert.match(b.output(), new RegExp(`version ${DEPLOYMENT}/B; current version ${DEPLOYMENT}/A`));
  const before = await e3(['deploy', 'status'], env);
  assert.equal(before.code, 0, before.stderr);
  assert.match(before.stdout, new RegExp(`deployment ${DEPLOYMENT}: current version A`));
  assert.match(before.stdout, new RegExp(`A  current: \\d+ open workflows? pinned to it \\(run ${first}\\)`));
  assert.match(before.stdout, /B {2}inactive: no open workflow pinned to it/);

  // A version that never registered cannot be made current (and the message says how to fix it).
  const missing = await e3(['deploy', 'set-current', 'C'], env);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    new RegExp(
      `build C: no such version of deployment ${DEPLOYMENT} \\(registered: .*A.*\\); start its workers with E3_DEPLOYMENT=${DEPLOYMENT} E3_BUILD_ID=C first`,
    ),
  );

  const set = await e3(['deploy', 'set-current', 'B'], env);
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, new RegExp(`current version of ${DEPLOYMENT}: B \\(was A\\)`));
  assert.match(set.stdout, new RegExp(`A  draining: \\d+ open workflows? pinned to it \\(run ${first}\\)`));
  assert.match(set.stdout, new RegExp(`keep ${DEPLOYMENT}/A's workers running until`));

  const second = uid('deploy-b');
  const h2 = c.client.workflow.getHandle(second) as WorkflowHandle;
  await c.client.workflow.start('pipeline', {
    taskQueue: TASK_QUEUE,
    workflowId: second,
    args: [{ config: 'tiny', runId: second }] as never,
  });
  await stage.signal('resume');
  const [r1, r2] = (await Promise.all([h1.result(), h2.result()])) as PipelineResult[];
  assert.equal(r1.results.stage1.checkpoint?.step, 12);
  assert.equal(r2.results.stage1.checkpoint?.step, 4);

  const onA = await assertOn(first, 'A', a.pid);
  assert.ok(onA > 1 + NODES.length, `stage1 should have continued-as-new on A (${onA} workflow runs)`);
  await assertOn(second, 'B', b.pid);

  const drained = await e3(['deploy', 'status'], env);
  assert.equal(drained.code, 0, drained.stderr);
  assert.match(drained.stdout, /B {2}current: no open workflow pinned to it/);
  assert.match(drained.stdout, /A {2}drained: no open workflow pinned to it.*its workers can be stopped/);

  // `e3 status` ends with the same lines where E3_DEPLOYMENT is set.
  const status = await e3(['status'], env);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, new RegExp(`deployment ${DEPLOYMENT}: current version B\n  B  current`));

  const off = await e3(['deploy', 'off'], env);
  assert.equal(off.code, 0, off.stderr);
  assert.match(off.stdout, new RegExp(`${DEPLOYMENT} has no current version \\(was B\\): new runs go to unversioned workers`));
});
