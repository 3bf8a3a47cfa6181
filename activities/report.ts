/**
 * The run report: one self-contained HTML page (inline SVG, no scripts, no external URLs)
 * with the extrapolation curve, exploration diagnostics vs budget, training curves per node
 * the gain over the base with paired bootstrap intervals, Eq. 6.1's candidates, and the node
 * results table. Charts are vega-lite specs compiled to vega and rendered
 * headless to SVG by `View.toSVG()` (no browser, no canvas: text widths are estimated).
 *
 * vega and vega-lite are ESM-only (vega-canvas even awaits at top level, so `require` of
 * an ES module cannot load them): they are loaded once by a dynamic `import()`, which tsx
 * keeps native in this CommonJS project. Activities only: workflows never import this file.
 */
import type { TopLevelSpec } from 'vega-lite';
import { policySource } from '../configs/schema';
import type { EvalNode, RunConfig } from '../configs/schema';
import { STOP_REASONS } from '../ml/metrics';
import { gainOverBase, type GainReport, type Interval } from '../ml/bootstrap';
import { deriveSeed } from '../ml/rng';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { keys } from '../storage/layout';
import type { Env } from './env';
import type { NodeInput, NodeResult } from './types';
import type { EvalCounts } from '../ml/evaluation';
import { EVAL_CHUNK } from './evaluate';

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const fmt = (x: number) => (Math.abs(x) >= 100 || Number.isInteger(x) ? String(Math.round(x * 100) / 100) : x.toFixed(3));

type Row = Record<string, number | string>;

export interface ReportInput {
  runId: string;
  config: RunConfig;
  results: Record<string, NodeResult>;
  /** Rows of runs/<run>/metrics/<node>/<step>.json: `{ node, step, ...metrics }`. */
  metrics: Row[];
  backend: string;
  /** Why the backend was chosen (ml/backend.ts). */
  backendReason?: string;
  /** Per eval node, per budget: each problem's pass rate c / n in problem order (from its stored chunks). */
  rates?: Record<string, Map<number, number[]>>;
}

/** One chart of the report: `name` is also its file name (report/<name>.svg). */
export interface ChartSpec {
  name: string;
  section: 'extrapolation' | 'exploration' | 'training';
  title: string;
  /** What the chart shows, and where the paper shows it. */
  caption: string;
  spec: TopLevelSpec;
}

type Engines = { vega: typeof import('vega'); vl: typeof import('vega-lite') };
let engines: Promise<Engines> | undefined;
const loadEngines = (): Promise<Engines> =>
  (engines ??= Promise.all([import('vega'), import('vega-lite')]).then(
    ([vega, vl]) => ({ vega, vl }),
    (e: unknown) => {
      engines = undefined; // a failed load is retried by the next report, not cached
      throw e;
    },
  ));

/** vega-lite → vega → SVG string, headless. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const { vega, vl } = await loadEngines();
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const WIDTH = 360,
  HEIGHT = 200;
const base = { width: WIDTH, height: HEIGHT, config: { font: 'system-ui, sans-serif', title: { anchor: 'start' as const } } };

/** `eval/b<B>/<name>` of a result's metrics as `{ budget, name, value }`. */
function evalEntries(r: NodeResult): Array<{ budget: number; name: string; value: number }> {
  const out = [];
  for (const [k, v] of Object.entries(r.metrics ?? {})) {
    const m = /^eval\/b(\d+)\/(.+)$/.exec(k);
    if (m && Number.isFinite(v)) out.push({ budget: Number(m[1]), name: m[2], value: v });
  }
  return out.sort((a, b) => a.budget - b.budget);
}

const isEval = (r: NodeResult) => r.kind === 'eval' || r.kind === 'select-budget';

const rlBudgets = (results: Record<string, NodeResult>) =>
  Object.entries(results).flatMap(([node, r]) => (r.kind === 'rl' && typeof r.budget === 'number' ? [{ node, budget: r.budget }] : []));

/**
 * Training budgets of the RL nodes as vertical rules with a label (`stage1: B=48`), each
 * label on its own line so equal budgets (stage 2 often keeps stage 1's) stay readable;
 * labels in the right half of the (log2) x range sit left of their rule.
 */
