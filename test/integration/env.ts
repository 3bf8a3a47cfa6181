/** Shared set-up for integration tests: the servers test/integration/run.ts started. */
import { Client, Connection } from '@temporalio/client';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { startWorkers } from '../../workers/worker';
import { temporalTarget } from '../../workers/connection';
import { ObjectStore } from '../../storage/store';

export const ROOT = path.resolve(__dirname, '..', '..');

export function infra(script: 'up' | 'down' | 'status', ...args: string[]): number {
  return spawnSync('bash', [path.join(ROOT, 'infra', script), ...args], { stdio: 'inherit', env: process.env }).status ?? 1;
}

export async function client(): Promise<{ client: Client; close: () => Promise<void> }> {
  const t = temporalTarget();
  const connection = await Connection.connect({ address: t.address });
  return { client: new Client({ connection, namespace: t.namespace }), close: () => connection.close() };
}

/** An in-process worker on all queues; returns a stopper that waits for it to drain. */
export async function inProcessWorker() {
  const w = await startWorkers({ queues: 'all', concurrency: 2, log: () => {} });
  return {
    queue: w.queue,
    stop: async () => {
      w.shutdown();
      await w.run;
    },
  };
}

export const store = () => ObjectStore.fromEnv();

/**
 * Signal `pause` to a node's workflow as soon as it exists (retrying while it is not started):
 * a training node holds at its first commit, mid-node whatever the host's speed.
 */
export async function pauseOnceStarted(c: Client, workflowId: string, ms = 300_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    try {
      return await c.workflow.getHandle(workflowId).signal('pause');
    } catch (e) {
      if (Date.now() - t0 > ms) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export const uid = (prefix: string) => `${prefix}-${process.pid}-${Date.now().toString(36)}`;

/** The real CLI in a child process (asynchronously: an in-process worker must keep running). */
export function e3(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'cli', 'e3.ts'), ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 }));
  });
}

/** A workflow's history as proto JSON (the format `Worker.runReplayHistory` reads), via the CLI. */
export function historyJson(id: string): string {
  return execFileSync(
    path.join(ROOT, 'infra', 'bin', 'temporal'),
    ['workflow', 'show', '-w', id, '--output', 'json', '--address', `127.0.0.1:${process.env.E3_TEMPORAL_PORT}`],
    { encoding: 'utf8', maxBuffer: 64 << 20 },
  );
}
