/**
 * grpoLoss (tfjs, float32) against an independent float64 reference written region by region
 * (not with max/min), its value and its gradient w.r.t. logp and entropy. The reference itself
 * is checked by central finite differences. Tolerances: float32 vs float64, 1e-5 relative to
 * the largest magnitude (loss: max(1, |loss|); gradients: max |grad|).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../ml/backend';
import { crossEntropyLoss, DEFAULT_GRPO, grpoConfig, grpoLoss, groupAdvantages, type GrpoConfig } from '../../ml/grpo';
import { Rng } from '../../ml/rng';

before(async () => {
  await initBackend();
});

type M = number[][];
interface RefIn {
  logp: M;
  oldLogp: M;
  refLogp?: M;
  entropy: M;
  adv: number[];
  mask: M;
  marks?: M;
  noMarks?: M;
}
interface RefOut {
  loss: number;
  dlogp: M;
  dent: M;
  clipLow: number;
  clipHigh: number;
  dual: number;
  tokens: number;
}

/** The e3 loss in float64, case by case (docs/RECIPE.md "The RL objective"). */
function refLoss(x: RefIn, c: GrpoConfig): RefOut {
  const B = x.logp.length,
    T = x.logp[0].length;
  const w = x.mask.map((row, b) => row.map((m) => (c.positiveOnly && !(x.adv[b] > 0) ? 0 : m)));
  const N = w.flat().reduce((a, b) => a + b, 0);
  const out: RefOut = { loss: 0, dlogp: [], dent: [], clipLow: 0, clipHigh: 0, dual: 0, tokens: N };
  for (let b = 0; b < B; b++) {
    out.dlogp.push(new Array(T).fill(0));
    out.dent.push(new Array(T).fill(0));
    const A = x.adv[b];
    for (let t = 0; t < T; t++) {
      if (w[b][t] === 0) continue;
      const r = Math.exp(x.logp[b][t] - x.oldLogp[b][t]);
      let pg = 0,
        dpg = 0;
      // pgMarks 'ok': a `no` mark has no policy-gradient term (and no clip statistics).
      const noPg = c.pgMarks === 'ok' && x.noMarks?.[b][t] === 1;
      if (noPg) {
        /* KL and entropy only */
      } else if (A > 0) {
        if (r > 1 + c.epsHigh) {
          pg = -A * (1 + c.epsHigh);
          out.clipHigh++;
        } else {
          pg = -A * r;
          dpg = -A * r;
        }
      } else if (A < 0) {
        const a = -A;
        if (r < 1 - c.epsLow) {
          pg = a * (1 - c.epsLow);
          out.clipLow++;
        } else if (r > c.dualClip) {
          pg = a * c.dualClip;
          out.dual++;
        } else {
          pg = a * r;
          dpg = a * r;
        }
      }
      // KL weight of this token: klMarkCoef on a check mark when it is set, else klCoef.
      const kc = x.marks?.[b][t] && c.klMarkCoef !== undefined ? c.klMarkCoef : c.klCoef;
      let kl = 0,
        dkl = 0;
      if (x.refLogp && kc > 0) {
        const d = x.refLogp[b][t] - x.logp[b][t];
        const dc = Math.max(-20, Math.min(20, d));
        kl = Math.exp(dc) - dc - 1;
        if (kl > c.klClamp) kl = c.klClamp;
        else if (Math.abs(d) <= 20) dkl = 1 - Math.exp(d);
      }
      out.loss += (pg + kc * kl - c.entropyCoef * x.entropy[b][t]) / N;
      out.dlogp[b][t] = (dpg + kc * dkl) / N;
      out.dent[b][t] = -c.entropyCoef / N;
    }
  }
  return out;
}

function runTf(x: RefIn, c: Partial<GrpoConfig>) {
  const t2 = (m: M) => tf.tensor2d(m, undefined, 'float32');
  const oldT = t2(x.oldLogp),
    refT = x.refLogp ? t2(x.refLogp) : undefined,
    advT = tf.tensor1d(x.adv),
    maskT = t2(x.mask);
  const marksT = x.marks ? t2(x.marks) : undefined;
  const noMarksT = x.noMarks ? t2(x.noMarks) : undefined;
  const lpT = t2(x.logp),
    entT = t2(x.entropy);
  let stats: ReturnType<typeof grpoLoss>['stats'] | undefined;
  const { value, grads } = tf.valueAndGrads((lp: tf.Tensor, en: tf.Tensor) => {
    const o = grpoLoss(
      { logp: lp, oldLogp: oldT, refLogp: refT, entropy: en, adv: advT, mask: maskT, marks: marksT, noMarks: noMarksT },
      c,
    );
    stats = o.stats;
    return o.loss;
  })([lpT, entT]);
  const out = { loss: value.dataSync()[0], dlogp: grads[0].arraySync() as M, dent: grads[1].arraySync() as M, stats: stats! };
  tf.dispose([oldT, refT, advT, maskT, marksT, noMarksT, lpT, entT, value, ...grads].filter((t): t is tf.Tensor => t !== undefined));
  return out;
}