function budgetRules(results: Record<string, NodeResult>, xs: readonly number[]) {
  const rules = rlBudgets(results).map(({ node, budget }, i) => ({ budget, label: `${node}: B=${budget}`, ypx: 4 + 13 * i }));
  if (rules.length === 0) return [];
  const l2 = [...xs, ...rules.map((r) => r.budget)].map(Math.log2);
  const mid = (Math.min(...l2) + Math.max(...l2)) / 2;
  const x = { field: 'budget', type: 'quantitative' as const };
  const label = (values: typeof rules, align: 'left' | 'right') => ({
    data: { values },
    mark: { type: 'text' as const, align, baseline: 'top' as const, dx: align === 'left' ? 3 : -3, fontSize: 10, color: '#444' },
    encoding: { x, y: { field: 'ypx', type: 'quantitative' as const, scale: null }, text: { field: 'label' } },
  });
  const right = rules.filter((r) => Math.log2(r.budget) > mid),
    left = rules.filter((r) => !right.includes(r));
  return [
    {
      data: { values: rules },
      mark: { type: 'rule' as const, color: '#666', strokeDash: [4, 3] },
      encoding: { x, description: { field: 'label' } },
    },
    ...(left.length ? [label(left, 'left')] : []),
    ...(right.length ? [label(right, 'right')] : []),
  ];
}

/** A y scale from zero; all-equal values (a run where nothing was solved) get a unit range rather than a point. */
function yScale(values: ReadonlyArray<{ value: number }>) {
  const v = values.map((p) => p.value);
  const lo = Math.min(0, ...v),
    hi = Math.max(0, ...v);
  return hi > lo ? { zero: true } : { domain: [lo, lo + 1] };
}

const EVAL_MEASURE = 'held-out eval';
const SELECT_MEASURE = 'Eq. 6.1 J(B)';

/** pass@1 vs budget and (when measured) pass@k vs budget, one line per eval/select node. */
function extrapolationCharts(results: Record<string, NodeResult>): ChartSpec[] {
  const pass: Array<{ node: string; measure: string; budget: number; k: number; value: number; desc: string }> = [];
  for (const [node, r] of Object.entries(results)) {
    if (!isEval(r)) continue;
    // A select node's J(B) is measured on its own stage's data (Eq. 6.1), not the held-out set.
    const measure = r.kind === 'select-budget' ? SELECT_MEASURE : EVAL_MEASURE;
    for (const e of evalEntries(r)) {
      const m = /^pass@(\d+)$/.exec(e.name);
      if (m)
        pass.push({
          node,
          measure,
          budget: e.budget,
          k: Number(m[1]),
          value: e.value,
          desc: `${node} B=${e.budget} pass@${m[1]}=${fmt(e.value)}`,
        });
    }
  }
  const budgets = [...new Set([...pass.map((p) => p.budget), ...rlBudgets(results).map((r) => r.budget)])].sort((a, b) => a - b);
  const rules = budgetRules(results, budgets);
  const x = {
    field: 'budget',
    type: 'quantitative' as const,
    title: 'test budget (tokens, log2)',
    scale: { type: 'log' as const, base: 2 },
    axis: { values: budgets, format: 'd' },
  };
  const out: ChartSpec[] = [];
  const p1 = pass.filter((p) => p.k === 1);
  if (p1.length) {
    const title = 'Extrapolation: pass@1 vs test budget';
    out.push({
      name: 'extrapolation',
      section: 'extrapolation',
      title,
      caption:
        "pass@1 with responses cut at each test budget, one line per eval / select-budget node: solid lines are held-out evaluations, dashed ones the J(B) a select-budget node measured on its own stage's problems for Eq. 6.1 (other data, not comparable to the evaluations). Dashed rules mark each RL node's training budget. Extrapolation (paper §6) is pass@1 still rising to the right of the training budget.",
      spec: {
        ...base,
        title,
        layer: [
          {
            data: { values: p1 },
            mark: { type: 'line', point: { size: 40 } },
            encoding: {
              x,
              y: { field: 'value', type: 'quantitative', title: 'pass@1', scale: yScale(p1) },
              color: { field: 'node', type: 'nominal', title: 'node' },
              strokeDash: {
                field: 'measure',
                type: 'nominal',
                title: 'measured',
                scale: {
                  domain: [EVAL_MEASURE, SELECT_MEASURE],
                  range: [
                    [1, 0],
                    [5, 3],
                  ],
                },
              },
              description: { field: 'desc' },
            },
          },
          ...rules,
        ],
      },
    });
  }
  if (pass.some((p) => p.k !== 1)) {
    const title = 'pass@k vs test budget';
    out.push({
      name: 'extrapolation-passk',
      section: 'extrapolation',
      title,
      caption:
        'pass@k at each test budget (dash and marker per k, colour per node): exploration that only sharpened pass@1 would leave pass@k flat; the paper reports e3 lifting both.',
      spec: {
        ...base,
        title,
        layer: [
          {
            data: { values: pass.map((p) => ({ ...p, series: `${p.node} pass@${p.k}`, kLabel: `pass@${p.k}` })) },
            mark: { type: 'line', point: { size: 30 } },
            encoding: {
              x,
              y: { field: 'value', type: 'quantitative', title: 'pass@k', scale: yScale(pass) },
              color: { field: 'node', type: 'nominal', title: 'node' },
              strokeDash: { field: 'kLabel', type: 'nominal', title: 'k' },
              shape: { field: 'kLabel', type: 'nominal', title: 'k' },
              detail: { field: 'series' },
              description: { field: 'desc' },
            },
          },
          ...rules,
        ],
      },
    });
  }
  return out;
}

