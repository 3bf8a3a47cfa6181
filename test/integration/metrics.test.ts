/**
 * Operators' view: Debian's prometheus (and promtool) against a real worker. promtool checks
 * docs/ops/alerts.yml and runs its tests on recorded series; a prometheus with a generated
 * config (its own loopback port and data dir, stopped by pid) scrapes a worker process that
 * runs the tiny config, and its HTTP API shows the iteration counter rising, the phase
 * histograms filled, the other e3 metrics and the Temporal SDK's, and no credential anywhere.
 * The same config run by a worker without metrics ends with the same bytes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { TASK_QUEUE } from '../../activities/types';
import { finalCheckpoints } from '../chaos';
import { ROOT, client, inProcessWorker, store, uid } from './env';
import { freePorts, start, waitFor } from './procs';
import type { Proc } from './procs';

const RULES = path.join(ROOT, 'docs', 'ops', 'alerts.yml');
const RULE_TESTS = path.join(ROOT, 'docs', 'ops', 'alerts.test.yml');

before(() => {
  const r = spawnSync('bash', [path.join(ROOT, 'test', 'install-prometheus.sh')], { stdio: 'inherit' });
  assert.equal(r.status, 0, 'prometheus could not be installed (test/install-prometheus.sh)');
});

test('promtool accepts the alerting rules and their tests pass on recorded series', () => {
  const check = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
  assert.equal(check.status, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /SUCCESS: \d+ rules found/);
  const t = spawnSync('promtool', ['test', 'rules', RULE_TESTS], { encoding: 'utf8', cwd: path.dirname(RULE_TESTS) });
  assert.equal(t.status, 0, t.stdout + t.stderr);
  assert.match(t.stdout, /SUCCESS/);
  // Every alert of the file is exercised by a test.
  const alerts = [...spawnSync('cat', [RULES], { encoding: 'utf8' }).stdout.matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
  const tested = spawnSync('cat', [RULE_TESTS], { encoding: 'utf8' }).stdout;
  for (const a of alerts) assert.match(tested, new RegExp(`alertname: ${a}\\b`), `${a} has no test`);
});

type Sample = { metric: Record<string, string>; value?: [number, string]; values?: Array<[number, string]> };

let prom: Proc | undefined;
let worker: Proc | undefined;
/** The tiny run the scraped worker ran. */
let scrapedRun: string | undefined;
/** tiny with longer stages committing every iteration, so each can be held mid-way. */
const ITERATIONS = 8;
const SCRAPED = { nodes: { stage1: { iterations: ITERATIONS, ckptEvery: 1 }, stage2: { iterations: ITERATIONS, ckptEvery: 1 } } };
after(async () => {
  await prom?.stop();
  await worker?.stop(60_000);
});

