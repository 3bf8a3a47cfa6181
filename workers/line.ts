/**
 * The line announcer (docs/OPERATIONS.md "Workers"): workflow code cannot see the trainer
 * queue, so a process that polls the general queue looks at it every E3_LINE_POLL_MS (default
 * 2000; 0 turns it off) the way `e3 status` does (cli/trainers.ts) and signals each waiting
 * node workflow its place (`trainerLine`: opens ahead of it, since when, the holders) when that
 * changes. Signals are history events, so one goes out only for a change: this process
 * remembers what it sent, and before a signal it asks the workflow what it shows (a query adds
 * no event), so several announcers (several general workers) seldom send the same change twice.
 */
import type { Client } from '@temporalio/client';
import { setMaxListeners } from 'node:events';
import { trainerQueue, trainingNodes } from '../cli/trainers';
import type { TrainerLine } from '../workflows/story';

/** The place a waiter shows, in a canonical form (holders sorted) so equal places compare equal. */
export const lineKey = (l: TrainerLine): string => JSON.stringify([l.ahead, l.sinceMs, [...l.holders].sort(), l.openedOn ?? null]);

/**
 * Each waiter's line from one look at the training nodes (pure: what the announcer would send);
 * and, for a node whose open a trainer has taken, that it is opening there (the open may train
 * the first commit window before it returns, and until it returns the node shows its wait).
 */
export function linesOf(q: ReturnType<typeof trainerQueue>): Map<string, TrainerLine> {
  // Holders by workflow only: which activity a holder runs, and on which worker, changes every
  // iteration, and a signal per change would grow the waiter's history for nothing.
  const holders = q.holders.map((h) => h.workflowId).sort();
  const lines = new Map<string, TrainerLine>(q.waiting.map((w) => [w.workflowId, { ahead: w.ahead, sinceMs: w.sinceMs, holders }]));
  for (const h of q.holders)
    if (h.opening) lines.set(h.workflowId, { ahead: 0, sinceMs: h.sinceMs ?? 0, holders, openedOn: h.worker ?? 'a trainer' });
  return lines;
}

export function parseLinePollMs(v: string | undefined): number {
  const ms = Number(v || 2000);
  if (!Number.isInteger(ms) || (ms !== 0 && ms < 250))
    throw new Error(`E3_LINE_POLL_MS must be 0 (off) or an integer of at least 250 (ms), got "${v}"`);
  return ms;
}

/**
 * Start announcing; returns the function that stops it (it aborts a look in progress and
 * resolves once it has ended, so the connection can close). Each look's calls have a deadline
 * of 20 s: a query to a workflow no worker serves must not hold the next look, or the process.
 */
export function announceTrainerLine(client: Client, everyMs: number, log: (m: string) => void): () => Promise<void> {
  const sent = new Map<string, string>();
  let stopped = false;
  let abort: AbortController | undefined;
  let current: Promise<void> | undefined;
  let failing = false;
  const tick = async () => {
    try {
      const lines = linesOf(trainerQueue(await trainingNodes(client, false)));
      for (const [id, line] of lines) {
        const key = lineKey(line);
        if (sent.get(id) === key) continue;
        const h = client.workflow.getHandle(id);
        // A workflow that does not answer (closed, or code without the handler) is not signalled.
        const shown = await h.query<{ waiting: boolean; line?: TrainerLine }>('trainerLine').catch(() => undefined);
        if (!shown?.waiting) continue;
        if (!shown.line || lineKey(shown.line) !== key) await h.signal('trainerLine', line);
        sent.set(id, key);
      }
      for (const id of [...sent.keys()]) if (!lines.has(id)) sent.delete(id);
      failing = false;
    } catch (e) {
      // The server is away for a moment: look again at the next tick (said once per outage).
      if (!failing) log(`trainer line: ${e instanceof Error ? e.message : String(e)}`);
      failing = true;
    }
  };
  const look = () => {
    abort = new AbortController();
    // One listener per call of the look (the SDK's), more than Node's default warning count.
    setMaxListeners(0, abort.signal);
    return client.withAbortSignal(abort.signal, () => client.withDeadline(Date.now() + 20_000, tick));
  };
  const timer = setInterval(() => {
    if (current || stopped) return;
    current = look().finally(() => (current = undefined));
  }, everyMs);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    abort?.abort();
    await current?.catch(() => undefined);
  };
}
