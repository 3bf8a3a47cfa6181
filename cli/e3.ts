/**
 * The `e3` command: servers, workers, runs, schedules, reports.
 *   e3 up | down | status          the embedded Temporal + S3 servers (infra/)
 *   e3 worker [--queues] [--concurrency]
 *   e3 configs                     the configs: user configs, then experiments (configs/experiments/)
 *   e3 run <config> [--id ID] [--set key=json ...] [--watch]
 *   e3 watch <run> | resume <run> | cancel <run> | ls | report <run>
 *   e3 schedule create|list|describe|trigger|pause|unpause|delete
 *   e3 deploy status | set-current <build> | off   Worker Deployment versions (workers/deployment.ts)
 *   e3 start                       up + worker + demo run + watch (what `npm start` does)
 */
import {
  Client,
  Connection,
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
} from '@temporalio/client';
import type { ScheduleHandle, WorkflowHandle } from '@temporalio/client';
import { msToNumber } from '@temporalio/common/lib/time';
import { spawn, spawnSync } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { ROLLOUT_QUEUE, TASK_QUEUE, TRAINER_QUEUE } from '../activities/types';
import type { PipelineInput, Progress } from '../activities/types';
import { configDescription, configNames, configRunName, loadConfig, userConfigNames } from '../configs/load';
import { checkId, keys } from '../storage/layout';
import { loadCheckpoint } from '../storage/checkpoints';
import { ObjectStore, sha256Hex } from '../storage/store';
import { StoreTlsError } from '../storage/errors';
import { ServersDownError, temporalTarget } from '../workers/connection';
import { checkBuildId, checkDeploymentName } from '../workers/deployment';
import type { PipelineResult } from '../workflows/pipeline';
import { DEFAULT_PRIORITY_KEY, formatTrainerQueue, trainerQueue, trainingNodes } from './trainers';
import { clearCurrent, deploymentState, formatDeployment, setCurrent } from './deploy';
import { loadTaskModules } from '../ml/tasks';

const ROOT = path.resolve(__dirname, '..');

async function connect(): Promise<Client> {
  const t = temporalTarget();
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: t.address, tls: t.tls, apiKey: t.apiKey, connectTimeout: '3s' });
    await connection.workflowService.getSystemInfo({});
  } catch (e) {
    throw new ServersDownError(`Temporal at ${t.address}`, e);
  }
  return new Client({ connection, namespace: t.namespace });
}

/** The object store, its bucket checked: unreachable → how to start it, not a bare ECONNREFUSED. */
async function openStore(): Promise<ObjectStore> {
  const store = ObjectStore.fromEnv();
  try {
    await store.ensureBucket();
  } catch (e) {
    if (e instanceof StoreTlsError) throw e; // names the endpoint and the certificate problem itself
    const code = (e as { code?: string }).code ?? '';
    if (['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT'].includes(code))
      throw new ServersDownError(`the object store at ${store.cfg.endpoint}`, e);
    throw new Error(`the object store at ${store.cfg.endpoint}: ${(e as Error).message}`);
  }
  return store;
}

/** A run's pipeline workflow: its id is the run id, except for scheduled runs (found by E3Run). */
async function runHandle(client: Client, runId: string): Promise<WorkflowHandle> {
  const handle = client.workflow.getHandle(runId);
  try {
    await handle.describe();
    return handle;
  } catch (e) {
    if (!(e instanceof WorkflowNotFoundError)) throw e;
  }
  for await (const wf of client.workflow.list({ query: `E3Run = "${runId}" AND WorkflowType = "pipeline"` }))
    return client.workflow.getHandle(wf.workflowId);
  throw new WorkflowNotFoundError(`run ${runId}: no such run in Temporal`, runId, undefined);
}

function infra(script: 'up' | 'down' | 'status', ...args: string[]): number {
  const r = spawnSync('bash', [path.join(ROOT, 'infra', script), ...args], { stdio: 'inherit' });
  return r.status ?? 1;
}

