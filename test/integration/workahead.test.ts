/**
 * Working ahead (activities/env.ts LiveSession.workingAhead): a trainer session trains its
 * next commit window while its workflow records the last one, and the window's activity then
 * only commits. The same run on a worker with E3_WORK_AHEAD=0 and on one with it on (the
 * default) ends with the same checkpoints, and the worker that works ahead says so for every
 * node with a second window; a stage whose session worked ahead while its workflow was paused
 * holds, then continues to the same bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { WorkerPool, awaitPipeline, finalCheckpoints, startPipeline, temporalClient, trainingNodes } from '../chaos';
import { ObjectStore, dataDir } from '../../storage/store';
import { pauseOnceStarted } from './env';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

test('a session that works ahead ends with the bytes of one that does not, paused or not', { timeout: 15 * 60_000 }, async () => {
  const suffix = `${process.pid}-${Date.now().toString(36)}`;
  // tiny: warm start 12 SFT steps committed every 6, stages of 4 iterations committed every 2.
  const input = { config: 'tiny', overrides: { seed: 11 } };
  const nodes = trainingNodes('tiny', { seed: 11 });
  const store = ObjectStore.fromEnv();
  const c = await temporalClient();
  const run = async (env: NodeJS.ProcessEnv, id: string, during?: (id: string) => Promise<void>) => {
    const pool = new WorkerPool(path.join(dataDir(), 'workahead-logs', id), 1, env);
    try {
      await pool.start();
      await startPipeline(c.client, id, input);
      await during?.(id);
      await awaitPipeline(c.client, id, 10 * 60_000);
      return { checkpoints: await finalCheckpoints(store, id, nodes), log: pool.logs() };
    } finally {
      await pool.stop();
    }
  };
  try {
    const off = await run({ E3_WORK_AHEAD: '0' }, `wa-off-${suffix}`);
    assert.doesNotMatch(off.log, /worked ahead|working ahead/, 'E3_WORK_AHEAD=0 never works ahead');

    const on = await run({}, `wa-on-${suffix}`);
    assert.deepEqual(on.checkpoints, off.checkpoints, 'working ahead changed the bytes');
    for (const n of nodes) assert.match(on.log, new RegExp(`session wa-on-${suffix}/${n} worked ahead`), `${n} did not work ahead`);
    assert.doesNotMatch(on.log, /working ahead .* stopped/, 'no work ahead failed');

    // Paused at stage 1's start: the pause holds at its first commit, while the session trains
    // the second window; continued, the window's activity finds it trained and commits.
    const paused = await run({}, `wa-pause-${suffix}`, async (id) => {
      const stage = c.client.workflow.getHandle(`${id}/stage1`);
      await pauseOnceStarted(c.client, `${id}/stage1`);
      type P = { iteration: number; paused: boolean };
      let p: P;
      do {
        await sleep(200);
        p = await stage.query<P>('progress');
      } while (p.iteration < 2);
      await sleep(2000); // what the session does while its workflow holds
      p = await stage.query<P>('progress');
      assert.equal(p.paused, true);
      assert.equal(p.iteration, 2, 'the pause holds at the first commit');
      await stage.signal('resume');
    });
    assert.deepEqual(paused.checkpoints, off.checkpoints, 'a pause over a session working ahead changed the bytes');
    assert.match(paused.log, new RegExp(`session wa-pause-${suffix}/stage1 worked ahead 2→4`));
  } finally {
    await c.close();
  }
});
