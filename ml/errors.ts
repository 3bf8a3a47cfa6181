/**
 * Deterministic failures of ml/: the same inputs fail the same way every time, so a retry
 * cannot help. Plain classes (ml/ knows nothing of Temporal); activities/errors.ts maps
 * each to a non-retryable failure type. Messages name the offending field or shape.
 */

/** An option or argument outside its domain (bad difficulty, policy config, sampler option...). */
export class InvalidArgumentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidArgumentError';
  }
}

/** A non-finite loss or gradient: the step is refused and nothing was modified. */
export class NonFiniteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NonFiniteError';
  }
}

/** Tensors, checkpoints or sequences whose shapes do not fit the model or each other. */
export class ShapeMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShapeMismatchError';
  }
}
