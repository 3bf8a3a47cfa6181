/**
 * What the Web UI shows of a run (docs/ARCHITECTURE.md "A run is a DAG"): a one-line summary
 * per node workflow, live markdown details (the run's DAG; a node's iteration, budget,
 * reward, pass@1 by budget), and a summary per activity. Pure functions of workflow state.
 */
import type { NodeResult } from '../activities/types';
import type { RunConfig } from '../configs/schema';

const f3 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(3));

/** `demo · stage1 (rl) · seed 1 · run demo-1 · lineage nightly · from base.e3w` */
export function nodeSummary(config: RunConfig, runId: string, nodeId: string): string {
  const init = config.lineage
    ? `lineage ${config.lineage}`
    : config.init.startsWith('file:')
      ? `from ${config.init.slice(5).split('/').pop()}`
      : config.init;
  return `${config.name} · ${nodeId} (${config.nodes[nodeId].kind}) · seed ${config.seed} · run ${runId} · ${init}`;
}

/** pass@1 at each evaluated budget, from a result's metrics (`eval/b<B>/pass@1`). */
export function passAt1ByBudget(metrics: Record<string, number> = {}): Array<[number, number]> {
  return Object.entries(metrics)
    .map(([k, v]) => [/^eval\/b(\d+)\/pass@1$/.exec(k)?.[1], v] as const)
    .filter((x): x is readonly [string, number] => x[0] !== undefined)
    .map(([b, v]): [number, number] => [Number(b), v])
    .sort((a, b) => a[0] - b[0]);
}

function resultCell(r: NodeResult): string {
  const p1 = passAt1ByBudget(r.metrics);
  if (r.kind === 'select-budget') return `budget ${r.budget}${r.warning ? ' (warning)' : ''}`;
  if (r.kind === 'eval') return p1.map(([b, v]) => `${b}: ${f3(v)}`).join(' · ');
  if (r.kind === 'report') return r.report ? `\`${r.report.key}\`` : '';
  return `step ${r.checkpoint?.step ?? '?'}${r.budget ? ` at budget ${r.budget}` : ''}, reward ${f3(r.metrics?.['train/reward_mean'])}`;
}

/** The run's DAG as a markdown table: each node's kind, state and result. */
export function runDetails(config: RunConfig, runId: string, results: Record<string, NodeResult>, started: Set<string>): string {
  const done = Object.keys(results).length;
  const rows = Object.entries(config.nodes).map(([id, n]) => {
    const r = results[id];
    const state = r ? 'done' : started.has(id) ? 'running' : 'waiting';
    return `| ${id} | ${n.kind} | ${state} | ${r ? resultCell(r) : ''} |`;
  });
  const report = Object.values(results).find((r) => r.report)?.report;
  return [
    `**${runId}** — config \`${config.name}\`, seed ${config.seed}: ${done} of ${rows.length} nodes done`,
    '',
    '| node | kind | state | result |',
    '|---|---|---|---|',
    ...rows,
    ...(report ? ['', `Report: \`s3://…/${report.key}\` (on disk: \`${report.path}\`)`] : []),
  ].join('\n');
}

/** A training node's live details: where it is and how it is doing. */
export function trainingDetails(o: {
  nodeId: string;
  kind: string;
  iteration: number;
  total: number;
  budget?: number;
  paused: boolean;
  rewinds: number;
  metrics: Record<string, number>;
}): string {
  const m = o.metrics;
  const lines = [
    `**${o.nodeId}** (${o.kind}) — ${o.kind === 'sft' ? 'step' : 'iteration'} ${o.iteration} of ${o.total}${o.budget ? ` · budget ${o.budget} tokens` : ''}${o.paused ? ' · **paused**' : ''}${o.rewinds ? ` · ${o.rewinds} rewind(s) after a lost session` : ''}`,
  ];
  if (o.kind === 'rl' && 'train/reward_mean' in m) {
    lines.push('', '| reward | truncated | attempts | unique attempts | marks true | length |', '|---|---|---|---|---|---|');
    lines.push(
      `| ${f3(m['train/reward_mean'])} | ${f3(m['train/truncated_frac'])} | ${f3(m['train/attempts'])} | ${f3(m['train/unique_attempts'])} | ${f3(m['train/marks_true'])} | ${f3(m['train/response_len'])} |`,
    );
  }
  if (o.kind === 'sft' && 'sft/loss' in m) lines.push('', `loss ${f3(m['sft/loss'])}`);
  return lines.join('\n');
}

/** An evaluation's pass@1 by budget as markdown. */
export function evalDetails(nodeId: string, r: NodeResult): string {
  const p1 = passAt1ByBudget(r.metrics);
  return [
    `**${nodeId}** (${r.kind})${r.budget ? ` — picked budget ${r.budget}` : ''}${r.warning ? `\n\n⚠ ${r.warning}` : ''}`,
    '',
    '| budget | pass@1 |',
    '|---|---|',
    ...p1.map(([b, v]) => `| ${b} | ${f3(v)} |`),
  ].join('\n');
}

/** A waiting open's place in the trainer queue, as the worker's line announcer (workers/line.ts) sees it. */
export interface TrainerLine {
  /** Opens the trainer queue serves before this one. */
  ahead: number;
  /** Server time (ms) the open was scheduled. */
  sinceMs: number;
  /** The node workflows holding (or opening) a trainer session. */
  holders: string[];
  /** A trainer took the node's open (this worker): it loads the last commit, and may train the first commit window, before the open returns. */
  openedOn?: string;
}

const clock = (t: number) => new Date(t).toISOString().slice(11, 19);

/** A node's live details while its open waits for a trainer; `line` is its place once announced. */
export function waitingDetails(runId: string, nodeId: string, line?: TrainerLine): string {
  if (line?.openedOn)
    return `**${nodeId}** — opening its trainer session on \`${line.openedOn}\` (since ${clock(line.sinceMs)} UTC): loading its last commit, then training to its first commit`;
  if (!line)
    return `**${nodeId}** — waiting for a trainer: queued in \`e3-trainer\` behind earlier opens of the same or a higher priority (\`e3 status\` lists them and the holders)`;
  const held = line.holders.length ? line.holders.map((h) => `\`${h}\``).join(', ') : 'none (a trainer is about to take an open)';
  return [
    `**${nodeId}** — waiting for a trainer: ${line.ahead} ahead of it (run ${runId}, node ${nodeId}, since ${clock(line.sinceMs)} UTC)`,
    '',
    `Trainer held by: ${held}`,
  ].join('\n');
}
