/**
 * The one run config (docs/ARCHITECTURE.md "Conventions": one typed object, defaults in one place, unknown keys
 * rejected loudly). A run is a DAG of nodes (docs/ARCHITECTURE.md "A run is a DAG"). The resolved
 * config (defaults filled in) is stored in the run manifest and in every checkpoint.
 */
import { z } from 'zod';
import { GrpoConfigSchema } from '../ml/grpo';
import { ConfigError } from './errors';
import { UnknownTaskError, taskNamed } from '../ml/tasks';

const Id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/, 'letters, digits, ".", "_", "-" (no path separators)');

export const DifficultySchema = z
  .object({
    /** How many input numbers. @default 3 */
    count: z.number().int().min(2).max(7).default(3),
    /** Smallest input number. @default 1 */
    min: z.number().int().min(0).default(1),
    /** Largest input number. @default 9 */
    max: z.number().int().min(1).max(1000).default(9),
    /** Allowed operations. @default "+-*" */
    ops: z
      .string()
      .regex(/^[+\-*/]{1,4}$/, 'a subset of "+-*/"')
      .default('+-*'),
    /** Fewest steps every solution needs, measured by the exact solver (1: no constraint). @default 1 */
    minSteps: z.number().int().min(1).max(6).default(1),
    /** Only problems that need every number (minSteps = count − 1). @default false */
    useAll: z.boolean().default(false),
    /** Only problems some solution solves in at most this many steps (solver-measured; easy sets). */
    maxSteps: z.number().int().min(1).max(6).optional(),
  })
  .strict()
  .refine((d) => d.min <= d.max, { message: 'min must be <= max', path: ['min'] })
  .refine((d) => d.minSteps <= d.count - 1, {
    message: 'minSteps must be <= count - 1 (a solution over n numbers has at most n - 1 steps)',
    path: ['minSteps'],
  })
  .refine((d) => d.maxSteps === undefined || d.maxSteps >= (d.useAll ? d.count - 1 : d.minSteps), {
    message: 'maxSteps must be >= minSteps (and >= count - 1 with useAll)',
    path: ['maxSteps'],
  });

export const ModelSchema = z
  .object({
    /** Transformer blocks. @default 2 */
    layers: z.number().int().min(1).max(48).default(2),
    /** Residual width (a multiple of heads). @default 64 */
    dModel: z.number().int().min(8).max(4096).default(64),
    /** Attention heads. @default 4 */
    heads: z.number().int().min(1).max(64).default(4),
    /** Longest prompt + response, in tokens. @default 160 */
    context: z.number().int().min(16).max(8192).default(160),
  })
  .strict()
  .refine((m) => m.dModel % m.heads === 0, { message: 'dModel must be a multiple of heads', path: ['dModel'] });

export const OptimSchema = z
  .object({
    /** Constant learning rate (docs/RECIPE.md: small, ~1e-5 to 5e-5 for RL). @default 1e-5 */
    lr: z.number().gt(0).max(1).default(1e-5),
    /** Decoupled weight decay. @default 0 */
    weightDecay: z.number().min(0).default(0),
    /** Global grad-norm clip. @default 1 */
    maxGradNorm: z.number().gt(0).default(1),
  })
  .strict();

const deps = z.array(Id).default([]);
/** Start from the run's init policy (the base) even when an ancestor trained: arms of a comparison that wait on another branch. */
export const FROM_INIT = '@init';
/**
 * The node whose final policy this node starts from, or "@init" for the run's init policy;
 * default: its first dependency that has one.
 */
const from = z.union([Id, z.literal(FROM_INIT)]).optional();

