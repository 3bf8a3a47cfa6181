/**
 * Trainer-session admission without polling (docs/OPERATIONS.md "Workers"): a worker polls
 * the shared trainer queue (`e3-trainer`) only while it holds a free session slot. Its
 * `openTrainer` poller reserves a slot from a custom slot supplier (the SDK's worker tuner)
 * before each poll, and the reservation resolves only when a slot is free. Opens that find
 * every trainer full wait in Temporal's task queue, in arrival order within a priority, and
 * are handed to the first trainer that frees a slot: no open is refused, and no failed
 * attempt serves as a wait.
 *
 * A slot frees when a session closes, is given up by its workflow (an activity on it was
 * cancelled, e.g. its heartbeat window was missed on a slow worker and the node re-opens, or
 * refused as lost), when the node workflow run that last used it has closed without closing
 * it (terminated, timed out: asked of Temporal for sessions idle PROBE_IDLE_MS), or when it is
 * left untouched for SESSION_IDLE_MS; the last two are seen by a look every second while a
 * reservation waits.
 */
import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory, ActivitySlotInfo, CustomSlotSupplier, SlotPermit, TunerHolder } from '@temporalio/worker';
import type { SessionAdmission, SessionSlots } from '../activities/env';
import { ErrorTypes } from '../activities/types';

interface Waiting {
  resolve: (p: SlotPermit) => void;
  reject: (e: unknown) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

/** A held session idle this long is checked against its workflow run while an open waits. */
export const PROBE_IDLE_MS = 2_000;

/** Whether a node workflow's run has closed (any status but running or continued-as-new). */
export type RunClosed = (workflowId: string, runId: string) => Promise<boolean>;

/** RunClosed through a Temporal client: a run not found (past retention) has closed too. */
export function runClosed(client: Client): RunClosed {
  return async (workflowId, runId) => {
    try {
      const { status } = await client.workflow.getHandle(workflowId, runId).describe();
      return status.name !== 'RUNNING' && status.name !== 'CONTINUED_AS_NEW';
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) return true;
      throw e;
    }
  };
}

export class TrainerAdmission implements SessionAdmission {
  private slots?: SessionSlots;
  /** The workflow run that last ran an activity of each node workflow id (a session's key). */
  private readonly runs = new Map<string, string>();
  private runClosed?: RunClosed;
  private probing = false;
  /** Slots reserved by a poll or an open in progress (released when its task is done or the poll ends). */
  private reserved = 0;
  private readonly waiting: Waiting[] = [];
  private timer?: NodeJS.Timeout;

  bind(slots: SessionSlots): void {
    this.slots = slots;
    this.grant();
  }

  changed(): void {
    this.grant();
  }

  /** Ask Temporal, through `closed`, whether the run behind an idle session has ended. */
  watchRuns(closed: RunClosed): void {
    this.runClosed = closed;
  }

  /**
   * Give up the idle sessions whose node workflow run has closed without closing them (a run
   * terminated while paused or between windows): their slots free now, not after
   * SESSION_IDLE_MS. A run that continued as new keeps its session (its next run uses it).
   */
  private async probe(): Promise<void> {
    if (this.probing || !this.runClosed || !this.slots) return;
    this.probing = true;
    try {
      const now = Date.now();
      for (const [key, l] of this.slots.list()) {
        const run = this.runs.get(key);
        if (run === undefined || now - l.lastUsed < PROBE_IDLE_MS) continue;
        if (await this.runClosed(key, run).catch(() => false)) this.slots.abandon(key, l);
      }
    } finally {
      this.probing = false;
    }
  }

  /** Session slots neither held nor reserved. */
  available(): number {
    return this.slots ? this.slots.free() - this.reserved : 0;
  }

  private grant(): void {
    while (this.waiting.length > 0 && this.available() > 0) {
      const w = this.waiting.shift()!;
      w.signal.removeEventListener('abort', w.onAbort);
      this.reserved++;
      w.resolve({});
    }
    // An idle session becomes evictable with time alone: look again while a reservation waits.
    if (this.waiting.length > 0 && !this.timer) {
      this.timer = setInterval(() => {
        this.grant();
        void this.probe();
      }, 1000);
      this.timer.unref();
    } else if (this.waiting.length === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** The activity slot supplier of the Worker that polls the trainer queue (and nothing else). */
  supplier(): CustomSlotSupplier<ActivitySlotInfo> {
    return {
      type: 'custom',
      reserveSlot: (_ctx, signal) =>
        new Promise<SlotPermit>((resolve, reject) => {
          if (signal.aborted) return reject(signal.reason);
          const w: Waiting = {
            resolve,
            reject,
            signal,
            onAbort: () => {
              const i = this.waiting.indexOf(w);
              if (i >= 0) this.waiting.splice(i, 1);
              reject(signal.reason);
              this.grant();
            },
          };
          signal.addEventListener('abort', w.onAbort, { once: true });
          this.waiting.push(w);
          this.grant();
        }),
      // Eager tasks come only to a queue that also runs workflows; this one does not.
      tryReserveSlot: () => null,
      markSlotUsed: () => undefined,
      releaseSlot: () => {
        this.reserved = Math.max(0, this.reserved - 1);
        this.grant();
      },
    };
  }

  /** A worker tuner for the trainer-queue Worker: its activity slots are session slots. */
  tuner(): TunerHolder {
    const one = { type: 'fixed-size' as const, numSlots: 1 };
    return {
      activityTaskSlotSupplier: this.supplier(),
      workflowTaskSlotSupplier: one,
      localActivityTaskSlotSupplier: one,
      nexusTaskSlotSupplier: one,
    };
  }

  /**
   * For the Worker of this process's own session queue: an activity refused as lost, or
   * cancelled because its workflow gave up on the attempt (a missed heartbeat window, which is
   * not retried: the node re-opens; a cancelled or closed run), leaves its session abandoned, so
   * the node's re-open, or another node's open, is admitted at once rather than after
   * SESSION_IDLE_MS. A cancellation for a worker shutdown or a pause keeps the session.
   */
  interceptor(): ActivityInterceptorsFactory {
    return (ctx) => ({
      inbound: {
        execute: async (input, next) => {
          const key = ctx.info.workflowExecution?.workflowId ?? '';
          this.record(ctx.info.workflowExecution);
          const held = this.slots?.held(key);
          try {
            return await next(input);
          } catch (err) {
            const lost = err instanceof ApplicationFailure && err.type === ErrorTypes.sessionLost;
            const d = ctx.cancellationDetails;
            const givenUp =
              (err instanceof CancelledFailure || ctx.cancellationSignal.aborted) &&
              d !== undefined &&
              (d.timedOut || d.notFound || d.cancelRequested);
            if (held && (lost || givenUp)) this.slots?.abandon(key, held);
            throw err;
          }
        },
      },
    });
  }

  /** For the trainer queue's Worker: each open records the node workflow run it serves. */
  recorder(): ActivityInterceptorsFactory {
    return (ctx) => ({
      inbound: {
        execute: async (input, next) => {
          this.record(ctx.info.workflowExecution);
          return next(input);
        },
      },
    });
  }

  private record(w: { workflowId: string; runId: string } | undefined): void {
    if (!w) return;
    this.runs.set(w.workflowId, w.runId);
    // Keep the map to the sessions held (and the open in progress).
    if (this.runs.size > 64) for (const k of this.runs.keys()) if (k !== w.workflowId && !this.slots?.held(k)) this.runs.delete(k);
  }
}
