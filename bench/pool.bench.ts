/**
 * The compute pool side by side with the in-process trainer, in one run (issue: every core,
 * off the event loop). On the committed base's shape (3 x 96, context 544), from its weights:
 *   - SFT steps (batch 32 of long warm-start traces), one GRPO update (64 rollouts), sampling
 *     (64 rows, budget 128): wall time in-process, on a pool of 1 thread, and of 2 threads;
 *   - the main thread's event-loop delay (perf_hooks.monitorEventLoopDelay) during each;
 *   - whether every variant ends with the same bytes (it must);
 *   - GFLOP/s per thread of each (useful matmul FLOPs of the rows, no padding) against the
 *     same run's plain rank-2 matmul ceiling (512^3 on the main thread's backend).
 * Prints a table; never fails on speed.
 *
 *   npx tsx bench/pool.bench.ts [threads=2]
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ComputePool, PooledTrainer } from '../compute/pool';
import { initBackend } from '../ml/backend';
import { grpoConfig } from '../ml/grpo';
import { sha256Hex } from '../ml/serialize';
import { Trainer } from '../ml/trainer';
import { gradeRollouts } from '../ml/rollouts';
import { CHUNK_COST_ROWS, sftPlan } from '../ml/batching';
import type { RlSettings, Rollout } from '../ml/rollouts';
import { VOCAB_SIZE } from '../ml/tokenizer';
import { tfjsMatmulPeak } from './matmul';

const N = Number(process.argv[2] ?? 2);
/** Micro-batch work cap (config `microWork`) every variant trains with; E3_BENCH_MICRO_WORK compares others. */
const MICRO_WORK = Number(process.env.E3_BENCH_MICRO_WORK ?? CHUNK_COST_ROWS);
/** Rounds of the interleaved 1-thread / N-thread comparison (E3_BENCH_ROUNDS). */
const ROUNDS = Number(process.env.E3_BENCH_ROUNDS ?? 8);
const weights = readFileSync(path.join(__dirname, '..', 'configs', 'base', 'base.e3w'));
const model = { vocab: VOCAB_SIZE, layers: 3, dModel: 96, heads: 4, context: 544, seed: 1 };
const d = { count: 3, min: 1, max: 9, ops: '+-*' };
const s: RlSettings = {
  seed: 7,
  nodeId: 'bench',
  stream: 'bench',
  difficulty: d,
  prompts: 16,
  samples: 4,
  temperature: 0.6,
  topP: 1,
  miniBatches: 2,
  microBatch: 8,
  microWork: MICRO_WORK,
  skipZeroStd: false,
  grpo: grpoConfig({}),
};
const create = { model, weights, optim: { lr: 1e-4 }, toolArithmetic: true };
const SFT_STEPS = 4;
/** The SFT step every variant times: batch 32 of long warm-start traces (seed 3), mark weight 10. */
const SFT_TRACES = { meanWrong: 3, maxAttempts: 32, perturbed: 0.5 };
const SFT_OPTS = { markWeight: 10, microWork: MICRO_WORK };
const sftStepOf = (tr: Trainer | PooledTrainer, k: number) => tr.sftStep(3, k, 32, [d], SFT_TRACES, SFT_OPTS);
/**
 * Untimed warm-up steps: each thread's wasm heap grows to its longest pass once, and a
 * thread's first pass of a new size costs up to 4x a later one (measured per micro-batch).
 * Chunks go to whichever thread is free, so one step does not show every thread every size: three do.
 */
const WARMUP_STEPS = [97, 98, 99];
const BUDGET = 128;

interface Row {
  variant: string;
  threads: number;
  sft: number;
  sample: number;
  update: number;
  p99: number;
  max: number;
  bytes: string;
  flops: { sft: number; sample: number; update: number };
  profile?: { sft: Profile; update: Profile };
}

/** Where a pooled optimiser step's time goes, ms per step: main-thread wall of each part, and the threads' own time on grads and applies (summed over threads). */
interface Profile {
  plan: number;
  grad: number;
  gradThreads: number;
  sum: number;
  apply: number;
  applyThreads: number;
}

function takeProfile(tr: Trainer | PooledTrainer, per: number): Profile | undefined {
  if (!(tr instanceof PooledTrainer)) return undefined;
  const t = tr.pool.threadMs,
    w = tr.wallMs;
  const p = {
    plan: w.plan / per,
    grad: w.grad / per,
    gradThreads: (t.get('grad')?.ms ?? 0) / per,
    sum: w.sum / per,
    apply: w.apply / per,
    applyThreads: (t.get('apply')?.ms ?? 0) / per,
  };
  Object.assign(w, { plan: 0, grad: 0, sum: 0, apply: 0 });
  t.clear();
  return p;
}

