/** Worker Deployment settings (workers/deployment.ts) and `e3 deploy`'s reading of a deployment (cli/deploy.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { defaultBuildId, deploymentVersion, workerDeploymentOptions } from '../../workers/deployment';
import { formatDeployment, formatVersionLine, missingQueues } from '../../cli/deploy';
import type { VersionState } from '../../cli/deploy';

const ROOT = path.resolve(__dirname, '..', '..');

test('versioning is off without E3_DEPLOYMENT: no deployment options', () => {
  assert.equal(deploymentVersion({}), undefined);
  assert.equal(deploymentVersion({ E3_DEPLOYMENT: '' }), undefined);
  assert.deepEqual(workerDeploymentOptions(undefined), {});
});

test('E3_DEPLOYMENT + E3_BUILD_ID name the version; workflows are PINNED', () => {
  const v = deploymentVersion({ E3_DEPLOYMENT: 'e3', E3_BUILD_ID: '0.2.0-abc' });
  assert.deepEqual(v, { deploymentName: 'e3', buildId: '0.2.0-abc' });
  assert.deepEqual(workerDeploymentOptions(v), {
    workerDeploymentOptions: { version: v, useWorkerVersioning: true, defaultVersioningBehavior: 'PINNED' },
  });
});

test('the default build id is the package version and the checkout commit', () => {
  const version = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  assert.equal(defaultBuildId(ROOT), `${version}-${commit}`);
  assert.deepEqual(deploymentVersion({ E3_DEPLOYMENT: 'e3' }, ROOT), { deploymentName: 'e3', buildId: `${version}-${commit}` });
});

test('bad settings get one error naming the variable', () => {
  assert.throws(() => deploymentVersion({ E3_BUILD_ID: 'x' }), /E3_BUILD_ID is set \("x"\) but E3_DEPLOYMENT is not/);
  assert.throws(
    () => deploymentVersion({ E3_DEPLOYMENT: 'e3.prod', E3_BUILD_ID: 'x' }),
    /E3_DEPLOYMENT must be a deployment name: letters, digits.*got "e3.prod"/,
  );
  assert.throws(
    () => deploymentVersion({ E3_DEPLOYMENT: 'e3', E3_BUILD_ID: 'a b' }),
    /E3_BUILD_ID must be a build id: letters, digits.*got "a b"/,
  );
  assert.throws(() => deploymentVersion({ E3_DEPLOYMENT: 'e3', E3_BUILD_ID: 'x'.repeat(256) }), /E3_BUILD_ID must be/);
  const dir = mkdtempSync(path.join(tmpdir(), 'e3-nogit-'));
  try {
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ version: '1.0.0' }));
    assert.throws(
      () => deploymentVersion({ E3_DEPLOYMENT: 'e3' }, dir),
      /E3_BUILD_ID is not set and .* is not a git checkout: set E3_BUILD_ID/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a version takes new runs only once it serves e3 (workflows, activities) and e3-trainer', () => {
  const WF = 1;
  const ACT = 2;
  assert.deepEqual(
    missingQueues([
      { name: 'e3', type: WF },
      { name: 'e3', type: ACT },
      { name: 'e3-trainer', type: ACT },
      { name: 'e3-trainer-h-1-ab', type: ACT },
    ]),
    [],
  );
  assert.deepEqual(
    missingQueues([
      { name: 'e3', type: WF },
      { name: 'e3', type: ACT },
    ]),
    ['e3-trainer (activity tasks)'],
  );
  assert.deepEqual(missingQueues([{ name: 'e3-trainer', type: ACT }]), ['e3 (workflow tasks)', 'e3 (activity tasks)']);
});

test('e3 deploy status: current, draining while workflows are pinned to an old version, drained once none is', () => {
  const now = 1_000_000_000;
  const v = (o: Partial<VersionState>): VersionState => ({ buildId: 'A', status: 'draining', running: 0, runs: [], ...o });
  assert.equal(
    formatVersionLine(v({ status: 'current', running: 3, runs: ['r1'] }), now),
    '  A  current: 3 open workflows pinned to it (run r1)',
  );
  assert.equal(
    formatVersionLine(
      v({ running: 2, runs: ['r1', 'r2'], drainage: { status: 'draining', checkedMs: now - 30_000 }, createdMs: now - 600_000 }),
      now,
    ),
    '  A  draining: 2 open workflows pinned to it (runs r1, r2); server: draining, checked 30s ago; registered 10m ago',
  );
  // The live count decides (the server's check may lag by minutes).
  assert.equal(
    formatVersionLine(v({ drainage: { status: 'draining' } }), now),
    '  A  drained: no open workflow pinned to it; server: draining; its workers can be stopped',
  );
  assert.equal(
    formatVersionLine(v({ status: 'drained', drainage: { status: 'drained' } }), now),
    '  A  drained: no open workflow pinned to it; server: drained; its workers can be stopped',
  );
  assert.equal(formatVersionLine(v({ status: 'inactive' }), now), '  A  inactive: no open workflow pinned to it');
  // A version that is no longer current with pinned workflows is draining even before the server says so.
  assert.equal(formatVersionLine(v({ status: 'inactive', running: 1 }), now), '  A  draining: 1 open workflow pinned to it');
  assert.deepEqual(formatDeployment({ name: 'e3', versions: [] }, now), [
    'deployment e3: current version none (new runs go to unversioned workers)',
  ]);
  assert.deepEqual(
    formatDeployment(
      { name: 'e3', current: 'B', ramping: { buildId: 'C', percent: 10 }, versions: [v({ buildId: 'B', status: 'current' })] },
      now,
    ),
    ['deployment e3: current version B, ramping C at 10%', '  B  current: no open workflow pinned to it'],
  );
});