function assertClose(got: M, want: M, rel: number, what: string) {
  const scale = Math.max(...want.flat().map(Math.abs), 1e-12);
  got.flat().forEach((g, i) => {
    const w = want.flat()[i];
    assert.ok(Math.abs(g - w) <= rel * scale + 1e-9, `${what}[${i}]: tf ${g} vs ref ${w} (scale ${scale})`);
  });
}

function check(x: RefIn, cfg: Partial<GrpoConfig>) {
  const c = grpoConfig(cfg);
  const ref = refLoss(x, c);
  const got = runTf(x, c);
  assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.max(1, Math.abs(ref.loss)), `loss tf ${got.loss} vs ref ${ref.loss}`);
  assertClose(got.dlogp, ref.dlogp, 1e-5, 'dL/dlogp');
  assertClose(got.dent, ref.dent, 1e-5, 'dL/dentropy');
  const n = Math.max(ref.tokens, 1);
  assert.equal(got.stats.tokens, ref.tokens);
  assert.ok(Math.abs(got.stats.clipLowFrac - ref.clipLow / n) < 1e-6);
  assert.ok(Math.abs(got.stats.clipHighFrac - ref.clipHigh / n) < 1e-6);
  assert.ok(Math.abs(got.stats.clipFrac - (ref.clipLow + ref.clipHigh) / n) < 1e-6);
  assert.ok(Math.abs(got.stats.dualClipFrac - ref.dual / n) < 1e-6);
  return { ref, got };
}

/** Hand-built batch: each row exercises named regions (log-ratios chosen away from the kinks). */
function regionBatch(): RefIn {
  const logRatio = [
    [-0.5, -0.1, 0.1, 0.2, 0.5], // A > 0: unclipped below 1 − epsLow, unclipped, unclipped, unclipped, clipped high (r 1.65)
    [-0.5, -0.1, 0.2, 1.5, 0.9], // A < 0: clipped low (r 0.61), unclipped, unclipped, dual-clip (r 4.48 > 3), not dual (r 2.46)
    [0.3, -0.3, 0.0, 0.7, -1.0], // A = 0: no policy gradient, only KL and entropy
    [0.1, 0.2, -0.2, 0.0, 0.0], // A < 0 with padding (mask 0) at the end
    [0.05, -0.05, 0.3, 2.0, -0.7], // A > 0: r 7.4 clipped high
  ];
  const klGap = [
    [3, 25, -15, -5, 0.3], // k3 clamped (16.1), clamped before and after exp, clamped (14), 4.0 not clamped, small
    [0.5, -0.5, 1, -1, 2],
    [0.1, -2, 0.4, 1.2, -0.3],
    [0.2, 0.1, -0.1, 0.0, 0.0],
    [-3, 2.5, 0.7, -0.2, 0.05],
  ];
  const logp = logRatio.map((row, b) => row.map((_, t) => -0.3 - 0.4 * ((b * 5 + t) % 7)));
  return {
    logp,
    oldLogp: logp.map((row, b) => row.map((lp, t) => lp - logRatio[b][t])),
    refLogp: logp.map((row, b) => row.map((lp, t) => lp + klGap[b][t])),
    entropy: logp.map((row, b) => row.map((_, t) => 0.2 + 0.1 * ((b + 2 * t) % 9))),
    adv: [1.2, -0.8, 0, -1.5, 0.6],
    mask: [
      [1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1],
      [1, 1, 1, 0, 0],
      [1, 1, 1, 1, 1],
    ],
  };
}

test('grpoLoss matches the float64 reference in every region (loss, d/dlogp, d/dentropy, clip stats)', () => {
  const x = regionBatch();
  const { ref, got } = check(x, {});
  // the batch really does visit each region
  assert.equal(ref.clipHigh, 2);
  assert.equal(ref.clipLow, 1);
  assert.equal(ref.dual, 1);
  assert.equal(ref.tokens, 23);
  assert.ok(got.stats.kl > 0 && got.stats.entropy > 0);
  // without KL, clipped (high and low) and dual-capped tokens carry no gradient through logp
  const pgOnly = check(x, { klCoef: 0 }).got.dlogp;
  for (const [b, t] of [
    [0, 4],
    [1, 0],
    [1, 3],
    [4, 3],
  ])
    assert.ok(pgOnly[b][t] === 0, `token ${b},${t}`);
  for (const [b, t] of [
    [0, 0],
    [1, 1],
    [1, 4],
  ])
    assert.notEqual(pgOnly[b][t], 0, `token ${b},${t}`);
});

