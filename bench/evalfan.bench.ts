/**
 * A demo-size evaluation node on one worker, the single-activity path against the evaluation
 * fan-out (docs/ARCHITECTURE.md "Evaluation fan-out"), side by side in one invocation: for
 * each repetition, one run per mode, in turn (so drift on a shared host hits every mode
 * alike). The node is the demo's `eval-base` (64 problems x 8 samples to budget 512 on the
 * demo's evaluation engine, ONNX Runtime), evaluating the demo's base, without the other
 * nodes. Prints, per mode, the node's wall time (its workflow, open to close), the ratio to the
 * first mode, the host's 1-minute load average at the start and end of each run, and whether
 * the metrics and the stored chunks equal the first mode's. Never fails on speed; exits 1 when
 * bytes differ.
 *
 *   npx tsx bench/evalfan.bench.ts [--reps 1] [--parts 0,4] [--node eval-base]
 *
 * `--parts 0` is the single-activity path (no `parts`). Starts its own servers
 * (E3_EVALFAN_TEMPORAL_PORT / _TEMPORAL_UI_PORT / _S3_PORT / _DATA_DIR; defaults 47733 /
 * 48733 / 47370 / .e3/evalfan) and stops exactly what it started.
 */
import type { Client } from '@temporalio/client';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { WorkerPool, awaitPipeline, runWithOwnServers, startPipeline, temporalClient } from '../test/chaos';
import { loadConfig } from '../configs/load';
import { keys } from '../storage/layout';
import { ObjectStore, dataDir, sha256Hex } from '../storage/store';

const arg = (flag: string, dflt: string) => {
  const i = process.argv.indexOf(flag);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
};
const reps = Number(arg('--reps', '1'));
const modes = arg('--parts', '0,4').split(',').map(Number);
const nodeId = arg('--node', 'eval-base');

/** The demo with `nodeId` alone (no deps: it evaluates the demo's base), in `parts` parts (0: none). */
function overrides(parts: number) {
  const demo = loadConfig('demo');
  const nodes: Record<string, unknown> = Object.fromEntries(Object.keys(demo.nodes).map((id) => [id, null]));
  nodes[nodeId] = { deps: [], ...(parts > 0 ? { parts } : {}) };
  return { nodes };
}

/** The node workflow's wall seconds. */
async function nodeSeconds(c: Client, runId: string): Promise<number> {
  const d = await c.workflow.getHandle(`${runId}/${nodeId}`).describe();
  return (d.closeTime!.getTime() - d.startTime.getTime()) / 1000;
}

/** The node's metrics and its stored chunks, as one digest. */
async function outputs(store: ObjectStore, runId: string): Promise<string> {
  const result = await store.getJson<{ metrics?: Record<string, number> }>(keys.result(runId, nodeId));
  const chunks = await store.list(`runs/${runId}/${nodeId}/eval/`);
  const shas = await Promise.all(chunks.map(async (k) => `${k.slice(`runs/${runId}/`.length)}=${sha256Hex(await store.get(k))}`));
  return sha256Hex(Buffer.from(JSON.stringify(result.metrics) + '\n' + shas.join('\n')));
}

runWithOwnServers('evalfan', { temporal: 47733, ui: 48733, s3: 47370 }, async () => {
  const pool = new WorkerPool(path.join(dataDir(), 'bench-logs'), 1);
  const c = await temporalClient();
  const store = ObjectStore.fromEnv();
  const rows: Array<{ parts: number; rep: number; s: number; load: [number, number]; digest: string }> = [];
  try {
    await pool.start();
    for (let rep = 0; rep < reps; rep++) {
      for (const parts of modes) {
        const runId = `evalfan-p${parts}-r${rep}`;
        const load0 = loadavg()[0];
        await startPipeline(c.client, runId, { config: 'demo', overrides: overrides(parts) });
        await awaitPipeline(c.client, runId, 3_600_000);
        const s = await nodeSeconds(c.client, runId);
        const digest = await outputs(store, runId);
        rows.push({ parts, rep, s, load: [load0, loadavg()[0]], digest });
        console.log(
          `${runId}: ${nodeId} ${s.toFixed(1)} s, load ${load0.toFixed(1)} -> ${loadavg()[0].toFixed(1)}, outputs ${digest.slice(0, 12)}`,
        );
      }
    }
  } finally {
    await pool.stop();
    await c.close();
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const base = rows.filter((r) => r.parts === modes[0]);
  const ref = { s: mean(base.map((r) => r.s)), digest: base[0].digest };
  console.log(`\ndemo ${nodeId}, one worker, ${reps} repetition(s) (means)`);
  console.log('mode              node s   x      load (start -> end)   outputs = first mode');
  let same = true;
  for (const parts of modes) {
    const rs = rows.filter((r) => r.parts === parts);
    const s = mean(rs.map((r) => r.s));
    const eq = rs.every((r) => r.digest === ref.digest);
    same &&= eq;
    const name = parts === 0 ? 'single activity' : `parts ${parts}`;
    const load = rs.map((r) => `${r.load[0].toFixed(1)} -> ${r.load[1].toFixed(1)}`).join(', ');
    console.log(
      `${name.padEnd(16)} ${s.toFixed(1).padStart(7)}   ${(s / ref.s).toFixed(3)}  ${load.padEnd(20)}  ${eq ? 'yes' : 'NO'} (${rs[0].digest.slice(0, 12)})`,
    );
  }
  return same ? 0 : 1;
});
