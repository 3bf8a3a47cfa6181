/**
 * Many runs at once with a fault (workers/admission.ts): 12 tiny runs started together on two
 * worker processes; one single run's time after they start (mid-way through their training,
 * which shares the trainer), the worker holding a trainer session is SIGKILLed and started
 * again. Every run completes with the final checkpoints of one run alone (same seed), and no
 * open waited by failing: no worker refused an open as busy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { WorkerPool, awaitPipeline, finalCheckpoints, startPipeline, temporalClient, trainerPid, trainingNodes } from '../chaos';
import { ObjectStore, dataDir } from '../../storage/store';

const RUNS = 12;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

test(
  "12 runs together, the session holder killed and restarted mid-way: every run ends with the single run's bytes",
  { timeout: 40 * 60_000 },
  async () => {
    const suffix = `${process.pid}-${Date.now().toString(36)}`;
    const input = { config: 'tiny', overrides: { seed: 7 } };
    const nodes = trainingNodes('tiny', { seed: 7 });
    const pool = new WorkerPool(path.join(dataDir(), 'load-logs', suffix), 2);
    const store = ObjectStore.fromEnv();
    const c = await temporalClient();
    try {
      await pool.start();
      const single = `load-single-${suffix}`;
      const t0 = Date.now();
      await startPipeline(c.client, single, input);
      await awaitPipeline(c.client, single);
      const singleMs = Date.now() - t0;
      const want = await finalCheckpoints(store, single, nodes);

      const ids = Array.from({ length: RUNS }, (_, k) => `load-${k}-${suffix}`);
      const started = Date.now();
      await Promise.all(ids.map((id) => startPipeline(c.client, id, input)));
      const done = Promise.all(ids.map((id) => awaitPipeline(c.client, id, 35 * 60_000)));
      // Mid-way: the runs share the trainer, so their training takes several single runs' time
      // and they finish close together, after it. Once one single run's time has passed since
      // they started, kill the worker holding a session.
      let finished = 0;
      for (const id of ids)
        void awaitPipeline(c.client, id, 35 * 60_000).then(
          () => finished++,
          () => undefined,
        );
      while (Date.now() - started < singleMs && finished < RUNS) await sleep(250);
      let killed: { slot: number; pid: number } | undefined;
      while (!killed && finished < RUNS) {
        // All runs at once: a session lives only as long as its node's few commit windows.
        const pids = await Promise.all(ids.map((id) => trainerPid(c.client, id, nodes)));
        for (const pid of pids) {
          const slot = pid === undefined ? undefined : pool.slotOf(pid);
          if (pid !== undefined && slot !== undefined) {
            killed = { slot, pid };
            break;
          }
        }
        if (!killed) await sleep(250);
      }
      assert.ok(killed, 'no worker held a session while runs were left');
      await pool.kill(killed.slot);
      await sleep(1000);
      pool.spawn(killed.slot);
      console.log(
        `killed worker pid ${killed.pid} (slot ${killed.slot}) holding a session ${((Date.now() - started) / 1000).toFixed(1)} s after the runs started (a single run: ${(singleMs / 1000).toFixed(1)} s), with ${RUNS - finished} runs left; restarted`,
      );

      await done;
      for (const id of ids)
        assert.deepEqual(await finalCheckpoints(store, id, nodes), want, `run ${id} ended with other checkpoints than the single run`);
      // Waiting for a trainer is not a failure: no open was refused by a full worker.
      assert.doesNotMatch(pool.logs(), /is busy with session|keeping its free slot/);
    } finally {
      await pool.stop();
      await c.close();
    }
  },
);