export const SftNodeSchema = z
  .object({
    kind: z.literal('sft'),
    deps,
    from,
    /** Data stream: batches derive from the run seed and this name (a second warm-start node draws new traces). @default the run seed itself */
    stream: Id.optional(),
    /** Difficulties the traces are drawn from (mixed evenly). */
    difficulty: z.array(DifficultySchema).min(1).prefault([{}]),
    /** Optimiser steps. @default 50 */
    steps: z.number().int().min(1).default(50),
    /** Traces per step. @default 32 */
    batchSize: z.number().int().min(1).default(32),
    /** Mean wrong attempts before the answer in a trace (geometric: the same chance of `ok` at every position). @default 1.5 */
    meanWrong: z.number().min(0).default(1.5),
    /** Most attempts in one trace, the answer included (long traces teach late positions). @default 8 */
    maxAttempts: z.number().int().min(1).max(64).default(8),
    /** Share of wrong attempts that are near misses (result close to the target). @default 0.5 */
    nearMiss: z.number().min(0).max(1).default(0.5),
    /** Share of wrong attempts that are the answer with its last operation changed (they look like the answer until the result). @default 0 */
    perturbed: z.number().min(0).max(1).default(0),
    /** Search traces: attempts may reach the target (the first that does ends the trace, marked `ok`) instead of being built to miss; see ml/traces.ts. @default false */
    search: z.boolean().default(false),
    /** Loss weight of the check-mark tokens (`ok` / `no`) relative to other tokens. @default 1 */
    markWeight: z.number().gt(0).max(100).default(1),
    optim: OptimSchema.prefault({ lr: 1e-3 }),
    /** Commit a checkpoint every this many steps. @default 25 */
    ckptEvery: z.number().int().min(1).default(25),
  })
  .strict();

export const RlNodeSchema = z
  .object({
    kind: z.literal('rl'),
    deps,
    from,
    difficulty: DifficultySchema.prefault({}),
    /**
     * Data and sampling stream (problems and seeds derive from the run seed and this name):
     * arms of one comparison set the same stream to see the same problems and seeds.
     * @default the node id
     */
    stream: Id.optional(),
    /** Token budget: a number, or `{ "fromNode": "<select-budget node>" }`. @default 64 */
    budget: z.union([z.number().int().min(4), z.object({ fromNode: Id }).strict()]).default(64),
    /** RL iterations. @default 10 */
    iterations: z.number().int().min(1).default(10),
    /** Prompts per iteration. @default 8 */
    prompts: z.number().int().min(1).default(8),
    /** Responses per prompt (the GRPO group). @default 8 */
    samples: z.number().int().min(2).default(8),
    /** Sampling temperature (the paper: 0.6). @default 0.6 */
    temperature: z.number().gt(0).max(10).default(0.6),
    /** Nucleus sampling mass. @default 1 */
    topP: z.number().gt(0).max(1).default(1),
    /** Optimiser steps per iteration: the rollout batch is split into this many mini-batches. @default 2 */
    miniBatches: z.number().int().min(1).default(2),
    /** Rows per forward/backward pass inside a mini-batch (gradient accumulation). @default 16 */
    microBatch: z.number().int().min(1).default(16),
    /** Drop groups whose rewards are all equal from the update (DAPO); they are counted either way. @default false */
    skipZeroStd: z.boolean().default(false),
    grpo: GrpoConfigSchema.prefault({}),
    optim: OptimSchema.prefault({}),
    /** Commit a checkpoint every this many iterations (and always at the end). @default 5 */
    ckptEvery: z.number().int().min(1).default(5),
    /**
     * Split each iteration's rollouts into this many parts, each sampled and graded by any
     * worker serving the rollout queue `e3-rollout` (docs/ARCHITECTURE.md "Rollout fan-out").
     * An operations knob: the rows, and every byte after them, are the same for any value.
     * Absent: the trainer's worker samples them itself, in the iteration's one activity.
     */
    rolloutParts: z.number().int().min(1).max(256).optional(),
    /**
     * One-step off-policy rollouts (as prime-rl and AReaL schedule them): 1 samples iteration
     * t's rows from the policy before update t − 1 (iterations 0 and 1 from the stage's first
     * policy), so that iteration t + 1's sampling can run while t's update does; the clipped
     * ratio's old log-probs are the sampler's (docs/ARCHITECTURE.md "Off-policy rollouts").
     * Absent or 0: on-policy, iteration t's rows from the policy after update t − 1.
     */
    offPolicy: z.number().int().min(0).max(1).optional(),
  })
  .strict();

