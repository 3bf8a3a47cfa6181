/**
 * One-step off-policy rollouts against on-policy, in wall time, with a separate rollout worker
 * (docs/ARCHITECTURE.md "Off-policy rollouts"): the demo's RL stage 1 alone (from its base at
 * budget 128, `--iterations` iterations, `rolloutParts: 1`) on three worker processes: a
 * general worker (workflows, `--queues general`), a trainer that takes no parts (`--queues
 * trainer-only`, 1 compute thread) and a rollout worker (`--queues rollout`, 1 thread).
 * On-policy, each iteration samples, then updates; off-policy, iteration t + 1's part samples
 * on the rollout worker while the trainer updates on t. For each repetition one run per mode,
 * in turn (drift on a shared host hits both alike). Prints per mode the stage's wall time (its
 * node workflow), its iterations' (first iteration activity scheduled to the last completed)
 * and the ratio to on-policy, and the final weights (they differ between the modes: the
 * policy that sampled differs; within a mode they must be equal).
 * Never fails on speed; exits 1 when a mode's repetitions end with different weights.
 *
 *   npx tsx bench/offpolicy.bench.ts [--iterations 6] [--reps 2] [--budget 128]
 *
 * Starts its own servers (E3_OFFPOLICY_TEMPORAL_PORT / _TEMPORAL_UI_PORT / _S3_PORT /
 * _DATA_DIR; defaults 47733 / 48733 / 47370 / .e3/offpolicy) and its own workers; stops
 * exactly what it started.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { awaitPipeline, finalCheckpoints, runWithOwnServers, startPipeline, temporalClient } from '../test/chaos';
import { ObjectStore, dataDir } from '../storage/store';
import { demoStage1Overrides, stageTimes } from './demoStage';
import { startLayout, stopLayout } from './layout';
import type { Layout } from './layout';

const arg = (flag: string, dflt: string) => {
  const i = process.argv.indexOf(flag);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
};
const iterations = Number(arg('--iterations', '6'));
const reps = Number(arg('--reps', '2'));
const budget = Number(arg('--budget', '128'));

const LAYOUT: Layout = {
  name: 'offpolicy',
  what: 'general worker + trainer-only (1 thread) + rollout worker (1 thread)',
  workers: [
    { role: 'general', queues: 'general', threads: 1 },
    { role: 'trainer', queues: 'trainer-only', threads: 1 },
    { role: 'rollout', queues: 'rollout', threads: 1 },
  ],
};
const MODES = [
  { name: 'on-policy', offPolicy: undefined },
  { name: 'off-policy (1 step)', offPolicy: 1 as const },
];

runWithOwnServers('offpolicy', { temporal: 47733, ui: 48733, s3: 47370 }, async () => {
  const workers = await startLayout(LAYOUT, path.join(dataDir(), 'bench-logs'));
  const c = await temporalClient();
  const store = ObjectStore.fromEnv();
  const rows: Array<{ mode: string; stageS: number; iterS: number; weights: string }> = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const m of MODES) {
        const runId = `offp-${m.offPolicy ? 'off' : 'on'}-r${rep}`;
        const overrides = demoStage1Overrides({ budget, iterations, rolloutParts: 1, offPolicy: m.offPolicy });
        await startPipeline(c.client, runId, { config: 'demo', overrides });
        await awaitPipeline(c.client, runId, 3_600_000);
        const t = await stageTimes(c.client, runId);
        const weights = (await finalCheckpoints(store, runId, ['stage1'])).stage1.weights;
        rows.push({ mode: m.name, ...t, weights });
        console.log(`${runId}: stage ${t.stageS.toFixed(1)} s, iterations ${t.iterS.toFixed(1)} s, weights ${weights.slice(0, 12)}`);
      }
    }
  } finally {
    await c.close();
    await stopLayout(workers);
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const on = rows.filter((r) => r.mode === MODES[0].name);
  const ref = { stage: mean(on.map((r) => r.stageS)), iter: mean(on.map((r) => r.iterS)) };
  const load = os.loadavg();
  console.log(
    `\ndemo stage1, ${iterations} iterations at budget ${budget}, rolloutParts 1, ${LAYOUT.what}; ${reps} repetitions (means); load ${load.map((x) => x.toFixed(1)).join(' ')}`,
  );
  console.log('mode                  stage s   x      iterations s   x      weights (equal over repetitions)');
  let same = true;
  for (const m of MODES) {
    const rs = rows.filter((r) => r.mode === m.name);
    const st = mean(rs.map((r) => r.stageS));
    const it = mean(rs.map((r) => r.iterS));
    const eq = rs.every((r) => r.weights === rs[0].weights);
    same &&= eq;
    console.log(
      `${m.name.padEnd(21)} ${st.toFixed(1).padStart(7)}   ${(st / ref.stage).toFixed(3)}  ${it.toFixed(1).padStart(12)}   ${(it / ref.iter).toFixed(3)}  ${rs[0].weights.slice(0, 12)} (${eq ? 'yes' : 'NO'})`,
    );
  }
  return same ? 0 : 1;
});
