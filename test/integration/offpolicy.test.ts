/**
 * One-step off-policy rollouts (rl node `offPolicy: 1`; docs/ARCHITECTURE.md "Off-policy
 * rollouts"), through the real worker, store and Temporal. Checked against an independent
 * sampler: the rollout-part activity (the fan-out path) samples iteration t's rows from a
 * checkpoint's weights, and the off-policy run's stored rows of t must equal the ones sampled
 * from the policy at t − 1 (iteration 0's from the stage's first policy), not those from the
 * policy at t. A run terminated after a mid-stage commit and started again (the session
 * re-opens there and reads that iteration's rows from the store) ends with the uninterrupted
 * run's bytes, and so does one whose rollouts fan out to the rollout queue (the next
 * iteration's parts sampled while the update runs; after the re-open, from the policy the
 * commit records); the on-policy run of the same seed ends with other weights.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { createActivities } from '../../activities';
import { initBackend } from '../../ml/backend';
import type { GradedRollout } from '../../ml/rollouts';
import { readLatest } from '../../storage/checkpoints';
import { keys } from '../../storage/layout';
import { sha256Hex } from '../../storage/store';
import { awaitPipeline, finalCheckpoints, startPipeline, trainingNodes } from '../chaos';
import { client, historyJson, inProcessWorker, store, uid } from './env';

const ITERATIONS = 6;
const overrides = (offPolicy: boolean) => ({
  seed: 7,
  keepLast: ITERATIONS + 1,
  nodes: { stage1: { iterations: ITERATIONS, ckptEvery: 1, ...(offPolicy ? { offPolicy: 1 } : {}) } },
});

/** The overrides with stage 1's rollouts fanned out in `parts` parts (none: the trainer samples). */
const withParts = (o: ReturnType<typeof overrides>, parts?: number) =>
  parts ? { ...o, nodes: { stage1: { ...o.nodes.stage1, rolloutParts: parts } } } : o;

/** Terminate run `runId` once stage 1 has committed at least twice and before its end; the commit it was at. */
async function terminateMidStage(runId: string): Promise<number> {
  let at = 0;
  for (const end = Date.now() + 300_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
    at = (await readLatest(store(), runId, 'stage1').catch(() => null))?.step ?? 0;
    if (at >= 2) break;
  }
  await temporal.client.workflow.getHandle(runId).terminate('test: simulated crash mid-stage');
  assert.ok(at >= 2 && at < ITERATIONS, `stage1 was at commit ${at} when terminated: not mid-stage`);
  return at;
}

let worker: Awaited<ReturnType<typeof inProcessWorker>>;
let temporal: Awaited<ReturnType<typeof client>>;
let acts: ReturnType<typeof createActivities>;

before(async () => {
  worker = await inProcessWorker();
  temporal = await client();
  acts = createActivities({
    store: store(),
    queue: `offpolicy-${process.pid}`,
    backend: await initBackend(),
    reportDir: mkdtempSync(path.join(tmpdir(), 'e3-offpolicy-')),
    log: () => undefined,
  });
});

after(async () => {
  await temporal.close();
  await worker.stop();
});

/** A committed checkpoint's weights. */
async function weightsAt(runId: string, node: string, step?: number): Promise<Buffer> {
  const s = store();
  const at = step ?? (await readLatest(s, runId, node))!.step;
  return s.get(keys.ckpt(runId, node, at) + 'weights.bin');
}

/** Iteration t's rows of `node`, sampled by the rollout-part activity from `weights` (published under their sha). */
async function sampleFrom(runId: string, node: string, t: number, budget: number, weights: Buffer): Promise<GradedRollout[]> {
  const sha = sha256Hex(weights);
  await store().put(keys.policy(runId, sha), weights);
  const r = await acts.rolloutPart({ runId, nodeId: node, t, budget, part: 0, parts: 1, policy: sha });
  return (await store().getJson<{ graded: GradedRollout[] }>(r.key)).graded;
}

test(
  'off-policy rollouts: iteration t sampled from the policy at t - 1; resumed mid-stage, the same bytes; not the on-policy bytes',
  { timeout: 15 * 60_000 },
  async () => {
    const c = temporal.client;
    const nodes = trainingNodes('tiny', overrides(true));
    const a = uid('offp-a');
    await startPipeline(c, a, { config: 'tiny', overrides: overrides(true) });
    const ra = await awaitPipeline(c, a, 600_000);
    const budget = ra.results.stage1.budget!;
    const finals = await finalCheckpoints(store(), a, nodes);

    // The stored rows of iteration t against the rows sampled independently from θ_{t-1} and θ_t.
    const theta = async (k: number) => (k === 0 ? weightsAt(a, 'warmstart') : weightsAt(a, 'stage1', k));
    for (let t = 0; t < ITERATIONS; t++) {
      const stored = await store().getJson<GradedRollout[]>(keys.graded(a, 'stage1', t));
      const from = await sampleFrom(a, 'stage1', t, budget, await theta(Math.max(0, t - 1)));
      assert.deepEqual(stored, from, `iteration ${t}: the stored rows are not those sampled from the policy at ${Math.max(0, t - 1)}`);
      if (t >= 2) {
        const onPolicy = await sampleFrom(a, 'stage1', t, budget, await theta(t));
        assert.notDeepEqual(stored, onPolicy, `iteration ${t}: the stored rows are the on-policy ones`);
      }
    }

    // Terminated after a mid-stage commit and started again (the session re-opens there), on
    // the trainer's own sampling and fanned out to the rollout queue: the uninterrupted bytes.
    for (const parts of [undefined, 2]) {
      const b = uid(parts ? 'offp-fan' : 'offp-b');
      const input = { config: 'tiny', overrides: withParts(overrides(true), parts) };
      await startPipeline(c, b, input);
      const at = await terminateMidStage(b);
      await startPipeline(c, b, input);
      await awaitPipeline(c, b, 600_000);
      assert.deepEqual(
        await finalCheckpoints(store(), b, nodes),
        finals,
        `${parts ? `in ${parts} rollout parts, ` : ''}resumed at commit ${at}, the run ended with other bytes`,
      );
      // Replay fixtures of the off-policy fan-out (test/fixtures/histories: copied from here by hand).
      if (parts) {
        const dir = path.join(process.env.E3_DATA_DIR!, 'histories-offpolicy');
        mkdirSync(dir, { recursive: true });
        for (const n of ['pipeline', 'warmstart', 'stage1', 'select', 'stage2', 'eval', 'report'])
          writeFileSync(path.join(dir, `${n}.json`), historyJson(n === 'pipeline' ? b : `${b}/${n}`));
      }
    }

    // On-policy, the same seed: other weights from stage 1 on.
    const o = uid('offp-on');
    await startPipeline(c, o, { config: 'tiny', overrides: overrides(false) });
    await awaitPipeline(c, o, 600_000);
    const on = await finalCheckpoints(store(), o, nodes);
    assert.equal(on.warmstart.weights, finals.warmstart.weights);
    assert.notEqual(on.stage1.weights, finals.stage1.weights, 'off-policy rollouts left the stage-1 weights unchanged');
  },
);