test('grpoLoss: KL clamp, entropy term and each coefficient switched on alone', () => {
  const x = regionBatch();
  check(x, { entropyCoef: 0, klCoef: 0 }); // pure clipped PG
  check(x, { entropyCoef: 0.5, klCoef: 0 }); // entropy only matters through its own gradient
  const { ref } = check(x, { klCoef: 0.3, entropyCoef: 0 });
  // row 0: tokens 0, 1, 2 have k3 above klClamp (16.1, clamped, 14.0): only the PG term is left
  assert.ok(Math.abs(ref.dlogp[0][0] - (-1.2 * Math.exp(-0.5)) / 23) < 1e-12);
  assert.equal(ref.dlogp[0][1], (-1.2 * Math.exp(x.logp[0][1] - x.oldLogp[0][1])) / 23);
  check(x, { klCoef: 0.3, klClamp: 3 }); // a lower clamp catches more tokens (k3 = 4.0 at row 0 token 3)
  check({ ...x, refLogp: undefined }, { klCoef: 0.3 }); // no reference: no KL term
});

test('grpoLoss: klMarkCoef weighs the KL on mark tokens alone; unset or equal, the loss is unchanged', () => {
  const x = regionBatch();
  // Marks on a few tokens of several rows (where the KL is not clamped, so it has a gradient), a padded one included.
  const marks = [
    [0, 0, 0, 1, 1],
    [0, 0, 1, 0, 0],
    [1, 0, 0, 0, 0],
    [0, 0, 0, 0, 1],
    [0, 0, 0, 1, 0],
  ];
  const withMarks = { ...x, marks };
  check(withMarks, { klCoef: 0.001, klMarkCoef: 0.3 }); // the mark tokens' KL at 0.3, the rest at 0.001
  check(withMarks, { klCoef: 0, klMarkCoef: 0.3, entropyCoef: 0 }); // KL on the marks only
  const onlyMarks = runTf(withMarks, { klCoef: 0, klMarkCoef: 0.3, entropyCoef: 0 });
  const none = runTf(withMarks, { klCoef: 0, entropyCoef: 0 });
  // The gradient differs from the KL-free one exactly at the (unpadded) mark tokens.
  onlyMarks.dlogp.forEach((row, b) =>
    row.forEach((g, t) => {
      const onMark = marks[b][t] === 1 && x.mask[b][t] === 1;
      assert.equal(g !== none.dlogp[b][t], onMark, `row ${b} token ${t}`);
    }),
  );
  // Unset, or equal to klCoef: the same loss, bit for bit, as without marks.
  const plain = runTf(x, { klCoef: 0.3 });
  for (const c of [{ klCoef: 0.3 }, { klCoef: 0.3, klMarkCoef: 0.3 }]) {
    const got = runTf(withMarks, c);
    assert.equal(got.loss, plain.loss);
    assert.deepEqual(got.dlogp, plain.dlogp);
  }
  assert.throws(() => runTf(x, { klCoef: 0.001, klMarkCoef: 0.3 }), /klMarkCoef is set but no marks/);
  assert.throws(() => grpoConfig({ klMarkCoef: -1 }), /klMarkCoef/);
});

