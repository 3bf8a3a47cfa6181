/**
 * `e3 deploy`: the versions of e3's Worker Deployment (workers/deployment.ts), which one takes
 * new runs (current), and whether an old one still has runs pinned to it (draining) or none
 * (drained: its workers can be stopped). Read from Temporal: the deployment's description and
 * a visibility count of the open workflows pinned to each version.
 */
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { TASK_QUEUE, TRAINER_QUEUE } from '../activities/types';

const { WorkerDeploymentVersionStatus: S, VersionDrainageStatus: D, TaskQueueType: Q } = temporal.api.enums.v1;

/** The shared queues a version must serve to take new runs: workflows on e3, trainer opens on e3-trainer. */
export const REQUIRED_QUEUES = [
  { name: TASK_QUEUE, type: Q.TASK_QUEUE_TYPE_WORKFLOW, what: 'workflow' },
  { name: TASK_QUEUE, type: Q.TASK_QUEUE_TYPE_ACTIVITY, what: 'activity' },
  { name: TRAINER_QUEUE, type: Q.TASK_QUEUE_TYPE_ACTIVITY, what: 'activity' },
] as const;

/** The required queues a version's workers have not registered (none: it can take new runs). */
export function missingQueues(registered: { name?: string | null; type?: number | null }[]): string[] {
  return REQUIRED_QUEUES.filter((q) => !registered.some((r) => r.name === q.name && r.type === q.type)).map(
    (q) => `${q.name} (${q.what} tasks)`,
  );
}

export interface VersionState {
  buildId: string;
  /** current, ramping, draining, drained, inactive (registered, never current), or created. */
  status: string;
  createdMs?: number;
  /** The server's drainage check (it looks every few minutes; `running` below is live). */
  drainage?: { status: 'draining' | 'drained'; checkedMs?: number };
  /** Open workflows pinned to this version now (visibility), and the pipelines (runs) among them. */
  running: number;
  runs: string[];
}

export interface DeploymentState {
  name: string;
  current?: string;
  ramping?: { buildId: string; percent: number };
  versions: VersionState[];
  conflictToken?: Uint8Array | null;
}

const STATUS: Record<number, string> = {
  [S.WORKER_DEPLOYMENT_VERSION_STATUS_INACTIVE]: 'inactive',
  [S.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT]: 'current',
  [S.WORKER_DEPLOYMENT_VERSION_STATUS_RAMPING]: 'ramping',
  [S.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING]: 'draining',
  [S.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED]: 'drained',
  [S.WORKER_DEPLOYMENT_VERSION_STATUS_CREATED]: 'created',
};

const ms = (t: { seconds?: unknown; nanos?: number | null } | null | undefined): number | undefined =>
  t?.seconds ? Number(t.seconds) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : undefined;

/** A version's search-attribute value (TemporalWorkerDeploymentVersion): `<deployment>:<build id>`. */
const versionKey = (deployment: string, buildId: string) => `${deployment}:${buildId}`;
const quote = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

export class DeploymentNotFound extends Error {
  constructor(name: string) {
    super(
      `deployment ${name} does not exist yet: start a worker with E3_DEPLOYMENT=${name} (it registers its version and, being the first, makes it current)`,
    );
    this.name = 'DeploymentNotFound';
  }
}

export async function deploymentState(client: Client, name: string): Promise<DeploymentState> {
  const namespace = client.options.namespace;
  let d: temporal.api.workflowservice.v1.IDescribeWorkerDeploymentResponse;
  try {
    d = await client.workflowService.describeWorkerDeployment({ namespace, deploymentName: name });
  } catch (e) {
    if ((e as { code?: number }).code === 5) throw new DeploymentNotFound(name);
    throw e;
  }
  const info = d.workerDeploymentInfo ?? {};
  const routing = info.routingConfig ?? {};
  const versions: VersionState[] = [];
  for (const s of info.versionSummaries ?? []) {
    const buildId = s.deploymentVersion?.buildId ?? '';
    const runs: string[] = [];
    let running = 0;
    const query = `TemporalWorkerDeploymentVersion = ${quote(versionKey(name, buildId))} AND ExecutionStatus = "Running"`;
    for await (const wf of client.workflow.list({ query })) {
      running++;
      if (wf.type === 'pipeline') runs.push(wf.workflowId);
    }
    const drain = s.drainageInfo?.status ?? s.drainageStatus;
    versions.push({
      buildId,
      status: STATUS[s.status ?? 0] ?? 'unknown',
      createdMs: ms(s.createTime),
      ...(drain === D.VERSION_DRAINAGE_STATUS_DRAINING || drain === D.VERSION_DRAINAGE_STATUS_DRAINED
        ? {
            drainage: {
              status: drain === D.VERSION_DRAINAGE_STATUS_DRAINED ? ('drained' as const) : ('draining' as const),
              checkedMs: ms(s.drainageInfo?.lastCheckedTime),
            },
          }
        : {}),
      running,
      runs: runs.sort(),
    });
  }
  versions.sort((a, b) => (b.createdMs ?? 0) - (a.createdMs ?? 0));
  return {
    name,
    current: routing.currentDeploymentVersion?.buildId || undefined,
    ...(routing.rampingDeploymentVersion?.buildId
      ? { ramping: { buildId: routing.rampingDeploymentVersion.buildId, percent: routing.rampingVersionPercentage ?? 0 } }
      : {}),
    versions,
    conflictToken: d.conflictToken,
  };
}

