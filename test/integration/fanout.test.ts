/**
 * Rollout fan-out (docs/ARCHITECTURE.md "Rollout fan-out") on real servers and real worker
 * processes: the tiny DAG with its RL stages' rollouts in parts (stage1 in 2, stage2 in 3)
 * ends with the same final weights and optimiser bytes on 1, 2 and 3 workers as the
 * single-activity path; and a rollout worker SIGKILLed mid-part costs only that part, run
 * again on another worker within its heartbeat window, with the same bytes at the end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Client } from '@temporalio/client';
import { WorkerPool, awaitPipeline, finalCheckpoints, startPipeline, temporalClient, trainingNodes } from '../chaos';
import type { NodeFinal } from '../chaos';
import { ROOT, store, uid } from './env';
import { start, waitFor } from './procs';

const FANNED = { nodes: { stage1: { rolloutParts: 2 }, stage2: { rolloutParts: 3 } } };
const RL = ['stage1', 'stage2'];

/** The tiny run's final checkpoints on the single-activity path (the first test sets it). */
let baseline: Record<string, NodeFinal> | undefined;

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

/** Every rolloutPart of the run's RL nodes as its history records it (the attempt that completed), and how many updates each iteration applied. */
async function partsOf(c: Client, runId: string): Promise<{ parts: PartRun[]; updates: Record<string, number> }> {
  const parts: PartRun[] = [];
  const updates: Record<string, number> = {};
  for (const node of RL) {
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
      const done = e.activityTaskCompletedEventAttributes;
      const upd = done ? scheduled.get(String(done.scheduledEventId)) : undefined;
      if (upd?.type === 'rlIterationFromParts') {
        const k = `${node}@${String(upd.args[1])}`;
        updates[k] = (updates[k] ?? 0) + 1;
      }
    }
  }
  return { parts, updates };
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
  'fanned-out rollouts on 1, 2 and 3 worker processes: final weights and optimiser state identical to the single-activity path',
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
      for (const [k, id] of Object.entries({ w1: ids.w1, w2: ids.w2, w3: ids.w3 })) {
        const got = await finalCheckpoints(s, id, nodes);
        for (const n of nodes) {
          assert.equal(got[n].step, baseline[n].step, `${k} ${n}: final step`);
          assert.equal(got[n].weights, baseline[n].weights, `${k} ${n}: weights.bin differs from the single-activity run`);
          assert.equal(got[n].optim, baseline[n].optim, `${k} ${n}: optim.bin differs from the single-activity run`);
        }
        const { parts, updates } = await partsOf(c.client, id);
        // stage1: 4 iterations x 2 parts; stage2: 2 iterations x 3 parts; one update per iteration.
        assert.equal(parts.length, 4 * 2 + 2 * 3, `${k}: rollout parts run`);
        assert.equal(Object.keys(updates).length, 6, `${k}: iterations updated from parts`);
        assert.ok(
          Object.values(updates).every((n) => n === 1),
          `${k}: an iteration updated twice: ${JSON.stringify(updates)}`,
        );
        const workersSeen = new Set(parts.map((p) => p.identity)).size;
        console.log(`${k}: ${parts.length} parts on ${workersSeen} worker(s)`);
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

test(
  'a rollout worker SIGKILLed mid-part: the part runs again on another worker within its heartbeat window; nothing applied twice; the same bytes',
  { timeout: 1_200_000 },
  async () => {
    assert.ok(baseline, 'the first test (the single-activity run) did not finish');
    const nodes = trainingNodes('tiny');
    const c = await temporalClient();
    const runId = uid('fan-kill');
    const pool = new WorkerPool(path.join(process.env.E3_DATA_DIR!, 'fanout-kill-logs'), 1);
    const slow = start(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test', 'integration', 'rolloutworker.ts')], process.env);
    try {
      await pool.start();
      await waitFor('the slow rollout worker to poll', 180_000, async () => (/polling e3-rollout/.test(slow.output()) ? true : undefined));
      await startPipeline(c.client, runId, { config: 'tiny', overrides: FANNED });
      const identity = `${slow.pid}@`;
      // The first part the slow worker starts (each of its sampling jobs blocks 4 s first).
      const victim = await waitFor('a rollout part started on the slow worker', 600_000, async () => {
        for (const n of RL) {
          const d = await c.client.workflow
            .getHandle(`${runId}/${n}`)
            .describe()
            .catch(() => undefined);
          const p = d?.raw.pendingActivities?.find(
            (a) => a.activityType?.name === 'rolloutPart' && (a.lastWorkerIdentity ?? '').startsWith(identity) && String(a.state) === '2',
          );
          if (p) return { node: n, activityId: p.activityId ?? '' };
        }
        return undefined;
      });
      process.kill(slow.pid, 'SIGKILL');
      const killedAt = Date.now();
      await slow.exited;
      await awaitPipeline(c.client, runId, 900_000);
      const got = await finalCheckpoints(store(), runId, nodes);
      for (const n of nodes) {
        assert.equal(got[n].weights, baseline[n].weights, `${n}: weights.bin differs from the uninterrupted run`);
        assert.equal(got[n].optim, baseline[n].optim, `${n}: optim.bin differs from the uninterrupted run`);
      }
      const { parts, updates } = await partsOf(c.client, runId);
      assert.ok(Object.values(updates).every((n) => n === 1) && Object.keys(updates).length === 6, `updates: ${JSON.stringify(updates)}`);
      const again = parts.find((p) => p.node === victim.node && p.attempt > 1);
      assert.ok(again, `no part of ${victim.node} ran a second attempt: ${JSON.stringify(parts)}`);
      assert.ok(!again.identity.startsWith(identity), 'the retry ran on the killed worker');
      // Heartbeat window 10 s, then the retry's first backoff (1 s); slack for a loaded machine.
      const after = (again.startedAt - killedAt) / 1000;
      console.log(
        `killed the rollout worker mid-part (${victim.node}); the part started again on ${again.identity} ${after.toFixed(1)} s later`,
      );
      assert.ok(after < 20, `the part started again ${after} s after the kill`);
    } finally {
      await slow.stop(5000);
      await pool.stop();
      await c.close();
    }
  },
);
