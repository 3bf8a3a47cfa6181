/**
 * The `e3` command as users run it (a child process with the test servers' environment):
 * its error paths name what is wrong and start nothing; a run started and watched through
 * it shows up in `e3 ls` and `e3 report`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkflowNotFoundError } from '@temporalio/client';
import { keys } from '../../storage/layout';
import { client, e3, inProcessWorker, store, uid } from './env';

/** Neither a workflow nor a manifest exists for `runId`. */
async function nothingStarted(runId: string) {
  const c = await client();
  try {
    await assert.rejects(c.client.workflow.getHandle(runId).describe(), WorkflowNotFoundError, `workflow ${runId} exists`);
  } finally {
    await c.close();
  }
  assert.equal(await store().exists(keys.manifest(runId)), false, `manifest of ${runId} exists`);
}

test('servers unreachable: e3 names the address, says how to start them, and returns promptly', async () => {
  const r = await e3(['run', 'tiny'], { TEMPORAL_ADDRESS: '127.0.0.1:1' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Temporal at 127\.0\.0\.1:1 is not reachable/);
  assert.match(r.stderr, /e3 up/);
  assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
  assert.equal(r.stdout, '');

  const s = await e3(['ls'], { E3_S3_PORT: '1' });
  assert.notEqual(s.code, 0);
  assert.match(s.stderr, /object store at http:\/\/127\.0\.0\.1:1 is not reachable/);
  assert.match(s.stderr, /e3 up/);
  assert.ok(s.ms < 15_000, `took ${s.ms} ms`);
});

test('a bad config override or config name is refused, naming the field, and starts nothing', async () => {
  const runId = uid('badset');
  let r = await e3(['run', 'tiny', '--id', runId, '--set', 'nodes.stage1.iterations=-1']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /nodes\.stage1\.iterations/);
  assert.doesNotMatch(r.stdout, /started run/);
  await nothingStarted(runId);

  r = await e3(['run', 'tiny', '--id', runId, '--set', 'nodes.stage1.iters=3']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /nodes\.stage1: Unrecognized key: "iters"/);
  r = await e3(['run', 'tiny', '--id', runId, '--set', 'noequals']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--set noequals: expected key=value/);
  r = await e3(['run', 'no-such-config', '--id', runId]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /no config named "no-such-config" \(known: .*tiny/);
  await nothingStarted(runId);
});

test('e3 configs lists user configs, then experiments, each with its description; an unknown name lists user configs only, nearest first', async () => {
  const r = await e3(['configs']);
  assert.equal(r.code, 0, r.stderr);
  const names = r.stdout
    .trim()
    .split('\n')
    .map((l) => l.split(/\s+/)[0]);
  const first = names.findIndex((n) => n.startsWith('experiments/'));
  assert.ok(first > 0 && names.slice(first).every((n) => n.startsWith('experiments/')), names.join(' '));
  assert.ok(names.includes('tiny') && names.includes('experiments/ablation-256'));
  assert.match(r.stdout, /^demo +Finding \(a\)/m);
  const u = await e3(['run', 'dmeo']);
  assert.notEqual(u.code, 0);
  assert.match(u.stderr, /no config named "dmeo" \(known: demo, /);
  assert.doesNotMatch(u.stderr, /ablation-256/);
  // an experiment's override error names its file and the field
  const x = await e3(['run', 'experiments/ablation-256', '--set', 'nodes.grpo.budget=-1']);
  assert.notEqual(x.code, 0);
  assert.match(x.stderr, /configs\/experiments\/ablation-256\.json: nodes\.grpo\.budget/);
});

test('ids with path separators are refused, naming the field', async () => {
  let r = await e3(['run', 'tiny', '--id', '../x']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--id: "\.\.\/x" is not a valid id/);
  r = await e3(['run', 'tiny', '--id', 'a/b']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--id: "a\/b" is not a valid id/);

  const runId = uid('badlineage');
  r = await e3(['run', 'tiny', '--id', runId, '--lineage', '../up']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--lineage: "\.\.\/up" is not a valid id/);
  await nothingStarted(runId);

  for (const cmd of ['watch', 'resume', 'report']) {
    r = await e3([cmd, '../x']);
    assert.notEqual(r.code, 0, cmd);
    assert.match(r.stderr, /runId: "\.\.\/x" is not a valid id/, cmd);
  }
});

test('e3 run --watch follows a run to the end; e3 ls and e3 report then show it', async () => {
  const w = await inProcessWorker();
  const runId = uid('cli-run');
  try {
    const before = await e3(['ls']);
    assert.equal(before.code, 0, before.stderr);
    assert.ok(!before.stdout.split('\n').includes(runId));

    const r = await e3(['run', 'tiny', '--id', runId, '--watch']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`started run ${runId} \\(workflow pipeline on task queue e3`));
    assert.match(r.stdout, new RegExp(`run ${runId} completed`));
    assert.match(r.stdout, /^ {2}stage2 \(rl\) ckpt 2\b/m);
    assert.match(r.stdout, /^ {2}eval \(eval\) .*eval\/b64\/pass@1=\d/m);

    // Again with the same id while it is finished: a resume, which skips every node.
    const again = await e3(['resume', runId]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /skipped already-finished nodes: warmstart, stage1, select, stage2, eval, report/);

    const ls = await e3(['ls']);
    assert.equal(ls.code, 0, ls.stderr);
    const lines = ls.stdout.split('\n');
    const at = lines.indexOf(runId);
    assert.ok(at >= 0, `ls does not list ${runId}:\n${ls.stdout}`);
    const mine: string[] = [];
    for (let i = at + 1; i < lines.length && lines[i].startsWith('  '); i++) mine.push(lines[i].trim());
    assert.deepEqual(mine.sort(), [
      'stage1: latest checkpoint step 4',
      'stage2: latest checkpoint step 2',
      'warmstart: latest checkpoint step 12',
    ]);

    const rep = await e3(['report', runId]);
    assert.equal(rep.code, 0, rep.stderr);
    assert.equal(rep.stdout.split('\n')[0], `s3://${store().bucket}/${keys.report(runId)}`);
    const none = await e3(['report', uid('never-ran')]);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /has no report yet/);
  } finally {
    await w.stop();
  }
});
