/**
 * Recorded histories of every workflow type replay against the current workflow code without
 * nondeterminism. Fixtures are kept per recording, never re-recorded in place:
 * test/fixtures/histories/<commit>/ holds the tiny DAG's histories as the workflows of that
 * commit wrote them (`npm run record-histories` adds a directory for HEAD). Every directory
 * replays, so a change that would break a run recorded by an older release fails here; such
 * a change goes behind `patched()` (docs/OPERATIONS.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { workflowBundle } from '../../workers/worker';

const DIR = path.join(__dirname, '..', 'fixtures', 'histories');
const versions = readdirSync(DIR)
  .filter((d) => statSync(path.join(DIR, d)).isDirectory())
  .sort();
const files = versions.flatMap((v) =>
  readdirSync(path.join(DIR, v))
    .filter((f) => f.endsWith('.json'))
    .map((f) => path.join(v, f)),
);

test('every recorded version covers every workflow of the tiny DAG', () => {
  assert.ok(versions.length >= 2, `fixtures from at least two releases (${versions})`);
  for (const v of versions) {
    for (const t of ['pipeline', 'warmstart', 'stage1', 'select', 'stage2', 'eval', 'report'])
      assert.ok(files.includes(path.join(v, `${t}.json`)), `missing fixture ${v}/${t}.json`);
  }
});

test('recorded histories replay without nondeterminism', async () => {
  const bundle = await workflowBundle();
  const histories = files.map((f) => ({
    workflowId: f.replace(/\.json$/, '').replace(path.sep, '/'),
    history: historyFromJSON(JSON.parse(readFileSync(path.join(DIR, f), 'utf8'))),
  }));
  let n = 0;
  for await (const r of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
    assert.equal(r.error, undefined, `${r.workflowId}: ${r.error}`);
    n++;
  }
  assert.equal(n, files.length);
});
