/**
 * Sampling engines side by side (ml/sampler.ts engine 'tfjs' vs 'ort', docs/ARCHITECTURE.md
 * "Sampling engines"), in one process, one thread each (tfjs wasm; ORT with one intra-op thread):
 *
 * 1. Decode ms per step at past lengths 0, 128, 256, 512, 1024, 2048: the demo model's shape
 *    (3 layers, d = 96, 4 heads; seeded init, context 2112, or more when E3_BENCH_STEPS needs it), 32 rows, one token fed per row per
 *    step (no draws, so no eos). Each decoder is prefilled with a 1-token prompt per row and its
 *    cached length then set to the position (cached values are zeros: a step's cost does not
 *    depend on them); the median of 5 x BLOCK steps, the engines taking turns (decodeMs).
 * 2. A demo-size evaluation through the same `sampleRows` → `sample` path: 64 prompts x 8
 *    samples at budget 512, the demo's base policy (configs/base/base-search.e3w), the demo's
 *    eval difficulty and temperature 0.6: response tokens/s, and whether both engines gave the
 *    same responses; once as one call of 512 rows, once in calls of EVAL_CHUNK prompts x 8
 *    samples, the calls an evaluation node's activities make (activities/evaluate.ts).
 * 3. Each as GFLOP/s (useful matmul FLOPs) over the same engine's plain 512^2 x 512 matmul
 *    GFLOP/s, measured in this run.
 * 4. What rescoring the old log-probs with the tfjs forward costs an RL iteration with 'ort'
 *    (the demo's stage 1: 16 prompts x 8 samples, budget 128): ORT sampling, rescoring, and the
 *    tfjs GRPO update of the same rollouts.
 *
 *   npx tsx bench/engines.bench.ts              (E3_BENCH_EVAL=0 skips 2; E3_BENCH_STEPS=n steps per block)
 * Prints a table and a JSON line; never fails on speed.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import * as ort from 'onnxruntime-node';
import { initBackend } from '../ml/backend';
import { CHUNK_COST_ROWS } from '../ml/batching';
import { grpoConfig } from '../ml/grpo';
import { GraphBuilder } from '../ml/onnx/graph';
import { OrtDecoder } from '../ml/onnx/decoder';
import type { Policy, PolicyConfig } from '../ml/policy';
import { createPolicy, disposePolicy } from '../ml/policy';
import { Rng, deriveSeed } from '../ml/rng';
import type { Decoder, SampleEngine } from '../ml/sampler';
import { KVCacheDecoder, scoreResponses } from '../ml/sampler';
import { loadPolicy } from '../ml/serialize';
import { BOS, VOCAB_SIZE } from '../ml/tokenizer';
import { Trainer } from '../ml/trainer';
import { evalRows } from '../ml/evaluation';
import { EVAL_CHUNK } from '../activities/evaluate';
import { gradeRollouts, sampleRows, shardRows } from '../ml/rollouts';
import { randomMatrix, tfjsMatmulPeak } from './matmul';
import type { RlSettings, Rollout } from '../ml/rollouts';

const SEED = 1234;
const ROWS = 32;
const POSITIONS = [0, 128, 256, 512, 1024, 2048];
const ROUNDS = 5;
const BLOCK = Number(process.env.E3_BENCH_STEPS ?? 5);
/** Context 2112 (the demo's 4x shape), or more where longer blocks take the last position past it. */
const CFG: PolicyConfig = {
  vocab: VOCAB_SIZE,
  layers: 3,
  dModel: 96,
  heads: 4,
  context: Math.max(2112, 2048 + ROUNDS * (BLOCK + 1) + 4),
  seed: SEED,
};
const { layers: L, dModel: D, vocab: V } = CFG;
const EVAL = {
  seed: 1,
  split: 'eval' as const,
  difficulty: { count: 4, min: 1, max: 9, ops: '+-*' },
  budgets: [512],
  prompts: 64,
  samples: 8,
  temperature: 0.6,
  ks: [1],
  offset: 0,
};
const ITER: RlSettings = {
  seed: 1,
  nodeId: 'stage1',
  stream: 'stage1',
  difficulty: { count: 3, min: 1, max: 9, ops: '+-*' },
  prompts: 16,
  samples: 8,
  temperature: 0.6,
  topP: 1,
  miniBatches: 2,
  microBatch: 32,
  microWork: CHUNK_COST_ROWS,
  skipZeroStd: false,
  grpo: grpoConfig({ klCoef: 0.05 }),
};
const ITER_BUDGET = 128;

const now = () => performance.now();
const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];
/** Matmul FLOPs of one decode step per row at past length t: projections, MLP, head, attention over t + 1 positions. */
const stepFlops = (t: number) => 2 * (L * (12 * D * D + 2 * (t + 1) * D) + D * V);
/** Sampling FLOPs of a row: each response token's step at its position (the prompt's prefill not counted). */
const rowFlops = (r: Rollout) => r.response.reduce((a, _, k) => a + stepFlops(r.prompt.length + k), 0);

