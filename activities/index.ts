/**
 * Thin activity wrappers over ml/ and storage/ (docs/ARCHITECTURE.md). `createActivities` binds them
 * to one worker: its object store, its own task queue (where its trainer sessions live),
 * and the backend it runs on. Long activities heartbeat and resume from their details.
 */
import { Context, heartbeat } from '@temporalio/activity';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadConfig } from '../configs/load';
import { ConfigError, policySource, topoOrder } from '../configs/schema';
import type { RlNode, RunConfig, SftNode, EvalNode, SelectBudgetNode } from '../configs/schema';
import { selectBudget as eq61 } from '../ml/budget';
import type { PolicyConfig } from '../ml/policy';
import { ComputePool, PooledPolicy, PooledTrainer } from '../compute/pool';
import { dataMetrics, evalMetrics, gradeRollouts, heldOutSet, iterationProblems, rolloutMetrics } from '../ml/trainer';
import type { EvalCounts, GradedRollout, RlSettings, Rollout } from '../ml/trainer';
import { VOCAB_SIZE } from '../ml/tokenizer';
import { sftSeed } from '../ml/traces';
import { commitCheckpoint as commit, loadCheckpoint } from '../storage/checkpoints';
import { checkId, keys } from '../storage/layout';
import type { ObjectStore } from '../storage/store';
import { sha256Hex } from '../storage/store';
import { MissingCheckpointError, SessionLostError, UncalibratedError, classified } from './errors';
import { renderReportHtml } from './report';
import type { NodeInput, NodeResult, PipelineInput, PreparedRun, Session } from './types';

export interface WorkerContext {
  store: ObjectStore;
  /** This worker's own task queue (trainer sessions). */
  queue: string;
  backend: string;
  /** Where reports are written on disk. */
  reportDir: string;
  /** Trainer sessions this worker holds at once. @default 1 */
  maxSessions?: number;
  /** The worker's compute pool (compute/pool.ts); started on first use (E3_THREADS threads) when not given. */
  pool?: ComputePool;
  log: (msg: string) => void;
}

interface Manifest {
  runId: string;
  config: RunConfig;
  /** Where the first policy came from when not scratch: a lineage's commit or a file. */
  initFrom?: { runId: string; nodeId: string; step: number } | { file: string; sha256: string };
  /** tfjs backend of the worker that prepared the run (each checkpoint records its own). */
  backend?: string;
}

interface LiveSession {
  trainer: PooledTrainer;
  node: string;
  step: number;
  /** The run's config, read once when the session opened (a session's activities need no manifest read). */
  config: RunConfig;
  /** The last iteration's graded rollouts, kept for its update (rlRollouts → rlUpdate without a store read). */
  graded?: { t: number; rows: GradedRollout[] };
  /**
   * The last SFT chunk / RL update applied in memory, with its metrics: a retry of the same
   * activity (a store write after it failed, or its completion was lost) finds the work done
   * and must not apply it a second time.
   */
  applied?: { kind: 'sft' | 'rl'; from: number; to: number; metrics: Record<string, number> };
  /** Wall-clock ms of the last activity on this session (for evicting abandoned sessions only). */
  lastUsed: number;
}

/** A session untouched this long was abandoned (its workflow re-routed elsewhere) and may be evicted. */
const SESSION_IDLE_MS = 120_000;

const ROOT = path.resolve(__dirname, '..');

export const modelConfig = (cfg: RunConfig): PolicyConfig => ({ vocab: VOCAB_SIZE, ...cfg.model, seed: cfg.seed });

export function rlSettings(cfg: RunConfig, nodeId: string): RlSettings {
  const n = cfg.nodes[nodeId] as RlNode;
  return { seed: cfg.seed, nodeId, stream: n.stream ?? nodeId, difficulty: n.difficulty, prompts: n.prompts, samples: n.samples, temperature: n.temperature, topP: n.topP, miniBatches: n.miniBatches, microBatch: n.microBatch, skipZeroStd: n.skipZeroStd, grpo: n.grpo };
}

