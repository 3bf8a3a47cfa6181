/**
 * Failures of the object store's contents (storage/store.ts, storage/checkpoints.ts): an
 * object that is not there, or whose bytes do not match the sha256 recorded with them. A
 * retry reads the same bytes, so activities/errors.ts maps both to non-retryable failures
 * (a checkpoint load skips a corrupt commit and tries the previous one instead).
 */

/** An object whose bytes do not match the sha256 recorded when it was written. */
export class CorruptObjectError extends Error {
  constructor(
    readonly key: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`object ${key} is corrupt: sha256 ${actual} does not match the recorded ${expected}`);
    this.name = 'CorruptObjectError';
  }
}

/** An object that does not exist. */
export class MissingObjectError extends Error {
  constructor(readonly key: string) {
    super(`object ${key} does not exist`);
    this.name = 'MissingObjectError';
  }
}
