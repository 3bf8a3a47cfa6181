/**
 * The pipeline's input, checked before anything starts (pure: it runs in the workflow).
 * A mistake here (a typo'd key, a wrong type) fails the run at once with a non-retryable
 * BadConfig failure naming the field, instead of reaching an activity or failing the
 * workflow task (which Temporal would retry forever).
 */
import { ApplicationFailure } from '@temporalio/workflow';
import type { PipelineInput } from '../activities/types';
import { ErrorTypes } from '../activities/types';

const FIELDS: ReadonlyArray<keyof PipelineInput> = ['config', 'overrides', 'runId', 'lineage'];

const kindOf = (x: unknown): string =>
  x === null ? 'null' : Array.isArray(x) ? 'an array' : typeof x === 'object' ? 'an object' : `a ${typeof x}`;

function badInput(message: string): ApplicationFailure {
  return ApplicationFailure.create({ message: `pipeline input: ${message}`, type: ErrorTypes.config, nonRetryable: true });
}

/**
 * The validated input. `undefined` (no input) is `{}` (the demo config); a bare string is
 * taken as a config name, so `"tiny"` typed into the Web UI's Start Workflow input is
 * `{ "config": "tiny" }`. Anything else must be an object with only the keys of
 * `PipelineInput`: `config`, `runId` and `lineage` strings, `overrides` an object. (Whether
 * the named config exists and the overrides fit its schema is checked by `prepareRun`.)
 */
export function pipelineInput(raw: unknown): PipelineInput {
  if (raw === undefined) return {};
  if (typeof raw === 'string') return { config: raw };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw badInput(
      `must be an object such as {"config":"tiny"} (keys ${FIELDS.join(', ')}) or a config name string, got ${kindOf(raw)} (${JSON.stringify(raw)})`,
    );
  }
  const input = raw as Record<string, unknown>;
  for (const key of Object.keys(input)) {
    if (!(FIELDS as readonly string[]).includes(key)) throw badInput(`${key}: unknown key (expected ${FIELDS.join(', ')})`);
  }
  for (const key of ['config', 'runId', 'lineage'] as const) {
    if (input[key] !== undefined && typeof input[key] !== 'string') throw badInput(`${key}: must be a string, got ${kindOf(input[key])}`);
  }
  const o = input.overrides;
  if (o !== undefined && (typeof o !== 'object' || o === null || Array.isArray(o))) {
    throw badInput(`overrides: must be an object such as {"seed":3}, got ${kindOf(o)}`);
  }
  return input as PipelineInput;
}
