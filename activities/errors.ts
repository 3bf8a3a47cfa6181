/**
 * Error classification where errors arise: bad config, invalid arguments and shape
 * mismatches from ml/, non-finite loss, uncalibrated data and corrupt / missing
 * checkpoints, and an object store whose TLS certificate is not trusted, are non-retryable
 * with a type (the types of NON_RETRYABLE_ERROR_TYPES in ./types); everything else (storage,
 * network) stays retryable.
 */
import { ApplicationFailure } from '@temporalio/common';
import { ConfigError } from '../configs/errors';
import { InvalidArgumentError, NonFiniteError, ShapeMismatchError } from '../ml/errors';
import { ReplicaLostError } from '../compute/errors';
import { CorruptObjectError, MissingObjectError, StoreTlsError } from '../storage/errors';
import { ErrorTypes } from './types';

export class SessionLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionLostError';
  }
}

export class MissingCheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MissingCheckpointError';
  }
}

/**
 * A run pinned to one tfjs backend (its manifest records the preparing worker's) reached a
 * worker on another: its kernels round differently, so the run's bytes would no longer be a
 * function of its config and seed. Start that worker with E3_BACKEND set to the run's backend.
 */
export class BackendMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackendMismatchError';
  }
}

/**
 * A rollout part sampled with another policy than the one its trainer published for the
 * iteration: applying it would train on off-policy rows under the wrong old log-probs.
 */
export class PolicyMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PolicyMismatchError';
  }
}

/** Stage data too hard for the policy entering it (select-budget measured J ~ 0): retrying cannot help. */
export class UncalibratedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UncalibratedError';
  }
}

export function classify(err: unknown): unknown {
  if (err instanceof ApplicationFailure) return err;
  const e = err as Error;
  const nonRetryable = (type: string) => ApplicationFailure.create({ message: e.message, type, nonRetryable: true, cause: e });
  if (err instanceof ConfigError) return nonRetryable(ErrorTypes.config);
  if (err instanceof InvalidArgumentError) return nonRetryable(ErrorTypes.invalid);
  if (err instanceof ShapeMismatchError) return nonRetryable(ErrorTypes.shape);
  if (err instanceof NonFiniteError) return nonRetryable(ErrorTypes.nonFinite);
  if (err instanceof SessionLostError || err instanceof ReplicaLostError) return nonRetryable(ErrorTypes.sessionLost);
  if (err instanceof MissingCheckpointError) return nonRetryable(ErrorTypes.missing);
  if (err instanceof CorruptObjectError) return nonRetryable(ErrorTypes.corrupt);
  if (err instanceof MissingObjectError) return nonRetryable(ErrorTypes.missing);
  if (err instanceof UncalibratedError) return nonRetryable(ErrorTypes.uncalibrated);
  if (err instanceof BackendMismatchError) return nonRetryable(ErrorTypes.backend);
  if (err instanceof StoreTlsError) return nonRetryable(ErrorTypes.storeTls);
  if (err instanceof PolicyMismatchError) return nonRetryable(ErrorTypes.policyMismatch);
  return err;
}

/** A cancelled activity (the SDK's CancelledFailure, or our own CancelledError): not a failure. */
const isCancellation = (err: unknown): boolean => ['CancelledFailure', 'CancelledError', 'AbortError'].includes((err as Error)?.name);

/**
 * Wrap every activity so its errors leave classified. `failed` (metrics) is told of each
 * failed attempt: the activity, its first argument (the run and node it names, if any), the
 * original error and the failure type (the non-retryable type, else "Retryable").
 */
export function classified<T extends Record<string, (...a: never[]) => Promise<unknown>>>(
  acts: T,
  failed?: (activity: string, arg: unknown, err: unknown, type: string) => void,
): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(acts)) {
    out[name] = async (...args: never[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        const c = classify(err);
        if (failed && !isCancellation(err)) {
          const type = c instanceof ApplicationFailure && c.nonRetryable ? (c.type ?? 'NonRetryable') : 'Retryable';
          try {
            failed(name, args[0], err, type);
          } catch {
            /* observation only */
          }
        }
        throw c;
      }
    };
  }
  return out as T;
}
