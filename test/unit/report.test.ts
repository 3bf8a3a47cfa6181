/**
 * The run report from a synthetic run: vega-lite charts rendered headless to SVG, one mark
 * per measured point, training budgets as labelled rules, absent metrics leave no chart,
 * node ids escaped, warnings shown.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../configs/load';
import type { NodeResult } from '../../activities/types';
import { gainMetrics, renderReportHtml, reportCharts } from '../../activities/report';

const config = loadConfig('tiny');
const EVAL_BUDGETS = [24, 48, 96, 192, 384];
const GRID = [48, 96, 192];
const ODD = 'ev<al>&"x"';

function evalMetrics(budgets: number[], ks: number[], explore: boolean): Record<string, number> {
  const m: Record<string, number> = {};
  budgets.forEach((b, i) => {
    for (const k of ks) m[`eval/b${b}/pass@${k}`] = Math.min(1, 0.1 + 0.05 * i + 0.1 * (k - 1));
    m[`eval/b${b}/response_len`] = b * 0.8;
    if (explore) {
      m[`eval/b${b}/attempts`] = 1 + i;
      m[`eval/b${b}/unique_attempts`] = 1 + i * 0.8;
      m[`eval/b${b}/marks_true`] = 0.9;
      m[`eval/b${b}/false_ok`] = 0.05;
      const stops = { correct: 0.2 + 0.05 * i, false_ok: 0.1, gave_up: 0.2, truncated: 0.45 - 0.05 * i, other: 0.05 };
      for (const [why, share] of Object.entries(stops)) m[`eval/b${b}/stop_${why}`] = share;
    }
  });
  return m;
}

const results: Record<string, NodeResult> = {
  warmstart: { kind: 'sft', checkpoint: { step: 12 }, metrics: { 'sft/loss': 1.2 } },
  stage1: { kind: 'rl', checkpoint: { step: 4 }, budget: 48, metrics: { 'train/reward_mean': 0.3 } },
  select: {
    kind: 'select-budget',
    budget: 96,
    warning: 'Eq. 6.1: no B qualified; took 96',
    metrics: { ...evalMetrics(GRID, [1], false), 'select/budget': 96 },
  },
  stage2: { kind: 'rl', checkpoint: { step: 2 }, budget: 96, metrics: {} },
  eval: { kind: 'eval', metrics: evalMetrics(EVAL_BUDGETS, [1, 4], true) },
  [ODD]: { kind: 'eval', metrics: evalMetrics([48, 96], [1], false) },
  report: { kind: 'report' },
};

const metrics: Array<Record<string, number | string>> = [
  ...[6, 12].map((step) => ({ node: 'warmstart', step, 'sft/loss': 2 / step, 'sft/grad_norm': 1 })),
  ...[1, 2, 3, 4].map((step) => ({
    node: 'stage1',
    step,
    'train/reward_mean': 0.1 * step,
    'train/response_len': 30 + step,
    'train/response_len_correct': 25 + step,
    'train/truncated_frac': 0.5 / step,
    'train/attempts': 1 + step / 4,
    'train/entropy': 1.5,
  })),
  ...[1, 2].map((step) => ({
    node: 'stage2',
    step,
    'train/reward_mean': 0.2 * step,
    'train/response_len': 50 + step,
    'train/zero_std_frac': 0.5,
  })),
];

const input = { runId: 'run-1', config, results, metrics, backend: 'cpu' };

/** Well-formed markup: every opened tag is closed in order (SVG has no void elements). */
function assertBalanced(svg: string, name: string) {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z][\w:-]*)[^>]*?(\/?)>/g)) {
    if (m[3]) continue;
    if (m[1]) assert.equal(stack.pop(), m[2], `${name}: </${m[2]}> closes the wrong element`);
    else stack.push(m[2]);
  }
  assert.deepEqual(stack, [], `${name}: unclosed elements`);
}

const count = (s: string, needle: string) => s.split(needle).length - 1;
const escAttr = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

test('report: every chart is a well-formed SVG rendered by vega, inlined in one page', { timeout: 60_000 }, async () => {
  const { html, svgs } = await renderReportHtml(input);
  const names = Object.keys(svgs).sort();
  assert.deepEqual(
    names,
    [
      'explore-attempts',
      'explore-false_ok',
      'explore-marks_true',
      'explore-response_len',
      'explore-unique_attempts',
      'extrapolation',
      'extrapolation-passk',
      'sft-loss',
      'stop-reasons',
      'train-attempts',
      'train-entropy',
      'train-response_len',
      'train-reward_mean',
      'train-truncated_frac',
      'train-zero_std_frac',
    ].sort(),
  );
  for (const [name, svg] of Object.entries(svgs)) {
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]* class="marks" width="(\d+)" height="(\d+)"/, name);
    const [, w, h] = /width="(\d+)" height="(\d+)"/.exec(svg)!;
    assert.ok(Number(w) > 100 && Number(h) > 100, `${name}: ${w}x${h}`);
    assert.ok(svg.endsWith('</svg>'), name);
    assertBalanced(svg, name);
    assert.ok(html.includes(svg), `${name} is inlined in the page`);
  }
  // One self-contained page: no scripts, no fetched resources.
  assert.doesNotMatch(html, /<script|<link|<img|\bsrc=|href="http|url\(http/i);
  const ids = [...html.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(new Set(ids).size, ids.length, 'ids are unique across the inlined SVGs');
  assertBalanced(html.replace(/^<!doctype html>/, '').replace(/<meta [^>]*>/g, ''), 'page');
});

