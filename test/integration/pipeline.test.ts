/**
 * The tiny DAG end-to-end on the real servers, with its histories checked (payload sizes)
 * and saved for the replay test; resume after terminate; a worker SIGKILLed mid-stage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Client } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { TASK_QUEUE } from '../../activities/types';
import type { PipelineInput } from '../../activities/types';
import { loadCheckpoint, readLatest } from '../../storage/checkpoints';
import { keys } from '../../storage/layout';
import type { PipelineResult } from '../../workflows/pipeline';
import { ROOT, client, e3, historyJson, inProcessWorker, store, uid } from './env';

const NODES = ['warmstart', 'stage1', 'select', 'stage2', 'eval', 'report'];

/** Largest payload (decoded bytes) anywhere in a proto-JSON history. */
function largestPayload(x: unknown): number {
  if (x === null || typeof x !== 'object') return 0;
  const o = x as Record<string, unknown>;
  let best = typeof o.data === 'string' && 'metadata' in o ? Buffer.from(o.data, 'base64').length : 0;
  for (const v of Object.values(o)) best = Math.max(best, largestPayload(v));
  return best;
}

const start = (c: Client, runId: string, input: PipelineInput = {}) =>
  c.workflow.start('pipeline', { taskQueue: TASK_QUEUE, workflowId: runId, args: [{ config: 'tiny', runId, ...input }] });

