/**
 * The compute pool of a trainer worker (docs/ARCHITECTURE.md "Compute pool"): `E3_THREADS`
 * worker_threads (default one per core), each with its own tfjs backend. The main thread only
 * orchestrates (Temporal polling, heartbeats, the object store); every forward and backward
 * pass runs on a thread.
 *
 * Data parallelism with a fixed reduction order: every thread holds a replica of each session
 * (weights and AdamW state). An optimiser step's micro-batches go to whichever thread is free;
 * their gradients come back as float32 arrays and are summed here in micro-batch order, and the
 * sum is applied by every replica. The sum, and so every replica's bytes, is the same for 1, 2
 * or N threads, and the same as the in-process Trainer's (test/unit/pool.test.ts).
 */
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { InvalidArgumentError, NonFiniteError, ShapeMismatchError } from '../ml/errors';
import type { BackendChoice } from '../ml/backend';
import type { Difficulty } from '../ml/task';
import type { TraceOptions } from '../ml/traces';
import { addGrads, sftMetrics, updateMetrics } from '../ml/batching';
import { countEval, evalRows } from '../ml/evaluation';
import { shardRows } from '../ml/rollouts';
import type { EvalCounts, EvalSpec, ProblemCounts } from '../ml/evaluation';
import type { Grads, SftOptions } from '../ml/batching';
import type { GradedRollout, RlSettings, Rollout, SampleJob, SampleRow } from '../ml/rollouts';
import type { Trainer } from '../ml/trainer';
import type { GrpoStats } from '../ml/grpo';
import type { PolicyConfig } from '../ml/policy';
import { ReplicaLostError } from './errors';
import type { SampleEngine } from '../ml/sampler';
import type { PlanShape, Reply, Request } from './protocol';

type Op = Request extends infer R ? (R extends { id_: number } ? Omit<R, 'id_'> : never) : never;

/** The errors a thread's reply can carry, rebuilt by name (anything else arrives as a plain Error). */
const ERRORS: Record<string, new (m: string) => Error> = { InvalidArgumentError, ShapeMismatchError, NonFiniteError, ReplicaLostError };

/** Threads for a pool: E3_THREADS, else one per core. */
export function defaultThreads(): number {
  const raw = process.env.E3_THREADS;
  if (raw === undefined || raw === '') return availableParallelism();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`E3_THREADS must be a positive integer (got "${raw}")`);
  return n;
}

/** Fault injection for tests: a slow but alive worker (test/integration/liveness.test.ts). */
export interface PoolFaults {
  /** Every job of these ops blocks its thread `delayMs` first (a synchronous wait, as a long kernel would). */
  slowOps?: Array<'grad' | 'apply' | 'sample' | 'snapshot' | 'open'>;
  delayMs?: number;
}

interface Thread {
  worker: Worker;
  pending: Map<number, { op: string; resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  /** Jobs from the shared queue in flight on this thread. */
  busy: number;
  /** It has answered a message (it started). */
  answered: boolean;
  /** Why it is gone, once it is. */
  dead?: string;
}

export class ComputePool {
  private threads: Thread[] = [];
  private nextId = 1;
  private queue: Array<{ op: Op; resolve: (v: unknown) => void; reject: (e: Error) => void }> = [];
  private closed = false;
  /** Bumped whenever a thread is lost: sessions opened in an earlier generation are gone. */
  generation = 0;

  /** Time the threads spent per op, summed over threads and requests (a profile: bench/pool.bench.ts). */
  readonly threadMs = new Map<string, { n: number; ms: number }>();
  /** Time each thread (by index) spent on requests (a replaced thread continues its index's sum): the busy fraction of activities/metrics.ts. */
  readonly threadBusyMs: number[] = [];

  /** Jobs waiting for a free thread. */
  get queueDepth(): number {
    return this.queue.length;
  }

  /** The tfjs backend the threads run on (set once they started). */
  backend = '';
  /** Why the threads chose it (ml/backend.ts). */
  backendReason = '';

