/**
 * Shapes exchanged between workflows and activities: small JSON only (object keys and
 * stats); rollouts and weights stay in the object store (docs/ARCHITECTURE.md "One RL iteration").
 */
import type { RunConfig } from '../configs/schema';

export const TASK_QUEUE = 'e3';
/** Any trainer worker answers `openTrainer` here; its session then lives on its own queue. */
export const TRAINER_QUEUE = 'e3-trainer';
/**
 * Parts of an RL iteration's rollouts (an RL node's `rolloutParts`) and of an evaluation or
 * select-budget node's problems (its `parts`): sampled by any worker that serves it (every
 * `all` worker, and `--queues rollout` workers on other machines).
 */
export const ROLLOUT_QUEUE = 'e3-rollout';

/** The pipeline's one input; every field has a default, so `{}` runs the demo config. */
export interface PipelineInput {
  /** Config name in configs/ (e.g. "tiny", "demo"). @default "demo" */
  config?: string;
  /** Shallow overrides applied to the named config before validation (e.g. `{ "seed": 3 }`). */
  overrides?: Record<string, unknown>;
  /** Run id; @default the workflow id */
  runId?: string;
  /** Lineage name: warm-start from its latest commit and advance it at the end. */
  lineage?: string;
}

export type NodeResult = {
  kind: string;
  /** Final checkpoint of a training node. */
  checkpoint?: { step: number };
  /** Budget chosen by a select-budget node. */
  budget?: number;
  /** Something the user should know about this result (e.g. Eq. 6.1 had no qualifying budget). */
  warning?: string;
  /** Small metrics (e.g. eval/b64/pass@1). */
  metrics?: Record<string, number>;
  /** Report location (object key and local path). */
  report?: { key: string; path: string };
};

export interface PreparedRun {
  runId: string;
  config: RunConfig;
  /** Nodes already completed in the manifest (skipped on resume). */
  done: Record<string, NodeResult>;
  /** Topological order of node ids. */
  order: string[];
}

export interface NodeInput {
  runId: string;
  nodeId: string;
  config: RunConfig;
  /** Results of completed nodes (for budgets chosen upstream). */
  upstream: Record<string, NodeResult>;
}

export interface Session {
  runId: string;
  nodeId: string;
  /** The worker-specific task queue holding the live policy and optimiser. */
  queue: string;
  /** Step the session's in-memory state is at when opened (last commit, or 0). */
  step: number;
}

/** One part of an RL iteration's rollouts, to sample and grade on the rollout queue. */
export interface RolloutPartInput {
  runId: string;
  nodeId: string;
  t: number;
  budget: number;
  /** Part `part` of `parts`: the iteration's prompts i with i mod parts = part (ml/rollouts.ts shardRows). */
  part: number;
  parts: number;
  /** sha256 of the serialised policy the trainer published for iteration t (storage/layout.ts keys.policy). */
  policy: string;
}

/**
 * One part of an evaluation or select-budget node's problems (the node's `parts`), to sample
 * and count on the rollout queue (activities/rollout.ts evalPart).
 */
export interface EvalPartInput {
  runId: string;
  nodeId: string;
  /** Part `part` of `parts`: the node's problems i with i mod parts = part (ml/evaluation.ts evalPartProblems). */
  part: number;
  parts: number;
  /**
   * The policy evaluated: the sha256 of its weights as published under keys.policy
   * (activities/evaluate.ts publishEvalPolicy), or SEEDED_INIT for the run's seeded init.
   */
  policy: string;
}

/** What an evaluation part returns: where its per-problem counts are, and the policy that sampled them. */
export interface EvalPartResult {
  part: number;
  parts: number;
  policy: string;
  key: string;
  /** Problems counted. */
  problems: number;
}

/** An evaluation part's `policy` when the node evaluates the run's seeded init (no weights to publish: the manifest's config defines it). */
export const SEEDED_INIT = 'seeded-init';

/** What a rollout part returns: where its graded rows are, and the policy that sampled them. */
export interface RolloutPartResult {
  t: number;
  part: number;
  parts: number;
  policy: string;
  key: string;
  rows: number;
}

export interface IterationStats {
  iteration: number;
  metrics: Record<string, number>;
}