test("grpoLoss: pgMarks 'ok' takes the `no` marks out of the policy gradient alone; KL, entropy and token count stay", () => {
  const x = regionBatch();
  // `no` marks on tokens of every region: unclipped (0,1), clipped high (0,4), clipped low (1,0), dual-capped (1,3), A = 0 (2,2), padding (3,4).
  const noMarks = [
    [0, 1, 0, 0, 1],
    [1, 0, 0, 1, 0],
    [0, 0, 1, 0, 0],
    [0, 1, 0, 0, 1],
    [0, 0, 0, 0, 0],
  ];
  const withNo = { ...x, noMarks };
  const { ref } = check(withNo, { pgMarks: 'ok' });
  assert.equal(ref.tokens, 23); // the marks still count as loss tokens (KL, entropy, the token mean)
  assert.equal(ref.clipHigh + ref.clipLow + ref.dual, 1); // only (4,3) is left: its clipped-high token
  check(withNo, { pgMarks: 'ok', klCoef: 0.3 });
  check(withNo, { pgMarks: 'ok', positiveOnly: true });
  // With no KL and no entropy, the marked (unpadded) tokens have no gradient at all, and the others the plain loss's.
  const pgOnly = runTf(withNo, { pgMarks: 'ok', klCoef: 0, entropyCoef: 0 });
  const plain = runTf(x, { klCoef: 0, entropyCoef: 0 });
  pgOnly.dlogp.forEach((row, b) =>
    row.forEach((g, t) => {
      if (noMarks[b][t] === 1) assert.equal(g, 0, `row ${b} token ${t}`);
      else assert.equal(g, plain.dlogp[b][t], `row ${b} token ${t}`);
    }),
  );
  // 'all', or absent: the same bytes as without the tensor.
  for (const c of [{}, { pgMarks: 'all' as const }]) {
    const got = runTf(withNo, c);
    const want = runTf(x, {});
    assert.equal(got.loss, want.loss);
    assert.deepEqual(got.dlogp, want.dlogp);
  }
  assert.throws(() => runTf(x, { pgMarks: 'ok' }), /pgMarks is 'ok' but no noMarks/);
  assert.throws(() => grpoConfig({ pgMarks: 'no' as never }), /pgMarks/);
});

test('grpoLoss: positiveOnly (GRPOMask) drops every response with A <= 0', () => {
  const x = regionBatch();
  const { ref, got } = check(x, { positiveOnly: true });
  assert.equal(ref.tokens, 10); // rows 0 and 4 only
  for (const b of [1, 2, 3]) assert.ok(got.dlogp[b].every((g) => g === 0) && got.dent[b].every((g) => g === 0));
  // no positive response at all: loss 0, no gradient, no NaN
  const none = check({ ...x, adv: [0, -1, 0, -0.5, -0.1] }, { positiveOnly: true });
  assert.equal(none.got.loss, 0);
  assert.equal(none.got.stats.tokens, 0);
});

test('grpoLoss: masked tokens, even NaN or infinite there, contribute nothing', () => {
  const x = regionBatch();
  const clean = runTf(x, {});
  const dirty = structuredClone(x);
  dirty.logp[3][3] = NaN;
  dirty.logp[3][4] = -Infinity;
  dirty.oldLogp[3][4] = 50;
  dirty.entropy[3][3] = Infinity;
  dirty.refLogp![3][4] = NaN;
  const got = runTf(dirty, {});
  assert.equal(got.loss, clean.loss);
  assert.ok(got.dlogp.flat().every((g, i) => g === clean.dlogp.flat()[i]));
  assert.ok(got.dlogp[3][3] === 0 && got.dlogp[3][4] === 0 && got.dent[3][3] === 0 && got.dent[3][4] === 0);
});

test('grpoLoss matches the reference on random batches (3 seeds, all regions mixed)', () => {
  const c = DEFAULT_GRPO;
  const nearKink = (r: number) => [1 - c.epsLow, 1 + c.epsHigh, c.dualClip].some((k) => Math.abs(r - k) < 1e-3);
  for (const seed of [1, 2, 3]) {
    const rng = new Rng(seed);
    const B = 8,
      T = 12;
    const x: RefIn = { logp: [], oldLogp: [], refLogp: [], entropy: [], adv: [], mask: [] };
    const rewards = Array.from({ length: B }, () => (rng.next() < 0.4 ? 1 : 0));
    rewards[0] = 1;
    rewards[1] = 0;
    x.adv = Array.from(groupAdvantages(rewards, 4).adv);
    for (let b = 0; b < B; b++) {
      const len = 6 + rng.int(0, T - 6);
      const row = { lp: [] as number[], old: [] as number[], ref: [] as number[], ent: [] as number[], m: [] as number[] };
      for (let t = 0; t < T; t++) {
        const lp = -0.01 - 4 * rng.next();
        let lr = 0.6 * rng.normal();
        while (nearKink(Math.exp(lr))) lr += 0.01;
        let d = 1.5 * rng.normal();
        while (Math.abs(Math.exp(d) - d - 1 - c.klClamp) < 1e-3) d += 0.01;
        row.lp.push(lp);
        row.old.push(lp - lr);
        row.ref.push(lp + d);
        row.ent.push(3 * rng.next());
        row.m.push(t < len && rng.next() > 0.1 ? 1 : 0);
      }
      x.logp.push(row.lp);
      x.oldLogp.push(row.old);
      x.refLogp!.push(row.ref);
      x.entropy.push(row.ent);
      x.mask.push(row.m);
    }
    check(x, { klCoef: 0.05, entropyCoef: 0.01 });
    check(x, {});
  }
});

