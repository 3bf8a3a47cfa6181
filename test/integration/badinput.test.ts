/**
 * Bad input never corrupts a run : a flipped byte in a committed checkpoint is
 * caught by its sha256 and the previous commit is used (storage, activity and resumed-run
 * level); a missing checkpoint is a non-retryable MissingCheckpoint failure; a non-finite
 * loss is rejected before anything changes or is committed (NonFiniteLoss, naming the step);
 * S3 credentials never reach workflow inputs, histories, worker logs or the report.
 * (An S3 outage of 30 s mid-run is exercised by chaos.test.ts, with the other faults.)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { createActivities, modelConfig, rlSettings } from '../../activities';
import { classify } from '../../activities/errors';
import type { Progress } from '../../activities/types';
import { ErrorTypes } from '../../activities/types';
import type { RlNode, RunConfig, SftNode } from '../../configs/schema';
import { initBackend } from '../../ml/backend';
import { Trainer } from '../../ml/trainer';
import { gradeRollouts } from '../../ml/rollouts';
import { NonFiniteError } from '../../ml/errors';
import type { GradedRollout } from '../../ml/rollouts';
import { commitCheckpoint, loadCheckpoint, readLatest } from '../../storage/checkpoints';
import type { CheckpointManifest } from '../../storage/checkpoints';
import { keys } from '../../storage/layout';
import { ObjectStore, sha256Hex } from '../../storage/store';
import { WorkerPool, awaitPipeline, startPipeline, temporalClient } from '../chaos';
import { ROOT, store, uid } from './env';
import { usesReference } from '../../ml/grpo';

const SECRET = process.env.E3_S3_SECRET_KEY!;

async function readRaw(s: ObjectStore, key: string): Promise<{ buf: Buffer; sha: string }> {
  const stat = await s.client.statObject(s.bucket, key);
  const chunks: Buffer[] = [];
  for await (const c of await s.client.getObject(s.bucket, key)) chunks.push(c as Buffer);
  return { buf: Buffer.concat(chunks), sha: stat.metaData.sha256 as string };
}

/**
 * Flip one bit of a stored object directly through the minio client (bit rot under the
 * store). `rehash` also rewrites the object's own sha256 metadata, as a careless rewrite
 * would: the commit's manifest still knows the right digest.
 */
async function flipByte(s: ObjectStore, key: string, rehash = false): Promise<void> {
  const { buf, sha } = await readRaw(s, key);
  buf[buf.length >> 1] ^= 0x10;
  await s.client.putObject(s.bucket, key, buf, buf.length, {
    'Content-Type': 'application/octet-stream',
    'X-Amz-Meta-Sha256': rehash ? sha256Hex(buf) : sha,
  });
}

const weightsKey = (run: string, node: string, step: number) => keys.ckpt(run, node, step) + 'weights.bin';

async function manifestOf(s: ObjectStore, run: string, node: string): Promise<CheckpointManifest> {
  const latest = await readLatest(s, run, node);
  assert.ok(latest, `${run}/${node} has no LATEST`);
  return s.getJson<CheckpointManifest>(keys.ckpt(run, node, latest.step) + 'manifest.json', latest.manifestSha256);
}

/** The cause chain of a failure, outermost first. */
function causes(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let x: unknown = e; x; x = (x as { cause?: unknown }).cause) out.push(x);
  return out;
}

const logs: string[] = [];
let acts: ReturnType<typeof createActivities>;
/** Worker processes for the run-level tests, started at once so they boot while the others run. */
let pool: WorkerPool;
let poolReady: Promise<void>;
let temporal: Awaited<ReturnType<typeof temporalClient>>;

before(async () => {
  pool = new WorkerPool(path.join(process.env.E3_DATA_DIR!, 'badinput-logs', String(process.pid)), 2);
  poolReady = pool.start();
  poolReady.catch(() => undefined); // awaited by the tests that need it
  temporal = await temporalClient();
  const backend = await initBackend();
  acts = createActivities({
    store: store(),
    queue: `badinput-${process.pid}`,
    backend,
    reportDir: mkdtempSync(path.join(tmpdir(), 'e3-badinput-')),
    maxSessions: 4,
    log: (m) => logs.push(m),
  });
});

