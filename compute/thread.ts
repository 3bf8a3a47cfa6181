/**
 * One compute thread of the pool (compute/pool.ts): its own tfjs backend (a wasm instance is
 * single-threaded, one per thread scales), a replica of every trainer session the pool holds,
 * and the policies of running evaluations. It runs one message at a time, in arrival order,
 * so every replica applies the same optimiser steps in the same order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { backendChoice } from '../ml/backend';
import { createPolicy, disposePolicy } from '../ml/policy';
import type { Policy } from '../ml/policy';
import { loadPolicy } from '../ml/serialize';
import { Trainer } from '../ml/trainer';
import { rlPlan, sftPlan } from '../ml/batching';
import { sampleRows } from '../ml/rollouts';
import type { Grads, PlanRow, SftRow } from '../ml/batching';
import { ReplicaLostError } from './errors';
import { ownBuffers } from './protocol';
import type { Reply, Request } from './protocol';
import type { PoolFaults } from './pool';

const faults = (workerData ?? {}) as PoolFaults;
const trainers = new Map<string, Trainer>();
const policies = new Map<string, Policy>();
/** Each session's current plan (the step being computed): micro-batches by [mini-batch][chunk]. */
const plans = new Map<
  string,
  { id: string; chunks: Array<SftRow[][] | PlanRow[][]>; tokens: number[]; kind: 'sft' | 'rl'; settings?: unknown }
>();

function trainer(key: string): Trainer {
  const t = trainers.get(key);
  if (!t) throw new ReplicaLostError(`compute thread: no session ${key}`);
  return t;
}

function planOf(key: string, id: string) {
  const p = plans.get(key);
  if (!p || p.id !== id) throw new ReplicaLostError(`compute thread: session ${key} has plan ${p?.id ?? 'none'}, asked for ${id}`);
  return p;
}

function closeKey(key: string): void {
  trainers.get(key)?.dispose();
  trainers.delete(key);
  const p = policies.get(key);
  if (p) disposePolicy(p);
  policies.delete(key);
  plans.delete(key);
}

async function handle(req: Request): Promise<{ value: unknown; transfer?: ArrayBuffer[] }> {
  const backend = await backendChoice();
  if (faults.delayMs && faults.slowOps?.includes(req.op as never))
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, faults.delayMs);
  switch (req.op) {
    case 'init':
      return { value: backend };
    case 'open': {
      closeKey(req.key);
      trainers.set(req.key, Trainer.create(req.create));
      return { value: trainer(req.key).opt.stepCount };
    }
    case 'openPolicy': {
      closeKey(req.key);
      policies.set(req.key, req.weights instanceof Uint8Array ? loadPolicy(req.weights) : createPolicy(req.weights));
      return { value: null };
    }
    case 'close':
      closeKey(req.key);
      return { value: null };
    case 'sftPlan': {
      const tr = trainer(req.key);
      const p = sftPlan(tr.policy.cfg, req.seed, req.step, req.batchSize, req.difficulty, req.traces, req.opts);
      plans.set(req.key, { id: req.id, kind: 'sft', chunks: [p.chunks], tokens: [p.total] });
      return { value: { miniBatches: [{ chunks: p.chunks.length, tokens: p.total }], zeroStdGroups: 0 } };
    }
    case 'rlPlan': {
      const tr = trainer(req.key);
      const p = rlPlan(tr.policy.cfg, req.settings, req.t, req.graded);
      plans.set(req.key, {
        id: req.id,
        kind: 'rl',
        chunks: p.miniBatches.map((m) => m.chunks),
        tokens: p.miniBatches.map((m) => m.tokens),
        settings: req.settings,
      });
      return {
        value: { miniBatches: p.miniBatches.map((m) => ({ chunks: m.chunks.length, tokens: m.tokens })), zeroStdGroups: p.zeroStdGroups },
      };
    }
    case 'grad': {
      const tr = trainer(req.key);
      const p = planOf(req.key, req.id);
      const chunk = p.chunks[req.m][req.c];
      const r =
        p.kind === 'sft'
          ? tr.sftGrads(chunk as SftRow[], p.tokens[req.m])
          : tr.rlGrads(p.settings as never, chunk as PlanRow[], p.tokens[req.m]);
      const names = Object.keys(r.grads);
      const own = ownBuffers(names.map((n) => r.grads[n]));
      return { value: { ...r, grads: Object.fromEntries(names.map((n, k) => [n, own.arrays[k]])) }, transfer: own.transfer };
    }
    case 'apply':
      return { value: trainer(req.key).applyGrads(req.grads as Grads, req.where) };
    case 'sample': {
      const policy = trainers.get(req.key)?.policy ?? policies.get(req.key);
      if (!policy) throw new ReplicaLostError(`compute thread: no policy for ${req.key}`);
      return { value: await sampleRows(policy, req.job) };
    }
    case 'snapshot': {
      const s = trainer(req.key).snapshot();
      const own = ownBuffers([s.weights, s.optim]);
      return { value: { weights: own.arrays[0], optim: own.arrays[1] }, transfer: own.transfer };
    }
    case 'memory': {
      const tf = await import('@tensorflow/tfjs-core');
      // The wasm heap only grows (what a long-lived worker must watch); 0 on other backends.
      const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8?.length ?? 0;
      return { value: { tensors: tf.memory().numTensors, bytes: tf.memory().numBytes, heap, sessions: trainers.size + policies.size } };
    }
  }
}

// One message at a time: a sampling job yields to the event loop between tokens, and an
// optimiser step arriving then must wait for it, or replicas could see different orders.
let chain: Promise<void> = Promise.resolve();
parentPort!.on('message', (req: Request) => {
  chain = chain.then(async () => {
    let reply: Reply;
    let transfer: ArrayBuffer[] = [];
    const t0 = performance.now();
    try {
      const r = await handle(req);
      reply = { id: req.id_, value: r.value, ms: performance.now() - t0 };
      transfer = r.transfer ?? [];
    } catch (e) {
      const err = e as Error;
      reply = { id: req.id_, error: { name: err.name, message: err.message, stack: err.stack } };
    }
    parentPort!.postMessage(reply, transfer);
  });
});
