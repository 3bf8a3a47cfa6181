/**
 * Worker Deployments (Temporal worker versioning): with E3_DEPLOYMENT set, every worker of a
 * process registers its queues as one version of that deployment, `<deployment>` +
 * `<build id>`, and workflows are PINNED: a run's workflow tasks (and its children's, and the
 * activities it schedules on the deployment's queues) go to the build it started on until it
 * ends, while new runs go to the deployment's current version (`e3 deploy set-current`).
 * Unset, workers are unversioned, as before (docs/OPERATIONS.md "Deploying a new version").
 *   E3_DEPLOYMENT   deployment name (e.g. `e3`); unset or empty: versioning off
 *   E3_BUILD_ID     this build's id; default `<package version>-<git commit>` of the checkout
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Client } from '@temporalio/client';
import type { WorkerDeploymentVersion } from '@temporalio/common';

const ROOT = path.resolve(__dirname, '..');
/** Build ids and deployment names: what the server accepts, minus what a shell or a URL mangles. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_+-]*$/;
const BUILD = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;
const MAX = 255;

/** `<package version>-<short commit>` of the checkout at `root`; throws naming E3_BUILD_ID when there is no commit to name. */
export function defaultBuildId(root = ROOT): string {
  const version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  let commit: string;
  try {
    commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    throw new Error(
      `E3_BUILD_ID is not set and ${root} is not a git checkout: set E3_BUILD_ID to name this build (e.g. ${version}-<commit>)`,
    );
  }
  return `${version}-${commit}`;
}

/** This process's deployment version, or undefined where versioning is off (E3_DEPLOYMENT unset or empty). */
export function deploymentVersion(env: NodeJS.ProcessEnv = process.env, root = ROOT): WorkerDeploymentVersion | undefined {
  const deploymentName = env.E3_DEPLOYMENT ?? '';
  if (deploymentName === '') {
    if (env.E3_BUILD_ID)
      throw new Error(
        `E3_BUILD_ID is set ("${env.E3_BUILD_ID}") but E3_DEPLOYMENT is not: set E3_DEPLOYMENT (e.g. e3) to run this worker as a version of a Worker Deployment, or unset E3_BUILD_ID`,
      );
    return undefined;
  }
  checkDeploymentName('E3_DEPLOYMENT', deploymentName);
  return { deploymentName, buildId: checkBuildId('E3_BUILD_ID', env.E3_BUILD_ID || defaultBuildId(root)) };
}

/** `value` as a deployment name, or an error naming `field`. */
export function checkDeploymentName(field: string, value: string): string {
  if (!NAME.test(value) || value.length > MAX)
    throw new Error(`${field} must be a deployment name: letters, digits, "_", "+" or "-" (at most ${MAX}), got "${value}"`);
  return value;
}

/** `value` as a build id, or an error naming `field`. */
export function checkBuildId(field: string, value: string): string {
  if (!BUILD.test(value) || value.length > MAX)
    throw new Error(`${field} must be a build id: letters, digits, ".", "_", "+" or "-" (at most ${MAX}), got "${value}"`);
  return value;
}

/** Worker.create's options for `version` (PINNED by default), or none where versioning is off. */
export function workerDeploymentOptions(version: WorkerDeploymentVersion | undefined) {
  return version
    ? { workerDeploymentOptions: { version, useWorkerVersioning: true as const, defaultVersioningBehavior: 'PINNED' as const } }
    : {};
}

export const formatVersion = (v: { deploymentName?: string | null; buildId?: string | null }): string => `${v.deploymentName}/${v.buildId}`;

/** Whether a gRPC error is NOT_FOUND (5). */
const notFound = (e: unknown): boolean => (e as { code?: number }).code === 5;

/**
 * The first deployment: once this version's pollers are registered, make it current if the
 * deployment has no current version yet (otherwise no new run would reach any worker of it).
 * A deployment with a current version is left alone: only `e3 deploy set-current` moves it.
 * Returns what it did, for the worker's log.
 */
export async function adoptIfNoCurrent(client: Client, version: WorkerDeploymentVersion, timeoutMs = 60_000): Promise<string> {
  const svc = client.workflowService;
  const namespace = client.options.namespace;
  const t0 = Date.now();
  for (;;) {
    try {
      const d = await svc.describeWorkerDeployment({ namespace, deploymentName: version.deploymentName });
      const info = d.workerDeploymentInfo;
      const current = info?.routingConfig?.currentDeploymentVersion;
      if (current?.buildId)
        return current.buildId === version.buildId
          ? `this version is the current one`
          : `current version ${formatVersion(current)} (this one takes new runs after \`e3 deploy set-current ${version.buildId}\`)`;
      if (info?.versionSummaries?.some((s) => s.deploymentVersion?.buildId === version.buildId)) {
        try {
          await svc.setWorkerDeploymentCurrentVersion({
            namespace,
            deploymentName: version.deploymentName,
            buildId: version.buildId,
            conflictToken: d.conflictToken,
            identity: `e3 worker ${process.pid}`,
          });
          return `no current version: made this one current`;
        } catch (e) {
          // Another worker set one meanwhile (the conflict token moved): look again.
          if ((e as { code?: number }).code !== 9 && (e as { code?: number }).code !== 10) throw e;
        }
      }
    } catch (e) {
      if (!notFound(e)) throw e;
    }
    if (Date.now() - t0 > timeoutMs)
      throw new Error(
        `deployment ${version.deploymentName}: version ${version.buildId} was not registered within ${timeoutMs / 1000} s of polling`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}