/** Exploration diagnostics measured at each eval budget (paper §4: generate → verify → retry chains). */
const EXPLORE: ReadonlyArray<[key: string, title: string, y: string]> = [
  ['attempts', 'attempts per response', 'attempts'],
  ['unique_attempts', 'distinct attempts per response', 'attempts'],
  ['marks_true', 'verification marks that match the truth', 'share of marks'],
  ['false_ok', 'wrong attempts marked ok (false ok)', 'share of wrong attempts'],
  ['false_no', 'right attempts marked no (false no)', 'share of right attempts'],
  ['response_len', 'response length', 'tokens'],
  ['truncated_frac', 'truncated at the budget', 'fraction'],
];

function explorationCharts(results: Record<string, NodeResult>): ChartSpec[] {
  const evals = Object.entries(results)
    .filter(([, r]) => isEval(r))
    .map(([node, r]) => ({ node, entries: evalEntries(r) }));
  const out: ChartSpec[] = [];
  for (const [key, title, y] of EXPLORE) {
    const values = evals.flatMap(({ node, entries }) =>
      entries
        .filter((e) => e.name === key)
        .map((e) => ({ node, budget: e.budget, value: e.value, desc: `${node} B=${e.budget} ${key}=${fmt(e.value)}` })),
    );
    if (values.length === 0) continue;
    const budgets = [...new Set([...values.map((v) => v.budget), ...rlBudgets(results).map((r) => r.budget)])].sort((a, b) => a - b);
    const rules = budgetRules(results, budgets);
    out.push({
      name: `explore-${key}`,
      section: 'exploration',
      title,
      caption: `eval/b<B>/${key} per eval / select-budget node.`,
      spec: {
        ...base,
        title,
        layer: [
          {
            data: { values },
            mark: { type: 'line', point: { size: 30 } },
            encoding: {
              x: {
                field: 'budget',
                type: 'quantitative',
                title: 'test budget (tokens, log2)',
                scale: { type: 'log', base: 2 },
                axis: { values: budgets, format: 'd' },
              },
              y: { field: 'value', type: 'quantitative', title: y, scale: yScale(values) },
              color: { field: 'node', type: 'nominal', title: 'node' },
              description: { field: 'desc' },
            },
          },
          ...rules,
        ],
      },
    });
  }
  // How responses end, per budget: a stacked bar per budget, one panel per node.
  const order = (why: string) => {
    const i = (STOP_REASONS as readonly string[]).indexOf(why);
    return i < 0 ? STOP_REASONS.length : i;
  };
  const stops = evals.flatMap(({ node, entries }) =>
    entries.flatMap((e) => {
      const m = /^stop_(.+)$/.exec(e.name);
      return m
        ? [
            {
              node,
              budget: e.budget,
              reason: m[1],
              order: order(m[1]),
              share: e.value,
              desc: `${node} B=${e.budget} stop_${m[1]}=${fmt(e.value)}`,
            },
          ]
        : [];
    }),
  );
  if (stops.length) {
    const reasons = [...new Set(stops.map((s) => s.reason))].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
    const title = 'How responses stop, per test budget';
    out.push({
      name: 'stop-reasons',
      section: 'exploration',
      title,
      caption:
        'Share of responses ending on a true ok (correct), a false ok, a give-up (no), cut at the budget (truncated) or malformed (other), from eval/b<B>/stop_<reason>.',
      spec: {
        title,
        config: base.config,
        data: { values: stops },
        facet: { field: 'node', type: 'nominal', title: null },
        columns: 3,
        spec: {
          width: 200,
          height: HEIGHT,
          mark: { type: 'bar' },
          encoding: {
            x: { field: 'budget', type: 'ordinal', title: 'test budget (tokens)', sort: 'ascending' },
            y: { field: 'share', type: 'quantitative', stack: 'zero', title: 'share of responses' },
            color: {
              field: 'reason',
              type: 'nominal',
              title: 'stop',
              scale: { domain: reasons, range: ['#59a14f', '#e15759', '#f28e2b', '#79706e', '#bab0ac', '#4e79a7', '#b07aa1'] },
            },
            order: { field: 'order', type: 'quantitative' },
            description: { field: 'desc' },
          },
        },
      },
    });
  }
  return out;
}

