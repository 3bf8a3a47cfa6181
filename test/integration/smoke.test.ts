import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { TASK_QUEUE } from '../../activities/types';
import { ROOT, client, inProcessWorker, infra, store, uid } from './env';

const s3url = () => `http://127.0.0.1:${process.env.E3_S3_PORT}`;

test('a real worker runs a workflow on the dev server (activity round-trips the store)', async () => {
  const w = await inProcessWorker();
  const c = await client();
  try {
    const r = await c.client.workflow.execute('ping', { taskQueue: TASK_QUEUE, workflowId: uid('ping'), args: [{ note: 'smoke' }] });
    assert.equal(r.roundTrip, true);
    assert.ok(['wasm', 'cpu', 'tensorflow'].includes(r.backend), r.backend);
  } finally {
    await c.close();
    await w.stop();
  }
});

test('an object is put, listed, read back byte-identical and deleted through minio', async () => {
  const s = store();
  const bytes = new Uint8Array(300_000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  const key = `smoke/${uid('obj')}.bin`;
  const { sha256 } = await s.put(key, bytes);
  assert.equal(sha256, createHash('sha256').update(bytes).digest('hex'));
  assert.deepEqual(await s.list('smoke/'), [key]);
  const back = await s.get(key);
  assert.equal(Buffer.compare(back, Buffer.from(bytes)), 0);
  await s.remove([key]);
  assert.deepEqual(await s.list('smoke/'), []);
  assert.equal(await s.exists(key), false);
});

test('the S3 endpoint rejects unsigned and wrongly signed requests', async () => {
  const unsigned = await fetch(`${s3url()}/${process.env.E3_S3_BUCKET}?list-type=2`);
  assert.equal(unsigned.status, 403);
  const { ObjectStore } = await import('../../storage/store');
  const bad = new ObjectStore({ ...store().cfg, secretKey: 'not-the-secret' });
  await assert.rejects(
    bad.list(''),
    (e: { code?: string }) => e.code === 'SignatureDoesNotMatch' || e.code === 'AccessDenied' || e.code === 'InvalidAccessKeyId',
  );
});

test('search attributes are registered and the Web UI answers', async () => {
  const r = spawnSync(
    path.join(ROOT, 'infra', 'bin', 'temporal'),
    ['operator', 'search-attribute', 'list', '--address', `127.0.0.1:${process.env.E3_TEMPORAL_PORT}`],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  for (const a of ['E3Run', 'E3Node', 'E3Iteration', 'E3Budget', 'E3PassAt1']) assert.match(r.stdout, new RegExp(`\\b${a}\\b`));
  const ui = await fetch(`http://127.0.0.1:${process.env.E3_TEMPORAL_UI_PORT}/`);
  assert.equal(ui.status, 200);
});

test('a workflow started before a Temporal restart is still there afterwards and completes', async () => {
  const id = uid('restart');
  let c = await client();
  await c.client.workflow.start('ping', { taskQueue: TASK_QUEUE, workflowId: id, args: [{ waitMs: 3000, note: 'restart' }] });
  await c.close();
  const pidFile = path.join(process.env.E3_DATA_DIR!, 'pids', 'temporal.pid');
  const pid = Number(readFileSync(pidFile, 'utf8'));
  assert.equal(infra('down', 'temporal'), 0);
  // infra/down stops exactly the recorded process, and it is gone.
  assert.throws(() => process.kill(pid, 0), /ESRCH/);
  assert.equal(existsSync(pidFile), false);
  assert.equal(infra('up', 'temporal'), 0);
  const w = await inProcessWorker();
  c = await client();
  try {
    const h = c.client.workflow.getHandle(id);
    const r = await h.result();
    assert.equal(r.note, 'restart');
    assert.equal(r.roundTrip, true);
    assert.equal((await h.describe()).status.name, 'COMPLETED');
  } finally {
    await c.close();
    await w.stop();
  }
});

test('a taken port gives a clear error, not a hang', () => {
  const r = spawnSync('bash', [path.join(ROOT, 'infra', 'up'), 's3'], {
    env: { ...process.env, E3_DATA_DIR: path.join(process.env.E3_DATA_DIR!, 'other'), E3_S3_PORT: process.env.E3_S3_PORT },
    encoding: 'utf8',
    timeout: 20000,
  });
  // A second stack on the same port: refused at once, naming the port and its variable.
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /port \d+ for s3 .* already taken.*E3_S3_PORT/);
});
