/**
 * What a worker's activities share (docs/ARCHITECTURE.md "Layout"): the worker context, its
 * live trainer sessions, its compute pool, and the run-level reads every concern needs
 * (manifest, node results, start weights). Each concern's activities (run, session, train,
 * evaluate, report) take this environment.
 */
import { Context, heartbeat } from '@temporalio/activity';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { policySource } from '../configs/schema';
import { ConfigError } from '../configs/errors';
import type { RlNode, RunConfig, SftNode } from '../configs/schema';
import { MICRO_WORK_UNRECORDED } from '../ml/batching';
import type { CountdownProblem } from '../ml/countdown';
import type { PolicyConfig } from '../ml/policy';
import type { PooledTrainer } from '../compute/pool';
import { ComputePool } from '../compute/pool';
import type { GradedRollout, RlSettings } from '../ml/rollouts';
import { VOCAB_SIZE } from '../ml/tokenizer';
import { sftSeed } from '../ml/traces';
import { loadCheckpoint } from '../storage/checkpoints';
import { keys } from '../storage/layout';
import type { ObjectStore } from '../storage/store';
import { sha256Hex } from '../storage/store';
import { BackendMismatchError, MissingCheckpointError, SessionLostError } from './errors';
import type { E3Metrics, RunLabels } from './metrics';
import { processMetrics } from './metrics';
import type { NodeResult, Session } from './types';

export interface WorkerContext {
  store: ObjectStore;
  /** This worker's own task queue (trainer sessions). */
  queue: string;
  backend: string;
  /** Why the worker's compute threads chose that backend (ml/backend.ts); shown in the report. */
  backendReason?: string;
  /** Where reports are written on disk. */
  reportDir: string;
  /** Trainer sessions this worker holds at once. @default 1 */
  maxSessions?: number;
  /**
   * Train a session's next commit window while its workflow records the last one
   * (LiveSession.workingAhead; E3_WORK_AHEAD, on in `e3 worker`). @default false
   */
  workAhead?: boolean;
  /** The worker's compute pool (compute/pool.ts); started on first use (E3_THREADS threads) when not given. */
  pool?: ComputePool;
  /**
   * Admission of trainer sessions (workers/admission.ts): told how many session slots are free
   * and whenever that may have changed, so the worker polls the trainer queue only with a free slot.
   */
  admission?: SessionAdmission;
  log: (msg: string) => void;
  /** Where the activities report their metrics (activities/metrics.ts); the process's registry when not given. */
  metrics?: E3Metrics;
}

export interface Manifest {
  runId: string;
  config: RunConfig;
  /** Where the first policy came from when not scratch: a lineage's commit or a file. */
  initFrom?: { runId: string; nodeId: string; step: number } | { file: string; sha256: string };
  /** tfjs backend of the worker that prepared the run (each checkpoint records its own). */
  backend?: string;
}

/** RL iteration t's problems (generated once), its graded rollouts and their train/* metrics. */
export interface IterationRollouts {
  t: number;
  problems: CountdownProblem[];
  graded: GradedRollout[];
  metrics: Record<string, number>;
}

export interface LiveSession {
  trainer: PooledTrainer;
  runId: string;
  node: string;
  step: number;
  /** The run's config, read once when the session opened (a session's activities need no manifest read). */
  config: RunConfig;
  /** The current iteration's rollouts, kept for its update (no store read between the two). */
  rollouts?: IterationRollouts;
  /** Off-policy (`offPolicy: 1`): the next iteration's rollouts, sampled from the policy before the current update. */
  ahead?: IterationRollouts;
  /**
   * The last SFT chunk / RL update applied in memory, with its metrics: a retry of the same
   * activity (a store write after it failed, or its completion was lost) finds the work done
   * and must not apply it a second time.
   */
  applied?: { kind: 'sft' | 'rl'; from: number; to: number; metrics: Record<string, number> };
  /** The policy this session published for rollout workers at iteration t (its sha256): parts of t must carry it. */
  published?: { t: number; sha256: string };
  /**
   * Off-policy fan-out (`offPolicy: 1` with `rolloutParts`): the published policy iteration t's
   * parts are sampled from (the session's policy at t − 1; at 0, its first). Recorded in each
   * commit's state, so a session opened at commit t knows it.
   */
  sampler?: { t: number; sha256: string };
  /**
   * The next commit window's steps [from, to), trained without their commit as soon as the
   * last window's activity returned, while the workflow records that window and schedules
   * this one (a workflow-task round trip per window in which the trainer would sit idle:
   * bench/NOTES.md "Working ahead"). The window's activity waits for `done`, finds the steps
   * applied (as a retry would) and commits. The same steps in the same order on the same
   * session: the bytes do not change. A workflow that asks for anything else (a pause holds
   * it, a cancel closes the session) finds the session ahead of its commit, as after a
   * failed attempt: closed, or refused as lost and re-opened from the last commit.
   */
  workingAhead?: { from: number; to: number; done: Promise<void> };
  /** Wall-clock ms of the last activity on this session (for evicting abandoned sessions only). */
  lastUsed: number;
  /**
   * Its workflow gave up on it (an activity on it was cancelled, or refused as lost): the node
   * re-opens from its last commit, so the slot is free for the next open, which evicts it.
   */
  abandoned?: boolean;
}