/** Training curves, one line per node (x: the step the metrics row was written at). */
const TRAIN: ReadonlyArray<{
  name: string;
  keys: Array<[key: string, label: string]>;
  title: string;
  y: string;
  x: string;
  caption: string;
}> = [
  {
    name: 'train-reward_mean',
    keys: [['train/reward_mean', 'all']],
    title: 'train reward (pass@1 of the samples)',
    y: 'reward',
    x: 'iteration',
    caption: 'train/reward_mean.',
  },
  {
    name: 'train-response_len',
    keys: [
      ['train/response_len', 'all'],
      ['train/response_len_correct', 'correct'],
      ['train/response_len_incorrect', 'incorrect'],
    ],
    title: 'response length',
    y: 'tokens',
    x: 'iteration',
    caption:
      'train/response_len (solid), _correct and _incorrect (dashed): negative gradients lengthen responses as exploration grows (paper §5).',
  },
  {
    name: 'train-truncated_frac',
    keys: [['train/truncated_frac', 'all']],
    title: 'truncated at the training budget',
    y: 'fraction',
    x: 'iteration',
    caption: 'train/truncated_frac.',
  },
  {
    name: 'train-attempts',
    keys: [['train/attempts', 'all']],
    title: 'attempts per response',
    y: 'attempts',
    x: 'iteration',
    caption: 'train/attempts: generate → verify episodes chained in a response (paper §4).',
  },
  {
    name: 'train-unique_attempts',
    keys: [['train/unique_attempts', 'all']],
    title: 'distinct attempts per response',
    y: 'attempts',
    x: 'iteration',
    caption: 'train/unique_attempts.',
  },
  {
    name: 'train-marks_true',
    keys: [['train/marks_true', 'all']],
    title: 'verification marks that match the truth',
    y: 'share of marks',
    x: 'iteration',
    caption: 'train/marks_true: the verification side of the asymmetry (paper §4).',
  },
  {
    name: 'train-false_ok',
    keys: [['train/false_ok', 'all']],
    title: 'wrong attempts marked ok',
    y: 'share of wrong attempts',
    x: 'iteration',
    caption: 'train/false_ok.',
  },
  {
    name: 'train-entropy',
    keys: [['train/entropy', 'all']],
    title: 'policy entropy',
    y: 'nats per token',
    x: 'iteration',
    caption: 'train/entropy (paper §5: negative gradients keep it from collapsing).',
  },
  {
    name: 'train-zero_std_frac',
    keys: [['train/zero_std_frac', 'all']],
    title: 'groups with no reward signal',
    y: 'fraction of groups',
    x: 'iteration',
    caption: 'train/zero_std_frac: groups whose samples all got the same reward (no GRPO advantage).',
  },
  { name: 'sft-loss', keys: [['sft/loss', 'all']], title: 'SFT loss', y: 'nats per token', x: 'step', caption: 'sft/loss.' },
];

