/**
 * The bytes a run computes, pinned: the activities the workflows schedule (prepareRun,
 * openTrainer, sftChunk, rlIteration) run on a one-thread compute pool over an in-memory
 * object store, and the committed weights.bin / optim.bin and the metrics they return are
 * checked against sha256s recorded from the code as it stands. A refactor of the activities,
 * the trainer session or the compute pool must leave every one of them unchanged; a change
 * that means to change what a run computes updates them in the same commit, and says so.
 *
 * Two paths: the tiny config's warm start (SFT chunks 0→6→12) and the first two iterations of
 * its stage1 (commit at 2); and the first two iterations of extrapolation-kl's stage1 (the published (a) runs) from its
 * committed base (configs/base/base-search.e3w) at budget 32 (the smallest of select1's grid).
 * The iterations the activities recorded before rlIteration (rollouts, update and commit as
 * separate activities; and sampled shards graded on their own) must give the same bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { ApplicationFailure } from '@temporalio/common';
import { createActivities } from '../../activities';
import { loadConfig } from '../../configs/load';
import { ComputePool } from '../../compute/pool';
import { loadCheckpoint } from '../../storage/checkpoints';
import { MissingObjectError } from '../../storage/errors';
import { keys } from '../../storage/layout';
import type { ObjectStore } from '../../storage/store';

// The bytes are the wasm backend's (what CI and the recorded runs use): pin it for the pool's threads.
process.env.E3_BACKEND = 'wasm';

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/** The object store's contract (storage/store.ts), in memory: sha256 recorded on put, checked on get. */
class MemoryStore {
  readonly objects = new Map<string, { bytes: Buffer; sha256: string }>();
  async put(key: string, bytes: Uint8Array | string): Promise<{ sha256: string; size: number }> {
    const buf = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : Buffer.from(bytes);
    const sha256 = sha(buf);
    this.objects.set(key, { bytes: buf, sha256 });
    return { sha256, size: buf.length };
  }
  async get(key: string, expectedSha256?: string): Promise<Buffer> {
    const o = this.objects.get(key);
    if (!o) throw new MissingObjectError(key);
    if (expectedSha256 && expectedSha256 !== o.sha256) throw new Error(`${key}: sha256 ${o.sha256}, expected ${expectedSha256}`);
    return Buffer.from(o.bytes);
  }
  putJson(key: string, value: unknown) {
    return this.put(key, JSON.stringify(value, null, 1));
  }
  async getJson<T>(key: string, expectedSha256?: string): Promise<T> {
    return JSON.parse((await this.get(key, expectedSha256)).toString('utf8')) as T;
  }
  async exists(key: string): Promise<boolean> {
    return this.objects.has(key);
  }
  async list(prefix: string): Promise<string[]> {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
  async remove(keys: string[]): Promise<void> {
    for (const k of keys) this.objects.delete(k);
  }
}

type Acts = ReturnType<typeof createActivities>;

/** The committed state of a node at its LATEST commit, and the metrics the activities returned. */
async function committed(store: MemoryStore, runId: string, nodeId: string, metrics: unknown) {
  const c = await loadCheckpoint(store as unknown as ObjectStore, runId, nodeId);
  assert.ok(c, `${runId}/${nodeId} has a commit`);
  return {
    step: c.manifest.step,
    weights: sha(c.files['weights.bin']),
    optim: sha(c.files['optim.bin']),
    metrics: sha(JSON.stringify(metrics)),
  };
}

/** RL iterations [0, n) of `nodeId` as the live workflow schedules them: one rlIteration each, commit at n. */
async function iterations(
  acts: Acts,
  runId: string,
  config: Awaited<ReturnType<Acts['prepareRun']>>['config'],
  nodeId: string,
  budget: number,
  n: number,
) {
  const s = await acts.openTrainer({ runId, nodeId, config, upstream: {} });
  const metrics: unknown[] = [];
  for (let t = 0; t < n; t++) metrics.push((await acts.rlIteration(s, t, budget, t + 1 === n)).metrics);
  await acts.closeTrainer(s);
  return metrics;
}

/** The same iterations as recorded runs scheduled them: rollouts (or sampled shards, then grading), update, commit. */
async function iterationsInParts(
  acts: Acts,
  runId: string,
  config: Awaited<ReturnType<Acts['prepareRun']>>['config'],
  nodeId: string,
  budget: number,
  n: number,
  shards: boolean,
) {
  const s = await acts.openTrainer({ runId, nodeId, config, upstream: {} });
  const metrics: unknown[] = [];
  for (let t = 0; t < n; t++) {
    const graded = shards ? await acts.rlGrade(s, t, [(await acts.rlSample(s, t, 0, budget)).key]) : await acts.rlRollouts(s, t, budget);
    const updated = await acts.rlUpdate(s, t);
    const all = { ...graded.metrics, ...updated.metrics };
    if (t + 1 === n) await acts.commitCheckpoint(s, n, all);
    metrics.push(all);
  }
  await acts.closeTrainer(s);
  return metrics;
}

/** `tiny` at the default micro-batch work cap (`microWork` 4). */
const TINY = {
  warmstart: {
    step: 12,
    weights: 'af3321492f69c338f9f3e099023b0292bb3ecd692c80d005cfd7e1c194dc0a8c',
    optim: 'b302cbbca6d6a05229cf26179a57f181e64612122b965dd76a9410fc7c39fd46',
    metrics: '1dd25711f768e92a15cf2ec4e5ee83062611bb5e96fddc61b4f31be1a379b2ab',
  },
  stage1: {
    step: 2,
    weights: '036c6fe7f2d5f78238fdb7be4466715256b9c90884b671dacac31e042a0b002d',
    optim: '26dc56def5fa7c8c50bda5e34ee3d700e8e128f45cc5d80940c3cd13b5cf96de',
    metrics: '12f57d58cdb85c42bbf53df8064577e531e535dee091ec9cdf600c0b74923be8',
  },
};
/** `tiny` as runs resolved before `microWork` existed recorded it (they trained with a cap of 16). */
const TINY_W16 = {
  warmstart: {
    step: 12,
    weights: '3fe5f9f4d2f35e5b5084b22df5974c50570f8a83021248d0bbb31770238b5d85',
    optim: '95cd1708b6e3537f515a4ddc7cf66dc8f51b6cc25f84b9d1f971b88e64383d13',
    metrics: 'df7b3f88b2dd5d918fc3976c10767020a71373275d27c4ce1e36c2a4b8e82be5',
  },
  stage1: {
    step: 2,
    weights: 'b24cac8b39a849ee0a351d60eab686d5280f5aa1be7905602d5ccc0a15877393',
    optim: '4c04ce6c8327c0f0e1e07827cc1b1f800885c0eba71b77137cbb40466a85007a',
    metrics: '03d2b444adbbb20f6af71ee2814df6f2610f3f31faf72c7fa35ded2c6dee9c77',
  },
};
/** `experiments/extrapolation-kl`'s stage 1 as its published runs (resolved before `microWork`) recorded it. */
const DEMO_STAGE1 = {
  step: 2,
  weights: '69108280995de4158fe749dba4b4736dc7edcd2375d76a2d357767c53a38a299',
  optim: '17dfbf4565a75161b00d8f648d05cd6ec9db00062dd87e7b7caca990d85c720b',
  metrics: '362d410adf1a6d4aafd1ae7848d9cf53f96e4b4b6d1a7eb1e0bfb7b242767f96',
};

let pool: ComputePool;
let store: MemoryStore;
let acts: Acts;

test.before(async () => {
  pool = await ComputePool.start(1);
  store = new MemoryStore();
  acts = createActivities({
    store: store as unknown as ObjectStore,
    queue: 'bytes',
    backend: pool.backend,
    reportDir: '/nonexistent',
    maxSessions: 1,
    pool,
    log: () => {},
  });
});
test.after(() => pool.close());

test('tiny: warm start (SFT 0→6→12) and stage1 iterations 0, 1 commit the recorded bytes; the parts-wise paths agree', async () => {
  assert.equal(pool.backend, 'wasm');
  const runId = 'bytes-tiny';
  const { config } = await acts.prepareRun({ config: 'tiny', runId });
  const s = await acts.openTrainer({ runId, nodeId: 'warmstart', config, upstream: {} });
  const sft = [(await acts.sftChunk(s, 0, 6)).metrics, (await acts.sftChunk(s, 6, 12)).metrics];
  await acts.closeTrainer(s);
  const warm = await committed(store, runId, 'warmstart', sft);
  const rl = await committed(store, runId, 'stage1', await iterations(acts, runId, config, 'stage1', 32, 2));
  assert.deepEqual(warm, TINY.warmstart);
  assert.deepEqual(rl, TINY.stage1);
  // The recorded paths, on runs that share the warm start's commit (same run id prefix, own stage1).
  for (const shards of [false, true]) {
    const other = `bytes-tiny-${shards ? 'shards' : 'parts'}`;
    await acts.prepareRun({ config: 'tiny', runId: other });
    for (const [k, o] of store.objects)
      if (k.startsWith(`runs/${runId}/warmstart/ckpt/`)) store.objects.set(k.replace(`runs/${runId}/`, `runs/${other}/`), o);
    assert.deepEqual(
      await committed(store, other, 'stage1', await iterationsInParts(acts, other, config, 'stage1', 32, 2, shards)),
      TINY.stage1,
      shards ? 'rlSample + rlGrade + rlUpdate' : 'rlRollouts + rlUpdate',
    );
  }
});

/** Copy run `from`'s warm-start commits to run `to` (prepared from the same config), so `to`'s RL nodes start from them. */
function shareWarmStart(from: string, to: string) {
  for (const [k, o] of store.objects)
    if (k.startsWith(`runs/${from}/warmstart/ckpt/`)) store.objects.set(k.replace(`runs/${from}/`, `runs/${to}/`), o);
}

/** The metrics each step of a node wrote (keys.metricsPart), without the node and step fields. */
async function stepMetrics(runId: string, nodeId: string, steps: number[]) {
  return Promise.all(
    steps.map(async (step) => {
      const { node: _node, step: _step, ...m } = await store.getJson<Record<string, unknown>>(keys.metricsPart(runId, nodeId, step));
      return m;
    }),
  );
}

test('commit windows: the open training the first window, rlIterations and a closing last window commit the bytes of step-by-step training', async () => {
  const runId = 'bytes-windows';
  const { config } = await acts.prepareRun({ config: 'tiny', runId });
  // Warm start: the open trains 0→6 (the first window), the last chunk closes the session.
  const opened = await acts.openTrainer({ runId, nodeId: 'warmstart', config, upstream: {} }, {});
  const { first, ...s } = opened;
  assert.deepEqual({ iteration: first?.iteration, closed: first?.closed }, { iteration: 6, closed: false });
  const last = await acts.sftChunk(s, 6, 12, true);
  assert.deepEqual(await committed(store, runId, 'warmstart', [first!.metrics, last.metrics]), TINY.warmstart);
  // Stage 1 (4 iterations, ckptEvery 2): the open trains 0→2, rlIterations 2→4 commits and closes.
  const o1 = await acts.openTrainer({ runId, nodeId: 'stage1', config, upstream: {} }, { budget: 32 });
  assert.deepEqual({ iteration: o1.first?.iteration, closed: o1.first?.closed }, { iteration: 2, closed: false });
  assert.deepEqual(await committed(store, runId, 'stage1', await stepMetrics(runId, 'stage1', [1, 2])), TINY.stage1);
  assert.deepEqual(o1.first!.metrics, (await stepMetrics(runId, 'stage1', [2]))[0], 'the window returns its last iteration metrics');
  const { first: _f, ...s1 } = o1;
  const w = await acts.rlIterations(s1, 2, 4, 32, true);
  assert.deepEqual({ iteration: w.iteration, closed: w.closed }, { iteration: 4, closed: true });
  const windowed = await committed(store, runId, 'stage1', await stepMetrics(runId, 'stage1', [1, 2, 3, 4]));
  // Step by step (one rlIteration each, commits at 2 and 4) from the same warm start: the same bytes.
  const ref = 'bytes-windows-ref';
  await acts.prepareRun({ config: 'tiny', runId: ref });
  shareWarmStart(runId, ref);
  const r = await acts.openTrainer({ runId: ref, nodeId: 'stage1', config, upstream: {} });
  for (let t = 0; t < 4; t++) await acts.rlIteration(r, t, 32, (t + 1) % 2 === 0);
  await acts.closeTrainer(r);
  assert.deepEqual(windowed, await committed(store, ref, 'stage1', await stepMetrics(ref, 'stage1', [1, 2, 3, 4])));
  // Both windows closed their sessions: the worker's one slot is free (a held session would refuse this open).
  const again = await acts.openTrainer({ runId: ref, nodeId: 'stage2', config, upstream: {} });
  await acts.closeTrainer(again);
});

test('a retried window redoes only what the failed attempt did not apply; an open asked to train RL without a budget is refused naming the field', async () => {
  const runId = 'bytes-window-retry';
  const { config } = await acts.prepareRun({ config: 'tiny', runId });
  shareWarmStart('bytes-windows', runId);
  const s = await acts.openTrainer({ runId, nodeId: 'stage1', config, upstream: {} });
  // An attempt of the window 0→2 applied iteration 0, then failed (say, a store write): the retry finds the session at 1.
  await acts.rlIteration(s, 0, 32, false);
  const w = await acts.rlIterations(s, 0, 2, 32);
  assert.equal(w.closed, false);
  assert.deepEqual(await committed(store, runId, 'stage1', await stepMetrics(runId, 'stage1', [1, 2])), TINY.stage1);
  // Again after the commit at 2 (the completion was lost): the same commit, nothing trained twice.
  await acts.rlIterations(s, 0, 2, 32);
  assert.deepEqual(await committed(store, runId, 'stage1', await stepMetrics(runId, 'stage1', [1, 2])), TINY.stage1);
  await acts.closeTrainer(s);
  const err = await acts.openTrainer({ runId, nodeId: 'stage2', config, upstream: {} }, {}).then(
    () => assert.fail('accepted'),
    (e: unknown) => e as ApplicationFailure,
  );
  assert.equal(err.type, 'InvalidArgument');
  assert.match(err.message, /^openTrainer first\.budget: required/);
  // The refused open freed its session: the slot is free again.
  await acts.closeTrainer(await acts.openTrainer({ runId, nodeId: 'stage2', config, upstream: {} }));
});

/**
 * Prepare `runId` as a run started before the config had `microWork`: its manifest's resolved
 * config, the one every activity of the run reads, has no such key.
 */
async function preparedBeforeMicroWork(config: string, runId: string) {
  const { config: resolved } = await acts.prepareRun({ config, runId });
  const { microWork: _w, ...recorded } = resolved;
  const m = await store.getJson<Record<string, unknown>>(keys.manifest(runId));
  await store.putJson(keys.manifest(runId), { ...m, config: recorded });
  return recorded as typeof resolved;
}

test('extrapolation-kl (the published (a) runs): stage1 iterations 0, 1 from the committed base (budget 32) commit the recorded bytes', async () => {
  const runId = 'bytes-demo';
  const config = await preparedBeforeMicroWork('experiments/extrapolation-kl', runId);
  const got = await committed(store, runId, 'stage1', await iterations(acts, runId, config, 'stage1', 32, 2));
  assert.deepEqual(got, DEMO_STAGE1);
});

test('microWork: a run resolved before the key existed keeps its cap of 16, and --set microWork=16 reproduces it', async () => {
  assert.equal(loadConfig('tiny').microWork, 4);
  const before = 'bytes-tiny-w16';
  const old = await preparedBeforeMicroWork('tiny', before);
  const s = await acts.openTrainer({ runId: before, nodeId: 'warmstart', config: old, upstream: {} });
  const sft = [(await acts.sftChunk(s, 0, 6)).metrics, (await acts.sftChunk(s, 6, 12)).metrics];
  await acts.closeTrainer(s);
  assert.deepEqual(await committed(store, before, 'warmstart', sft), TINY_W16.warmstart);
  assert.deepEqual(await committed(store, before, 'stage1', await iterations(acts, before, old, 'stage1', 32, 2)), TINY_W16.stage1);
  // The same cap set explicitly on a new run: the same warm-start bytes.
  const set = 'bytes-tiny-set16';
  const { config } = await acts.prepareRun({ config: 'tiny', runId: set, overrides: { microWork: 16 } });
  assert.equal(config.microWork, 16);
  const t = await acts.openTrainer({ runId: set, nodeId: 'warmstart', config, upstream: {} });
  const again = [(await acts.sftChunk(t, 0, 6)).metrics, (await acts.sftChunk(t, 6, 12)).metrics];
  await acts.closeTrainer(t);
  assert.deepEqual(await committed(store, set, 'warmstart', again), TINY_W16.warmstart);
});

test('prepareRun takes an experiment by `experiments/<name>` or by its bare name; the run records the file name', async () => {
  const runId = 'bytes-experiment';
  const { config } = await acts.prepareRun({ config: 'experiments/extrapolation-search', runId });
  assert.equal(config.name, 'extrapolation-search');
  assert.equal('description' in config, false);
  // A resume may name the config either way; another config is refused, naming the field.
  for (const name of ['experiments/extrapolation-search', 'extrapolation-search'])
    assert.equal((await acts.prepareRun({ config: name, runId })).config.name, 'extrapolation-search');
  await assert.rejects(
    acts.prepareRun({ config: 'demo', runId }),
    /runId: run "bytes-experiment" already exists with config "extrapolation-search", not "demo"/,
  );
});

test('a run prepared on one tfjs backend is refused, non-retryably, by a worker on another', async () => {
  const runId = 'bytes-backend';
  const { config } = await acts.prepareRun({ config: 'tiny', runId });
  const other = createActivities({
    store: store as unknown as ObjectStore,
    queue: 'bytes-other',
    backend: 'tensorflow',
    reportDir: '/nonexistent',
    maxSessions: 1,
    pool,
    log: () => {},
  });
  for (const call of [
    () => other.openTrainer({ runId, nodeId: 'warmstart', config, upstream: {} }),
    () => other.evaluate({ runId, nodeId: 'eval', config, upstream: {} }),
  ]) {
    const err = await call().then(
      () => assert.fail('accepted'),
      (e: unknown) => e as ApplicationFailure,
    );
    assert.equal(err.type, 'BackendMismatch');
    assert.equal(err.nonRetryable, true);
    assert.match(err.message, /run bytes-backend runs on the wasm tfjs backend .*this worker's is tensorflow.*E3_BACKEND=wasm/);
  }
  // the worker it was prepared on takes it
  const s = await acts.openTrainer({ runId, nodeId: 'warmstart', config, upstream: {} });
  await acts.closeTrainer(s);
});
