/**
 * ML throughput on the demo-size policy (4 layers, d=128, 4 heads, context 256): training
 * tokens/s (forward + backward of mean logp, batch 32 x 128 tokens in micro-batches),
 * sampling tokens/s with the KV cache and with full recompute (batch 32, 64 new tokens),
 * and training GFLOP/s next to the backend's plain 2-D matmul GFLOP/s from the same run.
 * Prints numbers and ratios; never fails on speed.
 *
 *   npx tsx bench/ml.bench.ts            (E3_BACKEND=cpu|wasm to force a backend)
 *   E3_BENCH_MICRO=16 npx tsx bench/ml.bench.ts   (micro-batch rows, default 8)
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../ml/backend';
import type { Policy, PolicyConfig } from '../ml/policy';
import { assignParams, countParams, createPolicy, disposePolicy, readParams, tokenLogProbs } from '../ml/policy';
import { Rng, deriveSeed } from '../ml/rng';
import { sample, sampleNoCache } from '../ml/sampler';
import { BOS, EOS, VOCAB_SIZE } from '../ml/tokenizer';
import { tfjsMatmulPeak } from './matmul';

const SEED = 1234;
const CFG: PolicyConfig = { vocab: VOCAB_SIZE, layers: 4, dModel: 128, heads: 4, context: 256, seed: SEED };
const TRAIN_ROWS = 32;
const TRAIN_TOKENS = 128;
const MICRO = Number(process.env.E3_BENCH_MICRO ?? 8);
const SAMPLE_ROWS = 32;
const NEW_TOKENS = 64;

const now = () => performance.now();

/** Matmul FLOPs of one forward pass per token at sequence length t (attention computes the full t x t). */
function forwardFlopsPerToken(cfg: PolicyConfig, t: number): number {
  const { vocab: v, layers, dModel: d } = cfg;
  return 2 * v * d + layers * (24 * d * d + 4 * t * d) + 2 * d * v;
}

function trainStep(policy: Policy, batch: tf.Tensor2D[]): void {
  const vars = [...policy.params.values()];
  let acc: Record<string, tf.Tensor> | null = null;
  for (const mb of batch) {
    const { value, grads } = tf.variableGrads(() => tf.neg(tf.mean(tokenLogProbs(policy, mb).logp)) as tf.Scalar, vars);
    value.dispose();
    if (!acc) acc = grads;
    else {
      const next: Record<string, tf.Tensor> = {};
      for (const k of Object.keys(grads)) next[k] = tf.add(acc[k], grads[k]);
      tf.dispose([...Object.values(acc), ...Object.values(grads)]);
      acc = next;
    }
  }
  const norm = tf.tidy(() => tf.sqrt(tf.addN(Object.values(acc!).map((g) => tf.sum(tf.square(g))))));
  norm.dataSync();
  tf.dispose([norm, ...Object.values(acc!)]);
}

/** Pin final-LN unit 0 to 1 and give eos a -30 logit through it, so every row runs the full 64 tokens. */
function withoutEos(policy: Policy): void {
  const values = readParams(policy);
  values.get('lnf.g')![0] = 0;
  values.get('lnf.b')![0] = 1;
  const head = values.get('head')!;
  head.fill(0, 0, CFG.vocab);
  head[EOS] = -30;
  assignParams(policy, values);
}