test('the float64 reference gradient agrees with central finite differences', () => {
  const x = regionBatch();
  const c = grpoConfig({ klCoef: 0.3, entropyCoef: 0.2 });
  const ref = refLoss(x, c);
  const h = 1e-6;
  for (let b = 0; b < x.logp.length; b++) {
    for (let t = 0; t < x.logp[0].length; t++) {
      for (const field of ['logp', 'entropy'] as const) {
        const plus = structuredClone(x),
          minus = structuredClone(x);
        plus[field][b][t] += h;
        minus[field][b][t] -= h;
        const fd = (refLoss(plus, c).loss - refLoss(minus, c).loss) / (2 * h);
        const an = field === 'logp' ? ref.dlogp[b][t] : ref.dent[b][t];
        assert.ok(Math.abs(fd - an) <= 1e-6 * Math.max(1, Math.abs(an)) + 1e-8, `${field}[${b}][${t}]: fd ${fd} vs analytic ${an}`);
      }
    }
  }
});

test('grpoLoss rejects bad shapes and bad config; frees its temporaries', () => {
  const a = tf.zeros([2, 3]),
    b = tf.zeros([2, 4]),
    adv = tf.zeros([2]),
    adv3 = tf.zeros([3]);
  assert.throws(() => grpoLoss({ logp: a, oldLogp: b, entropy: a, adv, mask: a }), /oldLogp has shape \[2,4\]/);
  assert.throws(() => grpoLoss({ logp: a, oldLogp: a, entropy: a, adv: adv3, mask: a }), /adv must be \[2\]/);
  assert.throws(() => grpoConfig({ epsLow: 'x' } as unknown as Partial<GrpoConfig>), /epsLow/);
  assert.throws(() => grpoConfig({ epsHi: 0.3 } as unknown as Partial<GrpoConfig>), /epsHi/);
  assert.deepEqual(grpoConfig(), {
    epsLow: 0.2,
    epsHigh: 0.35,
    dualClip: 3,
    klCoef: 0.001,
    klClamp: 10,
    entropyCoef: 0.001,
    positiveOnly: false,
    maskMarks: false,
  });
  const before = tf.memory().numTensors;
  const { loss } = grpoLoss({ logp: a, oldLogp: a, refLogp: a, entropy: a, adv, mask: tf.onesLike(a) });
  assert.equal(tf.memory().numTensors, before + 2); // the loss and the ones mask we made
  tf.dispose([a, b, adv, adv3, loss]);
});

test('groupAdvantages: hand cases, sample std, zero-variance groups counted and exactly 0', () => {
  const { adv, zeroStdGroups } = groupAdvantages([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], 4);
  // group 1: mean 0.25, sample std sqrt(0.75/3) = 0.5
  const g1 = [0.75, -0.25, -0.25, -0.25].map((d) => d / (0.5 + 1e-6));
  // group 2: mean 0.5, sample std sqrt(1/3)
  const s2 = Math.sqrt(1 / 3);
  const g2 = [0.5, 0.5, -0.5, -0.5].map((d) => d / (s2 + 1e-6));
  const want = [...g1, ...g2, 0, 0, 0, 0, 0, 0, 0, 0];
  want.forEach((w, i) => assert.ok(Math.abs(adv[i] - w) < 1e-6, `adv[${i}] ${adv[i]} vs ${w}`));
  assert.equal(zeroStdGroups, 2);
  assert.ok(Math.abs(adv[0] - 1.5) < 1e-5);
  // non-binary rewards whose mean is inexact in binary floating point still give exactly 0
  assert.deepEqual(Array.from(groupAdvantages([0.1, 0.1, 0.1], 3).adv), [0, 0, 0]);
  assert.throws(() => groupAdvantages([1, 0, 1], 2), /not a multiple/);
  assert.throws(() => groupAdvantages([1, 0], 1), /groupSize/);
  assert.throws(() => groupAdvantages([1, NaN], 2), /non-finite/);
});

test('crossEntropyLoss is minus the token-mean of logp over the mask', () => {
  const logp = tf.tensor2d([
    [-1, -2, -3],
    [-0.5, NaN, -4],
  ]);
  const mask = tf.tensor2d([
    [1, 1, 0],
    [1, 0, 0],
  ]);
  const l = crossEntropyLoss(logp, mask);
  assert.ok(Math.abs(l.dataSync()[0] - (1 + 2 + 0.5) / 3) < 1e-6);
  tf.dispose([logp, mask, l]);
});
