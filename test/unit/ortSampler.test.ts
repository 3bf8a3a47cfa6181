import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../ml/backend';
import type { Policy, PolicyConfig } from '../../ml/policy';
import { disposePolicy, forwardLogits } from '../../ml/policy';
import { Rng, deriveSeed } from '../../ml/rng';
import type { SampleOptions } from '../../ml/sampler';
import { sample, scoreResponses } from '../../ml/sampler';
import { OrtDecoder } from '../../ml/onnx/decoder';
import { randomPolicy as randomPolicyOf } from './randomPolicy';

/** Small and fast, with a context past 2,048 positions. */
const CFG: PolicyConfig = { vocab: 12, layers: 2, dModel: 16, heads: 2, context: 2112, seed: 21 };
const EOS = 2;
const seedsFor = (n: number, salt = 0) => Array.from({ length: n }, (_, i) => deriveSeed(321, 'ort-test', salt, i));

/** Random O(0.3) weights; head row 0 acts as an eos bias (test/unit/randomPolicy.ts). */
const randomPolicy = (seed: number, eosBias = -3): Policy => randomPolicyOf(CFG, seed, { scale: 0.3, eos: EOS, eosBias });

let policy: Policy;
before(async () => {
  await initBackend();
  policy = randomPolicy(3);
});

const opts = (o: Partial<SampleOptions> & { seeds: number[] }): SampleOptions => ({ budget: 40, temperature: 1, topP: 1, eos: EOS, ...o });

/** Random prompts of lengths 2..12 starting with token 1. */
function prompts(n: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => [
    1,
    ...Array.from({ length: 1 + Math.floor(rng.next() * 11) }, () => 3 + Math.floor(rng.next() * (CFG.vocab - 3))),
  ]);
}

/**
 * Tolerance: both engines compute the same float32 model with different operation orders
 * (ORT's fused Gemm and LayerNormalization, tfjs wasm's XNNPACK matmuls); each logit is a
 * sum of float32 products through 2 blocks, whose rounding differences are ~1e-7 relative
 * per operation and grow with the attention length (measured: 3.4e-6 at most over 2,100
 * positions). 5e-5 absolute on logits of magnitude ~1-5 is ~100 ulps: far below any effect on
 * sampling, and far above float32 noise; a wrong position, mask or cache entry moves logits
 * by O(0.1) or more.
 */
const LOGIT_TOL = 5e-5;

test('ORT decode-step logits match tfjs forwardLogits at every position up to 2,100 (max abs diff < 5e-5)', async (ctx) => {
  const T = 2100;
  const rng = new Rng(9);
  const long = [1, ...Array.from({ length: T - 1 }, () => 3 + Math.floor(rng.next() * (CFG.vocab - 3)))];
  // A second, shorter row that stops early: the long row then runs alone (slot rebuild).
  const short = [1, 4, 5, ...Array.from({ length: 297 }, () => 3 + Math.floor(rng.next() * (CFG.vocab - 3)))];
  const p0 = [long.slice(0, 5), short.slice(0, 9)];
  const dec = new OrtDecoder(policy, [T, short.length]);
  const got: Float32Array[][] = [[], []];
  (await dec.prefill(p0)).forEach((l, r) => got[r].push(l));
  for (let t = 5; t < T; t++) {
    const rows = [0];
    if (t - 5 + 9 < short.length) rows.push(1);
    const toks = rows.map((r) => (r === 0 ? long[t] : short[t - 5 + 9]));
    (await dec.step(rows, toks)).forEach((l, i) => got[rows[i]].push(l));
  }
  dec.dispose();
  const refOf = (seq: number[]) => {
    const x = tf.tensor2d([seq], undefined, 'int32');
    const y = forwardLogits(policy, x);
    const v = y.dataSync() as Float32Array;
    tf.dispose([x, y]);
    return v;
  };
  let maxDiff = 0;
  let maxAbs = 0;
  for (const [r, seq, first] of [
    [0, long, 4],
    [1, short, 8],
  ] as const) {
    const ref = refOf(seq);
    got[r].forEach((l, i) => {
      const at = (first + i) * CFG.vocab;
      for (let v = 0; v < CFG.vocab; v++) {
        maxDiff = Math.max(maxDiff, Math.abs(l[v] - ref[at + v]));
        maxAbs = Math.max(maxAbs, Math.abs(ref[at + v]));
      }
    });
    assert.equal(got[r].length, seq.length - first);
  }
  ctx.diagnostic(`max abs logit diff ${maxDiff.toExponential(2)}, max |logit| ${maxAbs.toFixed(2)}`);
  assert.ok(maxDiff < LOGIT_TOL, `max abs logit diff ${maxDiff} (max |logit| ${maxAbs})`);
});