function parseSets(sets: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of sets) {
    const i = s.indexOf('=');
    if (i <= 0) throw new Error(`--set ${s}: expected key=value (value as JSON, e.g. seed=3 or nodes.stage1.iterations=4)`);
    const k = s.slice(0, i);
    let v: unknown;
    try {
      v = JSON.parse(s.slice(i + 1));
    } catch {
      v = s.slice(i + 1);
    }
    const parts = k.split('.');
    let o = out;
    for (const p of parts.slice(0, -1)) o = (o[p] ??= {}) as Record<string, unknown>;
    o[parts[parts.length - 1]] = v;
  }
  return out;
}

/** Live progress: the node running now, its iteration, reward, truncation, pass@1, ETA. */
async function watch(client: Client, runId: string): Promise<PipelineResult> {
  const handle = await runHandle(client, runId);
  const started = Date.now();
  const seen = new Map<string, { t0: number; i0: number }>();
  let last = '';
  const tick = async () => {
    const children = client.workflow.list({ query: `E3Run = "${runId}" AND ExecutionStatus = "Running"` });
    for await (const wf of children) {
      if (wf.workflowId === handle.workflowId) continue;
      try {
        const p = await client.workflow.getHandle(wf.workflowId).query<Progress>('progress');
        const s = seen.get(p.nodeId) ?? { t0: Date.now(), i0: p.iteration };
        seen.set(p.nodeId, s);
        const rate = (p.iteration - s.i0) / Math.max(1e-3, (Date.now() - s.t0) / 1000);
        const eta = rate > 0 ? `${Math.round((p.total - p.iteration) / rate)}s` : '?';
        const width = 24;
        const fill = Math.round((width * p.iteration) / Math.max(1, p.total));
        const m = p.metrics;
        const f = (k: string) => (typeof m[k] === 'number' ? m[k].toFixed(3) : '-');
        const line =
          `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${p.nodeId} (${p.kind}) ${p.iteration}/${p.total}` +
          (p.kind === 'rl'
            ? ` budget ${p.budget} reward ${f('train/reward_mean')} trunc ${f('train/truncated_frac')} len ${f('train/response_len')}`
            : p.kind === 'sft'
              ? ` loss ${f('sft/loss')}`
              : '') +
          `${p.rewinds ? ` rewinds ${p.rewinds}` : ''}${p.paused ? ' PAUSED' : ''} ETA ${eta}`;
        if (line !== last) console.log(`${((Date.now() - started) / 1000).toFixed(0).padStart(5)}s ${line}`);
        last = line;
      } catch {
        /* the child finished between list and query */
      }
    }
  };
  const result = handle.result() as Promise<PipelineResult>;
  let done = false;
  void result.finally(() => (done = true)).catch(() => undefined);
  while (!done) {
    await tick().catch(() => undefined);
    await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
  }
  return result;
}

function printResult(r: PipelineResult) {
  console.log(`run ${r.runId} completed${r.skipped.length ? ` (skipped already-finished nodes: ${r.skipped.join(', ')})` : ''}`);
  for (const [node, res] of Object.entries(r.results)) {
    const ms = Object.entries(res.metrics ?? {}).filter(([k]) => /pass@1$|reward_mean$|select\/budget/.test(k));
    console.log(
      `  ${node} (${res.kind})${res.checkpoint ? ` ckpt ${res.checkpoint.step}` : ''}${res.budget ? ` budget ${res.budget}` : ''} ${ms.map(([k, v]) => `${k}=${v.toFixed(3)}`).join(' ')}`,
    );
  }
  if (r.report) console.log(`report: ${r.report.path}  (object s3://${ObjectStore.fromEnv().bucket}/${r.report.key})`);
}

/**
 * `--priority <key>`: Temporal's task priority for the run's workflows and activities (1 is
 * served first; unset is the server's default, 3 of 5). Child workflows and activities inherit
 * it, so a run's trainer opens wait ahead of those of runs with a higher key.
 */