const { layers: L, dModel: D, vocab: V } = model;
/** Matmul FLOPs of one training forward pass per token of a row of length t (attention computes t x t; embedding as a one-hot matmul). */
const trainFwd = (t: number) => 2 * V * D + L * (24 * D * D + 4 * t * D) + 2 * D * V;
/** Training (forward + backward = 3 forwards) FLOPs of rows of these lengths, unpadded. */
const trainFlops = (lengths: number[]) => lengths.reduce((a, t) => a + 3 * t * trainFwd(t), 0);
/** Sampling FLOPs of rows of these lengths: per position p, the projections, MLP and head, and attention over p positions. */
const sampleFlops = (lengths: number[]) =>
  lengths.reduce((a, t) => a + t * (L * 24 * D * D + 2 * D * V) + L * 4 * D * ((t * (t - 1)) / 2), 0);
const rowLen = (r: Rollout) => r.prompt.length + r.response.length;

async function measure(variant: string, threads: number, tr: Trainer | PooledTrainer): Promise<Row> {
  for (const k of WARMUP_STEPS) await sftStepOf(tr, k);
  takeProfile(tr, 1);
  const h = monitorEventLoopDelay({ resolution: 10 });
  // A timer on the main thread: in-process work delays it, pooled work should not.
  const tick = setInterval(() => undefined, 5);
  h.enable();
  let t0 = performance.now();
  for (let k = 0; k < SFT_STEPS; k++) await sftStepOf(tr, k);
  const sft = (performance.now() - t0) / SFT_STEPS;
  const sftProfile = takeProfile(tr, SFT_STEPS);
  t0 = performance.now();
  const roll = await tr.sampleShard(s, 0, 0, 1, BUDGET);
  const sample = performance.now() - t0;
  takeProfile(tr, 1);
  t0 = performance.now();
  await tr.update(s, 0, gradeRollouts(s.seed, s.stream, 0, s.prompts, d, true, roll));
  const update = performance.now() - t0;
  const updateProfile = takeProfile(tr, s.miniBatches);
  h.disable();
  clearInterval(tick);
  const snap = await tr.snapshot();
  const sftRows = Array.from({ length: SFT_STEPS }, (_, k) => sftPlan({ ...model }, 3, k, 32, [d], SFT_TRACES, SFT_OPTS).chunks.flat());
  const flops = {
    sft: trainFlops(sftRows.flat().map((r) => r.prompt.length + r.response.length)) / SFT_STEPS,
    sample: sampleFlops(roll.map(rowLen)),
    update: trainFlops(roll.map(rowLen)),
  };
  const profile = sftProfile && updateProfile ? { sft: sftProfile, update: updateProfile } : undefined;
  return {
    variant,
    threads,
    sft,
    sample,
    update,
    p99: h.percentile(99) / 1e6,
    max: h.max / 1e6,
    bytes: sha256Hex(snap.weights).slice(0, 12),
    flops,
    profile,
  };
}

void (async () => {
  await initBackend();
  const rows: Row[] = [];
  const local = Trainer.create(create);
  const ceiling = tfjsMatmulPeak();
  rows.push(await measure('in-process', 1, local));
  local.dispose();
  for (const n of [1, N]) {
    const pool = await ComputePool.start(n);
    const tr = await PooledTrainer.open(pool, 'bench/pool', create);
    rows.push(await measure(`pool, ${n} thread${n === 1 ? '' : 's'}`, n, tr));
    await tr.dispose();
    await pool.close();
  }
  const base = rows[1];
  console.log(
    `compute pool bench: base shape 3x96 ctx 544, SFT batch 32 (long traces), sampling ${s.prompts * s.samples} rows at budget ${BUDGET}, GRPO update of them`,
  );
  console.log(`plain rank-2 matmul ceiling (512^3, main thread): ${ceiling.toFixed(2)} GFLOP/s`);
  console.log(
    '| variant | SFT step ms | sampling ms | update ms | event-loop p99 ms | max ms | speed-up vs 1 thread (sft / sample / update) | GFLOP/s per thread (sft / sample / update) | % of ceiling | weights |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const up = `${(base.sft / r.sft).toFixed(2)} / ${(base.sample / r.sample).toFixed(2)} / ${(base.update / r.update).toFixed(2)}`;
    const g = [r.flops.sft / r.sft, r.flops.sample / r.sample, r.flops.update / r.update].map((f) => f / 1e6 / r.threads);
    const gf = g.map((x) => x.toFixed(2)).join(' / ');
    const pct = g.map((x) => ((100 * x) / ceiling).toFixed(0)).join(' / ');
    console.log(
      `| ${r.variant} | ${r.sft.toFixed(0)} | ${r.sample.toFixed(0)} | ${r.update.toFixed(0)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${up} | ${gf} | ${pct} | ${r.bytes} |`,
    );
  }
  console.log('\nWhere a pooled optimiser step goes (ms per step; "threads" = the threads\' own time, summed over threads):');
  console.log('| variant | step | plan | grads wall | grads threads | sum | apply wall | apply threads |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    for (const [k, p] of Object.entries(r.profile ?? {}))
      console.log(
        `| ${r.variant} | ${k === 'sft' ? 'SFT' : 'update (per mini-batch)'} | ${[p.plan, p.grad, p.gradThreads, p.sum, p.apply, p.applyThreads].map((x) => x.toFixed(1)).join(' | ')} |`,
      );
  }
  const same = rows.every((r) => r.bytes === rows[0].bytes);
  console.log(`same final weights in every variant: ${same ? 'yes' : 'NO'}`);
  console.log(
    `pool overhead (1 thread vs in-process): sft ${(base.sft / rows[0].sft).toFixed(3)}x, sample ${(base.sample / rows[0].sample).toFixed(3)}x, update ${(base.update / rows[0].update).toFixed(3)}x`,
  );
  if (!same) process.exitCode = 1;
  await contention(N);
  await interleaved(N, ROUNDS);
})();

