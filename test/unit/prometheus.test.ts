/**
 * A worker's Prometheus metrics (activities/metrics.ts, workers/metrics.ts): what each call
 * records and under which labels, the bound on runs with series, that metrics never throw
 * into the work they observe, that the one scrape target carries the SDK exporter's text,
 * and that activity failures and an untrusted object-store certificate are typed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { E3Metrics, MAX_RUNS, sampledTokens } from '../../activities/metrics';
import { SessionLostError, classified, classify } from '../../activities/errors';
import { ErrorTypes, NON_RETRYABLE_ERROR_TYPES } from '../../activities/types';
import { StoreTlsError } from '../../storage/errors';
import type { Client } from '@temporalio/client';
import { metricsAddress, serveMetrics, watchSchedules } from '../../workers/metrics';

const L = { run: 'r1', node: 'stage1', config: 'tiny' };

/** The value of one series in the registry (undefined when absent). */
async function value(m: E3Metrics, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = (await m.registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (metric?.values ?? []).find((x) =>
    Object.entries(labels).every(([k, want]) => String((x.labels as Record<string, unknown>)[k]) === want),
  );
  return v?.value;
}

test('training calls count iterations and steps and fill the phase histograms under run, node and config', async () => {
  const m = new E3Metrics();
  m.rlIteration(L);
  m.rlIteration(L);
  m.sftSteps({ ...L, node: 'warmstart' }, 3);
  m.phase(L, 'sample', 0.2);
  m.phase(L, 'update', 1.5);
  m.phase(L, 'update', 0.5);
  m.sampled(L, 400, 2);
  m.reward(L, 0.25);
  m.evaluation({ ...L, node: 'eval' }, { 'eval/b16/pass@1': 0.5, 'eval/b32/pass@1': 0.75, 'eval/b16/pass@4': 0.9 });
  assert.equal(await value(m, 'e3_rl_iterations_total', L), 2);
  assert.equal(await value(m, 'e3_sft_steps_total', { ...L, node: 'warmstart' }), 3);
  assert.equal(await value(m, 'e3_sampled_tokens_total', L), 400);
  assert.equal(await value(m, 'e3_sampled_tokens_per_second', L), 200);
  assert.equal(await value(m, 'e3_train_reward', L), 0.25);
  assert.equal(await value(m, 'e3_eval_pass_at_1', { node: 'eval', budget: '32' }), 0.75);
  assert.equal(await value(m, 'e3_eval_pass_at_1', { node: 'eval', budget: '16' }), 0.5);
  const text = await m.registry.metrics();
  assert.match(text, /e3_iteration_phase_seconds_count\{run="r1",node="stage1",config="tiny",phase="update"\} 2/);
  assert.match(text, /e3_iteration_phase_seconds_sum\{run="r1",node="stage1",config="tiny",phase="update"\} 2\n/);
  assert.match(text, /e3_iteration_phase_seconds_count\{run="r1",node="stage1",config="tiny",phase="sample"\} 1/);
  // pass@k other than pass@1 is not a gauge of its own.
  assert.doesNotMatch(text, /pass@4/);
});

test('opening a session marks progress and exports its step counter from 0; only an open that resumes from a commit is a re-open', async () => {
  const m = new E3Metrics();
  const before = Date.now() / 1000;
  m.opened(L, false, 'rl');
  assert.equal(await value(m, 'e3_session_reopens_total', L), undefined);
  assert.equal(await value(m, 'e3_rl_iterations_total', L), 0);
  assert.equal(await value(m, 'e3_sft_steps_total', L), undefined);
  m.rlIteration(L);
  m.opened(L, true, 'rl');
  assert.equal(await value(m, 'e3_rl_iterations_total', L), 1, 'a re-open does not reset the counter');
  m.opened({ ...L, node: 'warmstart' }, false, 'sft');
  assert.equal(await value(m, 'e3_sft_steps_total', { ...L, node: 'warmstart' }), 0);
  assert.equal(await value(m, 'e3_session_reopens_total', L), 1);
  const t = (await value(m, 'e3_node_last_progress_timestamp_seconds', L))!;
  assert.ok(t >= Math.floor(before) && t <= Date.now() / 1000 + 1, String(t));
});

test("the schedules' last outcomes replace the previous set", async () => {
  const m = new E3Metrics();
  m.schedules(
    new Map([
      ['nightly', true],
      ['weekly', false],
    ]),
  );
  assert.equal(await value(m, 'e3_schedule_last_run_failed', { schedule: 'nightly' }), 1);
  assert.equal(await value(m, 'e3_schedule_last_run_failed', { schedule: 'weekly' }), 0);
  m.schedules(new Map([['weekly', true]]));
  assert.equal(await value(m, 'e3_schedule_last_run_failed', { schedule: 'nightly' }), undefined);
  assert.equal(await value(m, 'e3_schedule_last_run_failed', { schedule: 'weekly' }), 1);
});

test('sampled tokens exclude the tokens the environment wrote', () => {
  assert.equal(
    sampledTokens([
      { response: [1, 2, 3, 4], forced: [2] },
      { response: [5, 6], forced: [] },
    ]),
    5,
  );
});

test('series of the oldest runs are removed beyond MAX_RUNS; a run seen again comes back', async () => {
  const m = new E3Metrics();
  for (let i = 0; i <= MAX_RUNS; i++) {
    m.rlIteration({ ...L, run: `run-${i}` });
    m.phase({ ...L, run: `run-${i}` }, 'sample', 1);
  }
  assert.equal(await value(m, 'e3_rl_iterations_total', { run: 'run-0' }), undefined);
  assert.equal(await value(m, 'e3_rl_iterations_total', { run: 'run-1' }), 1);
  assert.equal(await value(m, 'e3_rl_iterations_total', { run: `run-${MAX_RUNS}` }), 1);
  const runs = new Set(
    (await m.registry.getMetricsAsJSON()).flatMap((x) => x.values.map((v) => (v.labels as Record<string, string>).run)).filter(Boolean),
  );
  assert.equal(runs.size, MAX_RUNS);
  m.rlIteration({ ...L, run: 'run-0' });
  assert.equal(await value(m, 'e3_rl_iterations_total', { run: 'run-0' }), 1);
  assert.equal(await value(m, 'e3_rl_iterations_total', { run: 'run-1' }), undefined);
});

test('a label set missing its config takes the one the run was seen with', async () => {
  const m = new E3Metrics();
  m.rlIteration(L);
  m.rewind({ run: 'r1', node: 'stage1', config: '' });
  assert.equal(await value(m, 'e3_session_rewinds_total', L), 1);
});

test('metrics never throw into the work they observe, and odd error codes become "other"', async () => {
  const m = new E3Metrics();
  m.phase(L, 'sample', NaN);
  m.reward(L, Infinity);
  m.sampled(L, 10, 0);
  m.storeError('put', 'ECONNREFUSED');
  m.storeError('get', 'a code with spaces and https://host/ in it');
  assert.equal(await value(m, 'e3_object_store_errors_total', { op: 'put', code: 'ECONNREFUSED' }), 1);
  assert.equal(await value(m, 'e3_object_store_errors_total', { op: 'get', code: 'other' }), 1);
  assert.equal(await value(m, 'e3_train_reward', L), undefined);
});

test('sessions and the compute pool are read at scrape time; busy seconds only move forward', async () => {
  const m = new E3Metrics();
  let sessions = [L, { ...L, node: 'stage2' }];
  m.watchSessions(() => sessions);
  const pool = { queueDepth: 3, threadBusyMs: [1000, 0] };
  m.watchPool(pool);
  pool.threadBusyMs[0] = 3500;
  pool.threadBusyMs[1] = 250;
  assert.equal(await value(m, 'e3_sessions_open', {}), 2);
  assert.equal(await value(m, 'e3_session_open', { node: 'stage2', run: 'r1', config: 'tiny' }), 1);
  assert.equal(await value(m, 'e3_compute_queue_depth', {}), 3);
  assert.equal(await value(m, 'e3_compute_thread_busy_seconds_total', { thread: '0' }), 2.5);
  assert.equal(await value(m, 'e3_compute_thread_busy_seconds_total', { thread: '1' }), 0.25);
  sessions = [];
  pool.threadBusyMs[0] = 4500;
  assert.equal(await value(m, 'e3_sessions_open', {}), 0);
  assert.equal(await value(m, 'e3_session_open', { node: 'stage2' }), undefined);
  assert.equal(await value(m, 'e3_compute_thread_busy_seconds_total', { thread: '0' }), 3.5);
});

test('classified activities count failures by type and SessionLost as a rewind; cancellations are not failures', async () => {
  const seen: Array<[string, string]> = [];
  const acts = classified(
    {
      lost: async (_s: { runId: string; nodeId: string }) => {
        throw new SessionLostError('gone');
      },
      flaky: async () => {
        throw new Error('ECONNRESET');
      },
      cancelled: async () => {
        throw Object.assign(new Error('stop'), { name: 'CancelledError' });
      },
    },
    (activity, _arg, _err, type) => seen.push([activity, type]),
  );
  await assert.rejects(
    acts.lost({ runId: 'r', nodeId: 'n' }),
    (e: ApplicationFailure) => e.type === ErrorTypes.sessionLost && e.nonRetryable,
  );
  await assert.rejects(acts.flaky(), /ECONNRESET/);
  await assert.rejects(acts.cancelled(), /stop/);
  assert.deepEqual(seen, [
    ['lost', ErrorTypes.sessionLost],
    ['flaky', 'Retryable'],
  ]);
});

test('an untrusted object-store certificate is non-retryable, and its message names the endpoint and the problem', () => {
  const cause = Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' });
  const e = classify(new StoreTlsError('https://127.0.0.1:37071', 'SELF_SIGNED_CERT_IN_CHAIN', cause));
  assert.ok(e instanceof ApplicationFailure);
  assert.equal(e.type, ErrorTypes.storeTls);
  assert.equal(e.nonRetryable, true);
  assert.ok(NON_RETRYABLE_ERROR_TYPES.includes(ErrorTypes.storeTls));
  assert.match(e.message, /https:\/\/127\.0\.0\.1:37071/);
  assert.match(e.message, /SELF_SIGNED_CERT_IN_CHAIN/);
  assert.match(e.message, /NODE_EXTRA_CA_CERTS/);
});

test('the metrics address: off unless E3_METRICS_PORT is set, the SDK one port above, bad ports named', () => {
  assert.equal(metricsAddress({}), undefined);
  assert.deepEqual(metricsAddress({ E3_METRICS_PORT: '9464' }), { host: '127.0.0.1', port: 9464, sdkPort: 9465 });
  assert.deepEqual(metricsAddress({ E3_METRICS_PORT: '9464', E3_SDK_METRICS_PORT: '9500', E3_METRICS_HOST: '0.0.0.0' }), {
    host: '0.0.0.0',
    port: 9464,
    sdkPort: 9500,
  });
  assert.throws(() => metricsAddress({ E3_METRICS_PORT: 'x' }), /E3_METRICS_PORT must be a TCP port/);
  assert.throws(() => metricsAddress({ E3_METRICS_PORT: '9464', E3_SDK_METRICS_PORT: '70000' }), /E3_SDK_METRICS_PORT must be a TCP port/);
  assert.throws(() => metricsAddress({ E3_METRICS_PORT: '9464', E3_SDK_METRICS_PORT: '9464' }), /must differ/);
});

test("one scrape target: e3's metrics followed by the SDK exporter's, and a scrape still answers when the SDK's is down", async () => {
  const sdk = createServer((_req, res) =>
    res.end('# TYPE temporal_worker_start_total counter\ntemporal_worker_start_total{service_name="temporal-core-sdk"} 1\n'),
  );
  await new Promise<void>((r) => sdk.listen(0, '127.0.0.1', r));
  const sdkPort = (sdk.address() as AddressInfo).port;
  const m = new E3Metrics();
  m.rlIteration(L);
  const server = await serveMetrics(m, { host: '127.0.0.1', port: 0, sdkPort });
  const port = (server.address() as AddressInfo).port;
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(text, /e3_rl_iterations_total\{run="r1",node="stage1",config="tiny"\} 1/);
    assert.match(text, /temporal_worker_start_total\{service_name="temporal-core-sdk"\} 1/);
    assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
    await new Promise((r) => sdk.close(r));
    const down = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(down.status, 200);
    const t2 = await down.text();
    assert.match(t2, /e3_rl_iterations_total/);
    assert.match(t2, /# Temporal SDK metrics unavailable/);
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test("watchSchedules reads each schedule's most recent run: failed, timed out or terminated is 1, else 0", async () => {
  const status: Record<string, string> = {
    'nightly-workflow-2026-01-02T03:04:05Z': 'FAILED',
    'weekly-workflow-2026-01-01T00:00:00Z': 'COMPLETED',
    'hourly-workflow-2026-01-02T03:00:00Z': 'TERMINATED',
  };
  const recent: Record<string, string[]> = {
    nightly: ['nightly-workflow-2026-01-01T03:04:05Z', 'nightly-workflow-2026-01-02T03:04:05Z'],
    weekly: ['weekly-workflow-2026-01-01T00:00:00Z'],
    hourly: ['hourly-workflow-2026-01-02T03:00:00Z'],
    fresh: [],
  };
  const fake = {
    schedule: {
      async *list() {
        for (const scheduleId of Object.keys(recent)) yield { scheduleId };
      },
      getHandle: (id: string) => ({
        describe: async () => ({ info: { recentActions: recent[id].map((workflowId) => ({ action: { workflow: { workflowId } } })) } }),
      }),
    },
    workflow: { getHandle: (id: string) => ({ describe: async () => ({ status: { name: status[id] } }) }) },
  } as unknown as Client;
  const m = new E3Metrics();
  const stop = watchSchedules(m, fake, 60_000);
  try {
    const got = async () =>
      Object.fromEntries(
        await Promise.all(Object.keys(recent).map(async (k) => [k, await value(m, 'e3_schedule_last_run_failed', { schedule: k })])),
      );
    for (let i = 0; i < 100 && (await got()).fresh === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(await got(), { nightly: 1, weekly: 0, hourly: 1, fresh: 0 });
  } finally {
    stop();
  }
});