  private constructor(
    readonly size: number,
    readonly faults: PoolFaults,
  ) {}

  static async start(size = defaultThreads(), faults: PoolFaults = {}): Promise<ComputePool> {
    const pool = new ComputePool(size, faults);
    for (let k = 0; k < size; k++) pool.threads.push(pool.spawn(k));
    const [choice] = await pool.all<BackendChoice>({ op: 'init' });
    pool.backend = choice.name;
    pool.backendReason = choice.reason;
    return pool;
  }

  private spawn(k: number): Thread {
    // From sources (this file is .ts) the thread registers tsx itself: a loader given on the
    // command line is not always in execArgv (\`tsx --test\` passes it otherwise).
    const file = path.join(__dirname, `thread${path.extname(__filename)}`);
    const worker = file.endsWith('.ts')
      ? new Worker(`require('tsx/cjs/api').register(); require(${JSON.stringify(file)});`, { eval: true, workerData: this.faults })
      : new Worker(file, { workerData: this.faults });
    const th: Thread = { worker, pending: new Map(), busy: 0, answered: false };
    worker.unref();
    worker.on('message', (r: Reply) => {
      th.answered = true;
      const p = th.pending.get(r.id);
      if (!p) return;
      th.pending.delete(r.id);
      if (th.pending.size === 0) worker.unref();
      const busy = this.threadMs.get(p.op) ?? { n: 0, ms: 0 };
      this.threadMs.set(p.op, { n: busy.n + 1, ms: busy.ms + (r.ms ?? 0) });
      this.threadBusyMs[k] = (this.threadBusyMs[k] ?? 0) + (r.ms ?? 0);
      if (r.error) {
        const E = ERRORS[r.error.name];
        const e = E ? new E(r.error.message) : Object.assign(new Error(r.error.message), { name: r.error.name });
        e.stack = r.error.stack ?? e.stack;
        p.reject(e);
      } else p.resolve(r.value);
    });
    const lost = (why: string) => {
      if (this.threads[k] !== th || th.dead) return;
      th.dead = why;
      this.generation++;
      for (const p of th.pending.values())
        p.reject(new ReplicaLostError(`compute thread ${k} was lost (${why}); its sessions must be re-opened`));
      th.pending.clear();
      // A thread that dies before answering anything cannot start here (its file or backend):
      // replacing it would loop, so the pool stays short of it and says why on every call.
      if (!this.closed && th.answered) {
        this.threads[k] = this.spawn(k);
        this.pump();
      }
    };
    worker.on('error', (e) => lost(e.message));
    worker.on('exit', (code) => lost(`exit ${code}`));
    return th;
  }

