/**
 * The p^k toy (paper section 5) as a unit test of the RL machinery (groupAdvantages, grpoLoss,
 * AdamW): with negative gradients kept the mean length rises and a* is found; with
 * positiveOnly (GRPOMask) the length does not rise and success lags.
 * Measured with seed 0 and the defaults (80 steps, 8 groups x 8, lr 0.05), identical on the
 * wasm and cpu backends, 10-step windows:
 *   GRPO:     length 14.9 -> max 24.7 (last 23.6); success 0.147 -> 0.950
 *   GRPOMask: length 14.4 -> max 14.5 (last 10.9); success 0.130 -> 0.828
 * Over seeds 0-4 (5-step windows) GRPO peaked at 20-25 tokens and PO at 14-16, and GRPO's
 * last success was 0.96-0.98 vs 0.77-0.87 (bench/pktoy.bench.ts, docs/results/pktoy.md:
 * peak 23.4 +- 1.8 vs 15.4 +- 0.3, success 0.971 vs 0.816). Thresholds below leave a margin
 * on these. The paper's peak of ~45 is not reached at these settings (see the results page).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../ml/backend';
import {
  runPkToy,
  runPkToyPaper,
  paperInitialLogits,
  samplePaperEpisode,
  addPaperGradient,
  PAPER_PKTOY,
  PKTOY_PRESETS,
} from '../../ml/pktoy';
import { Rng } from '../../ml/rng';

before(async () => {
  await initBackend();
});

function windows(h: Array<Record<string, number>>, key: string, w = 10): number[] {
  const out: number[] = [];
  for (let i = 0; i + w <= h.length; i++) out.push(h.slice(i, i + w).reduce((s, x) => s + x[key], 0) / w);
  return out;
}

test('p^k toy: GRPO lengthens responses and finds a*; GRPOMask does neither as well', () => {
  const grpo = runPkToy({ seed: 0 }).history;
  const mask = runPkToy({ seed: 0, grpo: { positiveOnly: true } }).history;
  assert.equal(grpo.length, 80);

  const gLen = windows(grpo, 'train/response_len'),
    mLen = windows(mask, 'train/response_len');
  const gS = windows(grpo, 'train/reward_mean'),
    mS = windows(mask, 'train/reward_mean');
  const [g0, m0] = [gLen[0], mLen[0]];
  // the initial stop logit gives mean length ~15
  assert.ok(g0 > 12 && g0 < 18 && m0 > 12 && m0 < 18, `initial lengths ${g0}, ${m0}`);
  // GRPO: length rises (measured 14.9 -> 24.7) and success goes near 1 (measured 0.95)
  const gMax = Math.max(...gLen),
    mMax = Math.max(...mLen);
  assert.ok(gMax >= 1.3 * g0 && gMax >= 20, `GRPO max length ${gMax} (start ${g0})`);
  assert.ok(gS[gS.length - 1] >= 0.9, `GRPO final success ${gS[gS.length - 1]}`);
  // GRPOMask: no length growth (measured max 14.5, last 10.9), success lags (0.83)
  assert.ok(mMax <= 1.15 * m0 && mMax <= 17, `GRPOMask max length ${mMax} (start ${m0})`);
  assert.ok(mLen[mLen.length - 1] < m0, `GRPOMask final length ${mLen[mLen.length - 1]} vs start ${m0}`);
  assert.ok(gMax - mMax >= 6, `length gap ${gMax - mMax}`);
  assert.ok(gS[gS.length - 1] - mS[mS.length - 1] >= 0.05, `success gap ${gS[gS.length - 1]} vs ${mS[mS.length - 1]}`);
  // the budget bites a little only for GRPO's longer responses, never for most of them
  assert.ok(Math.max(...grpo.map((h) => h['train/truncated_frac'])) < 0.1);
});

test('p^k toy is deterministic for a seed and differs across seeds', () => {
  const n0 = tf.memory().numTensors;
  const a = runPkToy({ seed: 7, steps: 3 });
  assert.equal(tf.memory().numTensors, n0); // no tensor leaks
  const b = runPkToy({ seed: 7, steps: 3 });
  const c = runPkToy({ seed: 8, steps: 3 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.history, c.history);
  assert.throws(() => runPkToy({ stepz: 3 } as never), /unknown config key "stepz"/);
});

test('p^k toy options: skewed start keeps the initial length, a* by rank, temperature', () => {
  // Zipf(1) start: P(stop) stays 1/initLen; rank 0 is the likeliest action, rank 99 the rarest,
  // and their first-token probabilities are in the ratio 100 : 1.
  const likely = runPkToy({ seed: 3, steps: 1, initSkew: 1, aStar: { rank: 0 } });
  const rare = runPkToy({ seed: 3, steps: 1, initSkew: 1, aStar: { rank: 99 } });
  const [hl, hr] = [likely.history[0], rare.history[0]];
  assert.ok(Math.abs(hl['pktoy/p_stop'] - 1 / 15) < 1e-6 && Math.abs(hr['pktoy/p_stop'] - 1 / 15) < 1e-6);
  assert.notEqual(likely.aStar, rare.aStar);
  assert.ok(Math.abs(hl['pktoy/p_star'] / hr['pktoy/p_star'] - 100) < 1e-3, `ratio ${hl['pktoy/p_star'] / hr['pktoy/p_star']}`);
  // same episodes (the reward differs only through a*): a likely a* is found far more often
  assert.equal(hl['train/response_len'], hr['train/response_len']);
  assert.ok(hl['train/reward_mean'] > hr['train/reward_mean'] + 0.3, `${hl['train/reward_mean']} vs ${hr['train/reward_mean']}`);
  // distinct actions per episode never exceed the actions written
  assert.ok(hl['pktoy/distinct'] > 1 && hl['pktoy/distinct'] < hl['train/response_len']);
  // a temperature rescales the table, not the starting distribution; the runs then diverge only through learning
  const t1 = runPkToy({ seed: 3, steps: 2 }),
    t2 = runPkToy({ seed: 3, steps: 2, temperature: 2 });
  assert.ok(Math.abs(t1.history[0]['pktoy/p_stop'] - t2.history[0]['pktoy/p_stop']) < 1e-6);
  assert.ok(Math.abs(t1.history[0]['train/response_len'] - t2.history[0]['train/response_len']) < 1e-9);
  assert.notDeepEqual(t1.history[1], t2.history[1]);
  assert.throws(() => runPkToy({ steps: 1, aStar: { rank: 100 } }), /aStar.rank/);
  assert.throws(() => runPkToy({ steps: 1, temperature: 0 }), /temperature/);
});

// ---- the paper preset (appendix C.3) ----

const K = 100,
  N = K + 1;

test('paper preset: init rows are U[-3, 3] with M(stop) = 4 and M(a*) = -4', () => {
  assert.equal(PKTOY_PRESETS.paper, PAPER_PKTOY);
  const aStar = 17;
  const M = paperInitialLogits(PAPER_PKTOY, aStar, new Rng(5));
  assert.equal(M.length, K * N); // rows = states 𝒜 (stop is never a state), columns = 𝒜 ∪ {stop}
  let lo = Infinity,
    hi = -Infinity,
    sum = 0;
  for (let s = 0; s < K; s++) {
    assert.equal(M[s * N + K], 4);
    assert.equal(M[s * N + aStar], -4);
    for (let j = 0; j < K; j++) {
      if (j === aStar) continue;
      const x = M[s * N + j];
      assert.ok(x >= -3 && x < 3, `M(${j}|${s}) = ${x}`);
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
      sum += x;
    }
  }
  // 9,900 uniform draws: they fill the range and average ~0 (sd of the mean 0.017)
  assert.ok(lo < -2.99 && hi > 2.99 && Math.abs(sum / (K * (K - 1))) < 0.1, `${lo} ${hi} ${sum}`);
  const M03 = paperInitialLogits({ ...PAPER_PKTOY, initLo: 0 }, aStar, new Rng(5));
  for (let s = 0; s < K; s++) for (let j = 0; j < K; j++) if (j !== aStar) assert.ok(M03[s * N + j] >= 0 && M03[s * N + j] < 3);
});

test('paper preset MDP: pi0 never gives a*; reward 1 exactly when a* is written, and the episode ends there', () => {
  const aStar = 42;
  const rng = new Rng(9);
  // a policy that writes a* with probability ~1/2 at every step (M(a*|s) = ln 99 + small, the rest 0, stop -inf-ish)
  const M = new Float64Array(K * N);
  for (let s = 0; s < K; s++) {
    M[s * N + aStar] = Math.log(K - 1);
    M[s * N + K] = -50;
  }
  let successes = 0;
  for (let i = 0; i < 2000; i++) {
    const e = samplePaperEpisode(M, K, 100, aStar, rng);
    assert.notEqual(e.tokens[0], aStar, 'pi0 gave a*');
    assert.notEqual(e.tokens[0], K, 'pi0 gave stop');
    const at = e.tokens.indexOf(aStar);
    if (e.reward === 1) {
      successes++;
      assert.equal(at, e.tokens.length - 1, 'episode did not end at a*');
    } else assert.equal(at, -1);
    assert.ok(!e.tokens.slice(0, -1).includes(K), 'stop inside an episode');
  }
  assert.ok(successes > 1900, `${successes}`);
  // reward 0 at stop, and after B_tr actions without a* or stop
  const stopAlways = new Float64Array(K * N);
  for (let s = 0; s < K; s++) stopAlways[s * N + K] = 50;
  const st = samplePaperEpisode(stopAlways, K, 100, aStar, rng);
  assert.deepEqual([st.tokens.length, st.tokens[1], st.reward], [2, K, 0]);
  const never = new Float64Array(K * N);
  for (let s = 0; s < K; s++) {
    never[s * N + K] = -50;
    never[s * N + aStar] = -50;
  }
  const tr = samplePaperEpisode(never, K, 100, aStar, rng);
  assert.deepEqual([tr.tokens.length, tr.reward], [100, 0]);
  // pi0 over many draws: uniform over the 99 other actions
  const counts = new Array<number>(K).fill(0);
  for (let i = 0; i < 19800; i++) counts[samplePaperEpisode(stopAlways, K, 100, aStar, rng).tokens[0]]++;
  assert.equal(counts[aStar], 0);
  assert.ok(
    Math.min(...counts.filter((_, j) => j !== aStar)) > 120 && Math.max(...counts) < 290,
    `${Math.min(...counts)} ${Math.max(...counts)}`,
  );
});

test('paper preset: the hand-written gradient of the token-mean loss matches central differences (float64)', () => {
  const rng = new Rng(3);
  const M = paperInitialLogits(PAPER_PKTOY, 7, rng);
  const tokens = [3, 5, 3, 99, 5, 0, K]; // repeated states and a final stop
  const adv = -0.5;
  // reference: L(M) = -(1/|τ|) Σ_{i≥2} A log softmax(M(·|a_{i-1}))[a_i], written out independently
  const loss = (m: Float64Array) => {
    let l = 0;
    for (let i = 1; i < tokens.length; i++) {
      const s = tokens[i - 1];
      const row = Array.from(m.subarray(s * N, (s + 1) * N));
      const mx = Math.max(...row);
      const lse = mx + Math.log(row.reduce((a, x) => a + Math.exp(x - mx), 0));
      l -= adv * (row[tokens[i]] - lse);
    }
    return l / (tokens.length - 1);
  };
  const g = new Float64Array(M.length);
  addPaperGradient(M, K, tokens, adv, 1, g);
  const h = 1e-5;
  let maxErr = 0,
    checked = 0;
  for (const s of [3, 5, 99, 0, 1]) {
    for (let j = 0; j < N; j++) {
      const k = s * N + j;
      const x = M[k];
      M[k] = x + h;
      const up = loss(M);
      M[k] = x - h;
      const dn = loss(M);
      M[k] = x;
      maxErr = Math.max(maxErr, Math.abs((up - dn) / (2 * h) - g[k]));
      checked++;
    }
  }
  // central differences at h = 1e-5 on O(1) losses: error ~1e-10; the tolerance is 1e-8 absolute
  assert.ok(maxErr < 1e-8, `max |fd - analytic| = ${maxErr} over ${checked} entries`);
  assert.ok(g.some((x) => x !== 0));
  for (let k = N; k < 2 * N; k++) assert.equal(g[k], 0); // state 1 was never visited
});

test('paper preset: GRPOMask makes no update on failures; plain SGD and Adam differ; determinism', () => {
  // from the literal init a* is almost never found in 200 updates, so every trajectory fails
  const masked = runPkToyPaper({ seed: 1, updates: 200, mask: true, optimizer: 'adam' });
  assert.equal(
    masked.reward.reduce((a, b) => a + b, 0),
    0,
  );
  assert.equal(masked.steps, 0);
  assert.deepEqual([masked.pStop[0], masked.pStar[0]], [masked.pStop.at(-1), masked.pStar.at(-1)]);
  // same init and draws unmasked: every failure is a step (A = -0.5) and P(stop) falls
  const grpo = runPkToyPaper({ seed: 1, updates: 200, optimizer: 'adam' });
  assert.equal(grpo.steps, 200);
  assert.equal(grpo.pStop[0], masked.pStop[0]);
  assert.ok(grpo.pStop.at(-1)! < 0.9 * grpo.pStop[0], `${grpo.pStop[0]} -> ${grpo.pStop.at(-1)}`);
  // plain SGD at lr 1e-2 (C.3 as written) on the same draws moves P(stop) by well under 1% in 200 updates
  const sgd = runPkToyPaper({ seed: 1, updates: 200 });
  assert.equal(sgd.steps, 200);
  assert.ok(sgd.pStop.at(-1)! < sgd.pStop[0] && sgd.pStop.at(-1)! > 0.99 * sgd.pStop[0], `${sgd.pStop[0]} -> ${sgd.pStop.at(-1)}`);
  // the literal init: P(stop) ~ e^4 / (e^4 + 99 E[e^U]) = 0.14, entropy ~3.7 nats
  assert.ok(
    Math.abs(grpo.pStop[0] - 0.142) < 0.01 && Math.abs(grpo.stateEntropy[0] - 3.67) < 0.05,
    `${grpo.pStop[0]} ${grpo.stateEntropy[0]}`,
  );
  assert.equal(grpo.evalAt.length, 5); // 0, 50, 100, 150, 200
  // determinism: same seed, same curves; another seed differs
  const again = runPkToyPaper({ seed: 1, updates: 200, optimizer: 'adam' });
  assert.deepEqual(again, grpo);
  assert.notDeepEqual(runPkToyPaper({ seed: 2, updates: 200, optimizer: 'adam' }).length, grpo.length);
  // group advantages: an all-failure group is no step either
  assert.equal(runPkToyPaper({ seed: 1, updates: 50, advantage: 'group' }).steps, 0);
  assert.throws(() => runPkToyPaper({ updatez: 3 } as never), /unknown config key "updatez"/);
  assert.throws(() => runPkToyPaper({ optimizer: 'rmsprop' as never }), /optimizer/);
  assert.throws(() => runPkToyPaper({ initLo: 3, initHi: -3 }), /initHi/);
});