/**
 * The N-thread speed-up with the host's drift taken out: a 1-thread and an N-thread pool open
 * side by side, and in each round both time the same SFT step and the same GRPO update (the
 * one measured above), in alternating order. The table above times each variant in its own
 * stretch of seconds, where a host that drifts by 30 % between stretches moves the ratio as
 * much; here every round's ratio compares neighbouring seconds. Prints the median and range.
 */
async function interleaved(n: number, rounds: number): Promise<void> {
  const pools = [await ComputePool.start(1), await ComputePool.start(n)];
  const trs = [await PooledTrainer.open(pools[0], 'bench/i1', create), await PooledTrainer.open(pools[1], 'bench/iN', create)];
  for (const k of WARMUP_STEPS) for (const tr of trs) await sftStepOf(tr, k);
  const graded = gradeRollouts(s.seed, s.stream, 0, s.prompts, d, true, await trs[0].sampleShard(s, 0, 0, 1, BUDGET));
  for (const tr of trs) await tr.update(s, 0, graded);
  const time = async (f: () => unknown) => {
    const t0 = performance.now();
    await f();
    return performance.now() - t0;
  };
  const ratios = { sft: [] as number[], update: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? [0, 1] : [1, 0];
    const sft = [0, 0];
    const upd = [0, 0];
    for (const i of order) sft[i] = await time(() => sftStepOf(trs[i], r % SFT_STEPS));
    for (const i of order) upd[i] = await time(() => trs[i].update(s, 1 + r, graded));
    ratios.sft.push(sft[0] / sft[1]);
    ratios.update.push(upd[0] / upd[1]);
  }
  await Promise.all(trs.map((tr) => tr.dispose()));
  await Promise.all(pools.map((p) => p.close()));
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const show = (xs: number[]) => `median ${med(xs).toFixed(2)}x [${Math.min(...xs).toFixed(2)}, ${Math.max(...xs).toFixed(2)}]`;
  console.log(`\nInterleaved, ${rounds} rounds (micro-batch work cap ${MICRO_WORK} rows of 128): ${n} threads over 1, per round`);
  console.log(`SFT step ${show(ratios.sft)}; GRPO update ${show(ratios.update)}`);
}

/**
 * Do N threads slow each other, with no dispatch between them? N independent one-thread
 * pools, each running whole SFT steps of its own, first one alone and then all at once: the
 * threads' own grad time per step. A ratio near 1 puts the pooled step's loss in dispatch and
 * imbalance; a ratio well above 1 puts it in the machine (shared caches, memory bandwidth,
 * vCPUs that are hyperthreads of one host core) running this workload.
 */
async function contention(n: number): Promise<void> {
  const pools = await Promise.all(Array.from({ length: n }, () => ComputePool.start(1)));
  const trs = await Promise.all(pools.map((p, i) => PooledTrainer.open(p, `bench/alone-${i}`, create)));
  const gradMs = (tr: PooledTrainer) => {
    const ms = tr.pool.threadMs.get('grad')?.ms ?? 0;
    tr.pool.threadMs.clear();
    return ms;
  };
  for (const k of WARMUP_STEPS) await Promise.all(trs.map((tr) => sftStepOf(tr, k)));
  trs.forEach(gradMs);
  let t0 = performance.now();
  for (let k = 0; k < SFT_STEPS; k++) await sftStepOf(trs[0], k);
  const aloneWall = (performance.now() - t0) / SFT_STEPS;
  const alone = gradMs(trs[0]) / SFT_STEPS;
  t0 = performance.now();
  // The same batches as alone, so the ratio is contention, not other data.
  for (let k = 0; k < SFT_STEPS; k++) await Promise.all(trs.map((tr) => sftStepOf(tr, k)));
  const togetherWall = (performance.now() - t0) / SFT_STEPS;
  const together = trs.map((tr) => gradMs(tr) / SFT_STEPS);
  await Promise.all(trs.map((tr) => tr.dispose()));
  await Promise.all(pools.map((p) => p.close()));
  const mean = together.reduce((a, b) => a + b, 0) / n;
  console.log(`\nContention, no dispatch: ${n} independent one-thread trainers, SFT grad ms per step (the thread's own time)`);
  console.log(
    `alone ${alone.toFixed(0)} (wall ${aloneWall.toFixed(0)}); ${n} at once ${together.map((x) => x.toFixed(0)).join(' / ')} (wall ${togetherWall.toFixed(0)}); slowdown ${(mean / alone).toFixed(2)}x`,
  );
}
