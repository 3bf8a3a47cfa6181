/**
 * Run-level activities: the store health check, run preparation (config → manifest), node
 * results and the lineage pointer.
 */
import { configRunName, loadConfig } from '../configs/load';
import { topoOrder } from '../configs/schema';
import { ConfigError } from '../configs/errors';
import { checkId, keys } from '../storage/layout';
import { sha256Hex } from '../storage/store';
import type { NodeResult, PipelineInput, PreparedRun } from './types';
import type { Env, Manifest } from './env';
import { readInitFile, scheduledRunId } from './env';

export function runActivities(env: Env) {
  const { ctx, store, readManifest, nodeResults } = env;
  return {
    /** Write an object, read it back byte-identical, delete it (the stack's health check). */
    async pingStore(note: string): Promise<{ backend: string; roundTrip: boolean }> {
      const key = `health/${ctx.queue}/${sha256Hex(new TextEncoder().encode(note)).slice(0, 12)}`;
      const body = `e3 ping ${note}`;
      await store.put(key, body);
      const back = (await store.get(key)).toString('utf8');
      await store.remove([key]);
      return { backend: ctx.backend, roundTrip: back === body };
    },
    /** Resolve and validate the config, create or load the run manifest. */
    async prepareRun(input: PipelineInput & { runId: string }): Promise<PreparedRun> {
      let runId: string;
      try {
        runId = checkId('runId', scheduledRunId(input.runId));
      } catch (e) {
        // The run id (by default the workflow id typed into the Web UI) is input: no retry fixes it.
        throw new ConfigError((e as Error).message);
      }
      const existing = (await store.exists(keys.manifest(runId))) ? await readManifest(runId) : null;
      if (existing) {
        if (input.config && configRunName(input.config) !== existing.config.name) {
          throw new ConfigError(`runId: run "${runId}" already exists with config "${existing.config.name}", not "${input.config}"`);
        }
        return { runId, config: existing.config, done: await nodeResults(runId, existing.config), order: topoOrder(existing.config.nodes) };
      }
      const overrides = { ...(input.overrides ?? {}), ...(input.lineage ? { lineage: input.lineage } : {}) };
      for (const k of ['accessKey', 'secretKey', 'E3_S3_SECRET_KEY'])
        if (k in overrides) throw new ConfigError(`overrides.${k}: credentials are never accepted in workflow input`);
      const config = loadConfig(input.config ?? 'demo', overrides);
      let initFrom: Manifest['initFrom'];
      if (config.lineage) {
        const ptr = (await store.exists(keys.lineage(config.lineage)))
          ? await store.getJson<{ runId: string; nodeId: string; step: number }>(keys.lineage(config.lineage))
          : null;
        if (ptr) initFrom = ptr;
      }
      if (!initFrom && config.init.startsWith('file:')) {
        const file = config.init.slice(5);
        const sha = readInitFile(file).sha256;
        initFrom = { file, sha256: sha };
      }
      if (!initFrom && config.init === 'lineage')
        throw new ConfigError(`init: lineage "${config.lineage}" has no committed checkpoint yet`);
      const m: Manifest = { runId, config, ...(initFrom ? { initFrom } : {}), backend: ctx.backend };
      await store.putJson(keys.manifest(runId), m);
      ctx.log(
        `run ${runId}: config ${config.name}, seed ${config.seed}, init ${initFrom ? JSON.stringify(initFrom) : config.init}, backend ${ctx.backend}`,
      );
      return { runId, config, done: {}, order: topoOrder(config.nodes) };
    },
    /** One object per node (parallel nodes finishing together must not race on a shared manifest). */
    async markNodeDone(runId: string, nodeId: string, result: NodeResult): Promise<void> {
      await store.putJson(keys.result(runId, nodeId), result);
    },
    /** Point the lineage at this run's last training node's final commit. */
    async advanceLineage(runId: string, lineage: string): Promise<void> {
      const m = await readManifest(runId);
      const order = topoOrder(m.config.nodes).filter((id) => ['sft', 'rl'].includes(m.config.nodes[id].kind));
      const last = order[order.length - 1];
      if (!last) return;
      const step = (await nodeResults(runId, m.config))[last]?.checkpoint?.step ?? 0;
      await store.putJson(keys.lineage(checkId('lineage', lineage)), { runId, nodeId: last, step });
    },
  };
}