function parsePriority(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 5)
    throw new Error(`--priority must be an integer from 1 (served first) to 5 (last); the default is ${DEFAULT_PRIORITY_KEY} (got ${v})`);
  return n;
}

async function startRun(client: Client, input: PipelineInput & { runId: string }, priorityKey?: number) {
  try {
    await client.workflow.start('pipeline', {
      taskQueue: TASK_QUEUE,
      workflowId: input.runId,
      args: [input],
      ...(priorityKey !== undefined ? { priority: { priorityKey } } : {}),
    });
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError)
      throw new Error(`run ${input.runId} is already running; use \`e3 watch ${input.runId}\``);
    throw e;
  }
  console.log(
    `started run ${input.runId} (workflow pipeline on task queue ${TASK_QUEUE}; Web UI: ${process.env.E3_TEMPORAL_UI ?? `http://127.0.0.1:${process.env.E3_TEMPORAL_UI_PORT ?? 8233}`}/namespaces/default/workflows/${encodeURIComponent(input.runId)})`,
  );
}

// Tasks from outside ml/ (docs/TASKS.md), so a config naming one validates here as on the workers.
try {
  loadTaskModules(process.env.E3_TASK_MODULES);
} catch (e) {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(2);
}

const program = new Command('e3').description('durable e3 training on Temporal').showHelpAfterError();

program
  .command('up')
  .description('start the embedded Temporal and S3 servers')
  .action(() => process.exit(infra('up')));
program
  .command('down')
  .description('stop the embedded servers')
  .action(() => process.exit(infra('down')));
/** Temporal's TaskQueueType values (temporal.api.enums.v1.TaskQueueType). */
const QUEUE_TYPES = [
  { type: 1, name: 'workflow' },
  { type: 2, name: 'activity' },
] as const;