/**
 * A training node's steps from `from` up to its next commit (docs/ARCHITECTURE.md "Commit
 * windows"): the step after `from` that is a multiple of `ckptEvery`, or the node's last. An RL
 * iteration commits exactly there (t + 1 a multiple of ckptEvery, or the last), and an SFT
 * chunk is one such window, so a window ends at the commit the steps one by one would make.
 */
export function windowEnd(from: number, total: number, ckptEvery: number): number {
  if (!Number.isInteger(from) || from < 0 || from >= total)
    throw new RangeError(`windowEnd: from must be an integer step in [0, ${total}), got ${from}`);
  if (!Number.isInteger(ckptEvery) || ckptEvery < 1)
    throw new RangeError(`windowEnd: ckptEvery must be a positive integer, got ${ckptEvery}`);
  return Math.min(total, (Math.floor(from / ckptEvery) + 1) * ckptEvery);
}

/** What a commit window returns: the step it reached (and committed), its last step's metrics, whether it closed the session. */
export interface WindowStats extends IterationStats {
  closed: boolean;
}

/**
 * `openTrainer`'s optional second argument: train the opened session's first commit window in
 * the same activity (RL iterations at `budget`, or SFT steps), and close the session when that
 * window ends the node. Nodes with rollout parts never ask (their iterations need the workflow).
 */
export interface FirstWindow {
  /** The RL node's token budget (the workflow resolves a budget chosen upstream); absent for SFT. */
  budget?: number;
}

/** What `openTrainer` returns: the session, and the first window's stats when it was asked to train one (none when opened at the node's end). */
export type OpenedSession = Session & { first?: WindowStats };

export interface Progress {
  runId: string;
  nodeId: string;
  kind: string;
  iteration: number;
  total: number;
  paused: boolean;
  budget?: number;
  metrics: Record<string, number>;
  rewinds: number;
  /** Workflow time (Unix ms) of the node's last step applied, else of this workflow run's start (`e3 status`). */
  updatedAt?: number;
}

/** Failure types (ApplicationFailure.type) the workflows react to. */
export const ErrorTypes = {
  config: 'BadConfig',
  sessionLost: 'SessionLost',
  nonFinite: 'NonFiniteLoss',
  corrupt: 'CorruptCheckpoint',
  missing: 'MissingCheckpoint',
  shape: 'ShapeMismatch',
  uncalibrated: 'UncalibratedData',
  backend: 'BackendMismatch',
  invalid: 'InvalidArgument',
  /** The object store's TLS certificate is not trusted (activities/errors.ts). */
  storeTls: 'ObjectStoreTLS',
  /** A rollout part was sampled from another policy than the one the trainer published for its iteration. */
  policyMismatch: 'PolicyMismatch',
} as const;

/**
 * The one list of failure types no activity retries (every `proxyActivities` retry policy
 * uses it): a retry meets the same config, shapes, data or missing object again.
 * activities/errors.ts `classify` also marks these failures non-retryable where they arise.
 */
export const NON_RETRYABLE_ERROR_TYPES: readonly string[] = [
  ErrorTypes.config,
  ErrorTypes.invalid,
  ErrorTypes.shape,
  ErrorTypes.nonFinite,
  ErrorTypes.corrupt,
  ErrorTypes.missing,
  ErrorTypes.uncalibrated,
  ErrorTypes.backend,
  ErrorTypes.storeTls,
];

/**
 * Activities of an open trainer session: the same list plus SessionLost, which the workflow
 * handles itself by re-opening the session elsewhere (workflows/session.ts `withRewind`).
 */
export const SESSION_NON_RETRYABLE_ERROR_TYPES: readonly string[] = [...NON_RETRYABLE_ERROR_TYPES, ErrorTypes.sessionLost];

/**
 * The non-retryable type the server matches a heartbeat timeout against: "TemporalTimeout:" +
 * the timeout type's Go `String()`, which is the short name (server v1.29.1
 * service/history/workflow/retry.go `isRetryable`, common/retrypolicy/retry_policy.go; api-go
 * enums/v1 `TimeoutType.String()` = "Heartbeat"). The proto name (TIMEOUT_TYPE_HEARTBEAT) never
 * matches: with it, a missed heartbeat window was retried on the same session queue.
 */
export const HEARTBEAT_TIMEOUT_TYPE = 'TemporalTimeout:Heartbeat';
