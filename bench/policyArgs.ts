/**
 * The command line bench/probe.ts and bench/hazard.ts share: a policy file, a held-out
 * difficulty, budgets and sample counts, read and checked in one place, with the backend up.
 *   <weights.e3w> '<difficulty json>' [budgets] [prompts=64] [samples=8] [seed=1] [split=eval]
 *   (split: the held-out set, `eval` or `select`, the one select-budget nodes measure J on)
 * E3_ENGINE=ort samples on ONNX Runtime (docs/ARCHITECTURE.md "Sampling engines"); default tfjs.
 */
import { readFileSync } from 'node:fs';
import { DifficultySchema, type Difficulty } from '../configs/schema';
import type { SampleEngine } from '../ml/sampler';
import { initBackend } from '../ml/backend';

export interface PolicyArgs {
  file: string;
  weights: Buffer;
  difficulty: Difficulty;
  budgets: number[];
  prompts: number;
  samples: number;
  seed: number;
  split: 'eval' | 'select';
  backend: string;
  engine: SampleEngine;
}

export async function readPolicyArgs(tool: string, budgetsDefault: string, budgetsHelp: string): Promise<PolicyArgs> {
  const [file, diff = '{}', budgetsArg = budgetsDefault, promptsArg = '64', samplesArg = '8', seedArg = '1', splitArg = 'eval'] =
    process.argv.slice(2);
  if (!file) throw new Error(`usage: ${tool} <weights.e3w> <difficulty json> [${budgetsHelp}] [prompts] [samples] [seed] [split]`);
  if (splitArg !== 'eval' && splitArg !== 'select') throw new Error(`${tool}: split must be 'eval' or 'select', got '${splitArg}'`);
  const num = (name: string, v: string, least = 1) => {
    const n = v.trim() === '' ? NaN : Number(v);
    if (!Number.isInteger(n) || n < least) throw new Error(`${tool}: ${name} must be an integer >= ${least}, got '${v}'`);
    return n;
  };
  const budgets = budgetsArg.split(',').map((b) => num('budget', b));
  const difficulty = DifficultySchema.parse(JSON.parse(diff));
  const engine = process.env.E3_ENGINE ?? 'tfjs';
  if (engine !== 'tfjs' && engine !== 'ort') throw new Error(`${tool}: E3_ENGINE must be 'tfjs' or 'ort', got '${engine}'`);
  const backend = await initBackend();
  return {
    file,
    weights: readFileSync(file),
    difficulty,
    budgets,
    prompts: num('prompts', promptsArg),
    samples: num('samples', samplesArg),
    seed: num('seed', seedArg, 0),
    split: splitArg,
    backend,
    engine,
  };
}
