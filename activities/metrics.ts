/**
 * e3's own Prometheus metrics of a worker process (docs/OPERATIONS.md "Metrics"), through
 * prom-client: training progress, per-phase iteration time, sampling throughput, the last
 * train reward and evaluation pass@1, trainer sessions, compute-pool load, checkpoints and
 * object-store errors. workers/metrics.ts serves them, with the Temporal SDK's own, on
 * E3_METRICS_PORT.
 *
 * Observation only: every method swallows its own errors and nothing here is read back by
 * training, so metrics never change a result or a byte. Labels are run, node (the DAG node)
 * and config, plus a few closed sets (phase, budget, thread, activity, error type, store
 * operation); iteration numbers are never labels. Series of the oldest runs are removed once
 * more than MAX_RUNS runs have series, so a worker that trains on a schedule for months keeps
 * a bounded number of series. No credential or endpoint is ever a label value.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface RunLabels {
  run: string;
  node: string;
  config: string;
}

export type Phase = 'sample' | 'grade' | 'update' | 'commit' | 'publish';

/** Runs whose series a worker keeps (the oldest run's series go when one more starts). */
export const MAX_RUNS = 32;

const RUN = ['run', 'node', 'config'] as const;
type RunLabel = (typeof RUN)[number];

/** Seconds buckets from 50 ms to ~30 min: a tiny iteration to a paper-scale one. */
const SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2000];

/** Anything with a compute pool's load (compute/pool.ts ComputePool). */
export interface PoolLoad {
  readonly queueDepth: number;
  /** Milliseconds each thread has spent on jobs since it started (index: thread). */
  readonly threadBusyMs: readonly number[];
}

type Removable = { remove(labels: Record<string, string>): void };

export class E3Metrics {
  readonly registry = new Registry();
  private readonly rlIterations: Counter<RunLabel>;
  private readonly sftStepCount: Counter<RunLabel>;
  private readonly phaseSeconds: Histogram<RunLabel | 'phase'>;
  private readonly tokensSampled: Counter<RunLabel>;
  private readonly tokensPerSecond: Gauge<RunLabel>;
  private readonly trainReward: Gauge<RunLabel>;
  private readonly evalPassAt1: Gauge<RunLabel | 'budget'>;
  private readonly reopens: Counter<RunLabel>;
  private readonly rewinds: Counter<RunLabel>;
  private readonly activityFailures: Counter<RunLabel | 'activity' | 'type'>;
  private readonly checkpointBytes: Counter<RunLabel>;
  private readonly checkpointSeconds: Histogram<RunLabel>;
  private readonly storeErrors: Counter<'op' | 'code'>;
  private readonly lastProgress: Gauge<RunLabel>;
  private readonly scheduleFailed: Gauge<'schedule'>;
  private readonly sessionSources = new Set<() => RunLabels[]>();
  private pool: PoolLoad | undefined;
  /** Busy ms of each thread already added to the counter (it only moves forward). */
  private busyCounted: number[] = [];
  /** Series per run, oldest run first (Map order), for removal beyond MAX_RUNS. */
  private readonly series = new Map<string, Array<{ metric: Removable; labels: Record<string, string> }>>();
  /** Label sets tracked per metric. */
  private readonly seen = new Map<Removable, Set<string>>();
  /** The config of each run seen, for labels where only the run and node are known. */
  private readonly configs = new Map<string, string>();