/** The same on ORT: a one-MatMul graph, one intra-op thread. */
async function ortMatmul(n = 512): Promise<number> {
  const g = new GraphBuilder();
  g.op('MatMul', [g.input('a', 'float32', [n, n]), g.input('b', 'float32', [n, n])], {}, 'c');
  g.output('c', 'float32', [n, n]);
  const s = await ort.InferenceSession.create(g.build('matmul'), {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const feeds = { a: new ort.Tensor('float32', randomMatrix(n, 'a'), [n, n]), b: new ort.Tensor('float32', randomMatrix(n, 'b'), [n, n]) };
  let best = Infinity;
  for (let i = 0; i < 8; i++) {
    const t0 = now();
    await s.run(feeds);
    if (i >= 2) best = Math.min(best, now() - t0);
  }
  await s.release();
  return (2 * n ** 3) / (best / 1000) / 1e9;
}

/** A decoder of ROWS rows whose cached length is `pos` (bench-only: the cached values are zeros; see the file comment). */
async function decoderAt(policy: Policy, engine: SampleEngine, pos: number): Promise<Decoder> {
  const caps = Array.from({ length: ROWS }, () => pos + ROUNDS * (BLOCK + 1) + 4);
  const dec: Decoder = engine === 'ort' ? new OrtDecoder(policy, caps) : new KVCacheDecoder(policy, caps);
  await dec.prefill(caps.map(() => [BOS]));
  (dec as unknown as { len: number[] }).len.fill(Math.max(1, pos));
  if (engine === 'ort') {
    // A run reaches `pos` by steps that write every cached position; here the length is set, so
    // write the cache's memory once (after one step: the rebuild to this position's capacity),
    // or ORT would read never-written pages, which cost more (bench/NOTES.md "Fused attention").
    const rows = caps.map((_, r) => r);
    await dec.step(
      rows,
      rows.map(() => 3),
    );
    const d = dec as unknown as { len: number[]; k: Float32Array[]; vt: Float32Array[] };
    for (const a of [...d.k, ...d.vt]) a.fill(0);
    d.len.fill(Math.max(1, pos));
  }
  return dec;
}

/**
 * Median ms of one decode step of ROWS rows at past length `pos` on each engine: ROUNDS rounds
 * of BLOCK timed steps per engine, each block after one untimed step, the engines taking turns
 * so that both see the same load on a shared machine (turns of single steps would also evict
 * each other's weights from the caches every step, which sampling never does).
 */
async function decodeMs(policy: Policy, pos: number): Promise<{ tfjs: number; ort: number }> {
  const decs = { tfjs: await decoderAt(policy, 'tfjs', pos), ort: await decoderAt(policy, 'ort', pos) };
  const rows = Array.from({ length: ROWS }, (_, r) => r);
  const rng = new Rng(deriveSeed(SEED, 'bench', 'tokens', pos));
  const times = { tfjs: [] as number[], ort: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const e of ['tfjs', 'ort'] as const) {
      for (let i = 0; i <= BLOCK; i++) {
        const tokens = rows.map(() => 3 + Math.floor(rng.next() * (V - 3)));
        const t0 = now();
        await decs[e].step(rows, tokens);
        if (i > 0) times[e].push(now() - t0);
      }
    }
  }
  decs.tfjs.dispose?.();
  decs.ort.dispose?.();
  return { tfjs: median(times.tfjs), ort: median(times.ort) };
}

/** The evaluation's rows in calls of `chunk` rows (all in one call, or EVAL_CHUNK prompts x samples as an evaluation node's activities sample them). */
async function evaluation(policy: Policy, engine: SampleEngine, chunk: number) {
  const rows = evalRows(EVAL);
  const t0 = now();
  const out: Rollout[] = [];
  for (let at = 0; at < rows.length; at += chunk)
    out.push(
      ...(await sampleRows(policy, {
        rows: rows.slice(at, at + chunk),
        budget: 512,
        temperature: EVAL.temperature,
        topP: 1,
        tool: true,
        engine,
      })),
    );
  const s = (now() - t0) / 1000;
  const tokens = out.reduce((a, r) => a + r.response.length, 0);
  const flops = out.reduce((a, r) => a + rowFlops(r), 0);
  return { s, tokens, tokS: tokens / s, gflops: flops / s / 1e9, out };
}

void (async () => {
  const backend = await initBackend();
  const mm = { tfjs: tfjsMatmulPeak(), ort: await ortMatmul() };
  console.log(
    `${cpus()[0].model}, ${cpus().length} cores, load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}; node ${process.version}, onnxruntime-node ${ort.env.versions.node}`,
  );
  console.log(`backend ${backend}; plain 512^3 matmul GFLOP/s: tfjs ${mm.tfjs.toFixed(1)}, ort ${mm.ort.toFixed(1)}`);
  const policy = createPolicy(CFG);
  const decode: Array<{ pos: number; tfjs: number; ort: number }> = [];
  console.log('\npast length | tfjs ms/step | ort ms/step | speed-up | tfjs % matmul | ort % matmul');
  for (const pos of POSITIONS) {
    const { tfjs: t, ort: o } = await decodeMs(policy, pos);
    decode.push({ pos, tfjs: t, ort: o });
    const pct = (ms: number, peak: number) => ((100 * (ROWS * stepFlops(pos))) / (ms / 1000) / 1e9 / peak).toFixed(1);
    console.log(
      `${String(pos).padStart(11)} | ${t.toFixed(2).padStart(12)} | ${o.toFixed(2).padStart(11)} | ${(t / o).toFixed(1).padStart(7)}x | ${pct(t, mm.tfjs).padStart(12)}% | ${pct(o, mm.ort).padStart(11)}%`,
    );
  }
  const result: Record<string, unknown> = { backend, matmulGflops: mm, decode };
  const baseBytes = readFileSync('configs/base/base-search.e3w');
  if (process.env.E3_BENCH_EVAL !== '0') {
    const base = loadPolicy(baseBytes);
    const shapes = [
      { name: 'one call', chunk: EVAL.prompts * EVAL.samples },
      { name: `calls of ${EVAL_CHUNK} prompts`, chunk: EVAL_CHUNK * EVAL.samples },
    ];
    const evals: Record<string, unknown> = {};
    for (const { name, chunk } of shapes) {
      const o = await evaluation(base, 'ort', chunk);
      const t = await evaluation(base, 'tfjs', chunk);
      for (const [e, r, peak] of [
        ['ort', o, mm.ort],
        ['tfjs', t, mm.tfjs],
      ] as const)
        console.log(
          `evaluation (64 x 8, budget 512, ${name}): ${e} ${r.tokens} tokens in ${r.s.toFixed(1)} s = ${r.tokS.toFixed(0)} tokens/s, ${r.gflops.toFixed(2)} GFLOP/s = ${((100 * r.gflops) / peak).toFixed(1)}% of matmul`,
        );
      const same = o.out.filter((r, k) => JSON.stringify(r.response) === JSON.stringify(t.out[k].response)).length;
      console.log(`  speed-up ${(t.s / o.s).toFixed(1)}x end to end; identical responses ${same}/${o.out.length}`);
      evals[name] = {
        ort: { s: o.s, tokens: o.tokens, gflops: o.gflops },
        tfjs: { s: t.s, tokens: t.tokens, gflops: t.gflops },
        identical: same,
        rows: o.out.length,
      };
    }
    result.evaluation = evals;
    disposePolicy(base);
  }
  {
    const probe = loadPolicy(baseBytes);
    const model = { ...probe.cfg };
    disposePolicy(probe);
    const tr = Trainer.create({ model, weights: baseBytes, optim: { lr: 1e-4 }, toolArithmetic: true, engine: 'ort' });
    const rows = shardRows(ITER, 0, 0, 1);
    let t0 = now();
    await sampleRows(tr.policy, { rows, budget: ITER_BUDGET, temperature: ITER.temperature, topP: 1, tool: true, engine: 'tfjs' });
    const tfjsSampleMs = now() - t0;
    t0 = now();
    const roll = await sampleRows(tr.policy, {
      rows,
      budget: ITER_BUDGET,
      temperature: ITER.temperature,
      topP: 1,
      tool: true,
      engine: 'ort',
    });
    const sampleMs = now() - t0;
    t0 = now();
    scoreResponses(
      tr.policy,
      roll.map((r) => r.prompt),
      roll.map((r) => r.response),
      roll.map((r) => Uint8Array.from(r.response, (_, k) => (r.forced.includes(k) ? 1 : 0))),
      ITER.temperature,
    );
    const rescoreMs = now() - t0;
    t0 = now();
    await tr.update(ITER, 0, gradeRollouts(ITER.seed, ITER.stream, 0, ITER.prompts, ITER.difficulty, true, roll));
    const updateMs = now() - t0;
    tr.dispose();
    const iter = { tfjsSampleMs, sampleMs, rescoreMs, updateMs, tokens: roll.reduce((a, r) => a + r.response.length, 0) };
    const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    console.log(
      `\nRL iteration (16 x 8, budget ${ITER_BUDGET}, ${iter.tokens} response tokens), one thread: tfjs sampling ${sec(tfjsSampleMs)}; ort sampling ${sec(sampleMs)} + tfjs rescoring ${sec(rescoreMs)}; tfjs update ${sec(updateMs)}`,
    );
    console.log(
      `  rescoring = ${((100 * rescoreMs) / updateMs).toFixed(0)}% of the update; iteration ${sec(tfjsSampleMs + updateMs)} (tfjs) vs ${sec(sampleMs + rescoreMs + updateMs)} (ort)`,
    );
    result.iteration = iter;
  }
  console.log(JSON.stringify(result));
})();