async function waitFor(what: string, pred: () => Promise<boolean>, ms = 120_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Each training node of `runId` ends on the same step, weights and optimiser state as in `base`. */
async function assertSameFinals(base: string, runId: string): Promise<void> {
  for (const n of ['warmstart', 'stage1', 'stage2']) {
    const a = await loadCheckpoint(store(), base, n);
    const b = await loadCheckpoint(store(), runId, n);
    assert.equal(b?.manifest.step, a?.manifest.step, n);
    assert.equal(Buffer.compare(b!.files['weights.bin'], a!.files['weights.bin']), 0, `${n} weights`);
    assert.equal(Buffer.compare(b!.files['optim.bin'], a!.files['optim.bin']), 0, `${n} optimiser state`);
  }
}

function spawnWorker(): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'workers', 'worker.ts')], {
    env: process.env,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

test('the tiny DAG runs end-to-end; histories stay small and are saved for replay', async () => {
  const w = await inProcessWorker();
  const c = await client();
  const runId = uid('tiny');
  try {
    const r = (await (await start(c.client, runId)).result()) as PipelineResult;
    assert.deepEqual(Object.keys(r.results).sort(), [...NODES].sort());
    assert.equal(r.results.warmstart.checkpoint?.step, 12);
    assert.equal(r.results.stage1.checkpoint?.step, 4);
    assert.equal(r.results.stage2.checkpoint?.step, 2);
    assert.ok([16, 32].includes(r.results.select.budget!));
    assert.equal(r.results.stage2.budget, r.results.select.budget);
    // A 12-step warm start cannot solve 4-number problems: tiny's select warns (onUncalibrated "warn") and takes the largest candidate.
    if (r.results.select.metrics?.['select/uncalibrated'] === 1)
      assert.match(r.results.select.warning ?? '', /too hard for the policy entering it/);
    if (r.results.select.warning) assert.equal(r.results.select.budget, 32);
    // Eq. 6.1 tests every candidate against its double: J(64) is measured for the largest candidate 32.
    assert.ok(Number.isFinite(r.results.select.metrics?.['eval/b64/pass@1']));
    for (const k of ['eval/b64/unique_attempts', 'eval/b16/stop_truncated', 'data/min_steps_mean', 'data/needs_all'])
      assert.ok(Number.isFinite(r.results.eval.metrics?.[k]), k);
    for (const k of ['eval/b16/pass@1', 'eval/b64/pass@4', 'eval/b32/truncated_frac'])
      assert.ok(Number.isFinite(r.results.eval.metrics?.[k]), k);
    const s = store();
    assert.ok(await s.exists(keys.report(runId)));
    assert.ok(await s.exists(keys.metrics(runId)));
    const ck = await loadCheckpoint(s, runId, 'stage2');
    assert.equal(ck?.manifest.step, 2);
    assert.equal((ck?.manifest.meta.config as { name: string }).name, 'tiny');
    // Retention: only the last 2 (+ best) commits of stage1 remain, and LATEST points at the last.
    assert.equal((await readLatest(s, runId, 'stage1'))?.step, 4);

    const dir = path.join(process.env.E3_DATA_DIR!, 'histories');
    mkdirSync(dir, { recursive: true });
    let largest = 0;
    for (const id of [runId, ...NODES.map((n) => `${runId}/${n}`)]) {
      const h = historyJson(id);
      largest = Math.max(largest, largestPayload(JSON.parse(h)));
      const type = id === runId ? 'pipeline' : id.split('/')[1];
      writeFileSync(path.join(dir, `${type}.json`), h);
    }
    assert.ok(largest > 0 && largest < 64 * 1024, `largest payload ${largest} bytes`);
  } finally {
    await c.close();
    await w.stop();
  }
});

test('e3 resume after terminate skips finished nodes and continues from the last commit', async () => {
  const w = await inProcessWorker();
  const c = await client();
  const runId = uid('resume');
  const s = store();
  try {
    // Stage 1 held at a commit mid-way (paused, nothing in flight) when the run is terminated,
    // so the crash lands inside it whatever the host's speed.
    const overrides = { nodes: { stage1: { iterations: 8, ckptEvery: 2 } } };
    const h = await start(c.client, runId, { overrides });
    const stage = c.client.workflow.getHandle(`${runId}/stage1`);
    await waitFor('stage1 first commit', async () => ((await readLatest(s, runId, 'stage1').catch(() => null))?.step ?? 0) >= 2);
    await stage.signal('pause');
    await waitFor('stage1 held at a commit', async () => {
      const p = await stage.query<{ paused: boolean }>('progress');
      return p.paused && ((await stage.describe()).raw.pendingActivities?.length ?? 0) === 0;
    });
    const committed = (await readLatest(s, runId, 'stage1'))!.step;
    assert.ok(committed >= 2 && committed < 8, `held at ${committed}`);
    await h.terminate('test: simulated crash');
    const r = (await (await start(c.client, runId, { overrides })).result()) as PipelineResult;
    assert.ok(r.skipped.includes('warmstart'), `skipped ${r.skipped}`);
    assert.ok(!r.skipped.includes('stage1'), 'stage1 was not finished: it runs again');
    assert.equal(r.results.stage1.checkpoint?.step, 8);
    assert.equal(r.results.report.kind, 'report');
    // The re-opened stage1 session started at its committed step, not from scratch.
    type Ev = { eventTime: string; activityTaskCompletedEventAttributes?: { result: { payloads: Array<{ data: string }> } } };
    const events = JSON.parse(historyJson(`${runId}/stage1`)).events as Ev[];
    const opened = events.filter((e) => e.activityTaskCompletedEventAttributes);
    assert.ok(opened.length > 0);
    const first = Buffer.from(opened[0].activityTaskCompletedEventAttributes!.result.payloads[0].data, 'base64').toString();
    assert.equal(JSON.parse(first).step, committed, `opened at ${first}`);
    // The terminated run's session, idle on the worker's only trainer slot, was given up as soon
    // as the re-open waited (its workflow run had closed), not after SESSION_IDLE_MS (120 s).
    const waited = (Date.parse(opened[0].eventTime) - Date.parse(events[0].eventTime)) / 1000;
    assert.ok(waited < 60, `the re-open of stage1 took ${waited} s: the terminated run's session held the trainer`);
  } finally {
    await c.close();
    await w.stop();
  }
});

test('a worker SIGKILLed mid-stage: a new worker takes over from the last commit and the run completes', async () => {
  const c = await client();
  const runId = uid('kill');
  const s = store();
  let a: ChildProcess | undefined = spawnWorker();
  let b: ChildProcess | undefined;
  try {
    const h = await start(c.client, runId);
    await waitFor('stage1 first commit', async () => ((await readLatest(s, runId, 'stage1').catch(() => null))?.step ?? 0) >= 2, 180_000);
    a.kill('SIGKILL');
    a = undefined;
    b = spawnWorker();
    const r = (await h.result()) as PipelineResult;
    assert.equal(r.results.stage1.checkpoint?.step, 4);
    assert.equal(r.results.stage2.checkpoint?.step, 2);
    assert.ok(await s.exists(keys.report(runId)));
  } finally {
    a?.kill('SIGKILL');
    b?.kill('SIGTERM');
    await c.close();
  }
});

test('pause and resume signals hold a stage at its next commit; the progress query reports it', async () => {
  const w = await inProcessWorker();
  const c = await client();
  const runId = uid('pause');
  try {
    // A longer stage 1 so the signals land while it runs; a commit every 5 iterations, where a pause holds.
    const h = await start(c.client, runId, { overrides: { nodes: { stage1: { iterations: 30, ckptEvery: 5 } } } });
    const stage = c.client.workflow.getHandle(`${runId}/stage1`);
    type P = { iteration: number; paused: boolean; total: number; kind: string };
    // Past its first window (the open trains it), on a loaded host too.
    await waitFor('stage1 running', async () => ((await stage.query<P>('progress').catch(() => null))?.iteration ?? -1) >= 1, 300_000);
    await stage.signal('pause');
    await waitFor('paused', async () => (await stage.query<P>('progress')).paused);
    // The commit window in flight (up to the next commit) finishes; then nothing is scheduled.
    await waitFor('the window in flight to end', async () => ((await stage.describe()).raw.pendingActivities?.length ?? 0) === 0);
    const held = (await stage.query<P>('progress')).iteration;
    assert.equal(held % 5, 0, `held at a commit (ckptEvery 5), not at ${held}`);
    await new Promise((r) => setTimeout(r, 4000));
    const p = await stage.query<P>('progress');
    assert.equal(p.kind, 'rl');
    assert.equal(p.iteration, held, 'no iteration may start while paused');
    assert.equal(((await stage.describe()).raw.pendingActivities ?? []).length, 0, 'no activity scheduled while paused');
    assert.ok(held < p.total);
    await stage.signal('resume');
    const r = (await h.result()) as PipelineResult;
    assert.equal(r.results.stage1.checkpoint?.step, 30);
  } finally {
    await c.close();
    await w.stop();
  }
});

test('pause survives continue-as-new: a stage that continues-as-new every commit window holds while paused and ends byte-identical to one that never does', async () => {
  const w = await inProcessWorker();
  const c = await client();
  const base = uid('can-base');
  const runId = uid('can');
  // A commit every iteration: ten windows of one iteration each.
  const stage1 = { iterations: 10, ckptEvery: 1 };
  try {
    await (await start(c.client, base, { overrides: { nodes: { stage1 } } })).result();
    // 20 events is about one window: the stage continues-as-new after (nearly) every one.
    const h = await start(c.client, runId, { overrides: { maxHistoryEvents: 20, nodes: { stage1 } } });
    const stage = c.client.workflow.getHandle(`${runId}/stage1`);
    type P = { iteration: number; paused: boolean };
    await waitFor('stage1 running', async () => ((await stage.query<P>('progress').catch(() => null))?.iteration ?? -1) >= 2);
    const firstRun = (await stage.describe()).runId;
    await stage.signal('pause');
    await waitFor('paused', async () => (await stage.query<P>('progress')).paused);
    // The window in flight finishes; the run may continue-as-new, paused: nothing is scheduled.
    await waitFor('the window in flight to end', async () => {
      const d = await stage.describe();
      return d.status.name === 'RUNNING' && (await stage.query<P>('progress')).paused && (d.raw.pendingActivities?.length ?? 0) === 0;
    });
    const held = (await stage.query<P>('progress')).iteration;
    await new Promise((r) => setTimeout(r, 4000));
    const p = await stage.query<P>('progress');
    assert.equal(p.paused, true, 'the pause is carried into the new run');
    assert.equal(p.iteration, held, 'no iteration may start while paused, across continue-as-new');
    assert.ok(held < stage1.iterations);
    await stage.signal('resume');
    const r = (await h.result()) as PipelineResult;
    assert.equal(r.results.stage1.checkpoint?.step, stage1.iterations);
    assert.notEqual((await stage.describe()).runId, firstRun, 'the stage continued-as-new');
    const runs = execFileSync(
      path.join(ROOT, 'infra', 'bin', 'temporal'),
      [
        'workflow',
        'list',
        '--query',
        `WorkflowId = '${runId}/stage1'`,
        '--address',
        `127.0.0.1:${process.env.E3_TEMPORAL_PORT}`,
        '-o',
        'json',
      ],
      { encoding: 'utf8' },
    );
    assert.ok(
      (JSON.parse(runs) as unknown[]).length >= 4,
      `the stage ran as several workflow runs (${(JSON.parse(runs) as unknown[]).length})`,
    );
    await assertSameFinals(base, runId);
  } finally {
    await c.close();
    await w.stop();
  }
});

test('e3 cancel stops a run within seconds and frees its session; commits stay; e3 resume ends byte-identical to an uninterrupted run', async () => {
  const w = await inProcessWorker();
  const c = await client();
  const base = uid('cancel-base');
  const runId = uid('cancel');
  // Long enough that stage 1 is still running when the CLI (a new process) asks to cancel.
  const stage1 = { iterations: 60, ckptEvery: 4 };
  try {
    await (await start(c.client, base, { overrides: { nodes: { stage1 } } })).result();
    await start(c.client, runId, { overrides: { nodes: { stage1 } } });
    const stage = c.client.workflow.getHandle(`${runId}/stage1`);
    await waitFor(
      'stage1 past its first commit',
      async () => ((await stage.query<{ iteration: number }>('progress').catch(() => null))?.iteration ?? -1) >= 5,
    );
    // Held mid-stage (paused at its next commit, session open), so the cancel finds it running
    // however long the CLI takes to start.
    await stage.signal('pause');
    await waitFor('stage1 paused', async () => (await stage.query<{ paused: boolean }>('progress')).paused);
    const r = await e3(['cancel', runId]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /cancell?ed after [\d.]+ s; its committed checkpoints are kept/);
    assert.ok(r.ms < 30_000, `cancel took ${r.ms} ms`);
    assert.equal((await c.client.workflow.getHandle(runId).describe()).status.name, 'CANCELLED');
    const d = await stage.describe();
    assert.equal(d.status.name, 'CANCELLED');
    assert.equal(d.raw.pendingActivities?.length ?? 0, 0, 'no activity of the cancelled stage is still pending');
    // The session was closed on the worker, not left for idle eviction.
    const hist = (await stage.fetchHistory()).events ?? [];
    const closes = hist.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'closeTrainer');
    assert.ok(closes.length >= 1, 'closeTrainer scheduled after the cancellation');
    // The commits before the cancellation are intact and loadable.
    const kept = await loadCheckpoint(store(), runId, 'stage1');
    assert.ok(
      kept && kept.manifest.step >= 4 && kept.manifest.step % 4 === 0,
      `a committed stage1 checkpoint (step ${kept?.manifest.step})`,
    );
    const res = await e3(['resume', runId]);
    assert.equal(res.code, 0, res.stderr);
    await assertSameFinals(base, runId);
  } finally {
    await c.close();
    await w.stop();
  }
});
