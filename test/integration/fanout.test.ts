/**
 * Rollout and evaluation fan-out (docs/ARCHITECTURE.md "Rollout fan-out", "Evaluation
 * fan-out") on real servers and real worker processes: the tiny DAG with its RL stages'
 * rollouts in parts (stage1 in 2, stage2 in 3) and its select-budget and eval nodes' problems
 * in parts (select in 4, eval in 3) ends with the same final weights and optimiser bytes, the
 * same select and eval results, the same stored evaluation chunks and the same report data
 * on 1, 2 and 3 workers as the single-activity path; and rollout workers SIGKILLed mid-part
 * (a rollout part, then an evaluation part) cost only that part, run again on another worker
 * within its heartbeat window, with the same bytes at the end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Client } from '@temporalio/client';
import { WorkerPool, awaitPipeline, finalCheckpoints, startPipeline, temporalClient, trainingNodes } from '../chaos';
import type { NodeFinal } from '../chaos';
import { keys } from '../../storage/layout';
import { sha256Hex } from '../../storage/store';
import type { ObjectStore } from '../../storage/store';
import { ROOT, store, uid } from './env';
import { start, waitFor } from './procs';

const FANNED = { nodes: { stage1: { rolloutParts: 2 }, stage2: { rolloutParts: 3 }, select: { parts: 4 }, eval: { parts: 3 } } };
const RL = ['stage1', 'stage2'];
const EVALS = ['select', 'eval'];

/** The tiny run's final checkpoints and evaluation outputs on the single-activity path (the first test sets them). */
let baseline: Record<string, NodeFinal> | undefined;
let baselineEvals: EvalOutputs | undefined;

/**
 * What a run's evaluation and select-budget nodes leave, and what its report read from them:
 * their results (metrics, the chosen budget, any warning), their stored chunks (the per-problem
 * counts the report and bench/beyond.ts read) by sha256, the report's metrics.jsonl and charts
 * by sha256, and the report node's metrics.
 */
interface EvalOutputs {
  results: Record<string, unknown>;
  objects: Record<string, string>;
  report: unknown;
}

async function evalOutputs(s: ObjectStore, runId: string): Promise<EvalOutputs> {
  const results: Record<string, unknown> = {};
  const objects: Record<string, string> = {};
  const add = async (prefix: string) => {
    for (const key of await s.list(prefix)) objects[key.slice(`runs/${runId}/`.length)] = sha256Hex(await s.get(key));
  };
  for (const n of EVALS) {
    results[n] = await s.getJson(keys.result(runId, n));
    await add(`runs/${runId}/${n}/eval/`);
  }
  await add(`runs/${runId}/report/`);
  // The page names the run and shows its config (which holds the parts); the report node's result.json names the page's key.
  delete objects['report/index.html'];
  delete objects['report/result.json'];
  objects['metrics.jsonl'] = sha256Hex(await s.get(keys.metrics(runId)));
  const report = await s.getJson<{ metrics?: unknown }>(keys.result(runId, 'report'));
  return { results, objects, report: report.metrics };
}

/** The run's evaluation outputs equal the single-activity run's. */
function sameEvals(got: EvalOutputs, what: string): void {
  assert.ok(baselineEvals);
  assert.deepEqual(got.results, baselineEvals.results, `${what}: select / eval results differ from the single-activity run`);
  assert.ok(Object.keys(got.objects).filter((k) => k.includes('/eval/')).length >= 2, `${what}: no stored chunks`);
  assert.deepEqual(got.objects, baselineEvals.objects, `${what}: stored chunks or report data differ from the single-activity run`);
  assert.deepEqual(got.report, baselineEvals.report, `${what}: report metrics differ`);
}

interface PartRun {
  node: string;
  t: number;
  part: number;
  identity: string;
  attempt: number;
  startedAt: number;
}

const ms = (ts: { seconds?: unknown; nanos?: number | null } | null | undefined) =>
  Number(ts?.seconds ?? 0) * 1000 + Math.floor((ts?.nanos ?? 0) / 1e6);

/**
 * Every rolloutPart of the run's RL nodes and every evalPart of its evaluation nodes as their
 * histories record them (the attempt that completed), and how many updates each iteration applied.
 */
