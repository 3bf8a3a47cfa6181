/**
 * Recorded histories of every workflow type replay against the current workflow code
 * without nondeterminism. Fixtures are recorded by the pipeline integration test
 * (`.e3/test/histories/`) and committed to test/fixtures/histories/ when a workflow
 * changes on purpose (`npm run record-histories`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { workflowBundle } from '../../workers/worker';

const DIR = path.join(__dirname, '..', 'fixtures', 'histories');
const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

test('fixtures cover every workflow of the tiny DAG', () => {
  for (const t of ['pipeline', 'warmstart', 'stage1', 'select', 'stage2', 'eval', 'report']) assert.ok(files.includes(`${t}.json`), `missing fixture ${t}.json`);
});

test('recorded histories replay without nondeterminism', async () => {
  const bundle = await workflowBundle();
  const histories = files.map((f) => ({ workflowId: f.replace(/\.json$/, ''), history: historyFromJSON(JSON.parse(readFileSync(path.join(DIR, f), 'utf8'))) }));
  let n = 0;
  for await (const r of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
    assert.equal(r.error, undefined, `${r.workflowId}: ${r.error}`);
    n++;
  }
  assert.equal(n, files.length);
});
