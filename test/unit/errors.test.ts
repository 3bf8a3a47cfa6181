/**
 * Deterministic ml/ failures are typed (ml/errors.ts), and classify() turns each into a
 * non-retryable ApplicationFailure of the type the workflows' one retry list names, with the
 * message unchanged; errors a retry can fix (a dropped connection) stay retryable.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { ApplicationFailure } from '@temporalio/common';
import { BackendMismatchError, MissingCheckpointError, SessionLostError, UncalibratedError, classify } from '../../activities/errors';
import { ReplicaLostError } from '../../compute/errors';
import { ErrorTypes, NON_RETRYABLE_ERROR_TYPES, SESSION_NON_RETRYABLE_ERROR_TYPES } from '../../activities/types';
import { ConfigError } from '../../configs/errors';
import { initBackend } from '../../ml/backend';
import { generateCountdown } from '../../ml/countdown';
import { InvalidArgumentError, ShapeMismatchError } from '../../ml/errors';
import { groupAdvantages } from '../../ml/grpo';
import { NonFiniteError } from '../../ml/errors';
import type { Policy } from '../../ml/policy';
import { createPolicy, disposePolicy, forwardHidden } from '../../ml/policy';
import { sample } from '../../ml/sampler';
import { ShapeMismatchError as TrainerShapeMismatchError } from '../../ml/trainer';
import { CorruptObjectError, MissingObjectError, StoreTlsError } from '../../storage/errors';

let policy: Policy;
before(async () => {
  await initBackend();
  policy = createPolicy({ vocab: 12, layers: 1, dModel: 8, heads: 2, context: 16, seed: 3 });
});
after(() => disposePolicy(policy));

/** The error a thunk throws (or its promise rejects with). */
async function thrown(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  return assert.fail('did not throw');
}

const opts = { budget: 4, temperature: 1, topP: 1, seeds: [1], eos: 2 };
const cases: Array<{ what: string; fn: () => unknown; cls: typeof InvalidArgumentError; type: string; message: RegExp }> = [
  // min 0 passes the config schema (DifficultySchema.min is >= 0) and fails here, every time.
  {
    what: 'countdown difficulty',
    fn: () => generateCountdown(1, 0, { count: 3, min: 0, max: 9, ops: '+-*' }, 'train'),
    cls: InvalidArgumentError,
    type: ErrorTypes.invalid,
    message: /^countdown: bad difficulty \{"count":3,"min":0/,
  },
  {
    what: 'policy config',
    fn: () => createPolicy({ vocab: 12, layers: 1, dModel: 9, heads: 2, context: 16, seed: 0 }),
    cls: InvalidArgumentError,
    type: ErrorTypes.invalid,
    message: /^policy config: dModel 9 is not a multiple of heads 2$/,
  },
  {
    what: 'sequence past the context',
    fn: () => tf.tidy(() => forwardHidden(policy, tf.zeros([1, 17], 'int32'))),
    cls: ShapeMismatchError,
    type: ErrorTypes.shape,
    message: /^policy: sequence length 17 exceeds context 16$/,
  },
  {
    what: 'sampler budget',
    fn: () => sample(policy, [[1, 5]], { ...opts, budget: 0 }),
    cls: InvalidArgumentError,
    type: ErrorTypes.invalid,
    message: /^sampler: budget must be an integer >= 1 \(got 0\)$/,
  },
  {
    what: 'sampler prompt + budget past the context',
    fn: () => sample(policy, [[1, 5, 6]], { ...opts, budget: 14 }),
    cls: ShapeMismatchError,
    type: ErrorTypes.shape,
    message: /^sampler: prompt 0 \(3 tokens\) \+ budget 14 exceeds the context 16$/,
  },
  {
    what: 'GRPO groups',
    fn: () => groupAdvantages([1, 0, 1], 2),
    cls: ShapeMismatchError,
    type: ErrorTypes.shape,
    message: /^groupAdvantages: rewards\.length 3 is not a multiple of groupSize 2$/,
  },
];

for (const c of cases) {
  test(`ml: ${c.what} throws ${c.cls.name}; classify makes it a non-retryable ${c.type} with the same message`, async () => {
    const e = await thrown(c.fn);
    assert.ok(e instanceof c.cls, `${c.what}: ${String(e)}`);
    assert.match((e as Error).message, c.message);
    const f = classify(e);
    assert.ok(f instanceof ApplicationFailure);
    assert.equal(f.type, c.type);
    assert.equal(f.nonRetryable, true);
    assert.equal(f.message, (e as Error).message);
    assert.ok(NON_RETRYABLE_ERROR_TYPES.includes(f.type!), `${f.type} is not in the shared non-retryable list`);
  });
}

test('ml/trainer re-exports the one ShapeMismatchError class', () => {
  assert.equal(TrainerShapeMismatchError, ShapeMismatchError);
});

test('every classified type is in the one non-retryable list; session activities add only SessionLost', () => {
  const errors = [
    new ConfigError('c'),
    new InvalidArgumentError('i'),
    new ShapeMismatchError('s'),
    new NonFiniteError('n'),
    new MissingCheckpointError('m'),
    new CorruptObjectError('k', 'a', 'b'),
    new MissingObjectError('k'),
    new UncalibratedError('u'),
    new BackendMismatchError('b'),
    new StoreTlsError('https://s3.example', 'CERT_HAS_EXPIRED', new Error('certificate has expired')),
  ];
  const types = errors.map((e) => (classify(e) as ApplicationFailure).type);
  assert.deepEqual([...new Set(types)].sort(), [...NON_RETRYABLE_ERROR_TYPES].sort());
  assert.deepEqual([...SESSION_NON_RETRYABLE_ERROR_TYPES].sort(), [...NON_RETRYABLE_ERROR_TYPES, ErrorTypes.sessionLost].sort());
  assert.equal((classify(new SessionLostError('gone')) as ApplicationFailure).type, ErrorTypes.sessionLost);
  // the compute pool's own replica-lost error means the same to the workflow
  assert.equal((classify(new ReplicaLostError('thread gone')) as ApplicationFailure).type, ErrorTypes.sessionLost);
  assert.ok(!NON_RETRYABLE_ERROR_TYPES.includes(ErrorTypes.sessionLost), 'SessionLost is handled by re-opening, not by the general list');
  // A dropped connection is left alone: Temporal retries it.
  const reset = Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
  assert.equal(classify(reset), reset);
});