export const SelectBudgetNodeSchema = z
  .object({
    kind: z.literal('select-budget'),
    deps,
    from,
    difficulty: DifficultySchema.prefault({}),
    /**
     * Candidate budgets B of Eq. 6.1. The node measures J at every B and at 2B (the largest
     * candidate's double included), so prompt + 2 * max(grid) must fit the model's context.
     * @default [32, 64, 128]
     */
    grid: z.array(z.number().int().min(4)).min(1).default([32, 64, 128]),
    /** kappa > 1 of Eq. 6.1. @default 1.2 */
    kappa: z.number().gt(1).default(1.2),
    /** B0: budgets below it are not considered; 0 means the measured mean response length. @default 0 */
    b0: z.number().int().min(0).default(0),
    /** Problems evaluated. @default 32 */
    prompts: z.number().int().min(1).default(32),
    /** Samples per problem. @default 4 */
    samples: z.number().int().min(1).default(4),
    temperature: z.number().gt(0).default(0.6),
    /**
     * J below this at every budget means the data is too hard for the policy entering the
     * stage (Eq. 6.1 then has nothing to measure; ~1 correct response in 50). @default 0.02
     */
    minPassAt1: z.number().min(0).max(1).default(0.02),
    /**
     * What to do when Eq. 6.1 cannot choose: J below minPassAt1 everywhere, or no candidate B
     * with J(2B) <= kappa J(B). "fail" fails the node (UncalibratedData: change the data or the
     * grid); "warn" records a warning in the result and the report and takes the largest
     * candidate. @default "fail"
     */
    onUncalibrated: z.enum(['fail', 'warn']).default('fail'),
    /**
     * Split the node's problems into this many parts (problem i in part i mod parts), each
     * sampled and counted by any worker serving the rollout queue `e3-rollout`
     * (docs/ARCHITECTURE.md "Evaluation fan-out"). An operations knob: the counts, the stored
     * chunks and every metric are the same for any value. Absent: one activity on the
     * general queue evaluates them all on its worker.
     */
    parts: z.number().int().min(1).max(256).optional(),
  })
  .strict()
  .refine((n) => n.parts === undefined || n.parts <= n.prompts, {
    message: 'parts must be <= prompts (a part holds whole problems)',
    path: ['parts'],
  });

export const EvalNodeSchema = z
  .object({
    kind: z.literal('eval'),
    deps,
    from,
    difficulty: DifficultySchema.prefault({}),
    /** Test budgets, including ones above the training budget (the extrapolation curve). @default [32, 64, 128] */
    budgets: z.array(z.number().int().min(4)).min(1).default([32, 64, 128]),
    /** Problems evaluated. @default 32 */
    prompts: z.number().int().min(1).default(32),
    /** Samples per problem (n of the pass@k estimator). @default 8 */
    samples: z.number().int().min(1).default(8),
    /** k values reported (each <= samples). @default [1, 4, 8] */
    k: z.array(z.number().int().min(1)).min(1).default([1, 4, 8]),
    temperature: z.number().gt(0).default(0.6),
    /**
     * First problem index within the eval split (disjointness from training comes from the
     * content-defined split, not from this offset). @default 0
     */
    offset: z.number().int().min(0).default(0),
    /**
     * Split the node's problems into this many parts (problem i in part i mod parts), each
     * sampled and counted by any worker serving the rollout queue `e3-rollout`
     * (docs/ARCHITECTURE.md "Evaluation fan-out"). An operations knob: the counts, the stored
     * chunks and every metric are the same for any value. Absent: one activity on the
     * general queue evaluates them all on its worker.
     */
    parts: z.number().int().min(1).max(256).optional(),
  })
  .strict()
  .refine((e) => e.k.every((k) => k <= e.samples), { message: 'every k must be <= samples', path: ['k'] })
  .refine((e) => e.parts === undefined || e.parts <= e.prompts, {
    message: 'parts must be <= prompts (a part holds whole problems)',
    path: ['parts'],
  });

export const ReportNodeSchema = z.object({ kind: z.literal('report'), deps, from }).strict();

export const NodeSchema = z.discriminatedUnion('kind', [
  SftNodeSchema,
  RlNodeSchema,
  SelectBudgetNodeSchema,
  EvalNodeSchema,
  ReportNodeSchema,
]);

