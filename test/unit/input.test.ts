/**
 * The pipeline's input check (workflows/input.ts): a config name string, an object with the
 * known keys, or a non-retryable BadConfig failure naming the field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplicationFailure } from '@temporalio/common';
import { ErrorTypes } from '../../activities/types';
import { pipelineInput } from '../../workflows/input';

function rejects(raw: unknown, message: RegExp): void {
  assert.throws(
    () => pipelineInput(raw),
    (e: unknown) => {
      assert.ok(e instanceof ApplicationFailure, String(e));
      assert.equal(e.type, ErrorTypes.config);
      assert.equal(e.nonRetryable, true);
      assert.match(e.message, message);
      return true;
    },
  );
}

test('no input is the demo default; a bare string is a config name; valid objects pass unchanged', () => {
  assert.deepEqual(pipelineInput(undefined), {});
  assert.deepEqual(pipelineInput('tiny'), { config: 'tiny' });
  assert.deepEqual(pipelineInput({}), {});
  const full = { config: 'tiny', overrides: { seed: 3, nodes: { stage1: { iterations: 2 } } }, runId: 'r-1', lineage: 'main' };
  assert.deepEqual(pipelineInput(full), full);
});

test('not an object: numbers, booleans, null and arrays are refused, saying what came', () => {
  rejects(3, /^pipeline input: must be an object such as \{"config":"tiny"\} .* or a config name string, got a number \(3\)$/);
  rejects(true, /got a boolean \(true\)$/);
  rejects(null, /got null \(null\)$/);
  rejects(['tiny'], /got an array \(\["tiny"\]\)$/);
});

test('an unknown key (a typo) is refused, naming it and the known keys', () => {
  rejects(
    { config: 'tiny', overide: { seed: 3 } },
    /^pipeline input: overide: unknown key \(expected config, overrides, runId, lineage\)$/,
  );
  rejects({ Config: 'tiny' }, /^pipeline input: Config: unknown key/);
});

test('wrong types are refused, naming the field', () => {
  rejects({ config: 3 }, /^pipeline input: config: must be a string, got a number$/);
  rejects({ config: { name: 'tiny' } }, /^pipeline input: config: must be a string, got an object$/);
  rejects({ runId: 7 }, /^pipeline input: runId: must be a string, got a number$/);
  rejects({ lineage: null }, /^pipeline input: lineage: must be a string, got null$/);
  rejects({ overrides: 'seed=3' }, /^pipeline input: overrides: must be an object such as \{"seed":3\}, got a string$/);
  rejects({ overrides: [{ seed: 3 }] }, /^pipeline input: overrides: must be an object .*, got an array$/);
  rejects({ overrides: null }, /^pipeline input: overrides: .* got null$/);
});
