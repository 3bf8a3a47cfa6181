/**
 * Trainer admission (workers/admission.ts): a reservation for the trainer queue's poller
 * resolves only while a session slot is free, in the order reservations were asked for; an
 * aborted one leaves the line. And `e3 status`'s view of the queue (cli/trainers.ts), and the
 * place each waiting node is told (workers/line.ts) and shows (workflows/story.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SlotReserveContext } from '@temporalio/worker';
import type { LiveSession, SessionSlots } from '../../activities/env';
import { PROBE_IDLE_MS, TrainerAdmission } from '../../workers/admission';
import { formatTrainerQueue, trainerQueue } from '../../cli/trainers';
import { lineKey, linesOf, parseLinePollMs } from '../../workers/line';
import { waitingDetails } from '../../workflows/story';

const ctx = {
  slotType: 'activity',
  taskQueue: 'e3-trainer',
  workerIdentity: 'w',
  workerBuildId: '',
  isSticky: false,
} as SlotReserveContext;
const tick = () => new Promise((r) => setImmediate(r));

function fakeSlots(max: number) {
  const held = new Map<string, LiveSession & { abandoned?: boolean }>();
  const slots: SessionSlots = {
    free: () => max - [...held.values()].filter((l) => !l.abandoned).length,
    held: (k) => held.get(k),
    list: () => [...held.entries()].filter(([, l]) => !l.abandoned),
    abandon: (k, l) => {
      if (held.get(k) === l) l.abandoned = true;
    },
  };
  return { held, slots };
}

test('a reservation waits for a free session slot, and reservations are granted in the order asked', async () => {
  const { held, slots } = fakeSlots(1);
  const a = new TrainerAdmission();
  a.bind(slots);
  const sup = a.supplier();
  const order: string[] = [];
  const first = sup.reserveSlot(ctx, new AbortController().signal).then(() => order.push('first'));
  await first;
  // The first poll holds the only slot; an open on it becomes a session.
  held.set('r1/n', { lastUsed: 0 } as LiveSession);
  a.changed();
  const second = sup.reserveSlot(ctx, new AbortController().signal).then(() => order.push('second'));
  const third = sup.reserveSlot(ctx, new AbortController().signal).then(() => order.push('third'));
  sup.releaseSlot({ permit: {} });
  await tick();
  assert.deepEqual(order, ['first'], 'granted while the only slot is held by a session');
  held.delete('r1/n');
  a.changed();
  await second;
  await tick();
  assert.deepEqual(order, ['first', 'second'], 'one free slot admits one reservation');
  sup.releaseSlot({ permit: {} });
  await third;
  assert.deepEqual(order, ['first', 'second', 'third']);
});

test('an aborted reservation leaves the line with the abort reason', async () => {
  const { held, slots } = fakeSlots(1);
  const a = new TrainerAdmission();
  a.bind(slots);
  held.set('r1/n', { lastUsed: 0 } as LiveSession);
  const sup = a.supplier();
  const ac = new AbortController();
  const waiting = sup.reserveSlot(ctx, ac.signal);
  const reason = new Error('poller no longer needed');
  ac.abort(reason);
  await assert.rejects(waiting, (e) => e === reason);
  const next = sup.reserveSlot(ctx, new AbortController().signal);
  held.delete('r1/n');
  a.changed();
  await next; // the aborted one did not take the slot
  assert.equal(a.available(), 0);
});

test('an abandoned session frees its slot for the next open', async () => {
  const { held, slots } = fakeSlots(1);
  const a = new TrainerAdmission();
  a.bind(slots);
  const l = { lastUsed: 0 } as LiveSession;
  held.set('r1/n', l);
  let granted = false;
  const p = a
    .supplier()
    .reserveSlot(ctx, new AbortController().signal)
    .then(() => (granted = true));
  await tick();
  assert.equal(granted, false);
  slots.abandon('r1/n', { lastUsed: 0 } as LiveSession); // another session object: a re-open replaced it
  a.changed();
  await tick();
  assert.equal(granted, false, 'abandoning a replaced session must not free the slot');
  slots.abandon('r1/n', l);
  a.changed();
  await p;
  assert.equal(granted, true);
});

test('a session whose node workflow run has closed frees its slot while an open waits; a running or continued run keeps it', async () => {
  const { held, slots } = fakeSlots(2);
  const a = new TrainerAdmission();
  a.bind(slots);
  // Each node's last activity ran in this workflow run (recorded as the trainer queue's opens run).
  const ran = async (workflowId: string, runId: string) => {
    const f = a.recorder()({ info: { workflowExecution: { workflowId, runId } } } as never);
    await f.inbound!.execute!({} as never, async () => undefined);
  };
  const status: Record<string, string> = { 'r1/stage1:A': 'TERMINATED', 'r2/stage1:B': 'RUNNING', 'r3/stage1:C': 'CONTINUED_AS_NEW' };
  const asked: string[] = [];
  a.watchRuns(async (id, run) => {
    asked.push(`${id}:${run}`);
    return status[`${id}:${run}`] !== 'RUNNING' && status[`${id}:${run}`] !== 'CONTINUED_AS_NEW';
  });
  const idle = Date.now() - PROBE_IDLE_MS - 1;
  const running = { lastUsed: idle } as LiveSession;
  const continued = { lastUsed: idle } as LiveSession;
  const terminated = { lastUsed: idle } as LiveSession;
  held.set('r2/stage1', running);
  held.set('r3/stage1', continued);
  await ran('r2/stage1', 'B');
  await ran('r3/stage1', 'C');
  const sup = a.supplier();
  let granted = false;
  const p = sup.reserveSlot(ctx, new AbortController().signal).then(() => (granted = true));
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(granted, false, 'a running run and a continued-as-new one keep their sessions');
  assert.deepEqual(asked.sort(), ['r2/stage1:B', 'r3/stage1:C']);
  assert.equal(running.abandoned, undefined);
  assert.equal(continued.abandoned, undefined);
  // Swap the running one for a terminated one: its slot frees at the next look.
  held.delete('r2/stage1');
  held.set('r1/stage1', terminated);
  await ran('r1/stage1', 'A');
  // The admission's look is an unref'd timer: keep the loop alive while it runs.
  for (let i = 0; i < 50 && !granted; i++) await new Promise((r) => setTimeout(r, 100));
  await p;
  assert.equal(terminated.abandoned, true);
  assert.equal(continued.abandoned, undefined);
  sup.releaseSlot({ permit: {} } as never); // the open it admitted is done
  // A session in use (touched within PROBE_IDLE_MS) is not asked about.
  asked.length = 0;
  const busy = { lastUsed: Date.now() + 60_000 } as LiveSession;
  held.set('r4/stage1', busy);
  await ran('r4/stage1', 'D');
  const q = sup.reserveSlot(ctx, new AbortController().signal);
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(!asked.includes('r4/stage1:D'), `asked about a session in use: ${asked.join(', ')}`);
  held.delete('r4/stage1');
  a.changed();
  await q;
  assert.equal(busy.abandoned, undefined);
});

test('e3 status: waiting opens ordered by priority key, then arrival; holders with their worker', () => {
  const nodes = [
    { workflowId: 'a/stage1', activity: { type: 'openTrainer', started: false, scheduledMs: 3000, attempt: 1 } },
    { workflowId: 'b/warmstart', activity: { type: 'openTrainer', started: false, scheduledMs: 1000, attempt: 1 } },
    { workflowId: 'c/stage2', activity: { type: 'openTrainer', started: false, scheduledMs: 5000, attempt: 1, priorityKey: 1 } },
    {
      workflowId: 'd/stage1',
      activity: { type: 'rlIteration', started: true, scheduledMs: 500, startedMs: 600, worker: '42@host', attempt: 1 },
    },
    { workflowId: 'e/stage1' },
  ];
  const q = trainerQueue(nodes);
  assert.deepEqual(
    q.waiting.map((w) => [w.workflowId, w.ahead]),
    [
      ['c/stage2', 0],
      ['b/warmstart', 1],
      ['a/stage1', 2],
    ],
  );
  assert.deepEqual(
    q.holders.map((h) => [h.workflowId, h.worker, h.doing]),
    [
      ['d/stage1', '42@host', 'rlIteration'],
      ['e/stage1', undefined, 'between activities'],
    ],
  );
  const lines = formatTrainerQueue(q, 10_000);
  assert.equal(lines[0], 'trainer sessions: 2 held, 3 waiting');
  assert.match(
    lines.find((x) => x.includes('run a,'))!,
    /waiting for a trainer: 2 ahead of it \(run a, node stage1, since 00:00:03, 7 s ago\)/,
  );
  assert.match(
    lines.find((x) => x.includes('run c,'))!,
    /0 ahead of it .* priority 1/,
  );
});

test("line announcer: each waiter's place and the holders; a change of a holder's activity is no change of line", () => {
  const nodes = [
    { workflowId: 'b/warmstart', activity: { type: 'openTrainer', started: false, scheduledMs: 2000, attempt: 1 } },
    { workflowId: 'c/warmstart', activity: { type: 'openTrainer', started: false, scheduledMs: 3000, attempt: 1 } },
    { workflowId: 'z/stage1', activity: { type: 'rlIteration', started: true, scheduledMs: 500, worker: '42@host', attempt: 1 } },
    { workflowId: 'a/warmstart' },
  ];
  const lines = linesOf(trainerQueue(nodes));
  assert.deepEqual(
    [...lines.entries()],
    [
      ['b/warmstart', { ahead: 0, sinceMs: 2000, holders: ['a/warmstart', 'z/stage1'] }],
      ['c/warmstart', { ahead: 1, sinceMs: 3000, holders: ['a/warmstart', 'z/stage1'] }],
    ],
  );
  // The holder between activities, then in its next one on another worker: the same line.
  const later = linesOf(
    trainerQueue([
      ...nodes.slice(0, 2),
      { workflowId: 'z/stage1' },
      { workflowId: 'a/warmstart', activity: { type: 'sftChunk', started: true, worker: '7@other', attempt: 1 } },
    ]),
  );
  assert.equal(lineKey(later.get('c/warmstart')!), lineKey(lines.get('c/warmstart')!));
  // b gets the trainer: c moves up, a change.
  const moved = linesOf(
    trainerQueue([nodes[1], nodes[2], { workflowId: 'b/warmstart', activity: { type: 'openTrainer', started: true, attempt: 1 } }]),
  );
  assert.equal(moved.get('c/warmstart')!.ahead, 0);
  assert.notEqual(lineKey(moved.get('c/warmstart')!), lineKey(lines.get('c/warmstart')!));
  assert.equal(lineKey({ ahead: 1, sinceMs: 5, holders: ['x', 'a'] }), lineKey({ ahead: 1, sinceMs: 5, holders: ['a', 'x'] }));
});

test('line announcer: a node whose open a trainer took is told it is opening there, once', () => {
  const opening = {
    workflowId: 'b/warmstart',
    activity: { type: 'openTrainer', started: true, startedMs: 4000, worker: '42@host', attempt: 1 },
  };
  const waiter = { workflowId: 'c/warmstart', activity: { type: 'openTrainer', started: false, scheduledMs: 3000, attempt: 1 } };
  const lines = linesOf(trainerQueue([opening, waiter]));
  assert.deepEqual(lines.get('b/warmstart'), { ahead: 0, sinceMs: 4000, holders: ['b/warmstart'], openedOn: '42@host' });
  assert.deepEqual(lines.get('c/warmstart'), { ahead: 0, sinceMs: 3000, holders: ['b/warmstart'] });
  // Still opening at the next look: the same line, so no second signal.
  assert.equal(lineKey(linesOf(trainerQueue([opening, waiter])).get('b/warmstart')!), lineKey(lines.get('b/warmstart')!));
  // Once the open returned, the node is no waiter and gets no line.
  const next = { workflowId: 'b/warmstart', activity: { type: 'sftChunk', started: true, worker: '42@host', attempt: 1 } };
  assert.equal(linesOf(trainerQueue([next, waiter])).has('b/warmstart'), false);
  assert.equal(
    waitingDetails('b', 'warmstart', lines.get('b/warmstart')),
    '**warmstart** — opening its trainer session on `42@host` (since 00:00:04 UTC): loading its last commit, then training to its first commit',
  );
});

test("a waiting node's details: its place, the run, node and since, and the holders", () => {
  const t = Date.UTC(2026, 0, 2, 13, 4, 5);
  assert.equal(
    waitingDetails('run-1', 'stage1', { ahead: 2, sinceMs: t, holders: ['run-0/warmstart', 'run-9/stage2'] }),
    '**stage1** — waiting for a trainer: 2 ahead of it (run run-1, node stage1, since 13:04:05 UTC)\n\nTrainer held by: `run-0/warmstart`, `run-9/stage2`',
  );
  assert.match(waitingDetails('run-1', 'stage1', { ahead: 0, sinceMs: t, holders: [] }), /0 ahead of it[\s\S]*Trainer held by: none/);
  // Before the first announcement: that it waits, and where to look.
  assert.match(waitingDetails('run-1', 'stage1'), /^\*\*stage1\*\* — waiting for a trainer: queued in `e3-trainer`/);
});

test('E3_LINE_POLL_MS: 0 turns the announcer off; anything else below 250 ms or not an integer is refused by name', () => {
  assert.equal(parseLinePollMs(undefined), 2000);
  assert.equal(parseLinePollMs('0'), 0);
  assert.equal(parseLinePollMs('500'), 500);
  for (const bad of ['100', '1.5', 'x', '-1']) assert.throws(() => parseLinePollMs(bad), /E3_LINE_POLL_MS/);
});