export const RunConfigSchema = z
  .object({
    /** Config name (the file in configs/ it came from). */
    name: Id,
    /** Run seed: every other seed derives from it and the step's coordinates. @default 1 */
    seed: z
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1)
      .default(1),
    /**
     * The task (ml/tasks.ts; docs/TASKS.md): a name in the task registry, where countdown is
     * registered by default and a worker registers more from E3_TASK_MODULES. Absent from a
     * resolved config when not given. @default "countdown"
     */
    task: Id.optional(),
    /** Environment writes each arithmetic result (the policy chooses operations, checks, when to stop). @default true */
    toolArithmetic: z.boolean().default(true),
    /**
     * What samples rollouts and evaluations (docs/ARCHITECTURE.md "Sampling engines"): `tfjs`
     * (the training backend's KV-cache sampler) or `ort` (ONNX Runtime, CPU; the update's old
     * log-probs are then recomputed by the tfjs forward). Training always runs on tfjs.
     * Absent from a resolved config when not given. @default "tfjs"
     */
    engine: z.enum(['tfjs', 'ort']).optional(),
    /**
     * What samples evaluations and Eq. 6.1's J(B) measurements, when not `engine`: `ort` there
     * speeds up the sampling-bound nodes (no log-probs to recompute: they only count
     * successes) while RL rollouts keep the training backend's bytes. @default engine
     */
    evalEngine: z.enum(['tfjs', 'ort']).optional(),
    /**
     * Work cap of one training micro-batch, in rows of 128 tokens (ml/batching.ts
     * microBatches): smaller caps give a compute pool's threads more, more even pieces of an
     * optimiser step. It sets where the gradient's sums are split, so it changes every byte
     * after the first step, and a run's value is part of its resolved config. A resolved
     * config without it (runs started before the field existed) trains with 16.
     * @default 4
     */
    microWork: z.number().int().min(1).max(1024).default(4),
    model: ModelSchema.prefault({}),
    /**
     * Where the first node's policy comes from: `scratch` (seeded init), a checkpoint file
     * in the repo (`file:configs/base/base.e3ckpt`), or `lineage` (the lineage's latest). @default "scratch"
     */
    init: z.union([z.literal('scratch'), z.literal('lineage'), z.string().regex(/^file:[A-Za-z0-9_./-]+$/)]).default('scratch'),
    /** Lineage name for scheduled retraining (warm-starts from its latest commit). */
    lineage: Id.optional(),
    /** Checkpoints kept per node besides the best. @default 2 */
    keepLast: z.number().int().min(1).default(2),
    /**
     * A training node's workflow continues-as-new once its history passes this many events
     * (or the server suggests it). An operations knob: results do not depend on it. @default 4000
     */
    maxHistoryEvents: z.number().int().min(20).max(40_000).default(4000),
    nodes: z.record(Id, NodeSchema),
  })
  .strict();

/**
 * The fields of a config file besides the run config itself (configs/load.ts reads them and
 * drops them: neither reaches the resolved config, so neither changes what a run computes).
 */
export const ConfigHeaderSchema = z
  .object({
    /** The config this file starts from (`demo`, `experiments/ablation-256`); the file then holds only its changes, merged as `--set` overrides are (`null` removes a key). */
    extends: z
      .string()
      .regex(/^(experiments\/)?[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'a config name (e.g. "demo" or "experiments/ablation-256")')
      .optional(),
    /** One line saying what the config is for (`npx e3 configs`). */
    description: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[^\n]*$/, 'one line')
      .optional(),
  })
  .strict();

export type RunConfig = z.infer<typeof RunConfigSchema>;
export type NodeConfig = z.infer<typeof NodeSchema>;
export type RlNode = z.infer<typeof RlNodeSchema>;
export type SftNode = z.infer<typeof SftNodeSchema>;
export type SelectBudgetNode = z.infer<typeof SelectBudgetNodeSchema>;
export type EvalNode = z.infer<typeof EvalNodeSchema>;
export type Difficulty = z.infer<typeof DifficultySchema>;

/** Node ids in a topological order (stable: config order among ready nodes). */
export function topoOrder(nodes: Record<string, { deps: string[] }>): string[] {
  const ids = Object.keys(nodes);
  const done = new Set<string>();
  const order: string[] = [];
  while (order.length < ids.length) {
    const ready = ids.find((id) => !done.has(id) && nodes[id].deps.every((d) => done.has(d)));
    if (ready === undefined) {
      const stuck = ids.filter((id) => !done.has(id));
      throw new ConfigError(`nodes: dependency cycle among ${stuck.join(', ')}`);
    }
    done.add(ready);
    order.push(ready);
  }
  return order;
}

/** The node a node's policy comes from (explicit `from`, else the nearest ancestor that trains or holds one). */
export function policySource(cfg: RunConfig, id: string): string | null {
  const n = cfg.nodes[id];
  if (n.from === FROM_INIT) return null;
  if (n.from) return n.from;
  for (const d of n.deps) {
    const k = cfg.nodes[d].kind;
    if (k === 'sft' || k === 'rl') return d;
    const up = policySource(cfg, d);
    if (up) return up;
  }
  return null;
}