const ago = (ms: number): string => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${(s / 3600).toFixed(1)}h ago`;
};

/**
 * The workers polling e3's shared queues (Temporal's task-queue description: each poller's
 * identity, pid@host, and its last poll), then each running node of each running run: its
 * iteration and the time of its last step.
 */
async function printStatus(client: Client): Promise<void> {
  for (const queue of [TASK_QUEUE, TRAINER_QUEUE, ROLLOUT_QUEUE]) {
    const pollers = new Map<string, { kinds: string[]; last: number }>();
    for (const { type, name } of QUEUE_TYPES) {
      if (queue !== TASK_QUEUE && name === 'workflow') continue; // activities only
      const r = await client.workflowService.describeTaskQueue({
        namespace: client.options.namespace,
        taskQueue: { name: queue },
        taskQueueType: type,
      });
      for (const p of r.pollers ?? []) {
        const id = p.identity ?? '?';
        const at = p.lastAccessTime?.seconds
          ? Number(p.lastAccessTime.seconds) * 1000 + Math.floor((p.lastAccessTime.nanos ?? 0) / 1e6)
          : 0;
        const e = pollers.get(id) ?? { kinds: [], last: 0 };
        e.kinds.push(name);
        e.last = Math.max(e.last, at);
        pollers.set(id, e);
      }
    }
    console.log(
      `task queue ${queue}: ${pollers.size === 0 ? 'no worker polling' : `${pollers.size} worker${pollers.size === 1 ? '' : 's'}`}`,
    );
    for (const [id, p] of [...pollers].sort())
      console.log(`  ${id} (${p.kinds.join(' + ')} tasks), last poll ${p.last ? ago(p.last) : '?'}`);
  }
  let runs = 0;
  for await (const wf of client.workflow.list({ query: `WorkflowType = "pipeline" AND ExecutionStatus = "Running"` })) {
    runs++;
    console.log(`running: ${wf.workflowId}`);
    const run = (wf.searchAttributes?.E3Run as string[] | undefined)?.[0] ?? wf.workflowId;
    for await (const node of client.workflow.list({
      query: `E3Run = "${run}" AND ExecutionStatus = "Running" AND WorkflowType != "pipeline"`,
    })) {
      try {
        const p = await client.workflow.getHandle(node.workflowId).query<Progress>('progress');
        const step = p.kind === 'sft' ? 'step' : 'iteration';
        console.log(
          `  ${p.nodeId} (${p.kind}) ${step} ${p.iteration}/${p.total}${p.paused ? ' PAUSED' : ''}${p.rewinds ? `, ${p.rewinds} rewind(s)` : ''}, last progress ${p.updatedAt ? `${new Date(p.updatedAt).toISOString()} (${ago(p.updatedAt)})` : '?'}`,
        );
      } catch {
        // Nodes without training progress (select-budget, eval, report) have no progress query.
        console.log(`  ${node.workflowId} (${node.type}) running since ${node.startTime.toISOString()}`);
      }
    }
  }
  if (runs === 0) console.log('no run running');
  // Who holds each trainer, and each open waiting for one, in the order it will be served.
  for (const line of formatTrainerQueue(trainerQueue(await trainingNodes(client)), Date.now())) console.log(line);
  // With versioned workers: which build takes new runs, and which still finish runs pinned to them.
  if (process.env.E3_DEPLOYMENT) {
    try {
      for (const line of formatDeployment(await deploymentState(client, process.env.E3_DEPLOYMENT), Date.now())) console.log(line);
    } catch (e) {
      console.log(`deployment ${process.env.E3_DEPLOYMENT}: ${(e as Error).message}`);
    }
  }
}

program
  .command('status')
  .description("server status, the workers polling each queue, and running runs with each node's progress")
  .action(async () => {
    const rc = infra('status');
    if (rc === 0) await printStatus(await connect());
    process.exit(rc);
  });

program
  .command('worker')
  .description('run a worker process')
  .option('--queues <which>', 'all | general | trainer | trainer-only | rollout', 'all')
  .option('--concurrency <n>', 'general-queue activity concurrency', '2')
  .action(async (o) => {
    const { QUEUE_CHOICES, startWorkers } = await import('../workers/worker');
    if (!QUEUE_CHOICES.includes(o.queues)) {
      console.error(`e3 worker: --queues must be one of ${QUEUE_CHOICES.join(', ')} (got ${o.queues})`);
      process.exit(2);
    }
    const w = await startWorkers({ queues: o.queues, concurrency: Number(o.concurrency) });
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => w.shutdown());
    await w.run;
  });

program
  .command('configs')
  .description('list the configs with their descriptions: user configs, then experiments')
  .action(() => {
    const names = configNames();
    const width = Math.max(...names.map((n) => n.length));
    for (const n of names) console.log(`${n.padEnd(width)}  ${configDescription(n)}`);
  });

program
  .command('run <config>')
  .description(`start a run (configs: ${userConfigNames().join(', ')}; \`e3 configs\` lists all)`)
  .option('--id <runId>', 'run id (default: <config name>-<random>)')
  .option('--set <key=value...>', 'config overrides', [])
  .option('--lineage <name>', 'lineage to warm-start from and advance')
  .option('--watch', 'follow progress until it ends')
  .option('--priority <key>', `1-5: a lower key is served first when runs wait for a trainer (default ${DEFAULT_PRIORITY_KEY})`)
  .action(async (config: string, o) => {
    const overrides = parseSets(o.set);
    const priority = parsePriority(o.priority);
    loadConfig(config, overrides); // fail here, with the field named, before anything starts
    const runId = checkId('--id', o.id ?? `${configRunName(config)}-${Math.random().toString(36).slice(2, 8)}`);
    if (o.lineage) checkId('--lineage', o.lineage);
    const client = await connect();
    await startRun(client, { config, overrides, runId, ...(o.lineage ? { lineage: o.lineage } : {}) }, priority);
    if (o.watch) printResult(await watch(client, runId));
  });

program
  .command('watch <runId>')
  .description('follow a run until it ends')
  .action(async (runId: string) => printResult(await watch(await connect(), checkId('runId', runId))));