/** The tiny config's warm start trained to the end through the activities (seed 7), once. */
let warm: Promise<{ runId: string; config: RunConfig; sha12: string }> | undefined;
const warmRun = () =>
  (warm ??= (async () => {
    const runId = uid('rot-act');
    const { config } = await acts.prepareRun({ config: 'tiny', runId });
    const s = await acts.openTrainer({ runId, nodeId: 'warmstart', config, upstream: {} });
    await acts.sftChunk(s, 0, 6);
    await acts.sftChunk(s, 6, 12);
    return { runId, config, sha12: (await manifestOf(store(), runId, 'warmstart')).files['weights.bin'].sha256 };
  })());

test('storage: a flipped byte in the LATEST commit is detected by sha256; the previous commit is loaded and the skip reported', async () => {
  const s = store();
  for (const rehash of [false, true]) {
    const run = uid(rehash ? 'rot-rehash' : 'rot');
    const w1 = Buffer.from('weights of step one'.repeat(50));
    const w2 = Buffer.from('weights of step two'.repeat(50));
    await commitCheckpoint(s, run, 'n', 1, { 'weights.bin': w1, 'optim.bin': 'o1' }, {});
    await commitCheckpoint(s, run, 'n', 2, { 'weights.bin': w2, 'optim.bin': 'o2' }, {});
    assert.equal((await loadCheckpoint(s, run, 'n'))?.manifest.step, 2);
    await flipByte(s, weightsKey(run, 'n', 2), rehash);
    const seen: Array<[number, string]> = [];
    const c = await loadCheckpoint(s, run, 'n', (step, err) => seen.push([step, err]));
    assert.equal(c?.manifest.step, 1, `rehash=${rehash}`);
    assert.equal(Buffer.compare(c!.files['weights.bin'], w1), 0);
    assert.equal(seen.length, 1);
    assert.equal(seen[0][0], 2);
    assert.match(seen[0][1], /weights\.bin is corrupt: sha256 [0-9a-f]{64} does not match/);
    assert.deepEqual(
      c!.skipped.map((x) => x.step),
      [2],
    );
    // The pointer is left alone: the next commit replaces it.
    assert.equal((await readLatest(s, run, 'n'))?.step, 2);
  }
});

test('activities: a corrupt LATEST is logged, the session re-opens at the previous commit and recomputes the same bytes', async () => {
  const { runId, config, sha12 } = await warmRun();
  const s = store();
  await flipByte(s, weightsKey(runId, 'warmstart', 12));
  await assert.rejects(s.get(weightsKey(runId, 'warmstart', 12)), /is corrupt/);
  logs.length = 0;
  const sess = await acts.openTrainer({ runId, nodeId: 'warmstart', config, upstream: {} });
  assert.equal(sess.step, 6);
  assert.ok(
    logs.some(
      (l) => l.startsWith(`checkpoint ${runId}/warmstart@12 rejected, trying the previous commit: `) && /weights\.bin is corrupt/.test(l),
    ),
    logs.join('\n'),
  );
  await acts.sftChunk(sess, 6, 12);
  const m = await manifestOf(s, runId, 'warmstart');
  assert.equal(m.step, 12);
  assert.equal(m.files['weights.bin'].sha256, sha12);
  assert.equal(sha256Hex(await s.get(weightsKey(runId, 'warmstart', 12))), sha12);
  await acts.closeTrainer(sess);
});