/** A worker's trainer sessions as its admission sees them. */
export interface SessionSlots {
  /** Session slots free now: E3_TRAINER_SESSIONS less the sessions neither abandoned nor idle past SESSION_IDLE_MS. */
  free(): number;
  /** The live session of node workflow `<runId>/<nodeId>`, if held. */
  held(key: string): LiveSession | undefined;
  /** Mark `l` abandoned if it is still the session held under `key` (a re-open may have replaced it). */
  abandon(key: string, l: LiveSession): void;
  /** The sessions held and not abandoned, by key (`<runId>/<nodeId>`, the node workflow's id). */
  list(): Array<[string, LiveSession]>;
}

/** What a worker's activities tell its trainer-session admission (workers/admission.ts implements it). */
export interface SessionAdmission {
  bind(slots: SessionSlots): void;
  /** A session opened, closed or was given up: free slots may have changed. */
  changed(): void;
}

/** A session untouched this long was abandoned (its workflow re-routed elsewhere) and may be evicted. */
export const SESSION_IDLE_MS = 120_000;

const ROOT = path.resolve(__dirname, '..');

export const modelConfig = (cfg: RunConfig): PolicyConfig => ({ vocab: VOCAB_SIZE, ...cfg.model, seed: cfg.seed });

/**
 * The run's micro-batch work cap. A manifest's config is the one resolved when the run
 * started, so one recorded before `microWork` existed has none: those runs trained with 16.
 */
const microWork = (cfg: RunConfig): number => (cfg as { microWork?: number }).microWork ?? MICRO_WORK_UNRECORDED;

export function rlSettings(cfg: RunConfig, nodeId: string): RlSettings {
  const n = cfg.nodes[nodeId] as RlNode;
  return {
    seed: cfg.seed,
    nodeId,
    stream: n.stream ?? nodeId,
    difficulty: n.difficulty,
    prompts: n.prompts,
    samples: n.samples,
    temperature: n.temperature,
    topP: n.topP,
    miniBatches: n.miniBatches,
    microBatch: n.microBatch,
    microWork: microWork(cfg),
    skipZeroStd: n.skipZeroStd,
    grpo: n.grpo,
    ...(cfg.task ? { task: cfg.task } : {}),
  };
}

/** What one SFT step of node `nodeId` needs besides its step number: the batch seed, trace options and mark weight. */
export function sftSettings(cfg: RunConfig, nodeId: string) {
  const n = cfg.nodes[nodeId] as SftNode;
  return {
    seed: sftSeed(cfg.seed, n.stream),
    traces: { meanWrong: n.meanWrong, maxAttempts: n.maxAttempts, nearMiss: n.nearMiss, perturbed: n.perturbed, search: n.search },
    markWeight: n.markWeight,
    microWork: microWork(cfg),
    ...(cfg.task ? { task: cfg.task } : {}),
  };
}

/**
 * Run `fn` while heartbeating every second, and give up as soon as the activity is cancelled
 * (a cancelled run, or its workflow gone): the returned promise rejects with the SDK's
 * CancelledFailure at once, and `fn` gets the abort signal to stop its own work at the next
 * step boundary (compute threads finish the job in hand).
 */
