/**
 * A worker process serving only the rollout queue, on one compute thread whose sampling jobs
 * each block 4 s first (compute/pool.ts PoolFaults): a rollout worker that is surely mid-part
 * when test/integration/fanout.test.ts SIGKILLs it. Not a test file (run.ts runs *.test.ts).
 */
import { ComputePool } from '../../compute/pool';
import { startWorkers } from '../../workers/worker';

async function main() {
  const pool = await ComputePool.start(1, { slowOps: ['sample'], delayMs: 4000 });
  const w = await startWorkers({ queues: 'rollout', concurrency: 2, pool });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => w.shutdown());
  await w.run;
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
