/**
 * The run: a DAG of nodes executed in topological order, independent nodes in parallel,
 * nodes already completed in the run manifest skipped (so `e3 resume` continues a
 * terminated or failed run). Start it from the Web UI with input `{}` (the demo config),
 * `{"config":"tiny"}`, or just the config name as a JSON string, `"tiny"`. The input is
 * checked before anything starts (./input.ts): not an object, an unknown key or a wrong
 * type fails the run at once with a non-retryable BadConfig failure naming the field.
 */
import {
  ApplicationFailure,
  ParentClosePolicy,
  executeChild,
  proxyActivities,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { NodeInput, NodeResult, PipelineInput } from '../activities/types';
import { ErrorTypes, NON_RETRYABLE_ERROR_TYPES } from '../activities/types';
import { pipelineInput } from './input';
import { nodeSummary, runDetails } from './story';
import { evalNode, reportNode, rlStage, selectBudgetNode, sftNode } from './nodes';
import { E3Config, E3Lineage, E3Run } from './search';

const general = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1s', maximumInterval: '15s', backoffCoefficient: 2, nonRetryableErrorTypes: [...NON_RETRYABLE_ERROR_TYPES] },
});

const byKind = { sft: sftNode, rl: rlStage, 'select-budget': selectBudgetNode, eval: evalNode, report: reportNode } as const;

export interface PipelineResult {
  runId: string;
  results: Record<string, NodeResult>;
  skipped: string[];
  report?: { key: string; path: string };
}

export async function pipeline(raw: PipelineInput | string = {}): Promise<PipelineResult> {
  const input = pipelineInput(raw);
  const prep = await general.prepareRun({ ...input, runId: input.runId ?? workflowInfo().workflowId });
  const { runId, config } = prep;
  upsertSearchAttributes([
    { key: E3Run, value: runId },
    { key: E3Config, value: config.name },
    ...(config.lineage ? [{ key: E3Lineage, value: config.lineage }] : []),
  ]);
  const results: Record<string, NodeResult> = { ...prep.done };
  const skipped = Object.keys(prep.done);
  const started = new Set<string>(skipped);
  const running = new Map<string, Promise<string>>();
  const ready = () => prep.order.filter((id) => !started.has(id) && config.nodes[id].deps.every((d) => d in results));

  while (Object.keys(results).length < prep.order.length) {
    for (const id of ready()) {
      started.add(id);
      const node = config.nodes[id];
      const args: NodeInput = { runId, nodeId: id, config, upstream: { ...results } };
      const child = executeChild(byKind[node.kind] as (i: NodeInput) => Promise<NodeResult>, {
        workflowId: `${runId}/${id}`,
        args: [args],
        parentClosePolicy: ParentClosePolicy.TERMINATE,
        staticSummary: nodeSummary(config, runId, id),
      }).then(async (r) => {
        await general.markNodeDone(runId, id, r);
        results[id] = r;
        setCurrentDetails(runDetails(config, runId, results, started));
        return id;
      });
      running.set(id, child);
    }
    setCurrentDetails(runDetails(config, runId, results, started));
    if (running.size === 0) {
      throw ApplicationFailure.create({
        message: 'pipeline: no runnable node (the config graph was validated, so this is a bug)',
        type: ErrorTypes.config,
        nonRetryable: true,
      });
    }
    const finished = await Promise.race(running.values());
    running.delete(finished);
  }
  if (config.lineage) await general.advanceLineage(runId, config.lineage);
  const report = Object.values(results).find((r) => r.report)?.report;
  return { runId, results, skipped, ...(report ? { report } : {}) };
}
