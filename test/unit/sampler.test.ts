import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { deviceResident, initBackend } from '../../ml/backend';
import type { Policy, PolicyConfig } from '../../ml/policy';
import { disposePolicy, forwardLogits, tokenLogProbs } from '../../ml/policy';
import { Rng, deriveSeed } from '../../ml/rng';
import type { SampleOptions } from '../../ml/sampler';
import { DeviceKVDecoder, KVCacheDecoder, drawToken, sample, sampleNoCache } from '../../ml/sampler';
import { randomPolicy as randomPolicyOf } from './randomPolicy';

const CFG: PolicyConfig = { vocab: 12, layers: 2, dModel: 16, heads: 2, context: 40, seed: 21 };
const EOS = 2;
const PROMPTS = [
  [1, 5, 6, 7],
  [1, 8],
  [1, 9, 10, 11, 3, 4, 5],
  [1, 5, 6, 7],
];
const seedsFor = (n: number, salt = 0) => Array.from({ length: n }, (_, i) => deriveSeed(123, 'test', salt, i));

let policy: Policy;

/** Random O(0.4) weights; head row 0 acts as an eos bias (test/unit/randomPolicy.ts). */
const randomPolicy = (seed: number, eosBias = -4): Policy => randomPolicyOf(CFG, seed, { scale: 0.4, eos: EOS, eosBias });

before(async () => {
  await initBackend();
  policy = randomPolicy(1);
});

const opts = (o: Partial<SampleOptions> & { seeds: number[] }): SampleOptions => ({ budget: 12, temperature: 1, topP: 1, eos: EOS, ...o });

function lastLogitsRef(p: Policy, seq: number[]): Float32Array {
  const t = tf.tensor2d([seq], undefined, 'int32');
  const l = forwardLogits(p, t);
  const v = l.dataSync().slice((seq.length - 1) * CFG.vocab, seq.length * CFG.vocab) as Float32Array;
  tf.dispose([t, l]);
  return v;
}

test('KV-cache logits (prefill, steps, multi-token extends) equal full-recompute logits (max abs diff < 1e-4)', () => {
  const steps = 20;
  const dec = new KVCacheDecoder(
    policy,
    PROMPTS.map((p) => Math.min(CFG.context, p.length + 3 * steps)),
  );
  const seqs = PROMPTS.map((p) => p.slice());
  let logits = dec.prefill(PROMPTS);
  const rng = new Rng(4);
  let maxDiff = 0;
  for (let s = 0; s <= steps; s++) {
    seqs.forEach((seq, r) => {
      const ref = lastLogitsRef(policy, seq);
      for (let k = 0; k < CFG.vocab; k++) maxDiff = Math.max(maxDiff, Math.abs(ref[k] - logits[r][k]));
    });
    if (s === steps) break;
    // Step a changing subset of rows, as the sampler does when rows finish; every 5th step
    // appends chunks of 1-3 tokens per row through extend().
    const rows = [0, 1, 2, 3].filter((r) => r === 0 || rng.next() < 0.7);
    const chunks = rows.map(() => Array.from({ length: s % 5 === 4 ? rng.int(1, 3) : 1 }, () => rng.int(0, CFG.vocab - 1)));
    rows.forEach((r, i) => seqs[r].push(...chunks[i]));
    const out =
      s % 5 === 4
        ? dec.extend(rows, chunks)
        : dec.step(
            rows,
            chunks.map((c) => c[0]),
          );
    rows.forEach((r, i) => (logits[r] = out[i]));
  }
  assert.ok(maxDiff < 1e-4, `max abs diff ${maxDiff}`);
  console.log(`kv cache vs recompute: max abs logit diff ${maxDiff.toExponential(2)}`);
  logits = [];
});

test('cache and no-cache sampling give the same tokens and log-probs for the same seeds', async () => {
  const o = opts({ seeds: seedsFor(PROMPTS.length), topP: 0.9, temperature: 0.8 });
  const a = await sample(policy, PROMPTS, o);
  const b = await sampleNoCache(policy, PROMPTS, o);
  assert.deepEqual(a.responses, b.responses);
  a.logp.forEach((l, r) => l.forEach((v, i) => assert.ok(Math.abs(v - b.logp[r][i]) < 1e-5)));
});

