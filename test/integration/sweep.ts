/**
 * Between test files (test/integration/run.ts): terminate every workflow a file left running on
 * the shared test server. A run left behind keeps its trainer opens queued in `e3-trainer`; the
 * next file's workers would serve them first (arrival order) and hold their slots until the
 * sessions' idle eviction (SESSION_IDLE_MS), stalling that file's own runs by minutes.
 *   tsx test/integration/sweep.ts <file that just ran>
 */
import { client } from './env';

async function main(): Promise<void> {
  const file = process.argv[2] ?? '?';
  const { client: c, close } = await client();
  try {
    const left: string[] = [];
    for await (const w of c.workflow.list({ query: 'ExecutionStatus = "Running"' })) {
      await c.workflow
        .getHandle(w.workflowId, w.runId)
        .terminate(`left running by ${file}`)
        .then(() => left.push(w.workflowId))
        .catch(() => undefined);
    }
    if (left.length > 0) console.log(`sweep: ${file} left ${left.length} workflow(s) running; terminated: ${left.join(', ')}`);
  } finally {
    await close();
  }
}

main().catch((e: unknown) => {
  console.error(`sweep: ${String(e)}`);
  process.exit(1);
});