export async function withHeartbeat<T>(details: () => unknown, fn: (signal?: AbortSignal) => Promise<T>): Promise<T> {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined;
  }
  if (!ctx) return fn();
  const timer = setInterval(() => heartbeat(details()), 1000);
  try {
    const work = fn(ctx.cancellationSignal);
    work.catch(() => undefined); // may settle after a cancellation won the race
    return await Promise.race([work, ctx.cancelled as Promise<never>]);
  } finally {
    clearInterval(timer);
  }
}

/**
 * The step guard: the session must be at `step` to `what` it. Otherwise it is ahead of or
 * behind the workflow (a re-open elsewhere, an attempt that failed half-way), and SessionLost
 * makes the workflow re-open it from the last commit and rewind to that.
 */
/**
 * A run's tensor work stays on the tfjs backend it was prepared on (its manifest records it;
 * runs prepared before the manifest recorded one are not checked): another backend's kernels
 * round differently, and the run's bytes would stop being a function of its config and seed.
 */
export function checkBackend(m: { runId: string; backend?: string }, backend: string, what: string): void {
  if (m.backend !== undefined && m.backend !== backend) {
    throw new BackendMismatchError(
      `run ${m.runId} runs on the ${m.backend} tfjs backend (recorded when it was prepared); this worker's is ${backend}, so ${what} was refused: start the worker with E3_BACKEND=${m.backend}`,
    );
  }
}

