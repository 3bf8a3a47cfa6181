/**
 * Tool-computed arithmetic vs the policy writing every result : the same small
 * policy, the same SFT steps on the same traces, then pass@k at a fixed budget, check
 * agreement, and how often the policy's own arithmetic is right. Prints; never fails.
 *
 *   npx tsx bench/modes.bench.ts [steps=150] [layers=2] [dModel=64]
 */
import { initBackend } from '../ml/backend';
import { exploreResponse, makeCountdown, parseResponse } from '../ml/countdown';
import { VOCAB_SIZE, decode } from '../ml/tokenizer';
import { Trainer } from '../ml/trainer';
import { evalMetrics } from '../ml/evaluation';
import { heldOutProblem } from '../ml/rollouts';

const [steps = 150, layers = 2, dModel = 64] = process.argv.slice(2).map(Number);
const d = { count: 3, min: 1, max: 9, ops: '+-*' };
const model = { vocab: VOCAB_SIZE, layers, dModel, heads: 4, context: 128, seed: 1 };

async function run(tool: boolean) {
  const tr = Trainer.create({ model, optim: { lr: 2e-3 }, toolArithmetic: tool });
  const t0 = performance.now();
  let loss = 0;
  for (let s = 0; s < steps; s++) loss = tr.sftStep(1, s, 32, [d], { meanWrong: 1.5 })['sft/loss'];
  const trainS = (performance.now() - t0) / 1000;
  const counts = await tr.evaluate({
    seed: 1,
    split: 'eval',
    difficulty: d,
    budgets: [64],
    prompts: 48,
    samples: 4,
    temperature: 0.6,
    ks: [1, 4],
    offset: 0,
  });
  const m = evalMetrics([counts], [64], [1, 4]);
  // Verification and arithmetic skill on one sample per problem.
  const task = makeCountdown({ toolArithmetic: tool });
  let agree = 0,
    checks = 0,
    steps_ = 0,
    right = 0;
  const rows = Array.from({ length: 48 }, (_, i) => ({ i, j: 0, p: heldOutProblem(1, 'eval', d, i) }));
  const out = await (
    tr as unknown as {
      sampleRows: (
        r: typeof rows,
        b: number,
        t: number,
        p: number,
        s: (r: { i: number }) => number,
      ) => Promise<Array<{ response: number[] }>>;
    }
  ).sampleRows(rows, 64, 0.6, 1, (r) => r.i + 1);
  out.forEach((r, k) => {
    const text = decode(r.response);
    const a = exploreResponse(rows[k].p, parseResponse(text), text.length, false);
    agree += a.marksTrue;
    checks += a.marks;
    for (const att of parseResponse(text).attempts ?? [])
      for (const st of att.steps) {
        steps_++;
        const v = st.op === '+' ? st.a + st.b : st.op === '-' ? st.a - st.b : st.op === '*' ? st.a * st.b : st.a / st.b;
        if (v === st.c) right++;
      }
  });
  void task;
  tr.dispose();
  return {
    tool,
    trainS,
    loss,
    pass1: m['eval/b64/pass@1'],
    pass4: m['eval/b64/pass@4'],
    checkAgreement: checks ? agree / checks : NaN,
    arithmeticRight: steps_ ? right / steps_ : NaN,
  };
}

(async () => {
  const backend = await initBackend();
  console.log(`backend ${backend}; ${steps} SFT steps x 32 traces, model ${layers}x${dModel}; eval 48 problems x 4 samples at budget 64`);
  const rows = [await run(true), await run(false)];
  console.log('mode            sft_s   loss   pass@1  pass@4  check_agree  arithmetic_right');
  for (const r of rows)
    console.log(
      `${(r.tool ? 'tool-computed' : 'policy-writes').padEnd(15)} ${r.trainS.toFixed(0).padStart(5)}  ${r.loss.toFixed(3)}  ${r.pass1.toFixed(3).padStart(6)}  ${r.pass4.toFixed(3).padStart(6)}  ${r.checkAgreement.toFixed(3).padStart(11)}  ${r.arithmeticRight.toFixed(3).padStart(16)}`,
    );
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