test('same seed -> same tokens, other seed -> other tokens, rows independent of the batch', async () => {
  const seeds = seedsFor(PROMPTS.length);
  const a = await sample(policy, PROMPTS, opts({ seeds }));
  const again = await sample(policy, PROMPTS, opts({ seeds }));
  assert.deepEqual(a.responses, again.responses);
  const other = await sample(policy, PROMPTS, opts({ seeds: seedsFor(PROMPTS.length, 1) }));
  assert.notDeepEqual(a.responses, other.responses);
  // Rows 0 and 3 share a prompt but not a seed: different samples.
  assert.notDeepEqual(a.responses[0], a.responses[3]);
  // Row 2 alone, and row 2 inside a different batch, reproduce row 2 of the first batch.
  const alone = await sample(policy, [PROMPTS[2]], opts({ seeds: [seeds[2]] }));
  const mixed = await sample(policy, [[1, 3], PROMPTS[2], [1, 4, 4, 4, 4, 4]], opts({ seeds: [7, seeds[2], 8] }));
  for (const res of [alone.responses[0], mixed.responses[1]]) assert.deepEqual(res, a.responses[2]);
  alone.logp[0].forEach((v, i) => assert.ok(Math.abs(v - a.logp[2][i]) < 1e-5));
});

test('temperature -> 0 and tiny top-p are greedy (argmax of forwardLogits)', async () => {
  const prompts = PROMPTS.slice(0, 3);
  const greedyRef = prompts.map((p) => {
    const seq = p.slice();
    const out: number[] = [];
    for (let i = 0; i < 8; i++) {
      const l = lastLogitsRef(policy, seq);
      const t = l.indexOf(Math.max(...l));
      out.push(t);
      seq.push(t);
      if (t === EOS) break;
    }
    return out;
  });
  for (const o of [{ temperature: 0 }, { temperature: 1e-4 }, { temperature: 1, topP: 1e-6 }]) {
    const r = await sample(policy, prompts, opts({ seeds: seedsFor(3), budget: 8, ...o }));
    assert.deepEqual(r.responses, greedyRef, JSON.stringify(o));
  }
});

test('returned logp is log softmax(logits / T) of the recomputed logits at the sampled tokens', async () => {
  for (const temperature of [1, 0.6]) {
    const r = await sample(policy, PROMPTS, opts({ seeds: seedsFor(PROMPTS.length, 2), temperature, budget: 10 }));
    PROMPTS.forEach((p, row) => {
      const seq = tf.tensor2d([[...p, ...r.responses[row]]], undefined, 'int32');
      const { logp, entropy } = tokenLogProbs(policy, seq, { temperature });
      const all = logp.dataSync();
      tf.dispose([seq, logp, entropy]);
      r.responses[row].forEach((_, i) => assert.ok(Math.abs(all[p.length - 1 + i] - r.logp[row][i]) < 1e-4, `row ${row} token ${i}`));
    });
  }
});

test('forced tokens are written where the callback says, masked, and count toward the budget', async () => {
  // After every sampled 5 the environment writes "11 3"; at the start it writes 4.
  const calls: Array<[number, number]> = [];
  const forced = (row: number, so: number[]) => {
    calls.push([row, so.length]);
    if (so.length === 0) return [4];
    return so[so.length - 1] === 5 ? [11, 3] : [];
  };
  const budget = 25;
  const r = await sample(policy, PROMPTS, opts({ seeds: seedsFor(PROMPTS.length, 3), budget, forced, temperature: 1.5 }));
  let sawForcedPair = false;
  r.responses.forEach((resp, row) => {
    const mask = r.forcedMask[row];
    assert.equal(mask.length, resp.length);
    assert.equal(resp[0], 4);
    assert.equal(mask[0], 1);
    assert.equal(r.logp[row][0], 0);
    for (let i = 1; i < resp.length; i++) {
      const afterFive = resp[i - 1] === 5 && mask[i - 1] === 0;
      if (afterFive) {
        sawForcedPair = true;
        assert.equal(resp[i], 11);
        assert.equal(mask[i], 1);
        if (i + 1 < resp.length) assert.deepEqual([resp[i + 1], mask[i + 1]], [3, 1]);
      } else if (!(resp[i - 1] === 11 && mask[i - 1] === 1)) {
        assert.equal(mask[i], 0, `row ${row} token ${i} should be sampled`);
      }
    }
    assert.ok(resp.length <= budget);
    assert.equal(r.truncated[row], resp[resp.length - 1] !== EOS);
    if (r.truncated[row]) assert.equal(resp.length, budget);
  });
  assert.ok(sawForcedPair, 'no 5 was sampled: choose another seed');
  assert.ok(calls.every(([row]) => row >= 0 && row < PROMPTS.length));
});

