/**
 * Integration tier: starts the real servers from infra/ on test ports with a fresh data
 * dir, runs test/integration/*.test.ts against them (one file at a time: they share the
 * servers and two cores; workflows a file left running are terminated before the next), and
 * stops exactly what it started.
 *   tsx test/integration/run.ts [file-filter...]
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const env: NodeJS.ProcessEnv = {
  ...process.env,
  E3_DATA_DIR: process.env.E3_TEST_DATA_DIR ?? path.join(ROOT, '.e3', 'test'),
  E3_TEMPORAL_PORT: process.env.E3_TEST_TEMPORAL_PORT ?? '17233',
  E3_TEMPORAL_UI_PORT: process.env.E3_TEST_TEMPORAL_UI_PORT ?? '18233',
  E3_S3_PORT: process.env.E3_TEST_S3_PORT ?? '17070',
  E3_S3_ACCESS_KEY: 'e3-test-access',
  E3_S3_SECRET_KEY: 'e3-test-secret-0123456789abcdef',
  E3_S3_BUCKET: 'e3-test',
  // Tests that assert bytes run on wasm whatever else installed (ml/backend.ts); E3_TEST_BACKEND tries another.
  E3_BACKEND: process.env.E3_TEST_BACKEND ?? 'wasm',
};
delete env.TEMPORAL_ADDRESS;
delete env.E3_TEMPORAL_ADDRESS;
delete env.E3_S3_ENDPOINT;
// Tests that scrape a worker choose its metrics ports themselves (test/integration/metrics.test.ts).
delete env.E3_METRICS_PORT;
delete env.E3_SDK_METRICS_PORT;
// Workers are unversioned unless a test makes them versions itself (test/integration/deploy.test.ts).
delete env.E3_DEPLOYMENT;
delete env.E3_BUILD_ID;

const filters = process.argv.slice(2);
const files = readdirSync(__dirname)
  .filter((f) => f.endsWith('.test.ts') && (filters.length === 0 || filters.some((x) => f.includes(x))))
  .sort()
  .map((f) => path.join('test', 'integration', f));

rmSync(env.E3_DATA_DIR!, { recursive: true, force: true });
const sh = (script: string, ...args: string[]) =>
  spawnSync('bash', [path.join(ROOT, 'infra', script), ...args], { env, stdio: 'inherit' }).status ?? 1;
let rc = sh('up');
try {
  if (rc === 0) {
    // One file at a time, each in its own runner, the shared server swept in between (./sweep.ts).
    const failed: string[] = [];
    for (const f of files) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', f], {
        env,
        stdio: 'inherit',
        cwd: ROOT,
      });
      if ((r.status ?? 1) !== 0) failed.push(f);
      spawnSync(process.execPath, ['--import', 'tsx', path.join(__dirname, 'sweep.ts'), path.basename(f)], {
        env,
        stdio: 'inherit',
        cwd: ROOT,
      });
    }
    if (failed.length > 0) console.log(`\nintegration: ${failed.length} of ${files.length} file(s) failed: ${failed.join(', ')}`);
    else console.log(`\nintegration: all ${files.length} file(s) passed`);
    rc = failed.length > 0 ? 1 : 0;
  }
} finally {
  sh('down');
}
process.exit(rc);