test('non-finite loss: the ml update is refused with nothing changed; classified NonFiniteLoss, non-retryable, naming the step', async () => {
  const { runId, config } = await warmRun();
  const node = config.nodes.stage1 as RlNode;
  const settings = rlSettings(config, 'stage1');
  const weights = (await loadCheckpoint(store(), runId, 'warmstart'))!.files['weights.bin'];
  const tr = Trainer.create({ model: modelConfig(config), weights, optim: node.optim, toolArithmetic: config.toolArithmetic });
  try {
    const rollouts = await tr.sampleShard(settings, 3, 0, 1, 32);
    const graded = gradeRollouts(config.seed, 'stage1', 3, node.prompts, node.difficulty, config.toolArithmetic, rollouts);
    const before = tr.snapshot();
    const poisoned: GradedRollout[] = graded.map((g) => ({ ...g, logp: g.logp.map(() => NaN) }));
    let err: unknown;
    await assert.rejects(
      tr.update(settings, 3, poisoned),
      (e) => ((err = e), e instanceof NonFiniteError && /rl iteration 3\b/.test(e.message)),
    );
    const after = tr.snapshot();
    assert.equal(sha256Hex(after.weights), sha256Hex(before.weights), 'weights changed by a refused update');
    assert.equal(sha256Hex(after.optim), sha256Hex(before.optim), 'optimiser state changed by a refused update');
    const f = classify(err);
    assert.ok(f instanceof ApplicationFailure);
    assert.equal(f.type, ErrorTypes.nonFinite);
    assert.equal(f.nonRetryable, true);
    assert.match(f.message, /rl iteration 3: AdamW\.step: gradient norm is NaN/);
    // The clean rollouts still train (the refusal was about the data, not the trainer).
    assert.ok(Number.isFinite((await tr.update(settings, 3, graded))['train/loss']));
  } finally {
    tr.dispose();
  }
});

test('non-finite loss through the activities: rlUpdate fails NonFiniteLoss, nothing is committed, the session is dropped', async () => {
  const { runId, config } = await warmRun();
  const s = store();
  const input = { runId, nodeId: 'stage1', config, upstream: {} };
  const sess = await acts.openTrainer(input);
  assert.equal(sess.step, 0);
  const shard = await acts.rlSample(sess, 0, 0, 32);
  const g = await acts.rlGrade(sess, 0, [shard.key]);
  const graded = await s.getJson<GradedRollout[]>(g.key);
  // JSON has no NaN; -1e39 is finite in JSON and -Infinity once it is a float32 log-prob.
  graded[graded.length - 1].logp = graded[graded.length - 1].logp.map(() => -1e39);
  await s.putJson(g.key, graded);
  await assert.rejects(
    acts.rlUpdate(sess, 0),
    (e) =>
      e instanceof ApplicationFailure && e.type === ErrorTypes.nonFinite && e.nonRetryable === true && /rl iteration 0\b/.test(e.message),
  );
  assert.equal(await readLatest(s, runId, 'stage1'), null, 'a checkpoint was committed after a refused update');
  assert.deepEqual(await s.list(keys.metricsPart(runId, 'stage1', 1)), []);
  // Earlier mini-batches may have stepped: the session is gone, so the workflow re-opens at the last commit.
  await assert.rejects(acts.commitCheckpoint(sess, 0), (e) => e instanceof ApplicationFailure && e.type === ErrorTypes.sessionLost);
});

after(async () => {
  await pool?.stop();
  await temporal?.close();
});

/** The real store with one injected failure: the next put of a matching key throws (a dropped connection). */
class FlakyStore extends ObjectStore {
  failNext: RegExp | null = null;
  override async put(key: string, bytes: Uint8Array | string, contentType?: string) {
    if (this.failNext?.test(key)) {
      this.failNext = null;
      throw Object.assign(new Error(`injected: connection reset writing ${key}`), { code: 'ECONNRESET' });
    }
    return super.put(key, bytes, contentType);
  }
}

/**
 * sha256 of stage1's weights after iteration t's update on a trainer that never saw a failure:
 * from the commit `own` (weights and optimiser state), else from the warm start.
 */
