/**
 * Every step is a pure function of (seed, node, step) and the committed state (docs/ARCHITECTURE.md
 * "One RL iteration"): two runs of the tiny config with the same seed and different run ids
 * end with byte-identical final checkpoints of every training node; another seed does not.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { WorkerPool, awaitPipeline, finalCheckpoints, startPipeline, temporalClient, trainingNodes } from '../chaos';
import { store, uid } from './env';

test('same seed, different run ids: identical final checkpoints; another seed: different ones', async () => {
  const nodes = trainingNodes('tiny');
  assert.deepEqual(nodes, ['warmstart', 'stage1', 'stage2']);
  const pool = new WorkerPool(path.join(process.env.E3_DATA_DIR!, 'determinism-logs'), 2);
  const c = await temporalClient();
  const ids = { a: uid('det-a'), b: uid('det-b'), c: uid('det-c') };
  try {
    await pool.start();
    // The three runs share the two workers at once: which worker (and process) runs which
    // step, and in what interleaving, must not matter.
    await startPipeline(c.client, ids.a, { config: 'tiny' });
    await startPipeline(c.client, ids.b, { config: 'tiny', overrides: { seed: 7 } });
    await startPipeline(c.client, ids.c, { config: 'tiny', overrides: { seed: 8 } });
    await Promise.all(Object.values(ids).map((id) => awaitPipeline(c.client, id, 600_000)));
    const s = store();
    const [a, b, other] = await Promise.all([ids.a, ids.b, ids.c].map((id) => finalCheckpoints(s, id, nodes)));
    for (const n of nodes) {
      assert.match(a[n].weights, /^[0-9a-f]{64}$/);
      assert.equal(b[n].step, a[n].step, `${n}: final step`);
      assert.equal(b[n].weights, a[n].weights, `${n}: weights.bin differs between two runs with seed 7`);
      assert.equal(b[n].optim, a[n].optim, `${n}: optim.bin differs between two runs with seed 7`);
      assert.equal(other[n].step, a[n].step, `${n}: final step (seed 8)`);
      assert.notEqual(other[n].weights, a[n].weights, `${n}: seed 8 gave the same weights as seed 7`);
    }
    // The recorded digests are those of the stored bytes (store.get checks both).
    const blob = await s.get(`runs/${ids.a}/stage2/ckpt/${String(a.stage2.step).padStart(6, '0')}/weights.bin`, a.stage2.weights);
    assert.ok(blob.length > 0);
  } finally {
    await pool.stop();
    await c.close();
  }
});
