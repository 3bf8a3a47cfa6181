/**
 * Rollout fan-out (docs/ARCHITECTURE.md "Rollout fan-out"): an RL iteration's rows split into
 * parts, each sampled and graded by an activity on the shared rollout queue, from the policy
 * the trainer published to the object store for that iteration (content-addressed by its
 * sha256). Rollout workers keep a few loaded policies by sha; the trainer joins the parts it
 * gets back only when every one was sampled from the policy it published. Evaluation and
 * select-budget nodes with `parts` fan out the same way ("Evaluation fan-out"): their parts
 * run here too, from the same cache.
 */
import { PooledPolicy } from '../compute/pool';
import type { RunConfig } from '../configs/schema';
import { gradeAgainst, iterationProblems, shardRows } from '../ml/rollouts';
import type { GradedRollout } from '../ml/rollouts';
import { keys } from '../storage/layout';
import { InvalidArgumentError } from '../ml/errors';
import { PolicyMismatchError } from './errors';
import { evalPartProblems } from '../ml/evaluation';
import { SEEDED_INIT } from './types';
import type { EvalPartInput, EvalPartResult, RolloutPartInput, RolloutPartResult } from './types';
import type { Env } from './env';
import { checkBackend, modelConfig, rlSettings, runLabels, withHeartbeat } from './env';
import { evalJob } from './evaluate';
import type { StoredEvalPart } from './evaluate';
import { sampledTokens, since } from './metrics';

/** Loaded policies a rollout worker keeps (each a replica per compute thread). @default 2 (this iteration's and the next's) */
export const POLICY_CACHE_SIZE = 2;

/**
 * A small cache of loaded policies by key (the sha256 of the policy's bytes), least recently
 * used first out. An entry in use (a part still sampling with it) is disposed only once it is
 * released; concurrent gets of one key share one load.
 */
export class PolicyCache<T> {
  private readonly entries = new Map<string, { value: Promise<T>; users: number; evicted: boolean }>();
  constructor(
    readonly capacity: number,
    private readonly dispose: (value: T, key: string) => Promise<void> | void,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new InvalidArgumentError(`PolicyCache capacity must be a positive integer (got ${capacity})`);
  }

  /** Keys held, least recently used first. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  /** Run `use` with the value of `key`, loading it with `load` when it is not held. */
  async with<R>(key: string, load: () => Promise<T>, use: (value: T) => Promise<R>): Promise<R> {
    let e = this.entries.get(key);
    if (e) this.entries.delete(key);
    else {
      e = { value: load(), users: 0, evicted: false };
      // A failed load is not kept: the next get loads again.
      e.value.catch(() => {
        if (this.entries.get(key) === e) this.entries.delete(key);
      });
    }
    this.entries.set(key, e);
    e.users++;
    this.evict();
    try {
      return await use(await e.value);
    } finally {
      e.users--;
      if (e.evicted && e.users === 0) await this.free(e, key);
    }
  }

  private evict(): void {
    for (const [k, e] of this.entries) {
      if (this.entries.size <= this.capacity) break;
      this.entries.delete(k);
      e.evicted = true;
      if (e.users === 0) void this.free(e, k);
    }
  }

  private async free(e: { value: Promise<T> }, key: string): Promise<void> {
    const v = await e.value.catch(() => undefined);
    if (v !== undefined) await this.dispose(v, key);
  }
}

/**
 * The parts of iteration t the trainer may apply, in part order: each part once, all sampled
 * with `policy` (the sha the trainer published for t). A part of another iteration (it came
 * back after its iteration moved on) is dropped and logged; a part of iteration t from
 * another policy is refused (PolicyMismatch, non-retryable: its rows are off-policy); a
 * missing part is an InvalidArgument.
 */
export function acceptParts(
  t: number,
  policy: string,
  parts: readonly RolloutPartResult[],
  log: (msg: string) => void,
): RolloutPartResult[] {
  const n = parts.find((p) => p.t === t)?.parts;
  const out: RolloutPartResult[] = [];
  for (const p of parts) {
    if (p.t !== t) {
      log(`rollout part ${p.part}/${p.parts} of iteration ${p.t} dropped: the trainer is at iteration ${t}`);
      continue;
    }
    if (p.policy !== policy) {
      throw new PolicyMismatchError(
        `rollout part ${p.part}/${p.parts} of iteration ${t} was sampled with policy ${p.policy.slice(0, 16)}, the trainer published ${policy.slice(0, 16)} for it`,
      );
    }
    if (p.parts !== n)
      throw new InvalidArgumentError(`rollout parts of iteration ${t}: part ${p.part} is one of ${p.parts}, another one of ${n}`);
    if (out[p.part]) continue; // a duplicate of the same part, policy and iteration: the same rows
    out[p.part] = p;
  }
  if (n === undefined) throw new InvalidArgumentError(`rollout parts: none is of iteration ${t}`);
  for (let k = 0; k < n; k++) if (!out[k]) throw new InvalidArgumentError(`rollout parts of iteration ${t}: part ${k} of ${n} is missing`);
  return out;
}

/** The graded rows of every part joined in the order of the iteration's rows (prompt i, then sample j), as one activity samples them. */
export function joinGraded(parts: readonly GradedRollout[][], expected: number): GradedRollout[] {
  const all = parts.flat().sort((a, b) => a.i - b.i || a.j - b.j);
  if (all.length !== expected) throw new InvalidArgumentError(`rollout parts hold ${all.length} rows, the iteration has ${expected}`);
  return all;
}

