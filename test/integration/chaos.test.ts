/**
 * The seeded CI version of `npm run chaos` (test/chaos.ts, same code): the tiny pipeline
 * with a worker SIGKILLed and started again, the S3 server down for 30 s (activities retry
 * until it is back), and the Temporal server restarted, ends with checkpoints
 * byte-identical to an uninterrupted run of the same seed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { formatReport, planFaults, runChaos } from '../chaos';

const opts = {
  config: 'tiny',
  seed: 7,
  chaosSeed: 5,
  faults: { kill: 1, s3: 1, temporal: 1 },
  s3DownMs: [30_000, 30_000] as [number, number],
  temporalDownMs: [1000, 3000] as [number, number],
  workers: 2,
  victim: 'trainer' as const,
};

test('the fault schedule is a pure function of the chaos seed', () => {
  const a = planFaults(opts, 20_000);
  assert.deepEqual(planFaults(opts, 20_000), a);
  assert.deepEqual(a.map((f) => f.kind).sort(), ['kill-worker', 's3-restart', 'temporal-restart']);
  assert.ok(a.every((f, i) => f.at >= 2000 && f.at <= 14_000 && (i === 0 || f.at >= a[i - 1].at)));
  assert.equal(a.find((f) => f.kind === 's3-restart')!.pauseMs, 30_000);
  // The run test below relies on seed 5 putting the outage first (a quarter into the run), so
  // the Temporal restart and the kill land while S3 is still down and the run is surely busy.
  assert.equal(a[0].kind, 's3-restart');
  assert.notDeepEqual(planFaults({ ...opts, chaosSeed: 6 }, 20_000), a);
});

test('worker kill, 30 s S3 outage and Temporal restart: final checkpoints identical to an uninterrupted run', async () => {
  const r = await runChaos({ ...opts, log: (m) => console.log(`[chaos] ${m}`) });
  console.log(formatReport(r));
  for (const kind of ['kill-worker', 's3-restart', 'temporal-restart'] as const) {
    assert.ok(
      r.injected.some((f) => f.kind === kind),
      `no ${kind} fault was injected before the run ended`,
    );
  }
  assert.deepEqual(Object.keys(r.perNode), ['warmstart', 'stage1', 'stage2']);
  assert.ok(r.identical, `final checkpoints differ: ${JSON.stringify(r.perNode)}`);
  // The outage was felt: activities failed against the stopped S3 server and were retried
  // until it came back.
  const failed = Object.values(r.chaos.work.failed).reduce((a, b) => a + b, 0);
  assert.ok(failed > 0, `no activity attempt failed during the 30 s S3 outage: ${JSON.stringify(r.chaos.work.failed)}`);
  const logs = readdirSync(r.logDir)
    .map((f) => readFileSync(path.join(r.logDir, f), 'utf8'))
    .join('\n');
  assert.match(logs, new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${process.env.E3_S3_PORT}`));
  // A worker start says what it polls and nothing alarming: the activity-only trainer queues'
  // "No workflows registered" warning is expected and not printed.
  assert.match(logs, /polling e3 e3-trainer/);
  assert.doesNotMatch(logs, /No workflows registered/);
  // When the kill hit the worker holding the running training session (victim: 'trainer'),
  // the session's next activity timed out (its queue had no poller) and the node re-opened
  // at its last commit, recomputed, and still ended identical.
  const kill = r.injected.find((f) => f.kind === 'kill-worker')!;
  if (kill.detail.includes('held the running session')) {
    assert.ok(r.chaos.work.timeouts > 0, 'the session holder was killed but no activity timed out');
  }
});