test('ORT rows are independent of the batch: one batch and two halves give identical tokens and log-probs', async (ctx) => {
  const p = randomPolicy(4, -0.5); // eos likelier: rows end at many different steps
  const ps = prompts(12, 5);
  const seeds = seedsFor(12);
  const o = { budget: 150, engine: 'ort' as const };
  const all = await sample(p, ps, opts({ seeds, ...o }));
  const a = await sample(p, ps.slice(0, 5), opts({ seeds: seeds.slice(0, 5), ...o }));
  const b = await sample(p, ps.slice(5), opts({ seeds: seeds.slice(5), ...o }));
  disposePolicy(p);
  assert.deepEqual(all.responses, [...a.responses, ...b.responses]);
  assert.deepEqual(all.logp, [...a.logp, ...b.logp]);
  assert.deepEqual(all.truncated, [...a.truncated, ...b.truncated]);
  // Rows ended at different steps (eos and budget), so slots were idle and rebuilt.
  const lens = new Set(all.responses.map((r) => r.length));
  ctx.diagnostic(`response lengths ${all.responses.map((r) => r.length).join(' ')}`);
  assert.ok(lens.size > 3, `response lengths ${[...lens]}`);
});

test('ORT and tfjs sample the same tokens for the same seeds (most rows identical; log-probs within 1e-4 where they agree)', async (ctx) => {
  const n = 48;
  const ps = prompts(n, 6);
  const seeds = seedsFor(n, 1);
  const o = { budget: 120, temperature: 1, topP: 0.95 };
  const t = await sample(policy, ps, opts({ seeds, ...o }));
  const r = await sample(policy, ps, opts({ seeds, ...o, engine: 'ort' }));
  let same = 0;
  let maxDiff = 0;
  for (let i = 0; i < n; i++) {
    if (JSON.stringify(t.responses[i]) !== JSON.stringify(r.responses[i])) continue;
    same++;
    t.logp[i].forEach((x, k) => (maxDiff = Math.max(maxDiff, Math.abs(x - r.logp[i][k]))));
  }
  ctx.diagnostic(`${same}/${n} rows identical, max logp diff ${maxDiff.toExponential(2)}`);
  assert.ok(same >= 0.9 * n, `${same}/${n} rows identical`);
  assert.ok(maxDiff < 1e-4, `logp diff ${maxDiff}`);
});

test("scoreResponses: the tfjs sampler's log-probs by the full forward (< 1e-5), 0 at forced tokens, the same bits whatever rows are scored together", async () => {
  const ps = prompts(10, 8);
  const forced = (row: number, soFar: number[]) => (row % 3 === 0 && soFar.length === 4 ? [5, 6] : []);
  const out = await sample(policy, ps, opts({ seeds: seedsFor(10, 2), temperature: 0.7, forced }));
  const all = scoreResponses(policy, ps, out.responses, out.forcedMask, 0.7);
  let maxDiff = 0;
  all.forEach((lp, r) =>
    lp.forEach((x, k) => {
      if (out.forcedMask[r][k]) assert.equal(x, 0);
      maxDiff = Math.max(maxDiff, Math.abs(x - out.logp[r][k]));
    }),
  );
  assert.ok(maxDiff < 1e-5, `max |rescored - sampled| ${maxDiff}`);
  assert.ok(out.forcedMask.some((m) => m.includes(1)));
  const odd = [1, 3, 5, 7, 9];
  const part = scoreResponses(
    policy,
    odd.map((r) => ps[r]),
    odd.map((r) => out.responses[r]),
    odd.map((r) => out.forcedMask[r]),
    0.7,
  );
  assert.deepEqual(
    part,
    odd.map((r) => all[r]),
  );
});