/** A stored part: its coordinates, the policy that sampled it, and its graded rows. */
export interface StoredPart {
  t: number;
  part: number;
  parts: number;
  policy: string;
  graded: GradedRollout[];
}

export function rolloutActivities(env: Env) {
  const { ctx, store, computePool, readManifest } = env;
  let seq = 0;
  const cache = new PolicyCache<PooledPolicy>(POLICY_CACHE_SIZE, (p) => p.dispose());
  return {
    /**
     * Part `part` of iteration t's rows (prompts i with i mod parts = part), sampled with the
     * published policy `policy` and graded; stored under keys.rolloutPart. A retry, here or on
     * another worker, samples the same rows again: they depend only on (run seed, stream, t,
     * prompt, sample) and the policy's bytes.
     */
    async rolloutPart(p: RolloutPartInput): Promise<RolloutPartResult> {
      const m = await readManifest(p.runId);
      checkBackend(m, ctx.backend, `rollout part ${p.part} of ${p.runId}/${p.nodeId} t=${p.t}`);
      const cfg: RunConfig = m.config;
      const rl = rlSettings(cfg, p.nodeId);
      const engine = cfg.engine ?? 'tfjs';
      const labels = runLabels(p.runId, p.nodeId, cfg);
      const problems = iterationProblems(rl.seed, rl.stream, p.t, rl.prompts, rl.difficulty, rl.task);
      const rows = shardRows(rl, p.t, p.part, p.parts, problems);
      const key = keys.rolloutPart(p.runId, p.nodeId, p.t, p.part, p.parts, p.policy);
      return withHeartbeat(
        () => ({ t: p.t, part: p.part }),
        async () => {
          const t0 = performance.now();
          let loadMs = 0;
          let sampleMs = 0;
          let tokens = 0;
          const graded = await cache.with(
            `${p.policy}/${engine}/${cfg.toolArithmetic}`,
            async () => {
              const l0 = performance.now();
              const opened = await PooledPolicy.open(
                await computePool(),
                `policy:${p.policy.slice(0, 16)}#${++seq}`,
                await store.get(keys.policy(p.runId, p.policy), p.policy),
                cfg.toolArithmetic,
                engine,
              );
              loadMs = performance.now() - l0;
              return opened;
            },
            async (policy) => {
              const s0 = performance.now();
              const rollouts = await policy.sample(rl, rows, p.budget);
              env.metrics.phase(labels, 'sample', since(s0));
              tokens = sampledTokens(rollouts);
              env.metrics.sampled(labels, tokens, since(s0));
              const g = gradeAgainst(problems, p.t, cfg.toolArithmetic, rollouts, rl.task);
              sampleMs = performance.now() - s0;
              return g;
            },
          );
          const stored: StoredPart = { t: p.t, part: p.part, parts: p.parts, policy: p.policy, graded };
          await store.putJson(key, stored);
          // One line per part (bench/scaling.ts reads it): where a part's time went on this worker.
          ctx.log(
            `rollout part ${p.part}/${p.parts} ${p.runId}/${p.nodeId} t=${p.t}: ${graded.length} rows, ${tokens} tokens, ` +
              `load ${loadMs.toFixed(1)} ms, sample+grade ${sampleMs.toFixed(1)} ms, total ${(performance.now() - t0).toFixed(1)} ms`,
          );
          return { t: p.t, part: p.part, parts: p.parts, policy: p.policy, key, rows: graded.length };
        },
      );
    },
    /**
     * Part `part` of an evaluation or select-budget node's problems (i with i mod parts =
     * part), sampled with the policy the node published (`policy`: a sha256 under
     * keys.policy, or SEEDED_INIT) on the node's evaluation engine and counted problem by
     * problem; stored under keys.evalPart. A retry, here or on another worker, samples the
     * same rows again: they depend only on (run seed, split, problem, sample) and the policy's
     * bytes, never on the part they fall in.
     */
    async evalPart(p: EvalPartInput): Promise<EvalPartResult> {
      const m = await readManifest(p.runId);
      checkBackend(m, ctx.backend, `evaluation part ${p.part} of ${p.runId}/${p.nodeId}`);
      const cfg: RunConfig = m.config;
      const job = evalJob(cfg, p.nodeId);
      const problems = evalPartProblems(job.prompts, p.part, p.parts);
      const engine = cfg.evalEngine ?? cfg.engine ?? 'tfjs';
      const key = keys.evalPart(p.runId, p.nodeId, p.part, p.parts, p.policy);
      // The seeded init is a function of the config's model and seed: cached by those, not by a sha.
      const init = p.policy === SEEDED_INIT ? modelConfig(cfg) : undefined;
      const cacheKey = `${init ? `init:${JSON.stringify(init)}` : p.policy}/${engine}/${cfg.toolArithmetic}`;
      return withHeartbeat(
        () => ({ part: p.part }),
        async () => {
          const counts = await cache.with(
            cacheKey,
            async () =>
              PooledPolicy.open(
                await computePool(),
                `policy:${p.policy.slice(0, 16)}#${++seq}`,
                init ?? (await store.get(keys.policy(p.runId, p.policy), p.policy)),
                cfg.toolArithmetic,
                engine,
              ),
            (policy) => policy.evaluateProblems({ seed: cfg.seed, ...job, ks: job.k, ...(cfg.task ? { task: cfg.task } : {}) }, problems),
          );
          const stored: StoredEvalPart = { part: p.part, parts: p.parts, policy: p.policy, counts };
          await store.putJson(key, stored);
          return { part: p.part, parts: p.parts, policy: p.policy, key, problems: counts.length };
        },
      );
    },
  };
}