function trainingCharts(metrics: readonly Row[]): ChartSpec[] {
  const out: ChartSpec[] = [];
  for (const c of TRAIN) {
    const values = metrics.flatMap((r) =>
      c.keys.flatMap(([key, label]) =>
        typeof r[key] === 'number' && Number.isFinite(r[key])
          ? [
              {
                node: String(r.node),
                step: Number(r.step),
                value: r[key],
                series: label,
                desc: `${String(r.node)} ${c.x} ${r.step} ${key}=${fmt(r[key])}`,
              },
            ]
          : [],
      ),
    );
    if (values.length === 0) continue;
    const steps = new Set(values.map((v) => `${v.node}/${v.step}`)).size;
    const multi = c.keys.length > 1;
    out.push({
      name: c.name,
      section: 'training',
      title: c.title,
      caption: c.caption,
      spec: {
        ...base,
        title: c.title,
        data: { values: values.sort((a, b) => a.step - b.step) },
        mark: { type: 'line', ...(steps <= 60 ? { point: { size: 16 } } : {}) },
        encoding: {
          x: { field: 'step', type: 'quantitative', title: c.x, axis: { tickMinStep: 1, format: 'd' } },
          y: { field: 'value', type: 'quantitative', title: c.y, scale: yScale(values) },
          color: { field: 'node', type: 'nominal', title: 'node' },
          ...(multi ? { strokeDash: { field: 'series', type: 'nominal', title: 'responses', sort: c.keys.map(([, l]) => l) } } : {}),
          detail: { field: 'series' },
          description: { field: 'desc' },
        },
      },
    });
  }
  return out;
}

/** Every chart the report draws from these results and metric rows (absent metrics: no chart). */
export function reportCharts(o: Pick<ReportInput, 'results' | 'metrics'>): ChartSpec[] {
  return [...extrapolationCharts(o.results), ...explorationCharts(o.results), ...trainingCharts(o.metrics)];
}

/**
 * Eq. 6.1 per select-budget node as a table (the paper's Fig. 9c in numbers): every candidate
 * B with J(B), J(2B), J(2B)/J(B) against kappa, and the budget the node took.
 */