program
  .command('resume <runId>')
  .description('continue a terminated, cancelled or failed run from its last commits')
  .option('--priority <key>', `1-5, as for e3 run (default ${DEFAULT_PRIORITY_KEY})`)
  .action(async (runId: string, o) => {
    checkId('runId', runId);
    const priority = parsePriority(o.priority);
    const client = await connect();
    try {
      const d = await (await runHandle(client, runId)).describe();
      if (d.status.name === 'RUNNING') throw new Error(`run ${runId} is still running; nothing to resume`);
    } catch (e) {
      if (!(e instanceof WorkflowNotFoundError)) throw e;
    }
    const store = await openStore();
    if (!(await store.exists(keys.manifest(runId)))) throw new Error(`run ${runId} has no manifest in the object store: nothing to resume`);
    await startRun(client, { runId }, priority);
    printResult(await watch(client, runId));
  });

program
  .command('cancel <runId>')
  .description('cancel a running run: its activities stop within seconds, its commits stay (continue it with e3 resume)')
  .action(async (runId: string) => {
    checkId('runId', runId);
    const client = await connect();
    const h = await runHandle(client, runId);
    const d = await h.describe();
    if (d.status.name !== 'RUNNING') throw new Error(`run ${runId} is ${d.status.name.toLowerCase()}, not running: nothing to cancel`);
    await h.cancel();
    const t0 = Date.now();
    for (;;) {
      const s = (await h.describe()).status.name;
      if (s !== 'RUNNING') {
        console.log(
          `run ${runId} ${s.toLowerCase()} after ${((Date.now() - t0) / 1000).toFixed(1)} s; its committed checkpoints are kept (e3 resume ${runId} continues it)`,
        );
        return;
      }
      if (Date.now() - t0 > 120_000) throw new Error(`run ${runId} still running 120 s after the cancellation request`);
      await new Promise((r) => setTimeout(r, 250));
    }
  });

program
  .command('ls')
  .description('runs and their checkpoints in the object store')
  .action(async () => {
    const store = await openStore();
    // Delimiter listings (runs, then their nodes): never the rollouts and checkpoint blobs.
    for (const runPrefix of await store.listPrefixes('runs/')) {
      console.log(runPrefix.split('/')[1]);
      for (const nodePrefix of await store.listPrefixes(runPrefix)) {
        const latest = `${nodePrefix}ckpt/LATEST`;
        if (!(await store.exists(latest))) continue;
        const l = await store.getJson<{ step: number }>(latest);
        console.log(`  ${nodePrefix.split('/')[2]}: latest checkpoint step ${l.step}`);
      }
    }
  });

program
  .command('export <runId> <nodeId> <file>')
  .description("write a node's latest committed weights to a file (+ <file>.sha256), e.g. the base checkpoint")
  .action(async (runId: string, nodeId: string, file: string) => {
    const store = await openStore();
    const c = await loadCheckpoint(store, checkId('runId', runId), checkId('nodeId', nodeId), (step, err) =>
      console.error(`skipped ${runId}/${nodeId}@${step}: ${err}`),
    );
    if (!c) throw new Error(`${runId}/${nodeId} has no committed checkpoint`);
    const weights = c.files['weights.bin'];
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, weights);
    renameSync(tmp, file);
    const sha = sha256Hex(weights);
    writeFileSync(`${file}.sha256`, `${sha}  ${path.basename(file)}\n`);
    console.log(`${file}: ${weights.length} bytes, sha256 ${sha} (from ${runId}/${nodeId} step ${c.manifest.step})`);
  });

program
  .command('report <runId>')
  .description("print where a run's report is")
  .action(async (runId: string) => {
    const store = await openStore();
    const key = keys.report(checkId('runId', runId));
    if (!(await store.exists(key))) throw new Error(`run ${runId} has no report yet`);
    console.log(
      `s3://${store.bucket}/${key}\n${path.join(process.env.E3_DATA_DIR ?? path.join(ROOT, '.e3'), 'reports', runId, 'index.html')}`,
    );
  });