test('eos stops a row (sampled or forced); the budget truncates; forced tokens are cut at the budget', async () => {
  const eager = randomPolicy(1, 30); // eos dominates every distribution
  try {
    const r = await sample(eager, PROMPTS, opts({ seeds: seedsFor(PROMPTS.length) }));
    r.responses.forEach((resp, i) => {
      assert.deepEqual(resp, [EOS]);
      assert.equal(r.truncated[i], false);
    });
  } finally {
    disposePolicy(eager);
  }
  const forcedEos = await sample(policy, PROMPTS, opts({ seeds: seedsFor(4), forced: (_r, so) => (so.length === 3 ? [EOS] : []) }));
  forcedEos.responses.forEach((resp, i) => {
    if (resp.includes(EOS) && resp.indexOf(EOS) < 3) return; // sampled eos first
    assert.equal(resp.length, 4);
    assert.deepEqual([resp[3], forcedEos.forcedMask[i][3], forcedEos.truncated[i]], [EOS, 1, false]);
  });
  const short = await sample(policy, PROMPTS, opts({ seeds: seedsFor(4), budget: 3 }));
  short.responses.forEach((resp, i) => {
    assert.ok(resp.length <= 3);
    assert.equal(short.truncated[i], resp.length === 3 && resp[2] !== EOS);
  });
  const cut = await sample(
    policy,
    PROMPTS,
    opts({ seeds: seedsFor(4), budget: 3, forced: (_r, so) => (so.length === 1 ? [3, 3, 3, 3, 3] : []) }),
  );
  cut.responses.forEach((resp, i) => {
    if (resp[0] === EOS) return;
    assert.deepEqual(resp.slice(1), [3, 3]);
    assert.deepEqual(Array.from(cut.forcedMask[i]), [0, 1, 1]);
    assert.equal(cut.truncated[i], true);
  });
  assert.throws(() => new KVCacheDecoder(policy, [CFG.context + 1]), /context/);
  await assert.rejects(sample(policy, [[1, 2, 3]], opts({ seeds: [1], budget: CFG.context })), /exceeds the context/);
  await assert.rejects(sample(policy, [[1]], opts({ seeds: [1, 2] })), /seeds/);
});

test('drawToken follows softmax(logits / T) and top-p keeps only the nucleus', () => {
  const logits = Float32Array.from([2, 1, 0.5, 0, -1]);
  const rng = new Rng(5);
  const n = 40000;
  for (const [temperature, topP] of [
    [1, 1],
    [0.5, 1],
    [1, 0.7],
  ] as const) {
    const z = Array.from(logits, (l) => Math.exp(l / temperature));
    const total = z.reduce((a, b) => a + b, 0);
    let keep = z.map((_, i) => i);
    if (topP < 1) {
      keep = [];
      let mass = 0;
      for (const i of z.map((_, i) => i).sort((a, b) => z[b] - z[a])) {
        keep.push(i);
        mass += z[i];
        if (mass >= topP * total) break;
      }
    }
    const kept = keep.reduce((a, i) => a + z[i], 0);
    const counts = new Array(logits.length).fill(0);
    for (let i = 0; i < n; i++) {
      const d = drawToken(logits, temperature, topP, rng);
      counts[d.token]++;
      assert.ok(Math.abs(d.logp - Math.log(z[d.token] / total)) < 1e-6);
    }
    counts.forEach((c, i) => {
      const p = keep.includes(i) ? z[i] / kept : 0;
      // 5 standard deviations of a binomial count
      assert.ok(Math.abs(c - n * p) <= 5 * Math.sqrt(n * p * (1 - p)) + 1, `T=${temperature} p=${topP} token ${i}: ${c} vs ${n * p}`);
    });
  }
});