test(
  'report: the extrapolation chart has a point per (node, budget) and the training budgets as labelled rules',
  { timeout: 60_000 },
  async () => {
    const { svgs } = await renderReportHtml(input);
    const svg = svgs.extrapolation;
    assert.ok(svg.includes('>Extrapolation: pass@1 vs test budget</text>'), 'title');
    const points: Array<[string, number]> = [
      ...GRID.map((b) => ['select', b] as [string, number]),
      ...EVAL_BUDGETS.map((b) => ['eval', b] as [string, number]),
      [ODD, 48],
      [ODD, 96],
    ];
    assert.equal(count(svg, 'aria-roledescription="point"'), points.length);
    for (const [node, b] of points) assert.ok(svg.includes(`aria-label="${escAttr(`${node} B=${b} pass@1=`)}`), `point ${node} B=${b}`);
    // Held-out evaluations and Eq. 6.1's J(B) on a stage's own data are told apart in the legend.
    for (const m of ['held-out eval', 'Eq. 6.1 J(B)']) assert.ok(svg.includes(`>${m}</text>`), `legend entry ${m}`);
    for (const label of ['stage1: B=48', 'stage2: B=96']) {
      assert.ok(svg.includes(`>${label}</text>`), `rule label ${label}`);
      assert.ok(svg.includes(`aria-label="${label}"`), `rule ${label}`);
    }
    // pass@k: pass@1 and pass@4 of eval, pass@1 of the others.
    assert.equal(count(svgs['extrapolation-passk'], 'aria-roledescription="point"'), points.length + EVAL_BUDGETS.length);
    // Stop reasons: a bar per (budget, reason) of the one node that has them.
    assert.equal(count(svgs['stop-reasons'], 'aria-roledescription="bar"'), EVAL_BUDGETS.length * 5);
    // Training curves: a point per metrics row of each node that has the key.
    assert.equal(count(svgs['train-reward_mean'], 'aria-roledescription="point"'), 6);
    assert.equal(count(svgs['train-response_len'], 'aria-roledescription="point"'), 4 + 4 + 2);
  },
);

test('report: absent metrics draw no chart and do not crash', { timeout: 60_000 }, async () => {
  const names = reportCharts(input).map((c) => c.name);
  for (const absent of ['train-marks_true', 'train-false_ok', 'train-unique_attempts', 'explore-false_no', 'explore-truncated_frac'])
    assert.ok(!names.includes(absent), absent);
  const { html } = await renderReportHtml(input);
  assert.ok(!html.includes('id="chart-train-marks_true"'));

  const empty = await renderReportHtml({ ...input, results: { report: { kind: 'report' } }, metrics: [] });
  assert.deepEqual(empty.svgs, {});
  assert.match(empty.html, /no eval or select-budget results/);
  assert.match(empty.html, /no training metrics/);

  // Results without pass@1 (only pass@4), rows with non-numeric values, an RL node without budget.
  const odd = await renderReportHtml({
    ...input,
    results: { e: { kind: 'eval', metrics: { 'eval/b64/pass@4': 0.5 } }, r: { kind: 'rl' } },
    metrics: [{ node: 'r', step: 1, 'train/reward_mean': 'n/a' }],
  });
  assert.deepEqual(Object.keys(odd.svgs), ['extrapolation-passk']);
});

test('report: node ids are escaped in the page and in the SVGs; warnings are shown', { timeout: 60_000 }, async () => {
  const { html, svgs } = await renderReportHtml(input);
  assert.ok(!html.includes(ODD), 'raw node id never reaches the page');
  assert.ok(!html.includes('ev<al>'));
  assert.ok(html.includes('<td>ev&lt;al&gt;&amp;&quot;x&quot;</td>'), 'escaped in the table');
  assert.ok(
    svgs.extrapolation.includes('>ev&lt;al&gt;&amp;"x"</text>') || svgs.extrapolation.includes('>ev&lt;al&gt;&amp;&quot;x&quot;</text>'),
    'escaped in the legend',
  );
  assert.match(html, /<section class="warnings" role="alert">.*<b>select<\/b>: Eq\. 6\.1: no B qualified; took 96/s);
  assert.match(html, /<tr class="warned"><td>select<\/td>.*<span class="warning">Eq\. 6\.1: no B qualified; took 96<\/span>/);
});