const schedule = program.command('schedule').description('scheduled retraining (Temporal Schedules)');
/** A schedule that exists (a missing one is named, not reported as the scheduler's internal workflow). */
async function scheduleHandle(id: string): Promise<ScheduleHandle> {
  const handle = (await connect()).schedule.getHandle(id);
  try {
    await handle.describe();
  } catch (e) {
    if (e instanceof ScheduleNotFoundError) throw new Error(`schedule ${id} does not exist (see \`e3 schedule list\`)`);
    throw e;
  }
  return handle;
}

schedule
  .command('create <id>')
  .requiredOption('--config <name>')
  .requiredOption('--lineage <name>')
  .option('--every <interval>', 'e.g. 1d, 6h', '1d')
  .option('--paused')
  .action(async (id: string, o) => {
    checkId('schedule id', id);
    checkId('--lineage', o.lineage);
    let every: number;
    try {
      every = msToNumber(o.every);
    } catch {
      every = NaN;
    }
    if (!(every >= 1000)) throw new Error(`--every: ${JSON.stringify(o.every)} is not an interval of at least 1s (e.g. 1d, 6h, 30m)`);
    loadConfig(o.config, { lineage: o.lineage });
    const client = await connect();
    try {
      await client.schedule.create({
        scheduleId: id,
        spec: { intervals: [{ every: o.every }] },
        action: {
          type: 'startWorkflow',
          workflowType: 'pipeline',
          taskQueue: TASK_QUEUE,
          args: [{ config: o.config, lineage: o.lineage }],
        },
        policies: { overlap: ScheduleOverlapPolicy.SKIP },
        state: { paused: Boolean(o.paused) },
      });
    } catch (e) {
      if (e instanceof ScheduleAlreadyRunning)
        throw new Error(`schedule ${id} already exists (\`e3 schedule delete ${id}\` first to replace it)`);
      throw e;
    }
    console.log(`schedule ${id} created: ${o.config} every ${o.every}, lineage ${o.lineage}, overlap skip${o.paused ? ', paused' : ''}`);
  });
schedule.command('list').action(async () => {
  const client = await connect();
  for await (const s of client.schedule.list()) console.log(`${s.scheduleId}${s.state.paused ? ' (paused)' : ''}`);
});
schedule.command('describe <id>').action(async (id: string) => {
  const d = await (await scheduleHandle(id)).describe();
  console.log(
    JSON.stringify(
      {
        id: d.scheduleId,
        paused: d.state.paused,
        overlap: d.policies.overlap,
        recentActions: d.info.recentActions.map((a) => a.action.workflow.workflowId),
        next: d.info.nextActionTimes,
      },
      null,
      2,
    ),
  );
});
schedule.command('trigger <id>').action(async (id: string) => {
  await (await scheduleHandle(id)).trigger(ScheduleOverlapPolicy.SKIP);
  console.log(`schedule ${id} triggered (skipped if its last run is still running)`);
});
schedule.command('pause <id>').action(async (id: string) => {
  await (await scheduleHandle(id)).pause();
  console.log(`schedule ${id} paused`);
});
schedule.command('unpause <id>').action(async (id: string) => {
  await (await scheduleHandle(id)).unpause();
  console.log(`schedule ${id} unpaused`);
});
schedule.command('delete <id>').action(async (id: string) => {
  await (await scheduleHandle(id)).delete();
  console.log(`schedule ${id} deleted`);
});

const deploy = program
  .command('deploy')
  .description(
    'Worker Deployment versions: which build takes new runs, and which old ones still finish runs pinned to them (docs/OPERATIONS.md "Deploying a new version")',
  );
const deploymentName = (o: { name?: string }): string =>
  o.name !== undefined ? checkDeploymentName('--name', o.name) : checkDeploymentName('E3_DEPLOYMENT', process.env.E3_DEPLOYMENT || 'e3');
