/**
 * Emulated hosts under network faults, at small scale (`npm run cluster` is the full table):
 * its own servers in a network namespace, a worker on every queue and a rollout worker each in
 * their own (test/cluster/harness.ts). The tiny DAG with stage1's rollouts in 2 parts (eight iterations of 32 rows a part) runs
 * once uninterrupted, then again while the rollout worker's link is down for a few seconds in
 * the middle of a part, followed by connection resets (toxiproxy reset_peer) on every worker's
 * paths to the object store and to Temporal. The final weights and optimiser bytes of every
 * training node must equal the uninterrupted run's. Skips, saying why, where network
 * namespaces cannot be made (not root, no iproute2, toxiproxy not built).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { namespacesUnavailable, withCluster } from '../cluster/harness';
import { controller, faulted, formatTable, rolloutLinkDown, toxics, uninterrupted } from '../cluster/faults';
import type { Fault, RunInput } from '../cluster/faults';

const why = namespacesUnavailable();

test(
  'emulated hosts: a rollout worker link down mid-part and reset connections to S3 and Temporal; final bytes equal the uninterrupted run',
  { timeout: 600_000, skip: why ? `cannot emulate hosts here: ${why}` : false },
  async () => {
    // Eight iterations of 2 parts of 32 rows each: parts long and many enough that one is seen
    // running on r0 on a quiet host too (16-row parts took ~0.1 s there, between two looks).
    const input: RunInput = {
      config: 'tiny',
      overrides: { nodes: { stage1: { rolloutParts: 2, iterations: 8, prompts: 8, samples: 8 } } },
    };
    const rl = ['stage1', 'stage2'];
    const down = rolloutLinkDown('r0', 4_000);
    const resetS3 = toxics('reset S3', 's3', [{ type: 'reset_peer', attributes: { timeout: 0 } }], 3_000, rl, 60_000);
    const resetTemporal = toxics('reset Temporal', 'temporal', [{ type: 'reset_peer', attributes: { timeout: 0 } }], 3_000, rl, 60_000);
    let connections: number[] = [];
    // One after the other: the link first (it waits for a part on r0), then the resets.
    const fault: Fault = {
      label: 'r0 link down 4 s mid-part, then reset_peer on every worker -> S3 and -> Temporal (each 3 s, longer until it meets traffic)',
      inject: async (c, ctl, runId, nodes) => {
        const a = await down.inject(c, ctl, runId, nodes);
        const b = await resetS3.inject(c, ctl, runId, nodes);
        const d = await resetTemporal.inject(c, ctl, runId, nodes);
        connections = [b.connections ?? 0, d.connections ?? 0];
        return { startMs: a.startMs, endMs: d.endMs, detail: [a.detail, b.detail, d.detail].join('; ') };
      },
    };
    await withCluster(
      [
        { name: 't0', queues: 'all' },
        { name: 'r0', queues: 'rollout' },
      ],
      { dataDir: path.join(process.env.E3_DATA_DIR!, 'cluster') },
      async (c) => {
        const ctl = await controller(c);
        try {
          await Promise.all([c.startWorker('t0'), c.startWorker('r0')]);
          const suffix = `${process.pid}-${Date.now().toString(36)}`;
          const base = await uninterrupted(ctl, `ctest-base-${suffix}`, input, 600_000);
          const r = await faulted(c, ctl, `ctest-fault-${suffix}`, input, fault, base.finals, 600_000);
          console.log(
            `uninterrupted ${(base.wallMs / 1000).toFixed(0)} s (longest gap ${(base.longestGapMs / 1000).toFixed(1)} s)\n${formatTable([r], base.wallMs)}`,
          );
          assert.ok(r.injected, `the fault was not injected: ${r.notInjected}`);
          console.log(r.injected.detail);
          // The resets met traffic: connections through the toxic proxies were accepted or terminated meanwhile.
          assert.ok(connections[0] > 0, `no connection to S3 was made or reset during its reset window: ${r.injected.detail}`);
          assert.ok(connections[1] > 0, `no connection to Temporal was made or reset during its reset window: ${r.injected.detail}`);
          assert.deepEqual(r.differ, [], `final bytes differ from the uninterrupted run in ${r.differ.join(', ')}`);
          assert.ok(r.identical);
        } finally {
          await ctl.close();
        }
      },
    );
  },
);