async function uninterruptedWeights(
  runId: string,
  config: RunConfig,
  own: Awaited<ReturnType<typeof loadCheckpoint>>,
  t: number,
  gradedKey: string,
): Promise<string> {
  const node = config.nodes.stage1 as RlNode;
  const warmW = (await loadCheckpoint(store(), runId, 'warmstart'))!.files['weights.bin'];
  const tr = Trainer.create({
    model: modelConfig(config),
    weights: own ? own.files['weights.bin'] : warmW,
    optimState: own?.files['optim.bin'],
    refWeights: usesReference(node.grpo) ? warmW : undefined,
    optim: node.optim,
    toolArithmetic: config.toolArithmetic,
  });
  try {
    await tr.update(rlSettings(config, 'stage1'), t, await store().getJson<GradedRollout[]>(gradedKey));
    return sha256Hex(tr.snapshot().weights);
  } finally {
    tr.dispose();
  }
}

test('a retried rlUpdate whose metrics write failed after the update does not train twice on the iteration', async () => {
  const { runId, config } = await warmRun();
  const flaky = new FlakyStore(store().cfg);
  const fa = createActivities({
    store: flaky,
    queue: `badinput-flaky-${process.pid}`,
    backend: await initBackend(),
    reportDir: tmpdir(),
    maxSessions: 1,
    log: () => {},
  });
  const sess = await fa.openTrainer({ runId, nodeId: 'stage1', config, upstream: {} });
  const shard = await fa.rlSample(sess, 0, 0, 32);
  const g = await fa.rlGrade(sess, 0, [shard.key]);
  flaky.failNext = /\/metrics\/stage1\/000001\.json$/;
  await assert.rejects(fa.rlUpdate(sess, 0), /injected: connection reset/);
  // Temporal's retry of the same activity on the same worker:
  await fa.rlUpdate(sess, 0);
  assert.equal(flaky.failNext, null, 'the fault was not injected');
  await fa.commitCheckpoint(sess, 1);
  const got = (await manifestOf(flaky, runId, 'stage1')).files['weights.bin'].sha256;
  try {
    assert.equal(got, await uninterruptedWeights(runId, config, null, 0, g.key));
  } finally {
    await fa.closeTrainer(sess);
  }
});

test('a retried rlIteration whose commit failed neither samples nor trains twice; the commit lands with the uninterrupted bytes', async () => {
  const { runId, config } = await warmRun();
  const flaky = new FlakyStore(store().cfg);
  const fa = createActivities({
    store: flaky,
    queue: `badinput-flaky-it-${process.pid}`,
    backend: await initBackend(),
    reportDir: tmpdir(),
    maxSessions: 1,
    log: () => {},
  });
  // The warm run is shared: stage1 may hold a commit from an earlier test; start from it.
  const own = await loadCheckpoint(store(), runId, 'stage1');
  const sess = await fa.openTrainer({ runId, nodeId: 'stage1', config, upstream: {} });
  const t = sess.step;
  assert.equal(t, own?.manifest.step ?? 0);
  // The commit's last write (LATEST) fails: rollouts, update and metrics are done by then.
  flaky.failNext = /\/stage1\/ckpt\/LATEST$/;
  await assert.rejects(fa.rlIteration(sess, t, 32, true), /injected: connection reset/);
  assert.equal(flaky.failNext, null, 'the fault was not injected');
  assert.equal((await readLatest(flaky, runId, 'stage1'))?.step, own?.manifest.step);
  const graded = keys.graded(runId, 'stage1', t);
  const firstGraded = sha256Hex(await flaky.get(graded));
  // Temporal's retry of the same activity on the same worker: the session is already at t + 1.
  const r = await fa.rlIteration(sess, t, 32, true);
  assert.ok(
    Number.isFinite(r.metrics['train/loss']) && Number.isFinite(r.metrics['train/reward_mean']),
    "the retry reports the iteration's metrics",
  );
  assert.equal(sha256Hex(await flaky.get(graded)), firstGraded, 'the rollouts were stored again, differently');
  const m = await manifestOf(flaky, runId, 'stage1');
  assert.equal(m.step, t + 1);
  assert.equal(m.files['weights.bin'].sha256, await uninterruptedWeights(runId, config, own, t, graded), 'trained twice, or not at all');
  // An iteration that is not due a commit commits nothing; an old iteration is refused as a lost session.
  await fa.rlIteration(sess, t + 1, 32, false);
  assert.equal((await manifestOf(flaky, runId, 'stage1')).step, t + 1);
  await assert.rejects(fa.rlIteration(sess, t, 32, false), (e) => e instanceof ApplicationFailure && e.type === ErrorTypes.sessionLost);
  await fa.closeTrainer(sess);
});