const nameOption = '--name <deployment>';
const nameHelp = 'deployment name (default: E3_DEPLOYMENT, else e3)';
deploy
  .command('status', { isDefault: true })
  .description('each version: current, or draining (runs still pinned to it) / drained')
  .option(nameOption, nameHelp)
  .action(async (o) => {
    for (const line of formatDeployment(await deploymentState(await connect(), deploymentName(o)), Date.now())) console.log(line);
  });
deploy
  .command('set-current <build>')
  .description('send new runs to version <build> (its workers must be polling); runs pinned to the old version finish on it')
  .option(nameOption, nameHelp)
  .action(async (build: string, o) => {
    checkBuildId('<build>', build);
    const name = deploymentName(o);
    const { previous, state } = await setCurrent(await connect(), name, build);
    if (previous === build) console.log(`${name}/${build} is already the current version`);
    else console.log(`current version of ${name}: ${build} (was ${previous ?? 'none: unversioned workers'})`);
    for (const line of formatDeployment(state, Date.now())) console.log(line);
    drainHint(name, previous === build ? undefined : previous, state);
  });
deploy
  .command('off')
  .description(
    'no current version: new runs go to unversioned workers (started without E3_DEPLOYMENT); pinned runs finish on their versions',
  )
  .option(nameOption, nameHelp)
  .action(async (o) => {
    const name = deploymentName(o);
    const { previous, state } = await clearCurrent(await connect(), name);
    console.log(
      previous
        ? `${name} has no current version (was ${previous}): new runs go to unversioned workers`
        : `${name} has no current version already`,
    );
    for (const line of formatDeployment(state, Date.now())) console.log(line);
    drainHint(name, previous, state);
  });
function drainHint(name: string, previous: string | undefined, state: Awaited<ReturnType<typeof deploymentState>>) {
  const old = state.versions.find((v) => v.buildId === previous);
  if (old)
    console.log(
      old.running > 0
        ? `keep ${name}/${previous}'s workers running until \`e3 deploy status\` shows it drained`
        : `${name}/${previous} is drained: its workers can be stopped`,
    );
}

program
  .command('start')
  .description('servers up, a worker, the demo run, and watch it (npm start)')
  .option('--config <name>', 'config to run', 'demo')
  .action(async (o) => {
    if (infra('up') !== 0) process.exit(1);
    // One worker process; its compute pool has a thread per core (E3_THREADS).
    const n = Math.max(1, Number(process.env.E3_START_WORKERS ?? 1));
    // Each worker serves Prometheus metrics (docs/OPERATIONS.md "Metrics"): E3_METRICS_PORT
    // (default 9464) for the first, two ports further for each next (the SDK's exporter takes the one between).
    const base = Number(process.env.E3_METRICS_PORT || 9464);
    if (!Number.isInteger(base) || base < 1 || base + 2 * n > 65535)
      throw new Error(`E3_METRICS_PORT must be a TCP port (got "${process.env.E3_METRICS_PORT}")`);
    const workers = Array.from({ length: n }, (_, i) => {
      const port = base + 2 * i;
      console.log(`worker ${i + 1} of ${n}: Prometheus metrics on http://${process.env.E3_METRICS_HOST || '127.0.0.1'}:${port}/metrics`);
      return spawn(process.execPath, [...process.execArgv, __filename, 'worker'], {
        stdio: 'inherit',
        env: { ...process.env, E3_METRICS_PORT: String(port), E3_SDK_METRICS_PORT: String(port + 1) },
      });
    });
    try {
      const client = await connect();
      const runId = `${configRunName(o.config)}-${Date.now().toString(36)}`;
      await startRun(client, { config: o.config, runId });
      printResult(await watch(client, runId));
      console.log(
        'servers are still up (Web UI http://127.0.0.1:' + (process.env.E3_TEMPORAL_UI_PORT ?? '8233') + '); stop them with `npx e3 down`',
      );
    } finally {
      for (const w of workers) w.kill('SIGTERM');
    }
  });

program
  .parseAsync()
  .then(() => process.exit(process.exitCode ?? 0))
  .catch((err) => {
    console.error(`e3: ${err instanceof Error ? err.message : err}`);
    process.exit(1);
  });
