/**
 * The tasks a run can name (docs/TASKS.md): a registry from a config's `task` to what training
 * needs of it, the `Task` interface (ml/task.ts: generator, prompt, grader, forced tokens) and
 * the warm-start trace generator (paper §3: the base policy must already write attempt →
 * check → retry). Countdown is registered by default and is the task of a config without a
 * `task` field. A task from outside ml/ registers itself when its module is imported; a
 * worker imports the modules E3_TASK_MODULES names (workers/taskModules.ts), in its main
 * thread and in each compute thread.
 */
import * as path from 'node:path';
import { difficultyProfile, makeCountdown } from './countdown';
import type { CountdownProblem } from './countdown';
import { Rng, deriveSeed } from './rng';
import type { Difficulty, Problem, Task } from './task';
import { makeTrace, sftBatch } from './traces';
import type { SftExample, TraceOptions } from './traces';

export interface TrainableTask<P extends Problem = Problem> {
  /** The task for a run: with `tool`, the tool-computed variant where the task has one (config `toolArithmetic`). */
  task(tool: boolean): Task<P>;
  /**
   * A warm-start response for `p` (attempts each closed by `ok`/`no`, the last one `ok`), drawn
   * from `rng` only; `opts.budget` is the most tokens prompt and response may take.
   */
  trace(p: P, rng: Rng, opts: Partial<TraceOptions>): string;
  /** data/* metrics of a set of problems (what the set is made of); none when absent. */
  profile?(ps: readonly P[]): Record<string, number>;
}

/** The task of a config without a `task` field. */
export const DEFAULT_TASK = 'countdown';

const registry = new Map<string, TrainableTask>();

/** An unknown task name, named by the config field that gave it. */
export class UnknownTaskError extends Error {
  constructor(
    readonly field: string,
    readonly task: string,
  ) {
    super(
      `${field}: unknown task "${task}" (registered: ${[...registry.keys()].sort().join(', ')}; a task from outside ml/ is registered by a module named in E3_TASK_MODULES, docs/TASKS.md)`,
    );
    this.name = 'UnknownTaskError';
  }
}

/** Register `t` under `name` (a config's `task`). Registering a name twice with another task is refused. */
export function registerTask<P extends Problem>(name: string, t: TrainableTask<P>): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`registerTask: name "${name}" must be letters, digits, "_", "." or "-"`);
  const had = registry.get(name);
  if (had && had !== (t as unknown as TrainableTask)) throw new Error(`registerTask: "${name}" is already registered`);
  registry.set(name, t as unknown as TrainableTask);
}

/** The task a run names (`undefined`: countdown); `field` names where the name came from in errors. */
export function taskNamed(name: string | undefined, field = 'task'): TrainableTask {
  const t = registry.get(name ?? DEFAULT_TASK);
  if (!t) throw new UnknownTaskError(field, name!);
  return t;
}

export const registeredTasks = (): string[] => [...registry.keys()].sort();

const countdownTasks = { tool: makeCountdown({ toolArithmetic: true }), plain: makeCountdown({ toolArithmetic: false }) };
registerTask<CountdownProblem>(DEFAULT_TASK, {
  task: (tool) => (tool ? countdownTasks.tool : countdownTasks.plain),
  trace: (p, rng, opts) => makeTrace(p, rng, opts),
  profile: (ps) => {
    const prof = difficultyProfile(ps);
    const out: Record<string, number> = { min_steps_mean: prof.meanMinSteps, needs_all: prof.needsAll };
    for (const [k, share] of Object.entries(prof.minSteps)) out[`min_steps_${k}`] = share;
    return out;
  },
});

/**
 * Batch `step` of warm-start examples of the named task, a pure function of (seed, step):
 * countdown's is `sftBatch` (ml/traces.ts); any other task's draws problem i the same way
 * (its own generator, train split, a difficulty picked per example) and its trace from the
 * same per-example rng.
 */
export function sftExamples(
  name: string | undefined,
  seed: number,
  step: number,
  batchSize: number,
  difficulty: Difficulty | readonly Difficulty[],
  opts: Partial<TraceOptions> = {},
): Array<Omit<SftExample, 'problem'> & { problem: Problem }> {
  if ((name ?? DEFAULT_TASK) === DEFAULT_TASK) return sftBatch(seed, step, batchSize, difficulty, opts);
  const t = taskNamed(name);
  const task = t.task(false);
  const ds = Array.isArray(difficulty) ? (difficulty as readonly Difficulty[]) : [difficulty as Difficulty];
  const out: Array<Omit<SftExample, 'problem'> & { problem: Problem }> = [];
  for (let i = 0; i < batchSize; i++) {
    const rng = new Rng(deriveSeed(seed, 'sft-trace', step, i));
    const p = task.generate(deriveSeed(seed, 'sft'), step * batchSize + i, rng.pick(ds), 'train');
    out.push({ id: p.id, problem: p, prompt: task.prompt(p), response: t.trace(p, rng, opts) });
  }
  return out;
}

/**
 * Import each module a comma-separated list names (E3_TASK_MODULES: paths, absolute or from the
 * working directory); each registers its task(s) when imported. A worker calls it in its main
 * thread and in every compute thread, the CLI before it reads a config. A module that cannot be
 * loaded is one error naming the variable and the module.
 */
export function loadTaskModules(list: string | undefined, from = process.cwd(), variable = 'E3_TASK_MODULES'): string[] {
  const mods = (list ?? '')
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
  for (const m of mods) {
    const file = path.resolve(from, m);
    try {
      require(file);
    } catch (e) {
      throw new Error(`${variable}: cannot load task module ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return mods;
}