/** Validate a raw config: schema, then graph checks. One message naming the field. */
export function resolveConfig(raw: unknown, source = 'config'): RunConfig {
  const r = RunConfigSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    const where = i.path.length ? i.path.join('.') : '(root)';
    throw new ConfigError(`${source}: ${where}: ${i.message}`);
  }
  const cfg = r.data;
  if (cfg.task !== undefined) {
    try {
      taskNamed(cfg.task);
    } catch (e) {
      if (e instanceof UnknownTaskError) throw new ConfigError(`${source}: ${e.message}`);
      throw e;
    }
  }
  const ids = Object.keys(cfg.nodes);
  if (ids.length === 0) throw new ConfigError(`${source}: nodes: at least one node is required`);
  for (const id of ids) {
    const n = cfg.nodes[id];
    for (const d of n.deps) if (!cfg.nodes[d]) throw new ConfigError(`${source}: nodes.${id}.deps: unknown node "${d}"`);
    if (n.from && n.from !== FROM_INIT && !cfg.nodes[n.from])
      throw new ConfigError(`${source}: nodes.${id}.from: unknown node "${n.from}"`);
  }
  topoOrder(cfg.nodes);
  const ancestors = (id: string, seen = new Set<string>()): Set<string> => {
    for (const d of cfg.nodes[id].deps) if (!seen.has(d)) ancestors(d, seen.add(d));
    return seen;
  };
  for (const id of ids) {
    const n = cfg.nodes[id];
    if (n.from && n.from !== FROM_INIT && !ancestors(id).has(n.from))
      throw new ConfigError(`${source}: nodes.${id}.from: "${n.from}" must also be a dependency (directly or not)`);
    const needsPolicy = n.kind !== 'report' && n.kind !== 'sft';
    if (needsPolicy && !policySource(cfg, id) && cfg.init === 'scratch') {
      throw new ConfigError(`${source}: nodes.${id}: no policy to start from (no sft/rl ancestor and init is "scratch")`);
    }
    const maxBudget =
      n.kind === 'rl'
        ? typeof n.budget === 'number'
          ? n.budget
          : 0
        : n.kind === 'eval'
          ? Math.max(...n.budgets)
          : n.kind === 'select-budget'
            ? 2 * Math.max(...n.grid)
            : 0;
    const prompt = n.kind === 'rl' || n.kind === 'eval' || n.kind === 'select-budget' ? promptTokens(n.difficulty) : 0;
    if (maxBudget > 0 && maxBudget + prompt > cfg.model.context) {
      const what =
        n.kind === 'select-budget'
          ? `.grid: Eq. 6.1 measures J(2B) for the largest candidate, so budget ${maxBudget}`
          : `: budget ${maxBudget}`;
      throw new ConfigError(
        `${source}: nodes.${id}${what} plus the prompt (up to ${prompt} tokens) exceeds model.context ${cfg.model.context}`,
      );
    }
    if (n.kind === 'rl' && typeof n.budget !== 'number') {
      const src = cfg.nodes[n.budget.fromNode];
      if (!src || src.kind !== 'select-budget')
        throw new ConfigError(`${source}: nodes.${id}.budget.fromNode: "${n.budget.fromNode}" is not a select-budget node`);
      if (!ancestors(id).has(n.budget.fromNode))
        throw new ConfigError(`${source}: nodes.${id}.budget.fromNode: "${n.budget.fromNode}" must be a dependency`);
      const most = Math.max(...src.grid);
      if (most + promptTokens(n.difficulty) > cfg.model.context)
        throw new ConfigError(
          `${source}: nodes.${id}.budget: the selected budget can be up to ${most}, which with the prompt exceeds model.context ${cfg.model.context}`,
        );
    }
    if (n.kind === 'select-budget' && new Set(n.grid).size !== n.grid.length)
      throw new ConfigError(`${source}: nodes.${id}.grid: a budget appears twice`);
  }
  if (cfg.init === 'lineage' && !cfg.lineage) throw new ConfigError(`${source}: init: "lineage" needs a lineage name`);
  return cfg;
}

/** Upper bound of a prompt's length in tokens: `<bos>` + numbers + spaces + '>' + target + ':'. */
export function promptTokens(d: { count: number; max: number }): number {
  const digits = String(d.max).length;
  return 1 + d.count * (digits + 1) + 4 + 2;
}
