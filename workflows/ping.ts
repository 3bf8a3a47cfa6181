/**
 * A small real workflow that proves the stack: a worker picks it up, an activity writes
 * an object to the store and reads it back, and the workflow can wait (a durable timer)
 * across a Temporal restart. `e3 status` and the smoke tests use it.
 */
import { proxyActivities, sleep } from '@temporalio/workflow';
import type { Activities } from '../activities';

const acts = proxyActivities<Activities>({ startToCloseTimeout: '1 minute', retry: { maximumInterval: '5s' } });

export async function ping(input: { waitMs?: number; note?: string } = {}): Promise<{ backend: string; roundTrip: boolean; note: string }> {
  if (input.waitMs) await sleep(input.waitMs);
  const r = await acts.pingStore(input.note ?? 'ping');
  return { ...r, note: input.note ?? 'ping' };
}