  constructor(opts: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'e3_worker_' });
    this.rlIterations = new Counter({
      name: 'e3_rl_iterations_total',
      help: 'RL iterations applied (sample, grade, GRPO update) on this worker',
      labelNames: RUN,
      registers,
    });
    this.sftStepCount = new Counter({
      name: 'e3_sft_steps_total',
      help: 'SFT optimiser steps applied on this worker',
      labelNames: RUN,
      registers,
    });
    this.phaseSeconds = new Histogram({
      name: 'e3_iteration_phase_seconds',
      help: 'Wall seconds of each phase of an RL iteration (sample, grade, update, commit; publish: the policy for rollout workers)',
      labelNames: [...RUN, 'phase'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.tokensSampled = new Counter({
      name: 'e3_sampled_tokens_total',
      help: 'Response tokens sampled by the policy for RL iterations (tokens the environment wrote excluded)',
      labelNames: RUN,
      registers,
    });
    this.tokensPerSecond = new Gauge({
      name: 'e3_sampled_tokens_per_second',
      help: "Sampling throughput of the node's last RL iteration (tokens / wall second of its sample phase)",
      labelNames: RUN,
      registers,
    });
    this.trainReward = new Gauge({
      name: 'e3_train_reward',
      help: "Mean train reward of the node's last RL iteration (train/reward_mean)",
      labelNames: RUN,
      registers,
    });
    this.evalPassAt1 = new Gauge({
      name: 'e3_eval_pass_at_1',
      help: 'pass@1 at each budget of the last evaluation of an eval node',
      labelNames: [...RUN, 'budget'],
      registers,
    });
    this.reopens = new Counter({
      name: 'e3_session_reopens_total',
      help: 'Trainer-session opens that resumed a node from its own last commit (a lost session, a restarted worker or a resumed run)',
      labelNames: RUN,
      registers,
    });
    this.rewinds = new Counter({
      name: 'e3_session_rewinds_total',
      help: 'Session activities refused with SessionLost here: each makes the workflow re-open the session and rewind to its last commit',
      labelNames: RUN,
      registers,
    });
    this.activityFailures = new Counter({
      name: 'e3_activity_failures_total',
      help: 'Activity attempts that failed on this worker, by activity and failure type (Retryable for a retryable error; cancellations not counted)',
      labelNames: [...RUN, 'activity', 'type'],
      registers,
    });
    this.checkpointBytes = new Counter({
      name: 'e3_checkpoint_bytes_total',
      help: 'Bytes of checkpoint blobs committed (weights, optimiser state, state)',
      labelNames: RUN,
      registers,
    });
    this.checkpointSeconds = new Histogram({
      name: 'e3_checkpoint_seconds',
      help: 'Wall seconds of a checkpoint commit (snapshot, blobs, manifest, LATEST, pruning)',
      labelNames: RUN,
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.lastProgress = new Gauge({
      name: 'e3_node_last_progress_timestamp_seconds',
      help: 'Unix time of the last RL iteration or SFT step applied to the node here (or of its session opening)',
      labelNames: RUN,
      registers,
    });
    this.scheduleFailed = new Gauge({
      name: 'e3_schedule_last_run_failed',
      help: "1 when the schedule's most recent run failed, timed out or was terminated, else 0 (workers polling the general queue read the schedules)",
      labelNames: ['schedule'],
      registers,
    });
    this.storeErrors = new Counter({
      name: 'e3_object_store_errors_total',
      help: 'Object-store requests that failed (a missing object is an answer, not an error), by operation and error code',
      labelNames: ['op', 'code'],
      registers,
    });
    new Gauge({
      name: 'e3_sessions_open',
      help: 'Trainer sessions this worker holds',
      registers,
      collect: this.guarded(function (this: Gauge, m: E3Metrics) {
        let n = 0;
        for (const f of m.sessionSources) n += f().length;
        this.set(n);
      }),
    });
    new Gauge({
      name: 'e3_session_open',
      help: '1 for each node whose trainer session this worker holds (the node is running here)',
      labelNames: RUN,
      registers,
      collect: this.guarded(function (this: Gauge<RunLabel>, m: E3Metrics) {
        this.reset();
        for (const f of m.sessionSources) for (const l of f()) this.set({ run: l.run, node: l.node, config: l.config }, 1);
      }),
    });
    new Gauge({
      name: 'e3_compute_queue_depth',
      help: 'Compute-pool jobs waiting for a free thread',
      registers,
      collect: this.guarded(function (this: Gauge, m: E3Metrics) {
        this.set(m.pool?.queueDepth ?? 0);
      }),
    });
    new Counter({
      name: 'e3_compute_thread_busy_seconds_total',
      help: 'Seconds each compute thread spent on jobs (rate() of it is the busy fraction)',
      labelNames: ['thread'],
      registers,
      collect: this.guarded(function (this: Counter<'thread'>, m: E3Metrics) {
        const busy = m.pool?.threadBusyMs ?? [];
        busy.forEach((ms, k) => {
          const delta = ms - (m.busyCounted[k] ?? 0);
          if (delta > 0) this.inc({ thread: String(k) }, delta / 1000);
          m.busyCounted[k] = ms;
        });
      }),
    });
  }

  /** A collect callback that never fails a scrape (`fn` gets the metric as `this` and these metrics as `m`). */
  private guarded<M>(fn: (this: M, m: E3Metrics) => void): (this: M) => void {
    const call = (metric: M) => {
      try {
        fn.call(metric, this);
      } catch {
        /* a metric is never worth a failed scrape */
      }
    };
    return function (this: M) {
      call(this);
    };
  }

  /** Run `fn`, ignoring its errors: metrics never fail the work they observe. */
  private safe(fn: () => void): void {
    try {
      fn();
    } catch {
      /* observation only */
    }
  }

  /** The run's labels, tracked for removal once the run is among the oldest beyond MAX_RUNS. */
  private labels<L extends string>(metric: Removable, l: RunLabels, extra: Partial<Record<L, string>> = {}): Record<string, string> {
    const labels = { run: l.run, node: l.node, config: l.config || (this.configs.get(l.run) ?? ''), ...extra } as Record<string, string>;
    if (l.config) this.configs.set(l.run, l.config);
    let list = this.series.get(l.run);
    if (!list) {
      list = [];
      this.series.set(l.run, list);
      while (this.series.size > MAX_RUNS) {
        const [oldest, old] = this.series.entries().next().value as [string, Array<{ metric: Removable; labels: Record<string, string> }>];
        for (const s of old) s.metric.remove(s.labels);
        for (const s of old) this.seen.get(s.metric)?.delete(JSON.stringify(s.labels));
        this.series.delete(oldest);
        this.configs.delete(oldest);
      }
    }
    const id = JSON.stringify(labels);
    let seen = this.seen.get(metric);
    if (!seen) this.seen.set(metric, (seen = new Set()));
    if (!seen.has(id)) {
      seen.add(id);
      list.push({ metric, labels });
    }
    return labels;
  }

  /** The nodes whose sessions a worker environment holds (read at each scrape). */
  watchSessions(held: () => RunLabels[]): void {
    this.sessionSources.add(held);
  }

  /** Report this compute pool's load (the process's pool; a later one replaces it). */
  watchPool(pool: PoolLoad): void {
    this.pool = pool;
    this.busyCounted = [...pool.threadBusyMs];
  }

  rlIteration(l: RunLabels): void {
    this.safe(() => {
      this.rlIterations.inc(this.labels(this.rlIterations, l));
      this.lastProgress.setToCurrentTime(this.labels(this.lastProgress, l));
    });
  }

  sftSteps(l: RunLabels, n: number): void {
    this.safe(() => {
      this.sftStepCount.inc(this.labels(this.sftStepCount, l), n);
      this.lastProgress.setToCurrentTime(this.labels(this.lastProgress, l));
    });
  }

  /**
   * A session of the node opened here (progress starts counting from now). The node's step
   * counter is exported from 0 at once, so its first steps show as an increase (a series that
   * first appears at 4 has no increase for `rate()` or `increase()`).
   */
  opened(l: RunLabels, resumed: boolean, kind: 'rl' | 'sft'): void {
    this.safe(() => {
      const steps = kind === 'rl' ? this.rlIterations : this.sftStepCount;
      steps.inc(this.labels(steps, l), 0);
      if (resumed) this.reopens.inc(this.labels(this.reopens, l));
      this.lastProgress.setToCurrentTime(this.labels(this.lastProgress, l));
    });
  }

  /** The schedules' last outcomes (replaces the previous set: a deleted schedule's series go). */
  schedules(lastFailed: ReadonlyMap<string, boolean>): void {
    this.safe(() => {
      this.scheduleFailed.reset();
      for (const [id, failed] of lastFailed) this.scheduleFailed.set({ schedule: id }, failed ? 1 : 0);
    });
  }

  phase(l: RunLabels, phase: Phase, seconds: number): void {
    this.safe(() => this.phaseSeconds.observe(this.labels(this.phaseSeconds, l, { phase }), seconds));
  }

  /** Tokens sampled in a sample phase of `seconds`. */
  sampled(l: RunLabels, tokens: number, seconds: number): void {
    this.safe(() => {
      this.tokensSampled.inc(this.labels(this.tokensSampled, l), tokens);
      if (seconds > 0) this.tokensPerSecond.set(this.labels(this.tokensPerSecond, l), tokens / seconds);
    });
  }

  reward(l: RunLabels, value: number | undefined): void {
    if (typeof value !== 'number' || !Number.isFinite(value)) return;
    this.safe(() => this.trainReward.set(this.labels(this.trainReward, l), value));
  }

  /** pass@1 by budget from an evaluation's metrics (`eval/b<B>/pass@1`). */
  evaluation(l: RunLabels, metrics: Record<string, number>): void {
    this.safe(() => {
      for (const [k, v] of Object.entries(metrics)) {
        const m = /^eval\/b(\d+)\/pass@1$/.exec(k);
        if (m && Number.isFinite(v)) this.evalPassAt1.set(this.labels(this.evalPassAt1, l, { budget: m[1] }), v);
      }
    });
  }

  rewind(l: RunLabels): void {
    this.safe(() => this.rewinds.inc(this.labels(this.rewinds, l)));
  }

  activityFailed(l: RunLabels, activity: string, type: string): void {
    this.safe(() => this.activityFailures.inc(this.labels(this.activityFailures, l, { activity, type })));
  }

  checkpoint(l: RunLabels, bytes: number, seconds: number): void {
    this.safe(() => {
      this.checkpointBytes.inc(this.labels(this.checkpointBytes, l), bytes);
      this.checkpointSeconds.observe(this.labels(this.checkpointSeconds, l), seconds);
    });
  }

  /** An object-store request failed: `code` is the error's code (a closed set of S3 / socket / TLS codes), never its message. */
  storeError(op: string, code: string): void {
    this.safe(() => this.storeErrors.inc({ op, code: /^[A-Za-z0-9_]{1,64}$/.test(code) ? code : 'other' }));
  }
}

/** Tokens the policy sampled in these rollouts (the environment's forced tokens excluded). */
export const sampledTokens = (rollouts: ReadonlyArray<{ response: ArrayLike<unknown>; forced: ArrayLike<unknown> }>): number =>
  rollouts.reduce((n, r) => n + r.response.length - r.forced.length, 0);

/** Seconds since `t0` (a performance.now() reading). */
export const since = (t0: number): number => (performance.now() - t0) / 1000;

let shared: E3Metrics | undefined;
/** The process's metrics (one registry per worker process, whatever the number of activity sets). */
export function processMetrics(): E3Metrics {
  shared ??= new E3Metrics({ processMetrics: true });
  return shared;
}