test(
  'a real Prometheus scrapes a worker running tiny: iterations rising, phase histograms filled, SDK metrics, no secret',
  { timeout: 1_500_000 },
  async () => {
    const metricsPort = await freePorts(300, 2);
    const promPort = await freePorts(310);
    const dir = path.join(process.env.E3_DATA_DIR!, 'prometheus');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });

    worker = start(process.execPath, ['--import', 'tsx', path.join(ROOT, 'cli', 'e3.ts'), 'worker'], {
      ...process.env,
      E3_METRICS_PORT: String(metricsPort),
      E3_SDK_METRICS_PORT: String(metricsPort + 1),
    });
    await waitFor('the worker to log its metrics address', 300_000, async () => {
      if (worker!.child.exitCode !== null) throw new Error(`worker exited: ${worker!.output()}`);
      return worker!.output().includes(`metrics on http://127.0.0.1:${metricsPort}/metrics`) ? true : undefined;
    });

    writeFileSync(
      path.join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 250ms, scrape_timeout: 250ms, evaluation_interval: 1s }',
        `rule_files: [${JSON.stringify(RULES)}]`,
        'scrape_configs:',
        '  - job_name: e3-worker',
        `    static_configs: [{ targets: ["127.0.0.1:${metricsPort}"] }]`,
        '',
      ].join('\n'),
    );
    prom = start('prometheus', [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      '--log.level=warn',
    ]);
    const api = `http://127.0.0.1:${promPort}/api/v1`;
    await waitFor('prometheus to be ready', 120_000, async () => {
      if (prom!.child.exitCode !== null) throw new Error(`prometheus exited: ${prom!.output()}`);
      return (await fetch(`http://127.0.0.1:${promPort}/-/ready`)).ok ? true : undefined;
    });
    const query = async (q: string): Promise<Sample[]> => {
      const r = (await (await fetch(`${api}/query?query=${encodeURIComponent(q)}`)).json()) as {
        status: string;
        data: { result: Sample[] };
      };
      assert.equal(r.status, 'success', q);
      return r.data.result;
    };
    const scalar = async (q: string): Promise<number | undefined> => {
      const r = await query(q);
      return r.length ? Number(r[0].value![1]) : undefined;
    };

    // The worker is a target, up.
    await waitFor('the worker target to be up', 120_000, async () => ((await scalar('up{job="e3-worker"}')) === 1 ? true : undefined));

    const runId = uid('prom-tiny');
    const t0 = Date.now() / 1000;
    const sel = `run="${runId}"`;
    const c = await client();
    try {
      const h = await c.client.workflow.start('pipeline', {
        taskQueue: TASK_QUEUE,
        workflowId: runId,
        args: [{ config: 'tiny', runId, overrides: SCRAPED }] as never,
      });
      // Each stage is held at a commit mid-way until Prometheus has scraped the counter there,
      // so the rising is seen whatever the scrape phase (a tiny stage otherwise ends between
      // two scrapes: its 0 start and its end can fall in one scrape interval).
      for (const node of ['stage1', 'stage2'] as const) {
        const stage = c.client.workflow.getHandle(`${runId}/${node}`);
        type P = { iteration: number; paused: boolean; total: number };
        const progress = () => stage.query<P>('progress').catch(() => undefined);
        for (const t = Date.now(); ((await progress())?.iteration ?? -1) < 1;) {
          assert.ok(Date.now() - t < 300_000, `${node} did not reach iteration 1`);
          await new Promise((r) => setTimeout(r, 20));
        }
        await stage.signal('pause');
        // Paused at once; held at the commit that ends the window in flight. The worker may have
        // trained the next window ahead in memory (docs/ARCHITECTURE.md "Commit windows"), which
        // its counter counts: the value it exports settles, below the node's iterations.
        const exported = async () => {
          const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
          const line = text.split('\n').find((l) => l.startsWith(`e3_rl_iterations_total{${sel},node="${node}"`));
          return line === undefined ? undefined : Number(line.split(' ').pop());
        };
        const held = await waitFor(`${node} held at a commit`, 60_000, async () => {
          const [p, a] = [await progress(), await exported()];
          if (!p?.paused || a === undefined) return undefined;
          await new Promise((r) => setTimeout(r, 500));
          const [q, b] = [await progress(), await exported()];
          return q?.iteration === p.iteration && b === a ? { ...q, counted: b } : undefined;
        });
        assert.ok(held.counted < ITERATIONS, `${node} held at ${held.iteration} (${held.counted} counted) of ${ITERATIONS}: not mid-way`);
        await waitFor(`prometheus to scrape ${node} at ${held.counted}`, 60_000, async () =>
          (await scalar(`e3_rl_iterations_total{${sel},node="${node}"}`)) === held.counted ? true : undefined,
        );
        await stage.signal('resume');
      }
      await h.result();
      scrapedRun = runId;
    } finally {
      await c.close();
    }
    // The last iterations reach Prometheus within a scrape or two after the run ends.
    await waitFor('stage2 iterations in prometheus', 120_000, async () =>
      ((await scalar(`e3_rl_iterations_total{${sel},node="stage2"}`)) ?? 0) >= ITERATIONS ? true : undefined,
    );

    // The iteration counters, as Prometheus recorded them over the run: one series per node
    // (no per-iteration labels), exported from 0 when the node's session opens, never falling,
    // seen at the held commit and ending at the node's iterations (more after a rewind).
    const t1 = Date.now() / 1000;
    const range = async (q: string): Promise<Sample[]> =>
      (
        (await (await fetch(`${api}/query_range?query=${encodeURIComponent(q)}&start=${t0}&end=${t1}&step=0.25`)).json()) as {
          data: { result: Sample[] };
        }
      ).data.result;
    for (const node of ['stage1', 'stage2']) {
      const rr = await range(`e3_rl_iterations_total{${sel},node="${node}"}`);
      assert.equal(rr.length, 1, `one ${node} series: no per-iteration labels`);
      assert.equal(rr[0].metric.config, 'tiny');
      const seen = rr[0].values!.map(([, v]) => Number(v));
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i] >= seen[i - 1], `${node}: counter fell: ${seen.join(',')}`);
      assert.ok(seen[seen.length - 1] >= ITERATIONS, `${node} ran its iterations (${seen.join(',')})`);
      assert.ok(seen[0] < seen[seen.length - 1], `${node}: the counter was seen rising (${[...new Set(seen)].join(' → ')})`);
    }
    // Prometheus itself computes the increase (what the progress alert reads).
    assert.ok(
      ((await scalar(`increase(e3_rl_iterations_total{${sel},node="stage1"}[10m])`)) ?? 0) > 0,
      'increase() sees stage1 iterations',
    );

    // Phase histograms: every phase observed, at least once per applied iteration (commits when due).
    const phases = await query(`sum by (phase) (e3_iteration_phase_seconds_count{${sel}})`);
    const byPhase = Object.fromEntries(phases.map((s) => [s.metric.phase, Number(s.value![1])]));
    const iterations = (await scalar(`sum(e3_rl_iterations_total{${sel}})`))!;
    assert.ok(iterations >= 6, `stage1 + stage2 iterations (${iterations})`);
    for (const p of ['sample', 'grade', 'update'])
      assert.ok(byPhase[p] >= iterations, `${p}: ${byPhase[p]} observations for ${iterations} iterations`);
    assert.ok(byPhase.commit >= 2, `commits observed: ${byPhase.commit}`);
    assert.ok(((await scalar(`sum(e3_iteration_phase_seconds_sum{${sel},phase="update"})`)) ?? 0) > 0);
    assert.ok(((await scalar(`sum(e3_iteration_phase_seconds_bucket{${sel},phase="sample",le="+Inf"})`)) ?? 0) >= iterations);

    // The rest of e3's metrics for this run.
    assert.ok(((await scalar(`e3_sft_steps_total{${sel},node="warmstart"}`)) ?? 0) >= 12);
    assert.ok(((await scalar(`e3_sampled_tokens_total{${sel},node="stage1"}`)) ?? 0) > 0);
    assert.ok(((await scalar(`e3_sampled_tokens_per_second{${sel},node="stage1"}`)) ?? 0) > 0);
    const reward = await scalar(`e3_train_reward{${sel},node="stage2"}`);
    assert.ok(reward !== undefined && reward >= -1 && reward <= 1, String(reward));
    const pass = await query(`e3_eval_pass_at_1{${sel},node="eval"}`);
    assert.deepEqual(
      pass.map((s) => s.metric.budget).sort((a, b) => Number(a) - Number(b)),
      ['16', '32', '64'],
    );
    for (const s of pass) assert.ok(Number(s.value![1]) >= 0 && Number(s.value![1]) <= 1);
    assert.ok(((await scalar(`sum(e3_checkpoint_bytes_total{${sel}})`)) ?? 0) > 0);
    assert.ok(((await scalar(`sum(e3_checkpoint_seconds_count{${sel}})`)) ?? 0) >= 4);
    assert.ok(((await scalar('sum(e3_compute_thread_busy_seconds_total)')) ?? 0) > 0);
    assert.notEqual(await scalar('e3_compute_queue_depth'), undefined);
    assert.notEqual(await scalar('e3_sessions_open'), undefined);
    // The Temporal SDK's own runtime metrics come through the same target.
    assert.ok(((await scalar('count({__name__=~"temporal_.+",job="e3-worker"})')) ?? 0) > 0, 'no temporal_* metric scraped');
    // The rules loaded and evaluate.
    const rules = (await (await fetch(`${api}/rules`)).json()) as {
      data: { groups: Array<{ rules: Array<{ name: string; health: string }> }> };
    };
    const loaded = rules.data.groups.flatMap((g) => g.rules);
    assert.ok(loaded.some((r) => r.name === 'E3NoIterationProgress'));
    for (const r of loaded) assert.notEqual(r.health, 'err', r.name);

    // No credential (or anything but label values e3 chose) in what the worker exposes.
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    for (const secret of [process.env.E3_S3_ACCESS_KEY!, process.env.E3_S3_SECRET_KEY!])
      assert.ok(!text.includes(secret), 'a credential is in the metrics');
    // Bounded labels: no label of e3's metrics holds an iteration number.
    for (const m of text.matchAll(/^e3_\w+\{([^}]*)\}/gm)) assert.doesNotMatch(m[1], /\b(iteration|step|t)="/);
  },
);

test(
  'metrics change no byte: the same tiny run on a worker without metrics ends with identical checkpoints',
  { timeout: 1_500_000 },
  async () => {
    assert.ok(scrapedRun, 'the scraped run did not complete');
    // Only the worker without metrics may take this run.
    await worker?.stop(60_000);
    const w = await inProcessWorker();
    const c = await client();
    const runId = uid('prom-off');
    try {
      assert.equal(process.env.E3_METRICS_PORT, undefined);
      await (
        await c.client.workflow.start('pipeline', {
          taskQueue: TASK_QUEUE,
          workflowId: runId,
          args: [{ config: 'tiny', runId, overrides: SCRAPED }] as never,
        })
      ).result();
    } finally {
      await c.close();
      await w.stop();
    }
    const nodes = ['warmstart', 'stage1', 'stage2'];
    const [on, off] = await Promise.all([scrapedRun, runId].map((id) => finalCheckpoints(store(), id, nodes)));
    for (const n of nodes) {
      assert.equal(off[n].step, on[n].step, `${n}: final step`);
      assert.equal(off[n].weights, on[n].weights, `${n}: weights.bin differs with metrics on`);
      assert.equal(off[n].optim, on[n].optim, `${n}: optim.bin differs with metrics on`);
    }
  },
);