export function atStep(s: Session, l: LiveSession, step: number, what: string): void {
  if (l.step !== step) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at step ${l.step}, asked to ${what} at ${step}`);
}

/** The shared state and reads of one worker's activities. */
export function workerEnv(ctx: WorkerContext) {
  const { store } = ctx;
  const metrics = ctx.metrics ?? processMetrics();
  const sessions = new Map<string, LiveSession>();
  metrics.watchSessions(() => [...sessions.values()].map((l) => runLabels(l.runId, l.node, l.config)));
  /** A session another open may evict: given up by its workflow, or untouched for SESSION_IDLE_MS. */
  const evictable = (l: LiveSession, now = Date.now()) => l.abandoned === true || (now - l.lastUsed > SESSION_IDLE_MS && !l.trainer.busy);
  const sessionsChanged = () => ctx.admission?.changed();
  ctx.admission?.bind({
    free: () => {
      const now = Date.now();
      return (ctx.maxSessions ?? 1) - [...sessions.values()].filter((l) => !evictable(l, now)).length;
    },
    held: (key) => sessions.get(key),
    list: () => [...sessions.entries()].filter(([, l]) => !l.abandoned),
    abandon: (key, l) => {
      if (sessions.get(key) !== l || l.abandoned) return;
      l.abandoned = true;
      sessionsChanged();
    },
  });
  const sessionKey = (runId: string, nodeId: string) => `${runId}/${nodeId}`;
  let pool: Promise<ComputePool> | undefined = ctx.pool ? Promise.resolve(ctx.pool) : undefined;
  const computePool = () => (pool ??= ComputePool.start());
  let evalSeq = 0;
  const nextEvalSeq = () => ++evalSeq;
  /** Each open gets pool keys of its own, so a stale activity can never reach a re-opened session's replicas. */
  let openSeq = 0;
  const nextOpenSeq = () => ++openSeq;

  const readManifest = (runId: string) => store.getJson<Manifest>(keys.manifest(runId));

  /** Results of the nodes recorded as done (`runs/<run>/<node>/result.json`). */
  async function nodeResults(runId: string, cfg: RunConfig): Promise<Record<string, NodeResult>> {
    const out: Record<string, NodeResult> = {};
    for (const id of Object.keys(cfg.nodes)) {
      if (await store.exists(keys.result(runId, id))) out[id] = await store.getJson<NodeResult>(keys.result(runId, id));
    }
    return out;
  }

  /** Weights of a finished training node (its LATEST commit). */
  async function nodeWeights(runId: string, nodeId: string): Promise<Buffer> {
    const c = await loadCheckpoint(store, runId, nodeId, (step, err) => ctx.log(`checkpoint ${runId}/${nodeId}@${step} rejected: ${err}`));
    if (!c) throw new MissingCheckpointError(`no committed checkpoint for ${runId}/${nodeId}`);
    return c.files['weights.bin'];
  }

  /** The policy a node starts from: its source node's final weights, else the run's init. */
  async function startWeights(m: Manifest, nodeId: string): Promise<Uint8Array | undefined> {
    const src = policySource(m.config, nodeId);
    if (src) return nodeWeights(m.runId, src);
    if (!m.initFrom) return undefined;
    if ('file' in m.initFrom) return readInitFile(m.initFrom.file, m.initFrom.sha256);
    return nodeWeights(m.initFrom.runId, m.initFrom.nodeId);
  }

  /**
   * The session an activity works on. Refused (SessionLost: the workflow re-opens from the last
   * commit) when this worker does not hold it, or when an earlier attempt of an activity still
   * computes on it (the server timed that attempt out; the worker has not noticed yet): two
   * attempts would interleave optimiser steps on the same replicas, and the old one stops at
   * its next step once the re-open replaces the session.
   */
  function live(s: Session): LiveSession {
    const l = sessions.get(sessionKey(s.runId, s.nodeId));
    if (!l)
      throw new SessionLostError(
        `trainer session ${s.runId}/${s.nodeId} is not held by worker ${ctx.queue} (it restarted or the session was closed)`,
      );
    if (l.trainer.busy)
      throw new SessionLostError(`session ${s.runId}/${s.nodeId} is still computing an earlier attempt; re-open it from its last commit`);
    l.lastUsed = Date.now();
    return l;
  }

  /**
   * Forget session `l` after a failure left it ahead of its last commit, and free it: only if
   * it is still the node's session (a re-open may already have replaced it).
   */
  async function drop(s: Session, l: LiveSession): Promise<void> {
    const key = sessionKey(s.runId, s.nodeId);
    if (sessions.get(key) === l) sessions.delete(key);
    sessionsChanged();
    await l.trainer.dispose();
  }

  async function writeMetrics(runId: string, nodeId: string, step: number, metrics: Record<string, number>) {
    await store.putJson(keys.metricsPart(runId, nodeId, step), { node: nodeId, step, ...metrics });
  }

  return {
    ctx,
    store,
    metrics,
    sessions,
    evictable,
    sessionsChanged,
    sessionKey,
    computePool,
    nextEvalSeq,
    nextOpenSeq,
    readManifest,
    nodeResults,
    nodeWeights,
    startWeights,
    live,
    drop,
    writeMetrics,
  };
}

export type Env = ReturnType<typeof workerEnv>;

/** The metric labels of a node of a run (activities/metrics.ts). */
export const runLabels = (runId: string, nodeId: string, cfg?: RunConfig): RunLabels => ({
  run: runId,
  node: nodeId,
  config: cfg?.name ?? '',
});

/**
 * Temporal Schedules name each run's workflow `<action workflowId>-<RFC 3339 time>` (e.g.
 * `nightly-workflow-2026-01-02T03:04:05Z`), and ':' cannot be in a run id (it is an object-key
 * segment): that suffix becomes `20260102T030405Z`, so a scheduled run gets a valid, stable run id.
 * Every other id is returned unchanged (and then checked as is).
 */
export function scheduledRunId(id: string): string {
  const m = /^(.+)-(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?Z$/.exec(id);
  return m ? `${m[1]}-${m[2]}${m[3]}${m[4]}T${m[5]}${m[6]}${m[7]}${m[8] ?? ''}Z` : id;
}

/** A base checkpoint committed in the repo (e.g. configs/base/base.e3w), checked against its .sha256 file. */
export function readInitFile(file: string, expectedSha?: string): Buffer & { sha256: string } {
  const abs = path.resolve(ROOT, file);
  if (!abs.startsWith(ROOT + path.sep)) throw new ConfigError(`init: ${file} is outside the project`);
  if (!existsSync(abs)) throw new ConfigError(`init: checkpoint file ${file} does not exist (regenerate it: see README "Base checkpoint")`);
  const buf = readFileSync(abs);
  const sha = sha256Hex(buf);
  const sidecar = abs + '.sha256';
  const want = expectedSha ?? (existsSync(sidecar) ? readFileSync(sidecar, 'utf8').trim().split(/\s+/)[0] : undefined);
  if (want && want !== sha) throw new ConfigError(`init: ${file} has sha256 ${sha}, expected ${want}`);
  return Object.assign(buf, { sha256: sha });
}
