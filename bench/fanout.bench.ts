/**
 * The demo's RL stage 1 on one worker, today's single-activity path against the rollout
 * fan-out (docs/ARCHITECTURE.md "Rollout fan-out"), side by side in one invocation: for each
 * repetition, one run per mode, in turn (so drift on a shared host hits every mode alike).
 * The stage starts from the demo's base at the budget Eq. 6.1 chose for it (128), without the
 * select-budget, evaluation and later nodes. Prints, per mode, the stage's wall time (its node
 * workflow, open to close) and its iterations' (first iteration activity scheduled to the last
 * one's completion), the ratio to the single-activity path, and whether the final weights
 * equal the single-activity run's. Never fails on speed; exits 1 when bytes differ.
 *
 *   npx tsx bench/fanout.bench.ts [--iterations 6] [--reps 2] [--parts 0,1,2] [--budget 128]
 *
 * `--parts 0` is the single-activity path (no rolloutParts). Starts its own servers
 * (E3_FANOUT_TEMPORAL_PORT / _TEMPORAL_UI_PORT / _S3_PORT / _DATA_DIR; defaults 47633 /
 * 48633 / 47270 / .e3/fanout) and stops exactly what it started.
 */
import * as path from 'node:path';
import { WorkerPool, awaitPipeline, finalCheckpoints, runWithOwnServers, startPipeline, temporalClient } from '../test/chaos';
import { ObjectStore, dataDir } from '../storage/store';
import { demoStage1Overrides, stageTimes } from './demoStage';

const arg = (flag: string, dflt: string) => {
  const i = process.argv.indexOf(flag);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
};
const iterations = Number(arg('--iterations', '6'));
const reps = Number(arg('--reps', '2'));
const modes = arg('--parts', '0,1,2').split(',').map(Number);
const budget = Number(arg('--budget', '128'));

const overrides = (parts: number) => demoStage1Overrides({ budget, iterations, rolloutParts: parts > 0 ? parts : undefined });

runWithOwnServers('fanout', { temporal: 47633, ui: 48633, s3: 47270 }, async () => {
  const pool = new WorkerPool(path.join(dataDir(), 'bench-logs'), 1);
  const c = await temporalClient();
  const store = ObjectStore.fromEnv();
  const rows: Array<{ parts: number; rep: number; stageS: number; iterS: number; weights: string }> = [];
  try {
    await pool.start();
    for (let rep = 0; rep < reps; rep++) {
      for (const parts of modes) {
        const runId = `fanout-p${parts}-r${rep}`;
        await startPipeline(c.client, runId, { config: 'demo', overrides: overrides(parts) });
        await awaitPipeline(c.client, runId, 3_600_000);
        const t = await stageTimes(c.client, runId);
        const weights = (await finalCheckpoints(store, runId, ['stage1'])).stage1.weights;
        rows.push({ parts, rep, ...t, weights });
        console.log(`${runId}: stage ${t.stageS.toFixed(1)} s, iterations ${t.iterS.toFixed(1)} s, weights ${weights.slice(0, 12)}`);
      }
    }
  } finally {
    await pool.stop();
    await c.close();
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const base = rows.filter((r) => r.parts === modes[0]);
  const ref = { stage: mean(base.map((r) => r.stageS)), iter: mean(base.map((r) => r.iterS)), weights: base[0].weights };
  console.log(`\ndemo stage1, ${iterations} iterations at budget ${budget}, one worker, ${reps} repetitions (means)`);
  console.log('mode                 stage s   x      iterations s   x      weights = first mode');
  let same = true;
  for (const parts of modes) {
    const rs = rows.filter((r) => r.parts === parts);
    const st = mean(rs.map((r) => r.stageS));
    const it = mean(rs.map((r) => r.iterS));
    const eq = rs.every((r) => r.weights === ref.weights);
    same &&= eq;
    const name = parts === 0 ? 'single activity' : `rolloutParts ${parts}`;
    console.log(
      `${name.padEnd(20)} ${st.toFixed(1).padStart(7)}   ${(st / ref.stage).toFixed(3)}  ${it.toFixed(1).padStart(12)}   ${(it / ref.iter).toFixed(3)}  ${eq ? 'yes' : 'NO'} (${rs[0].weights.slice(0, 12)})`,
    );
  }
  return same ? 0 : 1;
});
