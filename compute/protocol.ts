/** Messages between the compute pool (main thread) and its threads (compute/thread.ts). */
import type { PolicyConfig } from '../ml/policy';
import type { Difficulty } from '../ml/task';
import type { TraceOptions } from '../ml/traces';
import type { Trainer } from '../ml/trainer';
import type { GradedRollout, RlSettings, SampleJob } from '../ml/rollouts';
import type { SftOptions } from '../ml/batching';

type CreateArgs = Parameters<typeof Trainer.create>[0];

export type Request = { id_: number } & (
  | { op: 'init' }
  | { op: 'open'; key: string; create: CreateArgs }
  | { op: 'openPolicy'; key: string; weights: Uint8Array | PolicyConfig }
  | { op: 'close'; key: string }
  | {
      op: 'sftPlan';
      key: string;
      id: string;
      seed: number;
      step: number;
      batchSize: number;
      difficulty: Difficulty[];
      traces: Partial<TraceOptions>;
      opts: SftOptions;
    }
  | { op: 'rlPlan'; key: string; id: string; settings: RlSettings; t: number; graded: GradedRollout[] }
  | { op: 'grad'; key: string; id: string; m: number; c: number }
  | { op: 'apply'; key: string; grads: Record<string, Float32Array>; where: string }
  | { op: 'sample'; key: string; job: SampleJob }
  | { op: 'snapshot'; key: string }
  | { op: 'memory' }
);

/** `ms`: how long the thread spent on the request (from its turn to its answer), for profiles. */
export type Reply = { id: number; value?: unknown; ms?: number; error?: { name: string; message: string; stack?: string } };

/** A plan as the main thread sees it: how many micro-batches each mini-batch (optimiser step) has. */
export interface PlanShape {
  miniBatches: Array<{ chunks: number; tokens: number }>;
  zeroStdGroups: number;
}

/** The buffers of these arrays, once each, copied first where an array is a view of a larger buffer (never a wasm heap). */
export function ownBuffers<T extends ArrayBufferView>(arrays: T[]): { arrays: T[]; transfer: ArrayBuffer[] } {
  const seen = new Set<ArrayBufferLike>();
  const out = arrays.map((a) => {
    const whole =
      a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && !(a.buffer instanceof SharedArrayBuffer) && !seen.has(a.buffer);
    const own = whole ? a : (a as unknown as { slice(): T }).slice();
    seen.add(own.buffer);
    return own;
  });
  return { arrays: out, transfer: [...seen] as ArrayBuffer[] };
}
