/**
 * The trainer-session pattern (docs/ARCHITECTURE.md "One RL iteration"): the live policy and optimiser
 * stay in memory on one worker, reached through that worker's own task queue. When the
 * worker is gone (its queue has no poller: schedule-to-start timeout; or it restarted and
 * lost the session) the node re-opens on any trainer, which loads the last committed
 * checkpoint, and the caller rewinds to that step.
 */
import {
  ActivityFailure,
  ApplicationFailure,
  TimeoutFailure,
  defineQuery,
  defineSignal,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
} from '@temporalio/workflow';
import type { Duration } from '@temporalio/common';
import type { Activities } from '../activities';
import type { FirstWindow, NodeInput, OpenedSession, Session } from '../activities/types';
import {
  ErrorTypes,
  HEARTBEAT_TIMEOUT_TYPE,
  NON_RETRYABLE_ERROR_TYPES,
  SESSION_NON_RETRYABLE_ERROR_TYPES,
  TRAINER_QUEUE,
} from '../activities/types';
import type { TrainerLine } from './story';
import { waitingDetails } from './story';

const opener = proxyActivities<Activities>({
  taskQueue: TRAINER_QUEUE,
  // What the Web UI shows on the open while it waits: a worker takes it only with a free
  // session slot (workers/admission.ts), so a pending open is a place in the trainer queue.
  summary: 'open trainer session (waits in e3-trainer for a free trainer)',
  startToCloseTimeout: '10 minutes',
  // An open heartbeats every second from the worker's free main thread (the loading and the
  // replicas are awaited, not computed there). A worker that dies while opening is noticed in
  // 10 s and the open retried on another trainer: the window is added to the recovery of a
  // lost session whenever a worker is killed during the re-open, so it is kept short.
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1s', maximumInterval: '10s', backoffCoefficient: 2, nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES] },
});

/**
 * A session activity's start-to-close timeout is only a backstop for a computation that hangs
 * while its heartbeat timer still fires: a lost worker is noticed by the 6 s heartbeat window.
 * It must exceed honest work on a loaded machine: a 100-step SFT chunk at context 1088, with
 * 5 sessions sharing 2 cores, does about 45 steps in 600 s, and a timeout taken for a lost
 * session rewinds the chunk to its start, again and again. A timeout is not one of a
 * workflow's commands, so changing it keeps recorded histories replaying.
 */
export const SESSION_ACTIVITY_BACKSTOP: Duration = '4 hours';

/**
 * The open that also trains the session's first commit window (`openTrainer` with `first`,
 * patch "commit-windows"): the opener's queue, retries and heartbeat window (a worker lost
 * during the open or the window is an open to retry on any trainer, from the last commit; the
 * opener's 10 s, as the loading part of the open needs on a loaded host, not a session
 * activity's 6 s), and a session activity's backstop.
 */
const openerTraining = proxyActivities<Activities>({
  taskQueue: TRAINER_QUEUE,
  summary: 'open trainer session, then train to its first commit (waits in e3-trainer for a free trainer)',
  startToCloseTimeout: SESSION_ACTIVITY_BACKSTOP,
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1s', maximumInterval: '10s', backoffCoefficient: 2, nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES] },
});

/** Activities of an open session, pinned to the worker that holds it. */
export function sessionActivities(s: Session, summary?: string) {
  return proxyActivities<Activities>({
    taskQueue: s.queue,
    // What the Web UI shows on the activity (e.g. "update t=12").
    ...(summary ? { summary } : {}),
    // A session's activities run one at a time on its worker's own queue, so a task waits
    // only for a poller: none for this long means the worker is gone. Its main thread only
    // orchestrates (the tensor work is on compute threads) and heartbeats every second, so
    // a missed heartbeat window means a lost worker too. Re-open elsewhere, fast.
    scheduleToStartTimeout: '5 seconds',
    startToCloseTimeout: SESSION_ACTIVITY_BACKSTOP,
    heartbeatTimeout: '6 seconds',
    retry: {
      initialInterval: '1s',
      maximumInterval: '10s',
      backoffCoefficient: 2,
      maximumAttempts: 8,
      // SessionLost too: withRewind re-opens the session rather than retrying on a worker without it.
      // So does a missed heartbeat window: retried, the attempt would only wait on the dead
      // worker's queue for the schedule-to-start timeout (5 s more before the re-open). A live
      // worker heartbeats every second from a free main thread, so the window is missed only
      // when it is gone; if it was alive after all, the rewind recomputes the same bytes.
      nonRetryableErrorTypes: [...SESSION_NON_RETRYABLE_ERROR_TYPES, HEARTBEAT_TIMEOUT_TYPE],
    },
  });
}

/** The node's place in the trainer queue while its open waits, sent by a worker's line announcer (workers/line.ts) when it changes. */
export const trainerLineSignal = defineSignal<[TrainerLine]>('trainerLine');
/** Whether the node's open waits, and the place it shows (the announcer signals only a change). */
export const trainerLineQuery = defineQuery<{ waiting: boolean; line?: TrainerLine }>('trainerLine');

/**
 * Open the node's trainer session. Until a trainer takes it, the node's current details in the
 * Web UI say it waits, and, once a worker's line announcer has signalled it, how many opens are
 * ahead of it and who holds the trainers (the caller's next update replaces them). Handlers and
 * details are not commands: histories recorded before them replay unchanged. With `first`, the
 * open also trains the session's first commit window (what it returns says how far).
 */
export const openSession = async (input: NodeInput, first?: FirstWindow): Promise<OpenedSession> => {
  const st: { waiting: boolean; line?: TrainerLine } = { waiting: true };
  setHandler(trainerLineSignal, (line) => {
    // A signal sent just before the open was taken must not overwrite the node's progress.
    if (!st.waiting) return;
    st.line = line;
    setCurrentDetails(waitingDetails(input.runId, input.nodeId, line));
  });
  setHandler(trainerLineQuery, () => ({ waiting: st.waiting, ...(st.waiting && st.line ? { line: st.line } : {}) }));
  setCurrentDetails(waitingDetails(input.runId, input.nodeId));
  try {
    return await (first ? openerTraining.openTrainer(input, first) : opener.openTrainer(input));
  } finally {
    st.waiting = false;
  }
};

/** True when the failure means the session's worker (or its memory) is gone. */
export function isSessionLost(err: unknown): boolean {
  if (!(err instanceof ActivityFailure)) return false;
  const cause = err.cause;
  if (cause instanceof ApplicationFailure && cause.type === ErrorTypes.sessionLost) return true;
  if (cause instanceof TimeoutFailure) return true;
  return false;
}

/**
 * Wrap a session step: on session loss, re-open and report the step to rewind to. Any other
 * activity failure fails the node: the session is closed first (best effort), so its worker
 * does not keep refusing other sessions until it evicts this one as idle.
 */
export async function withRewind<T>(
  get: () => Session,
  reopen: (s: Session) => void,
  input: NodeInput,
  body: (s: Session) => Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; rewindTo: number }> {
  try {
    return { ok: true, value: await body(get()) };
  } catch (err) {
    if (!isSessionLost(err)) {
      // Behind a patch: recorded histories without this close fail the node without scheduling it.
      if (err instanceof ActivityFailure && patched('close-session-on-failure'))
        await sessionActivities(get())
          .closeTrainer(get())
          .catch(() => undefined);
      throw err;
    }
    const s = await openSession(input);
    reopen(s);
    return { ok: false, rewindTo: s.step };
  }
}
