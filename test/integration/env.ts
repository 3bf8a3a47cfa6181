/** Shared set-up for integration tests: the servers test/integration/run.ts started. */
import { Client, Connection } from '@temporalio/client';
import { spawnSync } from 'node:child_process';
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

export const uid = (prefix: string) => `${prefix}-${process.pid}-${Date.now().toString(36)}`;