test('sampling yields to the event loop and leaks no tensors across 20 sample + SGD steps', async () => {
  const p = randomPolicy(9);
  let immediateRan = false;
  let sawYield = false;
  setImmediate(() => (immediateRan = true));
  await sample(p, PROMPTS, opts({ seeds: seedsFor(4), budget: 10, yieldEvery: 2, onStep: (s) => (sawYield ||= s >= 3 && immediateRan) }));
  assert.ok(sawYield, 'no setImmediate callback ran during sampling');

  const vars = [...p.params.values()];
  const counts: number[] = [];
  for (let it = 0; it < 20; it++) {
    const r = await sample(p, PROMPTS, opts({ seeds: seedsFor(4, it), budget: 6 }));
    const len = Math.max(...PROMPTS.map((q, i) => q.length + r.responses[i].length));
    const batch = PROMPTS.map((q, i) => [...q, ...r.responses[i]].concat(new Array(len).fill(0)).slice(0, len));
    const toks = tf.tensor2d(batch, undefined, 'int32');
    const { value, grads } = tf.variableGrads(() => tf.neg(tf.mean(tokenLogProbs(p, toks).logp)) as tf.Scalar, vars);
    tf.tidy(() => vars.forEach((v) => v.assign(tf.sub(v, tf.mul(grads[v.name], 1e-3)))));
    tf.dispose([value, toks, ...Object.values(grads)]);
    counts.push(tf.memory().numTensors);
  }
  assert.ok(
    counts.every((c) => c === counts[0]),
    `tensor counts ${counts.join(',')}`,
  );
  disposePolicy(p);
});

test("device-resident KV cache: the host cache's logits (< 1e-4 of full recompute) and the same samples, on every backend that initialises here; no tensors left", async () => {
  const was = tf.getBackend();
  try {
    // Parity holds within tolerances on any backend (the tensorflow one where tfjs-node installed).
    for (const backend of ['wasm', 'cpu', 'tensorflow'].filter((b) => tf.findBackendFactory(b) !== null)) {
      if (!(await tf.setBackend(backend))) continue;
      if (backend !== 'tensorflow')
        assert.equal(deviceResident(), false, `${backend} keeps tensors on the host: the host cache is the default`);
      const p = randomPolicy(1);
      const before = tf.memory().numTensors;
      const dec = new DeviceKVDecoder(
        p,
        PROMPTS.map((q) => q.length + 16),
      );
      const seqs = PROMPTS.map((q) => q.slice());
      let logits = dec.prefill(PROMPTS);
      const rng = new Rng(5);
      let maxDiff = 0;
      for (let s = 0; s <= 15; s++) {
        seqs.forEach((seq, r) => {
          const ref = lastLogitsRef(p, seq);
          for (let k = 0; k < CFG.vocab; k++) maxDiff = Math.max(maxDiff, Math.abs(ref[k] - logits[r][k]));
        });
        if (s === 15) break;
        // A changing subset of rows, as when rows finish.
        const rows = [0, 1, 2, 3].filter((r) => r === 0 || rng.next() < 0.7);
        const toks = rows.map(() => rng.int(0, CFG.vocab - 1));
        rows.forEach((r, i) => seqs[r].push(toks[i]));
        const out = dec.step(rows, toks);
        rows.forEach((r, i) => (logits[r] = out[i]));
      }
      dec.dispose();
      logits = [];
      assert.ok(maxDiff < 1e-4, `${backend}: device cache vs recompute: max abs logit diff ${maxDiff}`);
      const o = opts({ seeds: seedsFor(PROMPTS.length), topP: 0.9, temperature: 0.8, budget: 20 });
      const host = await sample(p, PROMPTS, { ...o, cache: 'host' });
      const device = await sample(p, PROMPTS, { ...o, cache: 'device' });
      assert.deepEqual(device.responses, host.responses, backend);
      device.logp.forEach((l, r) =>
        l.forEach((v, i) => assert.ok(Math.abs(v - host.logp[r][i]) < 1e-5, `${backend}: logp ${v} vs ${host.logp[r][i]}`)),
      );
      assert.equal(tf.memory().numTensors, before, `${backend}: the device cache leaves no tensors`);
      disposePolicy(p);
      console.log(`device kv cache on ${backend}: max abs logit diff vs recompute ${maxDiff.toExponential(2)}`);
    }
  } finally {
    await tf.setBackend(was);
  }
});