test('engine option: ort has no recompute mode; unknown engines are refused by name', async () => {
  const base = opts({ seeds: seedsFor(1) });
  await assert.rejects(sample(policy, [[1, 3]], { ...base, engine: 'ort', kvCache: false }), /engine ort/);
  await assert.rejects(sample(policy, [[1, 3]], { ...base, engine: 'gpu' as never }), /engine must be/);
});

test('ORT sessions run synchronously through the native binding and give the bits of the public async API', async () => {
  const { nativeSessions, createSession } = await import('../../ml/onnx/runtime');
  const { stepModel, MASKED } = await import('../../ml/onnx/policyGraph');
  const { readParams } = await import('../../ml/policy');
  const ort = await import('onnxruntime-node');
  assert.ok(nativeSessions(), 'onnxruntime-node/dist/binding did not load: every ORT step would pay the async wrapper');
  const model = stepModel(policy.cfg, readParams(policy));
  const { SESSION_OPTIONS } = await import('../../ml/onnx/decoder');
  const sync = await createSession(model, SESSION_OPTIONS);
  const pub = await createSession(model, SESSION_OPTIONS, false);
  const { heads, dModel } = CFG;
  const dh = dModel / heads;
  const [B, C, S] = [3, 16, 64];
  const rng = new Rng(77);
  const bias = new Float32Array(B * S).fill(MASKED);
  for (let b = 0; b < B; b++) bias.fill(0, b * S, b * S + 5 * b);
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {
    tokens: new ort.Tensor('int32', Int32Array.of(3, 4, 5), [B]),
    pos: new ort.Tensor('int32', Int32Array.of(0, 5, 10), [B]),
    bias: new ort.Tensor('float32', bias, [B, 1, 1, S]),
    pads: new ort.Tensor('int64', BigInt64Array.of(0n, 0n, 0n, 0n, 0n, 0n, 0n, BigInt(S - C)), [8]),
    pastEnd: new ort.Tensor('int64', BigInt64Array.of(BigInt(C + 1)), [1]),
  };
  for (let l = 0; l < CFG.layers; l++) {
    feeds[`k${l}`] = new ort.Tensor(
      'float32',
      Float32Array.from({ length: B * heads * C * dh }, () => rng.normal()),
      [B, heads, C, dh],
    );
    feeds[`vt${l}`] = new ort.Tensor(
      'float32',
      Float32Array.from({ length: B * heads * C * dh }, () => rng.normal()),
      [B, heads, dh, C],
    );
  }
  const ran = sync.run(feeds);
  assert.ok(!(ran instanceof Promise), 'the native session returned a promise');
  const a = ran as Awaited<typeof ran>;
  const b = await pub.run(feeds);
  assert.deepEqual(Object.keys(a).sort(), Object.keys(b).sort());
  for (const name of Object.keys(a)) {
    const x = new Uint32Array((a[name].data as Float32Array).slice().buffer);
    const y = new Uint32Array((b[name].data as Float32Array).slice().buffer);
    assert.deepEqual(x, y, `output ${name} differs between the native and the public session`);
  }
  sync.release();
  pub.release();
});

test('ORT cache buffers kept between decoders give the bits of fresh ones', async () => {
  const { releaseCacheBuffers } = await import('../../ml/onnx/decoder');
  const a = prompts(24, 91);
  const b = prompts(10, 92);
  const run = (ps: number[][], salt: number) => sample(policy, ps, opts({ budget: 200, seeds: seedsFor(ps.length, salt), engine: 'ort' }));
  releaseCacheBuffers();
  const fresh = await run(b, 2);
  await run(a, 1); // leaves this thread's buffers holding a's keys and values
  const reused = await run(b, 2);
  assert.deepEqual(reused, fresh);
});

test('a row that needs more positions than the context is refused by every decoder, naming both', async () => {
  const { KVCacheDecoder } = await import('../../ml/sampler');
  const need = [10, CFG.context + 1];
  const refused = new RegExp(`a row needs ${CFG.context + 1} positions, the context is ${CFG.context}`);
  assert.throws(() => new KVCacheDecoder(policy, need), refused);
  assert.throws(() => new OrtDecoder(policy, need), refused);
  // at the context itself both accept
  assert.doesNotThrow(() => new KVCacheDecoder(policy, [CFG.context]));
  assert.doesNotThrow(() => new OrtDecoder(policy, [CFG.context]));
});