export function budgetSelectionTables(results: Record<string, NodeResult>): string {
  const tables: string[] = [];
  for (const [node, r] of Object.entries(results)) {
    if (r.kind !== 'select-budget' || !r.metrics) continue;
    const m = r.metrics;
    const cands = Object.keys(m)
      .map((k) => /^select\/b(\d+)\/qualifies$/.exec(k)?.[1])
      .filter((x): x is string => x !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
    if (cands.length === 0) continue;
    const kappa = m['select/kappa'];
    const cell = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? '–' : fmt(v));
    // Eq. 6.1 under a bootstrap over the measured problems (ml/budget.ts choiceStability); absent in results recorded without it.
    const stable = Object.keys(m).some((k) => k.startsWith('select/stability/'));
    const share = (k: string) => (stable ? `${Math.round(100 * (m[`select/stability/${k}`] ?? 0))} %` : '–');
    const ratioIv = (b: number) =>
      m[`select/b${b}/ratio_lo`] === undefined ? '' : ` [${fmt(m[`select/b${b}/ratio_lo`])}, ${fmt(m[`select/b${b}/ratio_hi`])}]`;
    const rows = cands.map((b) => {
      const chosen = r.budget === b;
      return `<tr${chosen ? ' class="chosen"' : ''}><td>${b}</td><td>${cell(m[`eval/b${b}/pass@1`])}</td><td>${cell(m[`eval/b${2 * b}/pass@1`])}</td><td>${cell(m[`select/b${b}/ratio`])}${ratioIv(b)}</td><td>${m[`select/b${b}/qualifies`] === 1 ? 'yes' : 'no'}</td><td>${share(`b${b}`)}</td><td>${chosen ? (m['select/qualified'] === 1 ? 'chosen' : 'taken (no candidate qualifies)') : ''}</td></tr>`;
    });
    const none = m['select/stability/none'];
    if (none !== undefined) rows.push(`<tr><td>none</td><td></td><td></td><td></td><td></td><td>${share('none')}</td><td></td></tr>`);
    tables.push(
      `<table class="eq61" aria-label="Eq. 6.1 ${esc(node)}"><caption><b>${esc(node)}</b>: kappa ${Number.isFinite(kappa) ? String(+kappa.toPrecision(4)) : '–'}, B0 ${Number.isFinite(m['select/b0']) ? m['select/b0'].toFixed(1) : '–'} tokens; B qualifies when J(2B) &le; kappa &middot; J(B) and B &ge; B0; the smallest qualifying B is chosen; J(2B)/J(B) with its 95 % interval and the share of resamples choosing B under a bootstrap over the problems</caption><tr><th>B</th><th>J(B)</th><th>J(2B)</th><th>J(2B)/J(B)</th><th>qualifies</th><th>chosen in resamples</th><th></th></tr>${rows.join('')}</table>`,
    );
  }
  return tables.join('\n');
}

/** One policy's gain over the base, evaluated on the same problems with the same seeds. */
export interface GainRow {
  node: string;
  base: string;
  /** The training budget of the policy the node evaluates (its RL node's), if any. */
  trainBudget: number | null;
  report: GainReport;
}

/**
 * For every eval node of a trained policy, the paired bootstrap of its gain over the base's
 * eval node on the same problems and seeds (same difficulty, offset, prompts, samples and
 * temperature): per budget, and at 2× and 4× the policy's training budget against 1×.
 */
export function extrapolationGains(
  config: RunConfig,
  results: Record<string, NodeResult>,
  rates: Record<string, Map<number, number[]>>,
): GainRow[] {
  const evals = Object.entries(config.nodes).filter((e): e is [string, EvalNode] => e[1].kind === 'eval' && rates[e[0]] !== undefined);
  const same = (a: EvalNode, b: EvalNode) =>
    JSON.stringify([a.difficulty, a.offset, a.prompts, a.samples, a.temperature]) ===
    JSON.stringify([b.difficulty, b.offset, b.prompts, b.samples, b.temperature]);
  const out: GainRow[] = [];
  for (const [id, n] of evals) {
    const src = policySource(config, id);
    if (src === null) continue;
    const base = evals.find(([b, bn]) => policySource(config, b) === null && same(n, bn));
    if (!base) continue;
    const trainBudget = results[src]?.kind === 'rl' ? (results[src].budget ?? null) : null;
    out.push({
      node: id,
      base: base[0],
      trainBudget,
      report: gainOverBase(rates[id], rates[base[0]], trainBudget, { seed: deriveSeed(config.seed, 'bootstrap', id) }),
    });
  }
  return out;
}

/** Gain metrics of a report result: `gain/<node>/b<B>/{mean,lo,hi}` and `gain/<node>/x<m>_vs_x1/{mean,lo,hi}`. */
export function gainMetrics(rows: readonly GainRow[]): Record<string, number> {
  const m: Record<string, number> = {};
  const put = (key: string, v: Interval) => Object.assign(m, { [`${key}/mean`]: v.mean, [`${key}/lo`]: v.lo, [`${key}/hi`]: v.hi });
  for (const r of rows) {
    for (const [b, v] of r.report.gain) put(`gain/${r.node}/b${b}`, v);
    for (const [x, v] of r.report.beyond) put(`gain/${r.node}/x${x}_vs_x1`, v);
  }
  return m;
}