async function main(): Promise<void> {
  const backend = await initBackend();
  const policy = createPolicy(CFG);
  console.log(
    `backend ${backend}; policy ${countParams(policy)} params (${CFG.layers} layers, d=${CFG.dModel}, ${CFG.heads} heads, context ${CFG.context}, vocab ${CFG.vocab})`,
  );

  const mm512 = tfjsMatmulPeak(512, 5);
  const mm256 = tfjsMatmulPeak(256, 10);
  const peak = Math.max(mm512, mm256);
  console.log(`plain 2-D matmul: 512^3 ${mm512.toFixed(2)} GFLOP/s, 256^3 ${mm256.toFixed(2)} GFLOP/s (ratios below use the better)`);

  // Training: TRAIN_ROWS sequences of TRAIN_TOKENS + 1 tokens (TRAIN_TOKENS predicted each).
  const rng = new Rng(deriveSeed(SEED, 'bench', 'data'));
  const batch: tf.Tensor2D[] = [];
  for (let r = 0; r < TRAIN_ROWS; r += MICRO) {
    const rows = Math.min(MICRO, TRAIN_ROWS - r);
    batch.push(
      tf.tensor2d(
        Int32Array.from({ length: rows * (TRAIN_TOKENS + 1) }, () => rng.int(3, CFG.vocab - 1)),
        [rows, TRAIN_TOKENS + 1],
        'int32',
      ),
    );
  }
  trainStep(policy, batch); // warm-up: kernel setup and heap growth
  const steps = 2;
  const t0 = now();
  for (let i = 0; i < steps; i++) trainStep(policy, batch);
  const trainS = (now() - t0) / 1000 / steps;
  tf.dispose(batch);
  const trainTokS = (TRAIN_ROWS * TRAIN_TOKENS) / trainS;
  const trainGflops = (3 * forwardFlopsPerToken(CFG, TRAIN_TOKENS) * TRAIN_ROWS * TRAIN_TOKENS) / trainS / 1e9;
  console.log(
    `train: ${TRAIN_ROWS}x${TRAIN_TOKENS} tokens in micro-batches of ${MICRO}: ${(trainS * 1000).toFixed(0)} ms/step, ` +
      `${trainTokS.toFixed(0)} tokens/s, ${trainGflops.toFixed(2)} GFLOP/s = ${((100 * trainGflops) / peak).toFixed(0)}% of plain matmul`,
  );

  // Sampling: prompts of 12..20 tokens, 64 new tokens per row.
  withoutEos(policy);
  const prng = new Rng(deriveSeed(SEED, 'bench', 'prompts'));
  const prompts = Array.from({ length: SAMPLE_ROWS }, () => [
    BOS,
    ...Array.from({ length: prng.int(11, 19) }, () => prng.int(3, CFG.vocab - 1)),
  ]);
  const seeds = prompts.map((_, i) => deriveSeed(SEED, 'bench', 'sample', i));
  const opts = { budget: NEW_TOKENS, temperature: 1, topP: 1, seeds, eos: EOS, yieldEvery: 1 << 30 };
  await sample(policy, prompts.slice(0, 2), { ...opts, seeds: seeds.slice(0, 2), budget: 4 }); // warm-up
  let t1 = now();
  const cached = await sample(policy, prompts, opts);
  const cacheS = (now() - t1) / 1000;
  const generated = cached.responses.reduce((a, r) => a + r.length, 0);
  t1 = now();
  const recomputed = await sampleNoCache(policy, prompts, opts);
  const recomputeS = (now() - t1) / 1000;
  const same = JSON.stringify(cached.responses) === JSON.stringify(recomputed.responses);
  const cacheTokS = generated / cacheS;
  const recomputeTokS = generated / recomputeS;
  console.log(
    `sample with KV cache: ${SAMPLE_ROWS} rows x ${NEW_TOKENS} new tokens (${generated} tokens) in ${cacheS.toFixed(2)} s = ${cacheTokS.toFixed(0)} tokens/s`,
  );
  console.log(
    `sample, full recompute: ${recomputeS.toFixed(2)} s = ${recomputeTokS.toFixed(0)} tokens/s (same tokens as the cache: ${same})`,
  );
  console.log(
    `ratios: KV cache / recompute ${(cacheTokS / recomputeTokS).toFixed(1)}x; sampling / training tokens/s ${(cacheTokS / trainTokS).toFixed(2)}; train / matmul GFLOP/s ${(trainGflops / peak).toFixed(2)}`,
  );
  console.log(
    JSON.stringify({
      backend,
      params: countParams(policy),
      matmul512Gflops: +mm512.toFixed(2),
      matmul256Gflops: +mm256.toFixed(2),
      micro: MICRO,
      trainTokensPerS: Math.round(trainTokS),
      trainGflops: +trainGflops.toFixed(2),
      sampleCacheTokensPerS: Math.round(cacheTokS),
      sampleRecomputeTokensPerS: Math.round(recomputeTokS),
      cacheSpeedup: +(cacheTokS / recomputeTokS).toFixed(1),
      sameTokens: same,
    }),
  );
  disposePolicy(policy);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
