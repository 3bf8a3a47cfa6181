/**
 * A worker process: workflows and general activities on `e3`, `openTrainer` on
 * `e3-trainer`, this process's own trainer-session queue, and rollout and evaluation parts on
 * `e3-rollout` (`--queues rollout`: that queue alone, a machine that only samples). The ML work runs on the
 * process's compute pool (compute/pool.ts: E3_THREADS threads, one per core by default), so
 * the event loop stays free for polling and heartbeats. Run several on several machines.
 * With E3_METRICS_PORT set, it serves Prometheus metrics there (workers/metrics.ts).
 *   tsx workers/worker.ts [--queues all|general|trainer|trainer-only|rollout] [--concurrency N]
 */
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import type { WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { formatWithOptions } from 'node:util';
import { createActivities } from '../activities';
import { ComputePool } from '../compute/pool';
import { ROLLOUT_QUEUE, TASK_QUEUE, TRAINER_QUEUE } from '../activities/types';
import { processMetrics } from '../activities/metrics';
import { ObjectStore, dataDir } from '../storage/store';
import { StoreTlsError } from '../storage/errors';
import { loadTaskModules, registeredTasks } from '../ml/tasks';
import { TrainerAdmission, runClosed } from './admission';
import { announceTrainerLine, parseLinePollMs } from './line';
import { ServersDownError, temporalTarget } from './connection';
import { metricsAddress, sdkTelemetry, serveMetrics, watchSchedules } from './metrics';
import { adoptIfNoCurrent, deploymentVersion, formatVersion, workerDeploymentOptions } from './deployment';

export interface WorkerOptions {
  /**
   * `all`: every queue; `general`: e3; `trainer`: the trainer queues and e3-rollout;
   * `trainer-only`: the trainer queues alone (its threads only train: rollout parts go to
   * other workers); `rollout`: e3-rollout.
   */
  queues: 'all' | 'general' | 'trainer' | 'trainer-only' | 'rollout';
  /** Activities run at once on the general queue and on the rollout queue (trainer queues always run one at a time). */
  concurrency: number;
  log?: (msg: string) => void;
  /** A compute pool to use (tests: one with injected faults), else one of E3_THREADS threads; closed with the worker either way. */
  pool?: ComputePool;
}

/** The values of `--queues`. */
export const QUEUE_CHOICES: ReadonlyArray<WorkerOptions['queues']> = ['all', 'general', 'trainer', 'trainer-only', 'rollout'];

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
/** The workflow bundle, built once per process. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({
    workflowsPath: require.resolve('../workflows'),
    logger: { ...console, trace: () => {}, debug: () => {}, info: () => {}, log: () => {} } as never,
  });
  return bundle;
}

let runtimeInstalled = false;
/** The process's metrics server (one per process, whatever the number of startWorkers calls). */
let metricsServer: Promise<Server> | undefined;
/** Logged by the SDK for a worker with activities only: the trainer queues are that on purpose. */
const EXPECTED_WARNING = 'No workflows registered, not polling for workflow tasks';
const format = (x: unknown): string => formatWithOptions({ colors: false }, x);

/**
 * E3_WORK_AHEAD: `1` (the default) or `0`. On, a trainer session trains its next commit window
 * while its workflow records the last one (activities/env.ts LiveSession.workingAhead).
 */
export function parseWorkAhead(v: string | undefined): boolean {
  if (v === undefined || v === '' || v === '1') return true;
  if (v === '0') return false;
  throw new Error(`E3_WORK_AHEAD must be 1 (on, the default) or 0 (off), got "${v}"`);
}

export async function startWorkers(opts: WorkerOptions): Promise<{ run: Promise<void>; shutdown: () => void; queue: string }> {
  const metricsAt = metricsAddress();
  const general = opts.queues === 'all' || opts.queues === 'general';
  const trainer = opts.queues === 'all' || opts.queues === 'trainer' || opts.queues === 'trainer-only';
  const rollout = opts.queues !== 'general' && opts.queues !== 'trainer-only';
  if (!runtimeInstalled) {
    // The SDK's INFO lines (worker state changes) drown the training log; keep warnings,
    // except the one every activity-only queue (the trainer queues) raises by design.
    const level = (process.env.E3_SDK_LOG_LEVEL as 'WARN' | undefined) ?? 'WARN';
    Runtime.install({
      logger: new DefaultLogger(level, (e) => {
        if (e.message === EXPECTED_WARNING) return;
        // The SDK's own format (test/chaos.ts parses "Activity failed" entries from it).
        const date = format(new Date(Number(e.timestampNanos / 1_000_000n)));
        process.stderr.write(`${date} [${e.level}] ${e.message}${e.meta === undefined ? '' : ` ${format(e.meta)}`}\n`);
      }),
      ...(metricsAt ? { telemetryOptions: sdkTelemetry(metricsAt) } : {}),
    });
    runtimeInstalled = true;
  }
  const log = opts.log ?? ((m: string) => console.log(`[worker ${process.pid}] ${m}`));
  // A bad E3_DEPLOYMENT / E3_BUILD_ID fails here, before any connection (workers/deployment.ts).
  const version = deploymentVersion();
  // Tasks from outside ml/ (docs/TASKS.md): the compute threads load the same list.
  const taskModules = loadTaskModules(process.env.E3_TASK_MODULES);
  if (taskModules.length) log(`task modules: ${taskModules.join(', ')} (tasks: ${registeredTasks().join(', ')})`);
  const target = temporalTarget();
  let connection: NativeConnection;
  try {
    connection = await NativeConnection.connect({ address: target.address, tls: target.tls, apiKey: target.apiKey });
  } catch (e) {
    throw new ServersDownError(`Temporal at ${target.address}`, e);
  }
  const metrics = processMetrics();
  const store = ObjectStore.fromEnv();
  store.onError = (op, code) => metrics.storeError(op, code);
  try {
    await store.ensureBucket();
  } catch (e) {
    // An untrusted certificate is not a server that is down: say what to fix, and stop.
    if (e instanceof StoreTlsError) throw e;
    throw new ServersDownError(`the object store at ${store.cfg.endpoint}`, e);
  }
  const queue = `${TRAINER_QUEUE}-${os.hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const maxSessions = Number(process.env.E3_TRAINER_SESSIONS ?? 1);
  const workAhead = parseWorkAhead(process.env.E3_WORK_AHEAD);
  const pool = opts.pool ?? (await ComputePool.start());
  metrics.watchPool(pool);
  const admission = new TrainerAdmission();
  if (metricsAt && !metricsServer) {
    metricsServer = serveMetrics(metrics, metricsAt);
    metricsServer.catch(() => (metricsServer = undefined));
    await metricsServer;
    log(
      `metrics on http://${metricsAt.host}:${metricsAt.port}/metrics (e3's and the Temporal SDK's; the SDK's own exporter: http://127.0.0.1:${metricsAt.sdkPort}/metrics)`,
    );
  }
  // Workers of the general queue report each schedule's last outcome (e3_schedule_last_run_failed)
  // and tell each node waiting for a trainer its place in the line (workers/line.ts).
  let stopSchedules = () => {};
  let stopLine = async () => {};
  const lineMs = general ? parseLinePollMs(process.env.E3_LINE_POLL_MS) : 0;
  const watchSchedulesToo = metricsAt && general;
  const client =
    watchSchedulesToo || lineMs > 0 || trainer
      ? new Client({
          connection: await Connection.connect({ address: target.address, tls: target.tls, apiKey: target.apiKey }),
          namespace: target.namespace,
        })
      : undefined;
  if (watchSchedulesToo) {
    const pollMs = Number(process.env.E3_SCHEDULE_POLL_MS || 60_000);
    if (!Number.isInteger(pollMs) || pollMs < 1000)
      throw new Error(`E3_SCHEDULE_POLL_MS must be an integer of at least 1000 (ms), got "${process.env.E3_SCHEDULE_POLL_MS}"`);
    stopSchedules = watchSchedules(metrics, client!, pollMs);
  }
  // A session whose node workflow run ended without closing it (terminated while paused or
  // between windows) frees its slot as soon as an open waits, not after SESSION_IDLE_MS.
  if (trainer) admission.watchRuns(runClosed(client!));
  if (lineMs > 0) stopLine = announceTrainerLine(client!, lineMs, log);
  const activities = createActivities({
    store,
    queue,
    backend: pool.backend,
    backendReason: pool.backendReason,
    pool,
    reportDir: path.join(dataDir(), 'reports'),
    log,
    maxSessions,
    workAhead,
    metrics,
    admission,
  });
  // Heartbeats go out every second (the SDK would otherwise throttle them to 0.8 x the
  // heartbeat timeout, leaving a 5-6 s timeout with ~1 s of slack: a loaded machine then
  // loses sessions that are alive, as measured under CI + experiments).
  // With E3_DEPLOYMENT, every queue of the process registers as this build's version and
  // workflows are PINNED to the version they start on (workers/deployment.ts).
  const common = {
    connection,
    namespace: target.namespace,
    activities,
    maxHeartbeatThrottleInterval: '1 second' as const,
    defaultHeartbeatThrottleInterval: '1 second' as const,
    ...workerDeploymentOptions(version),
  };
  const workers: Worker[] = [];
  if (general) {
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: TASK_QUEUE,
        workflowBundle: await workflowBundle(),
        maxConcurrentActivityTaskExecutions: opts.concurrency,
        // A workflow cached on a worker that died waits this long on its sticky queue before
        // any worker may take it (default 10 s): most of a lost session's recovery time.
        stickyQueueScheduleToStartTimeout: '2 seconds',
      }),
    );
  }
  if (trainer) {
    // Polled only while a session slot is free (workers/admission.ts): opens that find every
    // trainer full wait in the task queue, in arrival order, instead of being refused and retried.
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: TRAINER_QUEUE,
        tuner: admission.tuner(),
        interceptors: { activity: [admission.recorder()] },
      }),
    );
    // Each session's activities are sequential; sessions must not queue behind each other.
    workers.push(
      await Worker.create({
        ...common,
        taskQueue: queue,
        maxConcurrentActivityTaskExecutions: Math.max(1, maxSessions),
        interceptors: { activity: [admission.interceptor()] },
      }),
    );
  }
  if (rollout) {
    // Parts of fanned-out RL iterations and evaluations (activities/rollout.ts): each spreads
    // its rows over the compute pool, so a few at once only queue there.
    workers.push(await Worker.create({ ...common, taskQueue: ROLLOUT_QUEUE, maxConcurrentActivityTaskExecutions: opts.concurrency }));
  }
  const polled = [...(general ? [TASK_QUEUE] : []), ...(trainer ? [TRAINER_QUEUE, queue] : []), ...(rollout ? [ROLLOUT_QUEUE] : [])];
  // E3_MEMORY_LOG_MS: log this process's RSS and each compute thread's wasm heap and live
  // tensors that often (npm run soak reads it).
  const every = Number(process.env.E3_MEMORY_LOG_MS ?? 0);
  const memTimer =
    every > 0
      ? setInterval(() => {
          pool.memory().then(
            (m) =>
              log(
                `memory rss=${process.memoryUsage().rss} heap=${m.map((x) => x.heap).join(',')} tensors=${m.map((x) => x.tensors).join(',')} sessions=${m.map((x) => x.sessions).join(',')}`,
              ),
            () => undefined,
          );
        }, every)
      : undefined;
  const run = Promise.all(workers.map((w) => w.run())).then(async () => {
    if (memTimer) clearInterval(memTimer);
    stopSchedules();
    await stopLine();
    await client?.connection.close();
    await pool.close();
    await connection.close();
  });
  const shutdown = () => workers.forEach((w) => w.shutdown());
  // The first version of a deployment makes itself current once its pollers are registered
  // (a trainer-only process has no workflow queue to take runs: it never does).
  let versionNote = '';
  if (version) {
    versionNote = ` as version ${formatVersion(version)}`;
    if (general) {
      const deployConnection = await Connection.connect({ address: target.address, tls: target.tls, apiKey: target.apiKey });
      try {
        versionNote += `; ${await adoptIfNoCurrent(new Client({ connection: deployConnection, namespace: target.namespace }), version)}`;
      } catch (e) {
        shutdown();
        await run.catch(() => undefined);
        // A server without Worker Deployments answers UNIMPLEMENTED (12): say what to change.
        if ((e as { code?: number }).code === 12)
          throw new Error(
            `E3_DEPLOYMENT=${version.deploymentName}: Temporal at ${target.address} does not serve Worker Deployments (${(e as Error).message}); unset E3_DEPLOYMENT to run unversioned workers`,
          );
        throw e;
      } finally {
        await deployConnection.close();
      }
    }
  }
  log(
    `polling ${polled.join(' ')} on ${target.address}${versionNote} (backend ${pool.backend}: ${pool.backendReason}; ${pool.size} compute thread${pool.size === 1 ? '' : 's'})`,
  );
  return { run, queue, shutdown };
}

async function main() {
  const args = process.argv.slice(2);
  const get = (flag: string, dflt: string) => {
    const i = args.indexOf(flag);
    return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
  };
  const queues = get('--queues', 'all');
  if (!QUEUE_CHOICES.includes(queues as WorkerOptions['queues']))
    throw new Error(`--queues must be one of ${QUEUE_CHOICES.join(', ')} (got ${queues})`);
  const concurrency = Number(get('--concurrency', '2'));
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new Error(`--concurrency must be a positive integer`);
  const w = await startWorkers({ queues: queues as WorkerOptions['queues'], concurrency });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => w.shutdown());
  await w.run;
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