test('missing checkpoint: a node whose source has no commit fails at once, non-retryable MissingCheckpoint', async () => {
  await poolReady;
  const runId = uid('missing');
  // A run whose manifest says warmstart finished, but whose checkpoints are gone.
  await acts.prepareRun({ config: 'tiny', runId });
  await acts.markNodeDone(runId, 'warmstart', { kind: 'sft', checkpoint: { step: 12 }, metrics: {} });
  const t0 = Date.now();
  await startPipeline(temporal.client, runId, { config: 'tiny' });
  const err = await awaitPipeline(temporal.client, runId, 120_000).then(
    () => assert.fail('the pipeline completed without its warm start'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof WorkflowFailedError, String(err));
  const app = causes(err).find((x): x is ApplicationFailure => x instanceof ApplicationFailure);
  assert.ok(app, `no ApplicationFailure in ${causes(err).map(String).join(' <- ')}`);
  assert.equal(app.type, ErrorTypes.missing);
  assert.equal(app.nonRetryable, true);
  assert.match(app.message, new RegExp(`no committed checkpoint for ${runId}/warmstart`));
  // Not retried: one attempt of openTrainer, well before the opener's 30-attempt budget.
  const hist = await temporal.client.workflow.getHandle(`${runId}/stage1`).fetchHistory();
  const started = (hist.events ?? [])
    .filter((e) => e.activityTaskStartedEventAttributes)
    .map((e) => e.activityTaskStartedEventAttributes!.attempt);
  assert.deepEqual(started, [1]);
  assert.ok(Date.now() - t0 < 60_000);
});

/** Every execution of a run (all attempts, terminated ones too) as CLI JSON, payloads decoded. */
async function runHistories(runId: string): Promise<Array<{ id: string; text: string }>> {
  const out: Array<{ id: string; text: string }> = [];
  for await (const w of temporal.client.workflow.list({ query: `E3Run = '${runId}'` })) {
    const json = execFileSync(
      path.join(ROOT, 'infra', 'bin', 'temporal'),
      ['workflow', 'show', '-w', w.workflowId, '-r', w.runId, '--output', 'json', '--address', `127.0.0.1:${process.env.E3_TEMPORAL_PORT}`],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    out.push({ id: `${w.workflowId}@${w.runId}`, text: json });
  }
  return out;
}

/** Where in `text` (and in every base64 payload inside it) the secret appears. */
function findSecret(text: string, secret: string): string[] {
  const hits: string[] = [];
  if (text.includes(secret)) hits.push('raw text');
  const walk = (x: unknown, at: string) => {
    if (typeof x === 'string' && x.length >= 8 && /^[A-Za-z0-9+/=]+$/.test(x) && Buffer.from(x, 'base64').toString('utf8').includes(secret))
      hits.push(at);
    else if (x && typeof x === 'object') for (const [k, v] of Object.entries(x)) walk(v, `${at}.${k}`);
  };
  try {
    walk(JSON.parse(text), '$');
  } catch {
    /* not JSON: the raw search above is all */
  }
  return hits;
}

test('the secret scanner finds a secret inside a base64 payload (control for the test below)', () => {
  const fake = JSON.stringify({
    events: [
      {
        input: {
          payloads: [
            { metadata: { encoding: 'anNvbi9wbGFpbg==' }, data: Buffer.from(JSON.stringify({ note: `k=${SECRET}` })).toString('base64') },
          ],
        },
      },
    ],
  });
  assert.deepEqual(findSecret(fake, SECRET), ['$.events.0.input.payloads.0.data']);
  assert.deepEqual(findSecret(`log line ${SECRET}`, SECRET), ['raw text']);
  assert.deepEqual(findSecret(fake.replace(/"data":"[^"]+"/, '"data":"e30="'), SECRET), []);
});

test('resumed run over a corrupt LATEST: logged, previous commit used, same final bytes; no credentials anywhere', async () => {
  assert.ok(SECRET && SECRET.length >= 16, 'the runner sets E3_S3_SECRET_KEY');
  const { sha12 } = await warmRun();
  await poolReady;
  const s = store();
  const runId = uid('rot-run');
  // Commits every 3 steps, so the warm start commits twice before it is paused.
  const input = { config: 'tiny', overrides: { nodes: { warmstart: { ckptEvery: 3 } } } };
  await startPipeline(temporal.client, runId, input);
  const node = temporal.client.workflow.getHandle(`${runId}/warmstart`);
  const until = async (what: string, pred: () => Promise<boolean>) => {
    const end = Date.now() + 180_000;
    while (!(await pred().catch(() => false))) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  // Past its first commit (the workflow has moved on to the next chunk): pause, so it stops
  // at the top of the loop after the second commit.
  let at = 0;
  await until('the first warm-start commit', async () => (at = (await node.query<Progress>('progress')).iteration) >= 3);
  await node.signal('pause');
  const running = at;
  await until('the paused warm start to settle on its next commit', async () => {
    const p = await node.query<Progress>('progress');
    const latest = await readLatest(s, runId, 'warmstart');
    at = p.iteration;
    return p.paused && p.iteration > running && latest?.step === p.iteration;
  });
  const steps = ((await loadCheckpoint(s, runId, 'warmstart'))!.manifest.meta.config as { nodes: Record<string, SftNode> }).nodes.warmstart;
  assert.ok(at >= 6 && at < steps.steps, `paused at step ${at}: not two commits before the end (${steps.steps})`);
  await flipByte(s, weightsKey(runId, 'warmstart', at));
  await temporal.client.workflow.getHandle(runId).terminate('test: crash with a corrupt LATEST');
  await startPipeline(temporal.client, runId, input);
  const r = await awaitPipeline(temporal.client, runId, 300_000);
  assert.equal(r.results.report.kind, 'report');
  assert.ok(!r.skipped.includes('warmstart'));

  const workerLogs = pool.logs();
  assert.ok(
    workerLogs.includes(`checkpoint ${runId}/warmstart@${at} rejected, trying the previous commit: object runs/${runId}/warmstart/ckpt/`),
    'the rejection is not in the worker logs',
  );
  assert.match(
    workerLogs,
    new RegExp(`session ${runId}/warmstart opened on \\S+ at step ${at - 3}\n`),
    `no session re-opened at step ${at - 3}`,
  );
  const m = await manifestOf(s, runId, 'warmstart');
  assert.equal(m.step, 12);
  assert.equal(m.files['weights.bin'].sha256, sha12, 'the resumed warm start did not reproduce the uninterrupted bytes');

  // (e) Credentials: workflow inputs and results live in the histories; then the report
  // (store and disk), the run manifest, and everything the workers printed.
  const hist = await runHistories(runId);
  assert.ok(hist.length >= 8, `only ${hist.length} executions found for ${runId}`);
  assert.ok(
    hist.some((h) => h.text.includes('WorkflowExecutionTerminated') || h.text.includes('WORKFLOW_EXECUTION_TERMINATED')),
    'the terminated first attempt is not among the histories',
  );
  const places: Array<[string, string]> = [
    ...hist.map((h): [string, string] => [`history ${h.id}`, h.text]),
    ['report (store)', (await s.get(keys.report(runId))).toString('utf8')],
    ['report (disk)', readFileSync(r.report!.path, 'utf8')],
    ['run manifest', (await s.get(keys.manifest(runId))).toString('utf8')],
    ['worker logs', workerLogs],
  ];
  assert.ok(places.every(([, t]) => t.length > 0));
  const leaks = places.flatMap(([where, text]) => findSecret(text, SECRET).map((at) => `${where}: ${at}`));
  assert.deepEqual(leaks, []);
});