test('Eq. 6.1 table: every candidate with J(B), J(2B), their ratio against kappa, and the budget taken', async () => {
  const J: Record<number, number> = { 32: 0.16, 64: 0.332, 128: 0.496, 256: 0.598 };
  const m: Record<string, number> = { 'select/kappa': 1.2, 'select/b0': 90.5, 'select/budget': 128, 'select/qualified': 1 };
  for (const [b, j] of Object.entries(J)) m[`eval/b${b}/pass@1`] = j;
  for (const b of [32, 64, 128]) {
    m[`select/b${b}/ratio`] = J[2 * b] / J[b];
    m[`select/b${b}/qualifies`] = J[2 * b] <= 1.2 * J[b] && b >= 90.5 ? 1 : 0;
  }
  m['select/b128/qualifies'] = 1; // as if J(256) had come out lower
  const { html } = await renderReportHtml({
    runId: 'r',
    config,
    results: { s1: { kind: 'select-budget', budget: 128, metrics: m } },
    metrics: [],
    backend: 'wasm',
  });
  const table = /<table class="eq61" aria-label="Eq\. 6\.1 s1">(.*?)<\/table>/s.exec(html)?.[1];
  assert.ok(table, 'the report has an Eq. 6.1 table for s1');
  const rows = [
    ...table.matchAll(
      /<tr( class="chosen")?><td>(\d+)<\/td><td>([^<]*)<\/td><td>([^<]*)<\/td><td>([^<]*)<\/td><td>(yes|no)<\/td><td>([^<]*)<\/td><\/tr>/g,
    ),
  ];
  assert.deepEqual(
    rows.map((r) => Number(r[2])),
    [32, 64, 128],
  );
  assert.equal(rows[0][4], '0.332'); // J(2B) for B = 32 is J(64)
  assert.equal(Number(rows[1][5]).toFixed(2), (0.496 / 0.332).toFixed(2));
  assert.deepEqual(
    rows.map((r) => r[6]),
    ['no', 'no', 'yes'],
  );
  assert.deepEqual(
    rows.map((r) => Boolean(r[1])),
    [false, false, true],
  );
  assert.equal(rows[2][7], 'chosen');
  assert.match(table, /kappa 1\.2, B0 90\.5 tokens/);
  // a select node that found nothing says the budget was taken, not chosen
  const { html: warned } = await renderReportHtml({
    runId: 'r',
    config,
    results: {
      s1: { kind: 'select-budget', budget: 128, warning: 'w', metrics: { ...m, 'select/qualified': 0, 'select/b128/qualifies': 0 } },
    },
    metrics: [],
    backend: 'wasm',
  });
  assert.match(warned, /<td>taken \(no candidate qualifies\)<\/td>/);
});

test('gain over the base: each trained policy against the base evaluated on the same problems, with 2x and 4x against 1x', async () => {
  const demo = loadConfig('demo');
  const budgets = [32, 64, 128, 256, 512];
  const problems = 8;
  const ramp = (lift: (b: number) => number) =>
    new Map(budgets.map((b) => [b, Array.from({ length: problems }, (_, i) => Math.min(1, (i % 4) / 8 + lift(b)))]));
  const rates = { 'eval-base': ramp(() => 0), 'eval-stage1': ramp(() => 0.125), 'eval-stage2': ramp((b) => (b >= 256 ? 0.25 : 0.125)) };
  const res: Record<string, NodeResult> = {
    stage1: { kind: 'rl', budget: 64, metrics: {} },
    stage2: { kind: 'rl', budget: 128, metrics: {} },
    'eval-base': { kind: 'eval', metrics: {} },
    'eval-stage1': { kind: 'eval', metrics: {} },
    'eval-stage2': { kind: 'eval', metrics: {} },
  };
  const { html, gains } = await renderReportHtml({ runId: 'r', config: demo, results: res, metrics: [], backend: 'wasm', rates });
  assert.deepEqual(
    gains.map((g) => [g.node, g.base, g.trainBudget]),
    [
      ['eval-stage1', 'eval-base', 64],
      ['eval-stage2', 'eval-base', 128],
    ],
  );
  const m = gainMetrics(gains);
  assert.equal(m['gain/eval-stage1/b64/mean'], 0.125);
  assert.equal(m['gain/eval-stage2/b512/mean'], 0.25);
  // stage 2 trained at 128: 2x = 256 and 4x = 512 gain 0.125 more than 1x on every problem
  assert.deepEqual(
    [m['gain/eval-stage2/x2_vs_x1/mean'], m['gain/eval-stage2/x2_vs_x1/lo'], m['gain/eval-stage2/x4_vs_x1/hi']],
    [0.125, 0.125, 0.125],
  );
  assert.equal(m['gain/eval-stage1/x4_vs_x1/mean'], 0.125 - 0.125);
  assert.equal(m['gain/eval-base/b64/mean'], undefined, 'the base is not compared with itself');
  assert.match(html, /<table class="gain" aria-label="gain eval-stage2">/);
  assert.match(html, /gain at 2× minus gain at 1×: \+0\.125 \[0\.125, 0\.125\], larger/);
  assert.match(html, /<th>256 \(2×\)<\/th>/);
});