const ago = (nowMs: number, t: number): string => {
  const s = Math.max(0, Math.round((nowMs - t) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${(s / 3600).toFixed(1)}h ago`;
};

/**
 * One version's line. A version that is neither current nor ramping is "draining" while any
 * workflow is still pinned to it and "drained" once none is (the live count decides; the
 * server's own check, which runs every few minutes, is shown beside it).
 */
export function formatVersionLine(v: VersionState, nowMs: number): string {
  const active = v.status === 'current' || v.status === 'ramping';
  const live = active ? v.status : v.running > 0 ? 'draining' : v.status === 'inactive' || v.status === 'created' ? 'inactive' : 'drained';
  const pinned =
    v.running === 0
      ? 'no open workflow pinned to it'
      : `${v.running} open workflow${v.running === 1 ? '' : 's'} pinned to it${v.runs.length ? ` (run${v.runs.length === 1 ? '' : 's'} ${v.runs.join(', ')})` : ''}`;
  const server = v.drainage
    ? `; server: ${v.drainage.status}${v.drainage.checkedMs ? `, checked ${ago(nowMs, v.drainage.checkedMs)}` : ''}`
    : '';
  const stop = !active && v.running === 0 && live === 'drained' ? '; its workers can be stopped' : '';
  return `  ${v.buildId}  ${live}: ${pinned}${server}${stop}${v.createdMs ? `; registered ${ago(nowMs, v.createdMs)}` : ''}`;
}

export function formatDeployment(s: DeploymentState, nowMs: number): string[] {
  const head = `deployment ${s.name}: current version ${s.current ?? 'none (new runs go to unversioned workers)'}${s.ramping ? `, ramping ${s.ramping.buildId} at ${s.ramping.percent}%` : ''}`;
  return [head, ...s.versions.map((v) => formatVersionLine(v, nowMs))];
}

/**
 * Makes `buildId` the current version: new runs (and unversioned or auto-upgrade workflows) go
 * to it; runs pinned to the previous one finish there. The version must have registered (a
 * worker of it polled), so that new runs find a worker. Returns the previous current version.
 */
export async function setCurrent(client: Client, name: string, buildId: string): Promise<{ previous?: string; state: DeploymentState }> {
  const before = await deploymentState(client, name);
  if (!before.versions.some((v) => v.buildId === buildId)) {
    throw new Error(
      `build ${buildId}: no such version of deployment ${name} (registered: ${before.versions.map((v) => v.buildId).join(', ') || 'none'}); start its workers with E3_DEPLOYMENT=${name} E3_BUILD_ID=${buildId} first`,
    );
  }
  if (before.current === buildId) return { previous: buildId, state: before };
  const namespace = client.options.namespace;
  const v = await client.workflowService.describeWorkerDeploymentVersion({
    namespace,
    deploymentVersion: { deploymentName: name, buildId },
  });
  const missing = missingQueues(v.workerDeploymentVersionInfo?.taskQueueInfos ?? []);
  if (missing.length)
    throw new Error(
      `build ${buildId} cannot take new runs: no worker of it has polled ${missing.join(', ')}; start a worker with --queues all (or general and trainer ones) of that build`,
    );
  await client.workflowService.setWorkerDeploymentCurrentVersion({
    namespace,
    deploymentName: name,
    buildId,
    conflictToken: before.conflictToken,
    // Each worker process also polls its own session queue (e3-trainer-<host>-<pid>-...), which
    // no other version has: the server would refuse the switch because those queues "become
    // unversioned". Only workflows pinned to the old version schedule onto them (the sessions
    // they opened there), and pinned tasks keep going to the old version's workers.
    ignoreMissingTaskQueues: true,
    identity: `e3 deploy ${process.pid}`,
  });
  return { previous: before.current, state: await deploymentState(client, name) };
}

/**
 * No current version: new runs go to unversioned workers again (versioning turned off, or
 * rolled back to workers started without E3_DEPLOYMENT). Runs pinned to a version finish on it.
 */
export async function clearCurrent(client: Client, name: string): Promise<{ previous?: string; state: DeploymentState }> {
  const before = await deploymentState(client, name);
  if (before.current === undefined) return { state: before };
  await client.workflowService.setWorkerDeploymentCurrentVersion({
    namespace: client.options.namespace,
    deploymentName: name,
    buildId: '',
    conflictToken: before.conflictToken,
    ignoreMissingTaskQueues: true,
    identity: `e3 deploy ${process.pid}`,
  });
  return { previous: before.current, state: await deploymentState(client, name) };
}
