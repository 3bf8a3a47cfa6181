/**
 * A config that cannot run: a wrong key, type or value, a broken graph, an unknown or cyclic
 * `extends`. The message names the file (or source) and the field. Deterministic, so
 * activities/errors.ts maps it to a non-retryable BadConfig failure.
 */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