async function partsOf(
  c: Client,
  runId: string,
): Promise<{ parts: PartRun[]; evalParts: PartRun[]; updates: Record<string, number>; timedOut: Set<string> }> {
  const parts: PartRun[] = [];
  const evalParts: PartRun[] = [];
  const updates: Record<string, number> = {};
  // updates whose activity timed out (a missed heartbeat window on a loaded host): the session
  // re-opens from the last commit, so such an update may have landed without completing
  const timedOut = new Set<string>();
  for (const node of [...RL, ...EVALS]) {
    const events = (await c.workflow.getHandle(`${runId}/${node}`).fetchHistory()).events ?? [];
    const scheduled = new Map<string, { type: string; args: unknown[] }>();
    for (const e of events) {
      const s = e.activityTaskScheduledEventAttributes;
      if (s)
        scheduled.set(String(e.eventId), {
          type: s.activityType?.name ?? '',
          args: (s.input?.payloads ?? []).map((p) => (p.data ? JSON.parse(Buffer.from(p.data).toString('utf8')) : undefined)),
        });
      const st = e.activityTaskStartedEventAttributes;
      if (st && scheduled.get(String(st.scheduledEventId))?.type === 'rolloutPart') {
        const a = scheduled.get(String(st.scheduledEventId))!.args[0] as { t: number; part: number };
        parts.push({ node, t: a.t, part: a.part, identity: st.identity ?? '', attempt: st.attempt ?? 1, startedAt: ms(e.eventTime) });
      }
      if (st && scheduled.get(String(st.scheduledEventId))?.type === 'evalPart') {
        const a = scheduled.get(String(st.scheduledEventId))!.args[0] as { part: number };
        evalParts.push({ node, t: 0, part: a.part, identity: st.identity ?? '', attempt: st.attempt ?? 1, startedAt: ms(e.eventTime) });
      }
      const done = e.activityTaskCompletedEventAttributes;
      const upd = done ? scheduled.get(String(done.scheduledEventId)) : undefined;
      if (upd?.type === 'rlIterationFromParts') {
        const k = `${node}@${String(upd.args[1])}`;
        updates[k] = (updates[k] ?? 0) + 1;
      }
      const late = e.activityTaskTimedOutEventAttributes;
      const lateUpd = late ? scheduled.get(String(late.scheduledEventId)) : undefined;
      if (lateUpd?.type === 'rlIterationFromParts') timedOut.add(`${node}@${String(lateUpd.args[1])}`);
    }
  }
  return { parts, evalParts, updates, timedOut };
}

/**
 * Save a run's histories (the pipeline and each node) as `<type>.json` under
 * E3_DATA_DIR/histories-fanout (test/fixtures/histories takes them for replay), and return the
 * largest payload in them: parts travel by object key, not through Temporal.
 */
