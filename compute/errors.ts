/**
 * The compute pool's own failure: a session's replicas are gone (a compute thread died, the
 * session was closed or re-opened under an operation, replicas disagree, the pool is closed).
 * The thread (compute/thread.ts) and the pool (compute/pool.ts) throw it; activities/errors.ts
 * maps it to SessionLost, so the workflow re-opens the session from its last commit instead of
 * retrying on a worker that no longer holds it.
 */
export class ReplicaLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReplicaLostError';
  }
}
