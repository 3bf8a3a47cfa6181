/**
 * Who holds the trainers and who waits for one (`e3 status`), read from Temporal: each running
 * training node's pending activity. An `openTrainer` not yet started waits in the shared
 * trainer queue (workers/admission.ts), served by priority key (lower first) and then in
 * arrival order; one started, or any activity on a worker's own session queue, means the node
 * holds (or is opening) a session on that worker.
 */
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

const { PENDING_ACTIVITY_STATE_STARTED, PENDING_ACTIVITY_STATE_CANCEL_REQUESTED } = temporal.api.enums.v1.PendingActivityState;

/** Temporal's default priority key with the server's default of 5 levels. */
export const DEFAULT_PRIORITY_KEY = 3;

export interface NodeActivity {
  workflowId: string;
  /** Pending activity (none between two activities). */
  activity?: {
    type: string;
    started: boolean;
    scheduledMs?: number;
    startedMs?: number;
    worker?: string;
    attempt: number;
    priorityKey?: number;
  };
}

export interface Waiter {
  workflowId: string;
  sinceMs: number;
  priorityKey: number;
  attempt: number;
  /** Waiters served before this one. */
  ahead: number;
}

export interface Holder {
  workflowId: string;
  /** Its open has been taken by a trainer and is still running (loading, or training its first commit window). */
  opening?: boolean;
  worker?: string;
  /** What it is doing: the activity type, or "between activities". */
  doing: string;
  sinceMs?: number;
}

/** Waiting opens in the order the trainer queue serves them, and the nodes holding a session. */
export function trainerQueue(nodes: NodeActivity[]): { waiting: Waiter[]; holders: Holder[] } {
  const waiting = nodes
    .filter((n) => n.activity?.type === 'openTrainer' && !n.activity.started)
    .map((n) => ({
      workflowId: n.workflowId,
      sinceMs: n.activity!.scheduledMs ?? 0,
      priorityKey: n.activity!.priorityKey || DEFAULT_PRIORITY_KEY,
      attempt: n.activity!.attempt,
      ahead: 0,
    }))
    .sort((a, b) => a.priorityKey - b.priorityKey || a.sinceMs - b.sinceMs || a.workflowId.localeCompare(b.workflowId))
    .map((w, i) => ({ ...w, ahead: i }));
  const holders = nodes
    .filter((n) => !(n.activity?.type === 'openTrainer' && !n.activity.started))
    .map((n) => ({
      workflowId: n.workflowId,
      ...(n.activity?.type === 'openTrainer' ? { opening: true } : {}),
      worker: n.activity?.worker,
      doing:
        !n.activity || n.activity.type === 'between activities'
          ? 'between activities'
          : n.activity.type === 'openTrainer'
            ? 'opening its session'
            : n.activity.started
              ? n.activity.type
              : `${n.activity.type} (scheduled)`,
      sinceMs: n.activity?.startedMs ?? n.activity?.scheduledMs,
    }));
  return { waiting, holders };
}

const ago = (now: number, t: number) => `${Math.max(0, Math.round((now - t) / 1000))} s ago`;
const clock = (t: number) => new Date(t).toISOString().slice(11, 19);

/** The lines `e3 status` prints: holders, then each waiting node with how many are ahead of it. */
export function formatTrainerQueue(q: { waiting: Waiter[]; holders: Holder[] }, now: number): string[] {
  const out: string[] = [];
  out.push(`trainer sessions: ${q.holders.length} held, ${q.waiting.length} waiting`);
  for (const h of q.holders)
    out.push(`  held: ${h.workflowId} on ${h.worker ?? 'its worker'} (${h.doing}${h.sinceMs ? `, since ${clock(h.sinceMs)}` : ''})`);
  for (const w of q.waiting) {
    const [run, ...node] = w.workflowId.split('/');
    out.push(
      `  waiting for a trainer: ${w.ahead} ahead of it (run ${run}, node ${node.join('/')}, since ${clock(w.sinceMs)}, ${ago(now, w.sinceMs)})` +
        `${w.priorityKey !== DEFAULT_PRIORITY_KEY ? ` priority ${w.priorityKey}` : ''}${w.attempt > 1 ? ` attempt ${w.attempt}` : ''}`,
    );
  }
  return out;
}

const tsMs = (t: { seconds?: { toString(): string } | null; nanos?: number | null } | null | undefined): number | undefined =>
  t?.seconds == null ? undefined : Number(t.seconds.toString()) * 1000 + (t.nanos ?? 0) / 1e6;

/**
 * The pending activity of every running training node (sft, rl) in Temporal. With `lastWorkers`
 * false, a node between activities is not looked up in its history (its worker stays unknown).
 */
export async function trainingNodes(client: Client, lastWorkers = true): Promise<NodeActivity[]> {
  const out: NodeActivity[] = [];
  for await (const wf of client.workflow.list({
    query: `ExecutionStatus = "Running" AND (WorkflowType = "sftNode" OR WorkflowType = "rlStage")`,
  })) {
    try {
      const d = await client.workflow.getHandle(wf.workflowId).describe();
      const pending = d.raw.pendingActivities ?? [];
      // One at a time per node; an open is the one that matters when present.
      const a = pending.find((p) => p.activityType?.name === 'openTrainer') ?? pending[0];
      // Between activities (or paused) the holder is the worker that ran its last activity.
      const last = a || !lastWorkers ? undefined : await lastWorker(client, wf.workflowId);
      out.push({
        workflowId: wf.workflowId,
        activity: a
          ? {
              type: a.activityType?.name ?? '?',
              started: a.state === PENDING_ACTIVITY_STATE_STARTED || a.state === PENDING_ACTIVITY_STATE_CANCEL_REQUESTED,
              scheduledMs: tsMs(a.scheduledTime),
              startedMs: tsMs(a.lastStartedTime),
              worker: a.lastWorkerIdentity || undefined,
              attempt: a.attempt ?? 1,
              // An activity without a priority of its own inherits its workflow's (a node workflow inherits its run's).
              priorityKey: a.priority?.priorityKey || d.raw.workflowExecutionInfo?.priority?.priorityKey || undefined,
            }
          : last || !lastWorkers
            ? { type: 'between activities', started: true, worker: last, attempt: 1 }
            : undefined,
      });
    } catch {
      /* it closed between list and describe */
    }
  }
  return out;
}

/** Identity of the worker that started the node's latest activity, from its history. */
async function lastWorker(client: Client, workflowId: string): Promise<string | undefined> {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  for (let i = events.length - 1; i >= 0; i--) {
    const id = events[i].activityTaskStartedEventAttributes?.identity;
    if (id) return id;
  }
  return undefined;
}