function saveHistories(runId: string): number {
  const dir = path.join(process.env.E3_DATA_DIR!, 'histories-fanout');
  mkdirSync(dir, { recursive: true });
  let largest = 0;
  const payloads = (x: unknown): number => {
    if (x === null || typeof x !== 'object') return 0;
    const o = x as Record<string, unknown>;
    let best = typeof o.data === 'string' && 'metadata' in o ? Buffer.from(o.data, 'base64').length : 0;
    for (const v of Object.values(o)) best = Math.max(best, payloads(v));
    return best;
  };
  for (const type of ['pipeline', 'warmstart', 'stage1', 'select', 'stage2', 'eval', 'report']) {
    const id = type === 'pipeline' ? runId : `${runId}/${type}`;
    const h = execFileSync(
      path.join(ROOT, 'infra', 'bin', 'temporal'),
      ['workflow', 'show', '-w', id, '--output', 'json', '--address', `127.0.0.1:${process.env.E3_TEMPORAL_PORT}`],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    largest = Math.max(largest, payloads(JSON.parse(h)));
    writeFileSync(path.join(dir, `${type}.json`), h);
  }
  return largest;
}

async function runOn(workers: number, runIds: Array<{ id: string; overrides: Record<string, unknown> }>, c: Client): Promise<void> {
  const pool = new WorkerPool(path.join(process.env.E3_DATA_DIR!, `fanout-${workers}-logs`), workers);
  try {
    await pool.start();
    for (const r of runIds) await startPipeline(c, r.id, { config: 'tiny', overrides: r.overrides });
    await Promise.all(runIds.map((r) => awaitPipeline(c, r.id, 900_000)));
  } finally {
    await pool.stop();
  }
}

test(
  'fanned-out rollouts and evaluations on 1, 2 and 3 worker processes: final weights, optimiser state, select and eval results, stored chunks and report data identical to the single-activity path',
  { timeout: 2_400_000 },
  async () => {
    const nodes = trainingNodes('tiny');
    const c = await temporalClient();
    const ids = { single: uid('fan-single'), w1: uid('fan-w1'), w2: uid('fan-w2'), w3: uid('fan-w3') };
    try {
      // One worker runs the single-activity run and the fanned one side by side (its one session slot in turn).
      await runOn(
        1,
        [
          { id: ids.single, overrides: {} },
          { id: ids.w1, overrides: FANNED },
        ],
        c.client,
      );
      await runOn(2, [{ id: ids.w2, overrides: FANNED }], c.client);
      await runOn(3, [{ id: ids.w3, overrides: FANNED }], c.client);
      const s = store();
      baseline = await finalCheckpoints(s, ids.single, nodes);
      baselineEvals = await evalOutputs(s, ids.single);
      for (const [k, id] of Object.entries({ w1: ids.w1, w2: ids.w2, w3: ids.w3 })) {
        const got = await finalCheckpoints(s, id, nodes);
        for (const n of nodes) {
          assert.equal(got[n].step, baseline[n].step, `${k} ${n}: final step`);
          assert.equal(got[n].weights, baseline[n].weights, `${k} ${n}: weights.bin differs from the single-activity run`);
          assert.equal(got[n].optim, baseline[n].optim, `${k} ${n}: optim.bin differs from the single-activity run`);
        }
        sameEvals(await evalOutputs(s, id), k);
        const { parts, evalParts, updates, timedOut } = await partsOf(c.client, id);
        // stage1: 4 iterations x 2 parts; stage2: 2 iterations x 3 parts; one update per iteration.
        assert.equal(parts.length, 4 * 2 + 2 * 3, `${k}: rollout parts run`);
        // select in 4 parts, eval in 3.
        assert.equal(evalParts.length, 4 + 3, `${k}: evaluation parts run`);
        // every iteration's update completed, or timed out after its commit and was not redone
        // (the bytes above equal the single-activity run's, so none was lost)
        assert.equal(new Set([...Object.keys(updates), ...timedOut]).size, 6, `${k}: iterations updated from parts`);
        assert.ok(
          Object.values(updates).every((n) => n === 1),
          `${k}: an iteration updated twice: ${JSON.stringify(updates)}`,
        );
        const workersSeen = new Set(parts.map((p) => p.identity)).size;
        const evalWorkers = new Set(evalParts.map((p) => p.identity)).size;
        console.log(
          `${k}: ${parts.length} rollout parts on ${workersSeen} worker(s), ${evalParts.length} evaluation parts on ${evalWorkers}`,
        );
        if (k === 'w1') assert.equal(workersSeen, 1);
        else assert.ok(workersSeen >= 2, `${k}: every part ran on one worker (${[...new Set(parts.map((p) => p.identity))]})`);
      }
      const largest = saveHistories(ids.w2);
      assert.ok(largest > 0 && largest < 64 * 1024, `largest payload ${largest} bytes`);
      // The policies were published content-addressed, once each.
      const published = await s.list(`runs/${ids.w1}/policies/`);
      assert.ok(published.length >= 6 && published.every((key) => /\/[0-9a-f]{64}\.e3w$/.test(key)), published.join(', '));
    } finally {
      await c.close();
    }
  },
);

/** The first activity of `type` that the worker `identity` (pid@) is running in one of `nodes` of the run (a pending, started attempt). */
async function startedOn(c: Client, runId: string, nodes: string[], type: string, identity: string) {
  for (const n of nodes) {
    const d = await c.workflow
      .getHandle(`${runId}/${n}`)
      .describe()
      .catch(() => undefined);
    const p = d?.raw.pendingActivities?.find(
      (a) => a.activityType?.name === type && (a.lastWorkerIdentity ?? '').startsWith(identity) && String(a.state) === '2',
    );
    if (p) return { node: n, activityId: p.activityId ?? '' };
  }
  return undefined;
}

test(
  'rollout workers SIGKILLed mid-part (a rollout part, then an evaluation part): each part runs again on another worker within its heartbeat window; nothing applied twice; the same bytes',
  { timeout: 1_200_000 },
  async () => {
    assert.ok(baseline && baselineEvals, 'the first test (the single-activity run) did not finish');
    const nodes = trainingNodes('tiny');
    const c = await temporalClient();
    const runId = uid('fan-kill');
    const pool = new WorkerPool(path.join(process.env.E3_DATA_DIR!, 'fanout-kill-logs'), 1);
    const slowWorker = () =>
      start(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test', 'integration', 'rolloutworker.ts')], process.env);
    // The first is killed in its first rollout part, the second in its first evaluation part.
    const slow = [slowWorker(), slowWorker()];
    try {
      await pool.start();
      for (const w of slow)
        await waitFor('the slow rollout workers to poll', 180_000, async () => (/polling e3-rollout/.test(w.output()) ? true : undefined));
      await startPipeline(c.client, runId, { config: 'tiny', overrides: FANNED });
      // The first part each slow worker starts (each of its sampling jobs blocks 4 s first).
      const identity = `${slow[0].pid}@`;
      const victim = await waitFor('a rollout part started on the first slow worker', 600_000, () =>
        startedOn(c.client, runId, RL, 'rolloutPart', identity),
      );
      process.kill(slow[0].pid, 'SIGKILL');
      const killedAt = Date.now();
      await slow[0].exited;
      const evalIdentity = `${slow[1].pid}@`;
      const evalVictim = await waitFor('an evaluation part started on the second slow worker', 600_000, () =>
        startedOn(c.client, runId, EVALS, 'evalPart', evalIdentity),
      );
      process.kill(slow[1].pid, 'SIGKILL');
      const evalKilledAt = Date.now();
      await slow[1].exited;
      await awaitPipeline(c.client, runId, 900_000);
      const got = await finalCheckpoints(store(), runId, nodes);
      for (const n of nodes) {
        assert.equal(got[n].weights, baseline[n].weights, `${n}: weights.bin differs from the uninterrupted run`);
        assert.equal(got[n].optim, baseline[n].optim, `${n}: optim.bin differs from the uninterrupted run`);
      }
      sameEvals(await evalOutputs(store(), runId), 'killed workers');
      const { parts, evalParts, updates, timedOut } = await partsOf(c.client, runId);
      assert.ok(
        Object.values(updates).every((n) => n === 1) && new Set([...Object.keys(updates), ...timedOut]).size === 6,
        `updates: ${JSON.stringify(updates)}, timed out: ${[...timedOut]}`,
      );
      const again = parts.find((p) => p.node === victim.node && p.attempt > 1);
      assert.ok(again, `no part of ${victim.node} ran a second attempt: ${JSON.stringify(parts)}`);
      assert.ok(!again.identity.startsWith(identity), 'the retry ran on the killed worker');
      // Heartbeat window 10 s, then the retry's first backoff (1 s), then a free slot on another
      // worker: far below the part's start-to-close timeout (30 min), which would otherwise end it.
      const after = (again.startedAt - killedAt) / 1000;
      console.log(
        `killed the rollout worker mid-part (${victim.node}); the part started again on ${again.identity} ${after.toFixed(1)} s later`,
      );
      assert.ok(after < 60, `the part started again ${after} s after the kill`);
      assert.equal(evalParts.length, 4 + 3, 'evaluation parts completed (one attempt each completes)');
      const evalAgain = evalParts.find((p) => p.node === evalVictim.node && p.attempt > 1);
      assert.ok(evalAgain, `no evaluation part of ${evalVictim.node} ran a second attempt: ${JSON.stringify(evalParts)}`);
      assert.ok(!evalAgain.identity.startsWith(evalIdentity), 'the evaluation part retry ran on the killed worker');
      const evalAfter = (evalAgain.startedAt - evalKilledAt) / 1000;
      console.log(
        `killed the rollout worker mid evaluation part (${evalVictim.node}); the part started again on ${evalAgain.identity} ${evalAfter.toFixed(1)} s later`,
      );
      assert.ok(evalAfter < 60, `the evaluation part started again ${evalAfter} s after the kill`);
    } finally {
      for (const w of slow) await w.stop(5000);
      await pool.stop();
      await c.close();
    }
  },
);