function gainTables(rows: readonly GainRow[]): string {
  const iv = (v: Interval) => `${v.mean >= 0 ? '+' : ''}${v.mean.toFixed(3)} [${v.lo.toFixed(3)}, ${v.hi.toFixed(3)}]`;
  const verdict = (v: Interval) => (v.lo > 0 ? 'larger' : v.hi < 0 ? 'smaller' : 'no difference');
  return rows
    .map((r) => {
      const budgets = [...r.report.gain.keys()];
      const head = budgets.map((b) => `<th>${b}${r.trainBudget ? ` (${+(b / r.trainBudget).toPrecision(3)}×)` : ''}</th>`).join('');
      const cells = budgets.map((b) => `<td>${iv(r.report.gain.get(b)!)}</td>`).join('');
      const beyond = [...r.report.beyond].map(([x, v]) => `<li>gain at ${x}× minus gain at 1×: ${iv(v)}, ${verdict(v)}</li>`).join('');
      return `<table class="gain" aria-label="gain ${esc(r.node)}"><caption><b>${esc(r.node)}</b> − <b>${esc(r.base)}</b>: pass@1 gain over the base at each test budget, mean [95 % paired bootstrap interval over problems]${r.trainBudget ? `; training budget ${r.trainBudget}` : ''}</caption><tr><th>budget</th>${head}</tr><tr><td>gain</td>${cells}</tr></table>${beyond ? `<ul class="gain">${beyond}</ul>` : ''}`;
    })
    .join('\n');
}

const figure = (c: ChartSpec, svg: string) =>
  `<figure class="chart" id="chart-${c.name}" aria-label="${esc(c.title)}">${svg}<figcaption>${esc(c.caption)}</figcaption></figure>`;

