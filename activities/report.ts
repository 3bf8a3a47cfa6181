/**
 * The run report: one self-contained HTML page with SVG line plots (training curves per
 * node, the extrapolation curve pass@1 vs test budget) and the result tables.
 */
import type { RunConfig } from '../configs/schema';
import type { NodeResult } from './types';

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const fmt = (x: number) => (Math.abs(x) >= 100 || Number.isInteger(x) ? String(Math.round(x * 100) / 100) : x.toFixed(3));

interface Series {
  name: string;
  points: Array<[number, number]>;
}

/** A small SVG line chart; x and y ranges from the data. */
export function lineChart(title: string, series: Series[], xLabel: string, yLabel: string, logX = false): string {
  const W = 420, H = 240, L = 48, R = 12, T = 24, B = 36;
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (pts.length === 0) return `<p>${esc(title)}: no data</p>`;
  const fx = (x: number) => (logX ? Math.log2(x) : x);
  const xs = pts.map(([x]) => fx(x)), ys = pts.map(([, y]) => y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) === Math.min(...xs) ? Math.min(...xs) + 1 : Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys) === Math.min(0, ...ys) ? Math.min(0, ...ys) + 1 : Math.max(...ys)];
  const sx = (x: number) => L + ((fx(x) - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
  const lines = series.map((s, i) => {
    const d = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).map(([x, y], k) => `${k ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    const dots = s.points.map(([x, y]) => `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${colors[i % colors.length]}"/>`).join('');
    return `<path d="${d}" fill="none" stroke="${colors[i % colors.length]}" stroke-width="1.5"/>${dots}<text x="${W - R - 4}" y="${T + 12 + 14 * i}" text-anchor="end" font-size="11" fill="${colors[i % colors.length]}">${esc(s.name)}</text>`;
  });
  const xt = [...new Set(pts.map(([x]) => x))].sort((a, b) => a - b);
  const xticks = (xt.length <= 8 ? xt : xt.filter((_, i) => i % Math.ceil(xt.length / 8) === 0)).map((x) => `<text x="${sx(x).toFixed(1)}" y="${H - B + 14}" text-anchor="middle" font-size="10">${fmt(x)}</text>`);
  const yticks = [y0, (y0 + y1) / 2, y1].map((y) => `<text x="${L - 4}" y="${sy(y).toFixed(1)}" text-anchor="end" font-size="10">${fmt(y)}</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" role="img" aria-label="${esc(title)}"><text x="${L}" y="14" font-size="12" font-weight="bold">${esc(title)}</text><line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#999"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#999"/>${xticks.join('')}${yticks.join('')}<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle" font-size="11">${esc(xLabel)}</text><text x="12" y="${(T + H - B) / 2}" font-size="11" transform="rotate(-90 12 ${(T + H - B) / 2})" text-anchor="middle">${esc(yLabel)}</text>${lines.join('')}</svg>`;
}

export function renderReportHtml(o: { runId: string; config: RunConfig; results: Record<string, NodeResult>; metrics: Array<Record<string, number | string>>; backend: string }): string {
  const byNode = new Map<string, Array<Record<string, number | string>>>();
  for (const r of o.metrics) byNode.set(String(r.node), [...(byNode.get(String(r.node)) ?? []), r]);
  const curve = (key: string) => [...byNode.entries()].filter(([, rows]) => rows.some((r) => typeof r[key] === 'number')).map(([node, rows]) => ({ name: node, points: rows.filter((r) => typeof r[key] === 'number').map((r) => [Number(r.step), Number(r[key])] as [number, number]) }));
  const charts = [
    lineChart('train reward (pass@1 of samples)', curve('train/reward_mean'), 'iteration', 'reward'),
    lineChart('response length', curve('train/response_len'), 'iteration', 'tokens'),
    lineChart('truncated fraction', curve('train/truncated_frac'), 'iteration', 'fraction'),
    lineChart('attempts per response', curve('train/attempts'), 'iteration', 'attempts'),
    lineChart('SFT loss', curve('sft/loss'), 'step', 'nats'),
  ];
  const evalSeries: Series[] = [];
  for (const [node, r] of Object.entries(o.results)) {
    if (r.kind !== 'eval' && r.kind !== 'select-budget') continue;
    const pts = Object.entries(r.metrics ?? {}).map(([k, v]) => [/^eval\/b(\d+)\/pass@1$/.exec(k), v] as const).filter(([m]) => m).map(([m, v]) => [Number(m![1]), v] as [number, number]).sort((a, b) => a[0] - b[0]);
    if (pts.length) evalSeries.push({ name: node, points: pts });
  }
  const trainBudgets = Object.entries(o.results).filter(([, r]) => r.kind === 'rl' && r.budget).map(([n, r]) => `${n}: ${r.budget}`);
  const table = Object.entries(o.results).map(([node, r]) => `<tr><td>${esc(node)}</td><td>${esc(r.kind)}</td><td>${r.checkpoint ? r.checkpoint.step : ''}</td><td>${r.budget ?? ''}</td><td><code>${esc(Object.entries(r.metrics ?? {}).slice(0, 40).map(([k, v]) => `${k}=${fmt(v)}`).join('  '))}</code></td></tr>`);
  return `<!doctype html><html><head><meta charset="utf-8"><title>e3 report ${esc(o.runId)}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px}svg{margin:6px;border:1px solid #eee}td,th{border-bottom:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}code{font-size:11px;white-space:pre-wrap}</style></head><body>
<h1>e3 run <code>${esc(o.runId)}</code></h1>
<p>config <b>${esc(o.config.name)}</b>, seed ${o.config.seed}, model ${o.config.model.layers}×${o.config.model.dModel} (${o.config.model.heads} heads, context ${o.config.model.context}), tool arithmetic ${o.config.toolArithmetic}, backend ${esc(o.backend)}. Training budgets: ${esc(trainBudgets.join(', ') || 'n/a')}.</p>
<h2>Extrapolation: pass@1 vs test budget</h2>
${lineChart('pass@1 vs budget (log2 x)', evalSeries, 'test budget (tokens)', 'pass@1', true)}
<h2>Training</h2>
${charts.join('\n')}
<h2>Nodes</h2><table><tr><th>node</th><th>kind</th><th>ckpt step</th><th>budget</th><th>metrics</th></tr>${table.join('')}</table>
</body></html>
`;
}