  private post<T>(th: Thread, op: Op): Promise<T> {
    if (this.closed) return Promise.reject(new ReplicaLostError('the compute pool is closed'));
    if (th.dead) return Promise.reject(new ReplicaLostError(`compute thread could not start: ${th.dead}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      th.pending.set(id, { op: op.op, resolve: resolve as (v: unknown) => void, reject });
      th.worker.ref();
      th.worker.postMessage({ ...op, id_: id });
    });
  }

  /** Run `op` on every thread (each in its own arrival order); results in thread order. */
  all<T>(op: Op): Promise<T[]> {
    return Promise.all(this.threads.map((th) => this.post<T>(th, op)));
  }

  /** Run `op` on one thread, whichever is free first (jobs wait in one queue). */
  any<T>(op: Op): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (v: unknown) => void, reject });
      this.pump();
    });
  }

  private pump(): void {
    for (const th of this.threads) {
      while (th.busy === 0 && this.queue.length > 0) {
        const job = this.queue.shift()!;
        th.busy++;
        this.post(th, job.op)
          .then(job.resolve, job.reject)
          .finally(() => {
            th.busy--;
            this.pump();
          });
      }
    }
  }

  /** Tensors and bytes held by each thread (the soak and the bench watch them). */
  memory(): Promise<Array<{ tensors: number; bytes: number; heap: number; sessions: number }>> {
    return this.all({ op: 'memory' });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue) p.reject(new ReplicaLostError('the compute pool is closed'));
    this.queue = [];
    await Promise.all(this.threads.map((th) => th.worker.terminate()));
  }
}

/** Rows split into at most n contiguous parts of near-equal size (none empty). */
function split<T>(rows: T[], n: number): T[][] {
  const parts: T[][] = [];
  const size = Math.ceil(rows.length / Math.max(1, n));
  for (let k = 0; k < rows.length; k += size) parts.push(rows.slice(k, k + size));
  return parts;
}

/** Sample a job's rows spread over the pool's threads, joined in row order. */
/**
 * The sampling job of RL rows, the same for a trainer session and a published policy (so a
 * fanned-out part samples exactly what the session would): the node's temperature, top-p and
 * task, old log-probs rescored by tfjs when another engine samples.
 */
function rlSampleJob(
  s: Pick<RlSettings, 'temperature' | 'topP' | 'task'>,
  rows: SampleRow[],
  budget: number,
  tool: boolean,
  engine: SampleJob['engine'],
): SampleJob {
  return { rows, budget, temperature: s.temperature, topP: s.topP, tool, task: s.task, engine, rescore: true };
}

async function sampleOn(pool: ComputePool, key: string, job: SampleJob): Promise<Rollout[]> {
  const parts = split(job.rows, pool.size);
  const outs = await Promise.all(parts.map((rows) => pool.any<Rollout[]>({ op: 'sample', key, job: { ...job, rows } })));
  return outs.flat();
}

/**
 * A trainer session replicated on every thread of a pool: the in-process Trainer's API, async,
 * with each optimiser step's micro-batches computed in parallel.
 */
export class PooledTrainer {
  private readonly generation: number;
  /** Operations in flight (an activity still computing on this session). */
  private readonly inflight = new Set<Promise<unknown>>();
  /** dispose() was called: every operation stops at its next step boundary. */
  private closing = false;
  private closed?: Promise<void>;
  /** Main-thread wall time of each part of the optimiser steps so far (a profile: bench/pool.bench.ts). */
  readonly wallMs = { plan: 0, grad: 0, sum: 0, apply: 0 };
  private constructor(
    readonly pool: ComputePool,
    readonly key: string,
    readonly toolArithmetic: boolean,
    readonly engine: SampleEngine,
  ) {
    this.generation = pool.generation;
  }

  /** An activity is computing on this session now. */
  get busy(): boolean {
    return this.inflight.size > 0;
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  static async open(pool: ComputePool, key: string, create: Parameters<typeof Trainer.create>[0]): Promise<PooledTrainer> {
    try {
      await pool.all({ op: 'open', key, create });
    } catch (e) {
      await pool.all({ op: 'close', key }).catch(() => undefined);
      throw e;
    }
    return new PooledTrainer(pool, key, create.toolArithmetic, create.engine ?? 'tfjs');
  }

  private check(): void {
    if (this.closing) throw new ReplicaLostError(`session ${this.key} was closed (re-opened or evicted) while an activity still used it`);
    if (this.pool.generation !== this.generation)
      throw new ReplicaLostError(`session ${this.key}: a compute thread was lost since it was opened`);
  }

  /** Compute a planned step's micro-batch gradients on any thread, sum them in order, apply on every replica. */
  private async steps(
    id: string,
    plan: PlanShape,
    where: string,
    signal?: AbortSignal,
  ): Promise<{ norms: number[]; parts: Array<{ loss?: number; stats?: GrpoStats }> }> {
    const norms: number[] = [];
    const parts: Array<{ loss?: number; stats?: GrpoStats }> = [];
    for (let m = 0; m < plan.miniBatches.length; m++) {
      this.check();
      // Cancelled: stop before the next optimiser step (the caller drops the session).
      if (signal?.aborted)
        throw Object.assign(new Error(`${where}: cancelled after ${m} of ${plan.miniBatches.length} optimiser steps`), {
          name: 'CancelledError',
        });
      let t0 = performance.now();
      const chunks = await Promise.all(
        Array.from({ length: plan.miniBatches[m].chunks }, (_, c) =>
          this.pool.any<{ grads: Grads; loss?: number; stats?: GrpoStats }>({ op: 'grad', key: this.key, id, m, c }),
        ),
      );
      let t1 = performance.now();
      this.wallMs.grad += t1 - t0;
      let acc: Grads | undefined;
      for (const r of chunks) {
        acc = addGrads(acc, r.grads);
        parts.push({ loss: r.loss, stats: r.stats });
      }
      t0 = performance.now();
      this.wallMs.sum += t0 - t1;
      const res = await this.pool.all<{ gradNorm: number }>({ op: 'apply', key: this.key, grads: acc!, where });
      t1 = performance.now();
      this.wallMs.apply += t1 - t0;
      if (res.some((r) => r.gradNorm !== res[0].gradNorm))
        throw new ReplicaLostError(`session ${this.key}: replicas disagree at ${where} (grad norms ${res.map((r) => r.gradNorm)})`);
      norms.push(res[0].gradNorm);
    }
    return { norms, parts };
  }

  sftStep(
    seed: number,
    step: number,
    batchSize: number,
    difficulty: Difficulty[],
    traces: Partial<TraceOptions>,
    opts: SftOptions = {},
  ): Promise<Record<string, number>> {
    return this.track(this.sftStepNow(seed, step, batchSize, difficulty, traces, opts));
  }

  private async sftStepNow(
    seed: number,
    step: number,
    batchSize: number,
    difficulty: Difficulty[],
    traces: Partial<TraceOptions>,
    opts: SftOptions,
  ): Promise<Record<string, number>> {
    this.check();
    const id = `sft:${step}`;
    const t0 = performance.now();
    const [plan] = await this.pool.all<PlanShape>({ op: 'sftPlan', key: this.key, id, seed, step, batchSize, difficulty, traces, opts });
    this.wallMs.plan += performance.now() - t0;
    const { norms, parts } = await this.steps(id, plan, `sft step ${step}`);
    return sftMetrics(
      parts.reduce((a, p) => a + (p.loss ?? 0), 0),
      norms[0],
      plan.miniBatches[0].tokens,
    );
  }

  /** Sample RL rows (`shardRows`) at `budget` with the node's temperature and top-p, spread over the threads. */
  async sample(s: RlSettings, rows: SampleRow[], budget: number): Promise<Rollout[]> {
    this.check();
    return this.track(sampleOn(this.pool, this.key, rlSampleJob(s, rows, budget, this.toolArithmetic, this.engine)));
  }

  /** The in-process Trainer's sampleShard: shard `shard` of `shards` of iteration t's rows. */
  sampleShard(s: RlSettings, t: number, shard: number, shards: number, budget: number): Promise<Rollout[]> {
    return this.sample(s, shardRows(s, t, shard, shards), budget);
  }

  update(s: RlSettings, t: number, graded: GradedRollout[], signal?: AbortSignal): Promise<Record<string, number>> {
    return this.track(this.updateNow(s, t, graded, signal));
  }

  private async updateNow(s: RlSettings, t: number, graded: GradedRollout[], signal?: AbortSignal): Promise<Record<string, number>> {
    this.check();
    const id = `rl:${t}`;
    const t0 = performance.now();
    const [plan] = await this.pool.all<PlanShape>({ op: 'rlPlan', key: this.key, id, settings: s, t, graded });
    this.wallMs.plan += performance.now() - t0;
    const { norms, parts } = await this.steps(id, plan, `rl iteration ${t}`, signal);
    return updateMetrics(
      parts.flatMap((p) => (p.stats ? [p.stats] : [])),
      norms,
      plan.zeroStdGroups,
    );
  }

  async snapshot(): Promise<{ weights: Uint8Array; optim: Uint8Array }> {
    this.check();
    return this.track(this.pool.any({ op: 'snapshot', key: this.key }));
  }

  /**
   * Free the replicas, but never under an activity still computing on them: operations in
   * flight stop at their next step boundary (a ReplicaLostError), and the replicas are closed
   * once they have. Idempotent.
   */
  dispose(): Promise<void> {
    this.closing = true;
    this.closed ??= Promise.allSettled([...this.inflight]).then(() =>
      this.pool.all({ op: 'close', key: this.key }).then(
        () => undefined,
        () => undefined,
      ),
    );
    return this.closed;
  }
}

/** A policy loaded on every thread for evaluation (no optimiser state): J(pi; D, B) with the rows spread over threads. */
export class PooledPolicy {
  private constructor(
    readonly pool: ComputePool,
    readonly key: string,
    readonly toolArithmetic: boolean,
    readonly engine: SampleEngine,
  ) {}

  /** From serialised weights, or a model config's seeded init; sampled by `engine` (SampleOptions.engine). */
  static async open(
    pool: ComputePool,
    key: string,
    weights: Uint8Array | PolicyConfig,
    toolArithmetic: boolean,
    engine: SampleEngine = 'tfjs',
  ): Promise<PooledPolicy> {
    await pool.all({ op: 'openPolicy', key, weights });
    return new PooledPolicy(pool, key, toolArithmetic, engine);
  }

  /**
   * Sample RL rows as a trainer session holding the same weights would (PooledTrainer.sample:
   * the node's temperature and top-p, old log-probs rescored by tfjs when another engine
   * samples): each row depends only on its seed, prompt and the weights.
   */
  sample(s: Pick<RlSettings, 'temperature' | 'topP' | 'task'>, rows: SampleRow[], budget: number): Promise<Rollout[]> {
    return sampleOn(this.pool, this.key, rlSampleJob(s, rows, budget, this.toolArithmetic, this.engine));
  }

  /** Trainer.evaluate's pieces: rows here, sampling on the threads, counting here. */
  async evaluate(spec: EvalSpec): Promise<EvalCounts> {
    const rows: SampleRow[] = evalRows(spec);
    const rollouts = await sampleOn(this.pool, this.key, this.evalJob(spec, rows));
    return countEval(rows, rollouts, spec.budgets, this.toolArithmetic, spec.task);
  }

  /**
   * Counts of the given problems of an evaluation (an evaluation part: ml/evaluation.ts
   * evalPartProblems), one entry per problem: their rows sampled in one job spread over the
   * threads, as `evaluate` samples them, then counted problem by problem. Each row depends
   * only on its seed, prompt and the weights, so joined per chunk (joinEvalCounts) these are
   * `evaluate`'s counts byte for byte.
   */
  async evaluateProblems(spec: Omit<EvalSpec, 'range'>, problems: readonly number[]): Promise<ProblemCounts[]> {
    const per = problems.map((i) => evalRows({ ...spec, range: [i, i + 1] }));
    const rows = per.flat();
    if (rows.length === 0) return [];
    const rollouts = await sampleOn(this.pool, this.key, this.evalJob(spec, rows));
    let at = 0;
    return per.map((rs, k) => {
      const mine = rollouts.slice(at, (at += rs.length));
      return { i: problems[k], counts: countEval(rs, mine, spec.budgets, this.toolArithmetic, spec.task) };
    });
  }

  /** The sampling job of an evaluation's rows: one pass at the largest budget, no rescoring (counts only). */
  private evalJob(spec: Omit<EvalSpec, 'range'>, rows: SampleRow[]): SampleJob {
    return {
      rows,
      budget: Math.max(...spec.budgets),
      temperature: spec.temperature,
      topP: 1,
      tool: this.toolArithmetic,
      task: spec.task,
      engine: this.engine,
    };
  }

  async dispose(): Promise<void> {
    await this.pool.all({ op: 'close', key: this.key }).catch(() => undefined);
  }
}