/** The report page and its charts (`name` → SVG, written next to the page as report/<name>.svg). */
export async function renderReportHtml(o: ReportInput): Promise<{ html: string; svgs: Record<string, string>; gains: GainRow[] }> {
  const charts = reportCharts(o);
  const gains = o.rates ? extrapolationGains(o.config, o.results, o.rates) : [];
  const svgs: Record<string, string> = {};
  for (const c of charts) svgs[c.name] = await renderSvg(c.spec);
  const section = (s: ChartSpec['section'], none: string) => {
    const cs = charts.filter((c) => c.section === s);
    return cs.length
      ? `<div class="charts">${cs.map((c) => figure(c, svgs[c.name])).join('\n')}</div>`
      : `<p class="none">${esc(none)}</p>`;
  };
  const trainBudgets = Object.entries(o.results)
    .filter(([, r]) => r.kind === 'rl' && r.budget)
    .map(([n, r]) => `${n}: B=${r.budget}`);
  const warnings = Object.entries(o.results).filter(([, r]) => r.warning);
  const warningBlock = warnings.length
    ? `<section class="warnings" role="alert"><h2>Warnings</h2>${warnings.map(([node, r]) => `<p class="warning"><b>${esc(node)}</b>: ${esc(r.warning!)}</p>`).join('')}</section>`
    : '';
  const table = Object.entries(o.results).map(
    ([node, r]) =>
      `<tr${r.warning ? ' class="warned"' : ''}><td>${esc(node)}</td><td>${esc(r.kind)}</td><td>${r.checkpoint ? r.checkpoint.step : ''}</td><td>${r.budget ?? ''}</td><td>${r.warning ? `<span class="warning">${esc(r.warning)}</span>` : ''}</td><td><code>${esc(
        Object.entries(r.metrics ?? {})
          .slice(0, 60)
          .map(([k, v]) => `${k}=${fmt(v)}`)
          .join('  '),
      )}</code></td></tr>`,
  );
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>e3 report ${esc(o.runId)}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1500px}.charts{display:flex;flex-wrap:wrap;gap:8px}figure.chart{margin:0;padding:6px;border:1px solid #eee;max-width:min(100%,640px)}figure.chart svg{display:block;max-width:100%;height:auto}figcaption{font-size:12px;color:#555;max-width:560px}.warnings{border:2px solid #c0392b;background:#fdecea;padding:4px 12px;margin:12px 0}.warning{color:#922b21;font-weight:600}tr.warned{background:#fdecea}td,th{border-bottom:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}code{font-size:11px;white-space:pre-wrap}table.eq61{margin:8px 0 16px}table.eq61 caption{text-align:left;font-size:13px}tr.chosen{background:#e8f4ea;font-weight:600}.none{color:#777}</style></head><body>
<h1>e3 run <code>${esc(o.runId)}</code></h1>
<p>config <b>${esc(o.config.name)}</b>, seed ${o.config.seed}, model ${o.config.model.layers}×${o.config.model.dModel} (${o.config.model.heads} heads, context ${o.config.model.context}), tool arithmetic ${o.config.toolArithmetic}, backend ${esc(o.backend)}${o.backendReason ? ` (${esc(o.backendReason)})` : ''}. Training budgets: ${esc(trainBudgets.join(', ') || 'n/a')}.</p>
${warningBlock}
<h2>Extrapolation</h2>
${section('extrapolation', 'no eval or select-budget results with pass@k')}
<h2>Gain over the base</h2>
${gains.length ? gainTables(gains) : '<p class="none">no eval node of a trained policy with a base evaluated on the same problems</p>'}
<h2>Budget selection (Eq. 6.1)</h2>
${budgetSelectionTables(o.results) || '<p class="none">no select-budget results</p>'}
<h2>Exploration vs test budget</h2>
${section('exploration', 'no exploration metrics in the eval results')}
<h2>Training</h2>
${section('training', 'no training metrics')}
<h2>Nodes</h2><table><tr><th>node</th><th>kind</th><th>ckpt step</th><th>budget</th><th>warning</th><th>metrics</th></tr>${table.join('')}</table>
</body></html>
`;
  return { html, svgs, gains };
}

/** The report activity: the run's metrics as one NDJSON object, the charts and the HTML page, into the store and to disk. */
export function reportActivities(env: Env) {
  const { ctx, store, readManifest } = env;
  return {
    async renderReport(input: NodeInput): Promise<NodeResult> {
      const m = await readManifest(input.runId);
      const parts = await store.list(`runs/${input.runId}/metrics/`);
      const rows = await Promise.all(parts.map((k) => store.getJson<Record<string, number | string>>(k)));
      await store.put(keys.metrics(input.runId), rows.map((r) => JSON.stringify(r)).join('\n') + '\n', 'application/x-ndjson');
      const rates = await evalRates(store, input.runId, m.config, input.upstream);
      const { html, svgs, gains } = await renderReportHtml({
        runId: input.runId,
        config: m.config,
        results: input.upstream,
        metrics: rows,
        backend: ctx.backend,
        backendReason: ctx.backendReason,
        rates,
      });
      for (const [name, svg] of Object.entries(svgs)) await store.put(keys.report(input.runId, `${name}.svg`), svg, 'image/svg+xml');
      const key = keys.report(input.runId);
      await store.put(key, html, 'text/html');
      const dir = path.join(ctx.reportDir, input.runId);
      mkdirSync(dir, { recursive: true });
      const file = path.join(dir, 'index.html');
      writeFileSync(file, html);
      return { kind: 'report', report: { key, path: file }, metrics: gainMetrics(gains) };
    },
  };
}

/** Each finished eval node's per-problem pass rates by budget, read back from its stored chunks (activities/evaluate.ts). */
export async function evalRates(
  store: Env['store'],
  runId: string,
  config: RunConfig,
  results: Record<string, NodeResult>,
): Promise<Record<string, Map<number, number[]>>> {
  const out: Record<string, Map<number, number[]>> = {};
  for (const [id, n] of Object.entries(config.nodes)) {
    if (n.kind !== 'eval' || results[id]?.kind !== 'eval') continue;
    const rates = new Map<number, number[]>(n.budgets.map((b) => [b, []]));
    for (let at = 0; at < n.prompts; at += EVAL_CHUNK) {
      const c = await store.getJson<{ counts: EvalCounts }>(keys.evalChunk(runId, id, at));
      for (const b of n.budgets) rates.get(b)!.push(...c.counts[b].problems.map((p) => p.c / p.n));
    }
    out[id] = rates;
  }
  return out;
}