/** What one SFT step of node `nodeId` needs besides its step number: the batch seed, trace options and mark weight. */
export function sftSettings(cfg: RunConfig, nodeId: string) {
  const n = cfg.nodes[nodeId] as SftNode;
  return {
    seed: sftSeed(cfg.seed, n.stream),
    traces: { meanWrong: n.meanWrong, maxAttempts: n.maxAttempts, nearMiss: n.nearMiss, perturbed: n.perturbed },
    markWeight: n.markWeight,
  };
}

/** Run `fn` while heartbeating every few seconds (the sampler and trainer yield to the event loop). */
async function withHeartbeat<T>(details: () => unknown, fn: () => Promise<T>): Promise<T> {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined;
  }
  const timer = ctx ? setInterval(() => heartbeat(details()), 1000) : undefined;
  try {
    return await fn();
  } finally {
    if (timer) clearInterval(timer);
  }
}


export function createActivities(ctx: WorkerContext) {
  const { store } = ctx;
  const sessions = new Map<string, LiveSession>();
  const sessionKey = (runId: string, nodeId: string) => `${runId}/${nodeId}`;
  let pool: Promise<ComputePool> | undefined = ctx.pool ? Promise.resolve(ctx.pool) : undefined;
  const computePool = () => (pool ??= ComputePool.start());
  let evalSeq = 0;

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

  function live(s: Session): LiveSession {
    const l = sessions.get(sessionKey(s.runId, s.nodeId));
    if (!l) throw new SessionLostError(`trainer session ${s.runId}/${s.nodeId} is not held by worker ${ctx.queue} (it restarted or the session was closed)`);
    l.lastUsed = Date.now();
    return l;
  }

  async function writeMetrics(runId: string, nodeId: string, step: number, metrics: Record<string, number>) {
    await store.putJson(keys.metricsPart(runId, nodeId, step), { node: nodeId, step, ...metrics });
  }

  const acts = {
    /** Write an object, read it back byte-identical, delete it (the stack's health check). */
    async pingStore(note: string): Promise<{ backend: string; roundTrip: boolean }> {
      const key = `health/${ctx.queue}/${sha256Hex(new TextEncoder().encode(note)).slice(0, 12)}`;
      const body = `e3 ping ${note}`;
      await store.put(key, body);
      const back = (await store.get(key)).toString('utf8');
      await store.remove([key]);
      return { backend: ctx.backend, roundTrip: back === body };
    },

    /** Resolve and validate the config, create or load the run manifest. */
    async prepareRun(input: PipelineInput & { runId: string }): Promise<PreparedRun> {
      let runId: string;
      try {
        runId = checkId('runId', scheduledRunId(input.runId));
      } catch (e) {
        // The run id (by default the workflow id typed into the Web UI) is input: no retry fixes it.
        throw new ConfigError((e as Error).message);
      }
      const existing = (await store.exists(keys.manifest(runId))) ? await readManifest(runId) : null;
      if (existing) {
        if (input.config && input.config !== existing.config.name) {
          throw new ConfigError(`runId: run "${runId}" already exists with config "${existing.config.name}", not "${input.config}"`);
        }
        return { runId, config: existing.config, done: await nodeResults(runId, existing.config), order: topoOrder(existing.config.nodes) };
      }
      const overrides = { ...(input.overrides ?? {}), ...(input.lineage ? { lineage: input.lineage } : {}) };
      for (const k of ['accessKey', 'secretKey', 'E3_S3_SECRET_KEY']) if (k in overrides) throw new ConfigError(`overrides.${k}: credentials are never accepted in workflow input`);
      const config = loadConfig(input.config ?? 'demo', overrides);
      let initFrom: Manifest['initFrom'];
      if (config.lineage) {
        const ptr = (await store.exists(keys.lineage(config.lineage))) ? await store.getJson<{ runId: string; nodeId: string; step: number }>(keys.lineage(config.lineage)) : null;
        if (ptr) initFrom = ptr;
      }
      if (!initFrom && config.init.startsWith('file:')) {
        const file = config.init.slice(5);
        const sha = readInitFile(file).sha256;
        initFrom = { file, sha256: sha };
      }
      if (!initFrom && config.init === 'lineage') throw new ConfigError(`init: lineage "${config.lineage}" has no committed checkpoint yet`);
      const m: Manifest = { runId, config, ...(initFrom ? { initFrom } : {}), backend: ctx.backend };
      await store.putJson(keys.manifest(runId), m);
      ctx.log(`run ${runId}: config ${config.name}, seed ${config.seed}, init ${initFrom ? JSON.stringify(initFrom) : config.init}, backend ${ctx.backend}`);
      return { runId, config, done: {}, order: topoOrder(config.nodes) };
    },

    /** One object per node (parallel nodes finishing together must not race on a shared manifest). */
    async markNodeDone(runId: string, nodeId: string, result: NodeResult): Promise<void> {
      await store.putJson(keys.result(runId, nodeId), result);
    },

    /** Point the lineage at this run's last training node's final commit. */
    async advanceLineage(runId: string, lineage: string): Promise<void> {
      const m = await readManifest(runId);
      const order = topoOrder(m.config.nodes).filter((id) => ['sft', 'rl'].includes(m.config.nodes[id].kind));
      const last = order[order.length - 1];
      if (!last) return;
      const step = (await nodeResults(runId, m.config))[last]?.checkpoint?.step ?? 0;
      await store.putJson(keys.lineage(checkId('lineage', lineage)), { runId, nodeId: last, step });
    },

    /** Open a trainer session on this worker: load the node's last commit, else its start policy. */
    async openTrainer(input: NodeInput): Promise<Session> {
      const m = await readManifest(input.runId);
      const cfg = m.config;
      const node = cfg.nodes[input.nodeId] as RlNode | SftNode;
      const key = sessionKey(input.runId, input.nodeId);
      // One live session per trainer worker (training is CPU-bound and single-threaded): a busy
      // worker refuses, and the retry lands on an idle trainer (or here, once this one is free).
      for (const [k, l] of sessions) {
        if (k === key || Date.now() - l.lastUsed > SESSION_IDLE_MS) {
          await l.trainer.dispose();
          sessions.delete(k);
        }
      }
      if (sessions.size >= (ctx.maxSessions ?? 1)) {
        throw new Error(`trainer ${ctx.queue} is busy with session ${[...sessions.keys()].join(', ')}; retrying`);
      }
      const own = await loadCheckpoint(store, input.runId, input.nodeId, (step, err) => ctx.log(`checkpoint ${key}@${step} rejected, trying the previous commit: ${err}`));
      const start = node.kind === 'rl' || !own ? await startWeights(m, input.nodeId) : undefined;
      const trainer = await PooledTrainer.open(await computePool(), key, {
        model: modelConfig(cfg),
        weights: own ? own.files['weights.bin'] : start,
        optimState: own ? own.files['optim.bin'] : undefined,
        refWeights: node.kind === 'rl' && node.grpo.klCoef > 0 ? start : undefined,
        optim: node.optim,
        toolArithmetic: cfg.toolArithmetic,
        // A warm start from a shorter-context policy trains the new positions (see growContext).
        growContext: node.kind === 'sft' && !own,
      });
      const step = own ? own.manifest.step : 0;
      const was = own?.manifest.meta.backend;
      if (typeof was === 'string' && was !== ctx.backend) {
        ctx.log(`warning: ${key}@${step} was committed on the ${was} backend, resuming on ${ctx.backend}: the run stays valid but is no longer byte-identical to an uninterrupted one (pin E3_BACKEND)`);
      }
      sessions.set(key, { trainer, node: input.nodeId, step, config: cfg, lastUsed: Date.now() });
      ctx.log(`session ${key} opened on ${ctx.queue} at step ${step}${own ? '' : ' (fresh)'}`);
      return { runId: input.runId, nodeId: input.nodeId, queue: ctx.queue, step };
    },

    async closeTrainer(s: Session): Promise<void> {
      const key = sessionKey(s.runId, s.nodeId);
      const l = sessions.get(key);
      sessions.delete(key);
      await l?.trainer.dispose();
    },

    /** SFT steps [from, to), then a commit at `to`. Resumes from its heartbeat on retry. */
    async sftChunk(s: Session, from: number, to: number): Promise<{ step: number; metrics: Record<string, number> }> {
      const l = live(s);
      const redo = l.applied?.kind === 'sft' && l.applied.from === from && l.applied.to === to && l.step === to;
      if (!redo && l.step !== from) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at step ${l.step}, asked to run from ${from}`);
      let metrics: Record<string, number> = redo ? l.applied!.metrics : {};
      if (!redo) {
        const node = l.config.nodes[s.nodeId] as SftNode;
        const sft = sftSettings(l.config, s.nodeId);
        await withHeartbeat(() => ({ step: l.step, at: (l.lastUsed = Date.now()) }), async () => {
          while (l.step < to) {
            metrics = await l.trainer.sftStep(sft.seed, l.step, node.batchSize, node.difficulty, sft.traces, { markWeight: sft.markWeight });
            l.step++;
          }
        });
        l.applied = { kind: 'sft', from, to, metrics };
      }
      // A retry that finds the chunk already trained in memory (its commit failed) only commits.
      await writeMetrics(s.runId, s.nodeId, to, metrics);
      await acts.commitCheckpoint(s, to, metrics);
      return { step: to, metrics };
    },

    /**
     * Iteration t's rollouts: every row sampled on the compute pool (split over its threads),
     * graded here, stored once (for audit and for an update on another attempt) and kept in
     * the session for rlUpdate. Returns the stored key and the train/* metrics.
     */
    async rlRollouts(s: Session, t: number, budget: number): Promise<{ key: string; rows: number; metrics: Record<string, number> }> {
      const l = live(s);
      if (l.step !== t) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at iteration ${l.step}, asked to sample ${t}`);
      const rl = rlSettings(l.config, s.nodeId);
      const rollouts = await withHeartbeat(() => ({ t, at: (l.lastUsed = Date.now()) }), () => l.trainer.sampleShard(rl, t, 0, 1, budget));
      const graded = gradeRollouts(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, l.config.toolArithmetic, rollouts);
      const key = keys.graded(s.runId, s.nodeId, t);
      await store.putJson(key, graded);
      l.graded = { t, rows: graded };
      return { key, rows: graded.length, metrics: rolloutMetrics(graded, rl.samples) };
    },

    /** Sample shard k of iteration t into the store; returns its key (runs recorded before rlRollouts). */
    async rlSample(s: Session, t: number, shard: number, budget: number): Promise<{ key: string; rows: number }> {
      const l = live(s);
      if (l.step !== t) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at iteration ${l.step}, asked to sample ${t}`);
      const shards = (l.config.nodes[s.nodeId] as { shards?: number }).shards ?? 1;
      const rollouts = await withHeartbeat(() => ({ t, shard, at: (l.lastUsed = Date.now()) }), () => l.trainer.sampleShard(rlSettings(l.config, s.nodeId), t, shard, shards, budget));
      const key = keys.rollouts(s.runId, s.nodeId, t, shard);
      await store.putJson(key, rollouts);
      return { key, rows: rollouts.length };
    },

    /** Grade the iteration's shards (the verifier recomputes everything) and store the grades. */
    async rlGrade(s: Session, t: number, shardKeys: string[]): Promise<{ key: string; metrics: Record<string, number> }> {
      const m = await readManifest(s.runId);
      const rl = rlSettings(m.config, s.nodeId);
      const rollouts = (await Promise.all(shardKeys.map((k) => store.getJson<Rollout[]>(k)))).flat();
      const graded = gradeRollouts(rl.seed, rl.stream, t, rl.prompts, rl.difficulty, m.config.toolArithmetic, rollouts);
      const key = keys.graded(s.runId, s.nodeId, t);
      await store.putJson(key, graded);
      // The iteration's data/* metrics come with rlUpdate's (the workflow merges both).
      return { key, metrics: rolloutMetrics(graded, rl.samples) };
    },

    /** GRPO update from the graded rollouts of iteration t; the session advances to t + 1. */
    async rlUpdate(s: Session, t: number): Promise<{ metrics: Record<string, number> }> {
      const l = live(s);
      // A retry after the update was applied in memory (the metrics write failed, or the
      // completion never reached the server): applying it again would train twice on t.
      if (l.applied?.kind === 'rl' && l.applied.from === t && l.step === t + 1) {
        await writeMetrics(s.runId, s.nodeId, t + 1, l.applied.metrics);
        return { metrics: l.applied.metrics };
      }
      if (l.step !== t) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at iteration ${l.step}, asked to update ${t}`);
      const graded = l.graded?.t === t ? l.graded.rows : await store.getJson<GradedRollout[]>(keys.graded(s.runId, s.nodeId, t));
      const settings = rlSettings(l.config, s.nodeId);
      let metrics: Record<string, number>;
      try {
        metrics = await withHeartbeat(() => ({ t, at: (l.lastUsed = Date.now()) }), () => l.trainer.update(settings, t, graded));
      } catch (e) {
        // Mini-batches before the failing one may have stepped: the in-memory state is no
        // longer the state at t, so drop the session (a re-open loads the last commit).
        sessions.delete(sessionKey(s.runId, s.nodeId));
        await l.trainer.dispose();
        throw e;
      }
      const data = dataMetrics('data', iterationProblems(settings.seed, settings.stream, t, settings.prompts, settings.difficulty));
      const all = { ...rolloutMetrics(graded, settings.samples), ...data, ...metrics };
      l.step = t + 1;
      l.graded = undefined;
      l.applied = { kind: 'rl', from: t, to: t + 1, metrics: all };
      await writeMetrics(s.runId, s.nodeId, t + 1, all);
      return { metrics: all };
    },

    /** Commit the session's state at `step` (blobs, manifest, then LATEST). */
    async commitCheckpoint(s: Session, step: number, metrics: Record<string, number> = {}): Promise<{ step: number; sha256: string }> {
      const l = live(s);
      if (l.step !== step) throw new SessionLostError(`session ${s.runId}/${s.nodeId} is at step ${l.step}, asked to commit ${step}`);
      const m = { config: l.config };
      const { weights, optim } = await l.trainer.snapshot();
      const state = { step, cursor: step, backend: ctx.backend, node: s.nodeId, config: m.config };
      const score = metrics['train/reward_mean'];
      await commit(store, s.runId, s.nodeId, step, { 'weights.bin': weights, 'optim.bin': optim, 'state.json': JSON.stringify(state) }, { config: m.config, backend: ctx.backend, metrics }, {
        ...(Number.isFinite(score) ? { score } : {}),
        retention: { keepLast: m.config.keepLast, keepBest: true },
      });
      return { step, sha256: sha256Hex(weights) };
    },

    /**
     * Eq. 6.1 on J(B) measured at the node's grid of budgets, on the `select` split with the
     * policy entering the next stage. When J stays below minPassAt1 on the whole grid the
     * stage data is too hard for that policy and Eq. 6.1 has nothing to measure: the node
     * fails (onUncalibrated "fail") or warns in its result and takes the largest budget.
     */
    async selectBudget(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const node = m.config.nodes[input.nodeId] as SelectBudgetNode;
      const counts = await evaluateResumable(m, input.nodeId, { ...node, split: 'select', budgets: node.grid, k: [1], offset: 0 });
      const metrics = { ...evalMetrics(counts, node.grid, [1]), ...dataMetrics('data', heldOutSet(m.config.seed, 'select', node.difficulty, 0, node.prompts)) };
      const J = node.grid.map((b) => ({ budget: b, passAt1: metrics[`eval/b${b}/pass@1`] }));
      const maxB = Math.max(...node.grid);
      const lens = counts.flatMap((c) => c[maxB].records.filter((r) => !r.truncated).map((r) => r.length));
      const meanLen = lens.length ? lens.reduce((a, b) => a + b, 0) / lens.length : 0;
      const b0 = node.b0 > 0 ? node.b0 : meanLen;
      const curve = J.map((j) => `J(${j.budget})=${j.passAt1.toFixed(3)}`).join(' ');
      const bestJ = Math.max(...J.map((j) => j.passAt1));
      if (bestJ < node.minPassAt1) {
        const msg = `nodes.${input.nodeId}: J(B) < minPassAt1 ${node.minPassAt1} on the whole grid (${curve}; ${node.prompts} problems x ${node.samples} samples): the stage data is too hard for the policy entering it, so Eq. 6.1 cannot pick a budget. Make the stage easier (count, minSteps, max) or the policy stronger`;
        if (node.onUncalibrated === 'fail') throw new UncalibratedError(msg);
        ctx.log(`warning: ${msg}; taking the largest budget ${maxB}`);
        return { kind: 'select-budget', budget: maxB, warning: msg, metrics: { ...metrics, 'select/b0': b0, 'select/budget': maxB, 'select/qualified': 0, 'select/uncalibrated': 1 } };
      }
      const choice = eq61(J, { kappa: node.kappa, b0 });
      const budget = choice.budget ?? choice.fallback ?? maxB;
      ctx.log(`select-budget ${input.runId}/${input.nodeId}: ${curve} b0=${b0.toFixed(1)} -> ${budget} (${choice.reason})`);
      return {
        kind: 'select-budget',
        budget,
        ...(choice.budget === null ? { warning: `Eq. 6.1: ${choice.reason}; took ${budget}` } : {}),
        metrics: { ...metrics, 'select/b0': b0, 'select/budget': budget, 'select/qualified': choice.budget === null ? 0 : 1, 'select/uncalibrated': 0 },
      };
    },

    /** pass@k and length / attempt / truncation stats at several budgets. */
    async evaluate(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const node = m.config.nodes[input.nodeId] as EvalNode;
      const counts = await evaluateResumable(m, input.nodeId, { ...node, split: 'eval' });
      return { kind: 'eval', metrics: { ...evalMetrics(counts, node.budgets, node.k), ...dataMetrics('data', heldOutSet(m.config.seed, 'eval', node.difficulty, node.offset, node.prompts)) } };
    },

    async renderReport(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const parts = await store.list(`runs/${input.runId}/metrics/`);
      const rows = await Promise.all(parts.map((k) => store.getJson<Record<string, number | string>>(k)));
      await store.put(keys.metrics(input.runId), rows.map((r) => JSON.stringify(r)).join('\n') + '\n', 'application/x-ndjson');
      const { html, svgs } = await renderReportHtml({ runId: input.runId, config: m.config, results: input.upstream, metrics: rows, backend: ctx.backend });
      for (const [name, svg] of Object.entries(svgs)) await store.put(keys.report(input.runId, `${name}.svg`), svg, 'image/svg+xml');
      const key = keys.report(input.runId);
      await store.put(key, html, 'text/html');
      const dir = path.join(ctx.reportDir, input.runId);
      mkdirSync(dir, { recursive: true });
      const file = path.join(dir, 'index.html');
      writeFileSync(file, html);
      return { kind: 'report', report: { key, path: file } };
    },
  };

  /** Evaluate in chunks of problems, heartbeating the partial counts so a retry resumes. */
  async function evaluateResumable(
    m: Manifest,
    nodeId: string,
    node: { difficulty: RlNode['difficulty']; split: 'eval' | 'select'; budgets: number[]; prompts: number; samples: number; temperature: number; k: number[]; offset: number },
  ): Promise<EvalCounts[]> {
    const src = policySource(m.config, nodeId);
    const weights = src ? await nodeWeights(m.runId, src) : await startWeights(m, nodeId);
    // Weights (or the run's seeded init) only, no optimiser state; a key of its own (a retry may overlap the attempt it replaces).
    const trainer = await PooledPolicy.open(await computePool(), `${m.runId}/${nodeId}#eval${++evalSeq}`, weights ?? modelConfig(m.config), m.config.toolArithmetic);
    let info: { heartbeatDetails?: unknown } = {};
    try {
      info = Context.current().info;
    } catch {
      /* called outside an activity (tests) */
    }
    const done = (info.heartbeatDetails as { counts?: EvalCounts[]; next?: number } | undefined) ?? {};
    const counts = done.counts ?? [];
    const chunk = 8;
    try {
      for (let from = done.next ?? 0; from < node.prompts; from += chunk) {
        const range: [number, number] = [from, Math.min(node.prompts, from + chunk)];
        // Heartbeat a copy: the SDK may encode a queued heartbeat later, after the push below,
        // and {counts with this chunk, next: from} would count the chunk twice on resume.
        counts.push(await withHeartbeat(() => ({ counts: [...counts], next: from }), () => trainer.evaluate({ seed: m.config.seed, ...node, ks: node.k, range })));
        try {
          heartbeat({ counts, next: range[1] });
        } catch {
          /* outside an activity */
        }
      }
    } finally {
      await trainer.dispose();
    }
    return counts;
  }

  return classified(acts);
}

export type Activities = ReturnType<typeof createActivities>;

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

