/**
 * Trainer admission (workers/admission.ts): a reservation for the trainer queue's poller
 * resolves only while a session slot is free, in the order reservations were asked for; an
 * aborted one leaves the line. And `e3 status`'s view of the queue (cli/trainers.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SlotReserveContext } from '@temporalio/worker';
import type { LiveSession, SessionSlots } from '../../activities/env';
import { TrainerAdmission } from '../../workers/admission';
import { formatTrainerQueue, trainerQueue } from '../../cli/trainers';

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
