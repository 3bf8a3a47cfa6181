/**
 * `npm run cluster`: the tiny DAG with its RL stages' rollouts fanned out (stage1 in 2 parts,
 * stage2 in 2) on emulated hosts (test/cluster/harness.ts): two workers that can hold trainer
 * sessions (t0, t1: every queue) and two rollout workers (r0, r1: e3-rollout only), each in
 * its own network namespace, the servers in another. One uninterrupted run, then one run per
 * fault; each must end with the uninterrupted run's final weights and optimiser bytes. Prints
 * the table (fault, recovery seconds, recomputed work, bytes equal) and exits 1 when a run
 * differs, 2 when namespaces cannot be made here (with the reason).
 *
 *   npm run cluster -- [--seed 7] [--only <label substring>]
 *   npm run cluster -- --remove-stale   (what a SIGKILLed run left: its namespaces and their processes)
 *
 * Data (server files, worker logs) under E3_CLUSTER_DATA_DIR (default .e3/cluster).
 */
import { execSync } from 'node:child_process';
import * as path from 'node:path';
import { Cluster, ROOT, namespacesUnavailable, removeStale } from './harness';
import { controller, faulted, formatTable, rolloutLinkDown, toxics, trainerLinkDown, uninterrupted } from './faults';
import type { Fault, FaultResult, RunInput } from './faults';

const RUN_TIMEOUT_MS = 1_200_000;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`${name}: a value is required`);
  return v;
}

async function main(): Promise<number> {
  const seed = Number(arg('--seed', '7'));
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed: a non-negative integer is required (got ${arg('--seed', '7')})`);
  const only = process.argv.includes('--only') ? arg('--only', '') : undefined;
  if (process.argv.includes('--remove-stale')) {
    const gone = removeStale((m) => console.log(`[cluster] ${m}`));
    console.log(`[cluster] ${gone.length} stale e3c- namespace(s) removed`);
    return 0;
  }
  const why = namespacesUnavailable();
  if (why) {
    console.error(`npm run cluster: cannot emulate hosts here: ${why}`);
    return 2;
  }
  const input: RunInput = {
    config: 'tiny',
    overrides: { seed, nodes: { stage1: { rolloutParts: 2 }, stage2: { rolloutParts: 2 } } },
  };
  const rl = ['stage1', 'stage2'];
  const faults: Fault[] = [
    rolloutLinkDown('r0', 20_000),
    trainerLinkDown(20_000, rl),
    toxics(
      'worker -> S3: latency 200 ms +-50, bandwidth 64 KB/s (30 s)',
      's3',
      [
        { type: 'latency', attributes: { latency: 200, jitter: 50 } },
        { type: 'bandwidth', attributes: { rate: 64 } },
      ],
      30_000,
      rl,
    ),
    toxics(
      'worker -> Temporal: latency 200 ms +-50, bandwidth 64 KB/s (30 s)',
      'temporal',
      [
        { type: 'latency', attributes: { latency: 200, jitter: 50 } },
        { type: 'bandwidth', attributes: { rate: 64 } },
      ],
      30_000,
      rl,
    ),
    toxics('worker -> S3: reset_peer (5 s)', 's3', [{ type: 'reset_peer', attributes: { timeout: 0 } }], 5_000, rl),
    toxics('worker -> Temporal: reset_peer (5 s)', 'temporal', [{ type: 'reset_peer', attributes: { timeout: 0 } }], 5_000, rl),
  ].filter((f) => !only || f.label.includes(only));
  const commit = execSync('git rev-parse --short HEAD', { cwd: ROOT, encoding: 'utf8' }).trim();
  const log = (m: string) => console.log(`[cluster] ${m}`);
  const dataDir = process.env.E3_CLUSTER_DATA_DIR ?? path.join(ROOT, '.e3', 'cluster');
  const c = await Cluster.up(
    [
      { name: 't0', queues: 'all' },
      { name: 't1', queues: 'all' },
      { name: 'r0', queues: 'rollout' },
      { name: 'r1', queues: 'rollout' },
    ],
    { dataDir, log },
  );
  const rows: FaultResult[] = [];
  try {
    const ctl = await controller(c);
    try {
      await Promise.all(c.names().map((w) => c.startWorker(w)));
      log(
        `workers polling: ${c
          .names()
          .map((w) => `${w} (pid ${c.pidOf(w)})`)
          .join(', ')}`,
      );
      const suffix = `${process.pid}-${Date.now().toString(36)}`;
      const base = await uninterrupted(ctl, `cluster-base-${suffix}`, input, RUN_TIMEOUT_MS);
      log(`uninterrupted run cluster-base-${suffix}: ${(base.wallMs / 1000).toFixed(1)} s`);
      for (const [i, f] of faults.entries()) {
        const runId = `cluster-f${i}-${suffix}`;
        log(`${runId}: ${f.label}`);
        const r = await faulted(c, ctl, runId, input, f, base.finals, RUN_TIMEOUT_MS);
        log(`  ${r.injected?.detail ?? 'not injected'}; ${(r.wallMs / 1000).toFixed(1)} s; bytes ${r.identical ? 'equal' : 'DIFFER'}`);
        rows.push(r);
      }
      console.log('');
      console.log(
        `npm run cluster (config tiny, seed ${seed}, stage1/stage2 rolloutParts 2; workers t0 t1 [all queues], r0 r1 [rollout]; 1 compute thread each; commit ${commit})`,
      );
      console.log(
        `uninterrupted run: ${(base.wallMs / 1000).toFixed(0)} s; its longest time without an activity completing: ${(base.longestGapMs / 1000).toFixed(1)} s`,
      );
      console.log(formatTable(rows, base.wallMs));
    } finally {
      await ctl.close();
    }
  } finally {
    await c.down();
  }
  return rows.every((r) => r.identical) ? 0 : 1;
}

main().then(
  (rc) => process.exit(rc),
  (err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exit(1);
  },
);
