/**
 * The object store over TLS: a second versitygw serves https with a certificate from a CA made
 * for this test (openssl). A worker with E3_S3_ENDPOINT=https://… and the CA trusted
 * (NODE_EXTRA_CA_CERTS) runs the tiny DAG, its objects landing on that gateway; without the CA
 * the worker stops on its own with an error naming the endpoint and the certificate problem,
 * and an activity that meets the certificate fails non-retryable (ObjectStoreTLS) instead of
 * being retried.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { createActivities } from '../../activities';
import { ErrorTypes, TASK_QUEUE } from '../../activities/types';
import { ObjectStore } from '../../storage/store';
import { StoreTlsError } from '../../storage/errors';
import { ROOT, client, store, uid } from './env';
import { freePorts, start, waitFor } from './procs';
import type { Proc } from './procs';

const BUCKET = 'e3-tls';
let dir: string;
let endpoint: string;
let gateway: Proc | undefined;
const workers: Proc[] = [];

/** A CA, and a server certificate for 127.0.0.1 / localhost signed by it. */
function makeCertificates(out: string): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: out, stdio: ['ignore', 'ignore', 'pipe'] });
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=e3 test CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  );
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  writeFileSync(
    path.join(out, 'server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n',
  );
  ssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '2',
    '-extfile',
    'server.ext',
  );
}

before(async () => {
  dir = path.join(process.env.E3_DATA_DIR!, 'tls');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.join(dir, 's3'), { recursive: true });
  makeCertificates(dir);
  const port = await freePorts(320);
  endpoint = `https://127.0.0.1:${port}`;
  gateway = start(
    path.join(ROOT, 'infra', 'bin', 'versitygw'),
    [
      '--port',
      `127.0.0.1:${port}`,
      '--cert',
      path.join(dir, 'server.pem'),
      '--key',
      path.join(dir, 'server.key'),
      'posix',
      path.join(dir, 's3'),
    ],
    {
      ...process.env,
      ROOT_ACCESS_KEY: process.env.E3_S3_ACCESS_KEY,
      ROOT_SECRET_KEY: process.env.E3_S3_SECRET_KEY,
      VGW_QUIET: 'true',
      VGW_HEALTH: '/health',
    },
  );
  await waitFor('the TLS gateway to answer its health check', 60_000, async () => {
    if (gateway!.child.exitCode !== null) throw new Error(`versitygw exited: ${gateway!.output()}`);
    const r = spawnSync('curl', ['-sf', '-o', '/dev/null', '--cacert', path.join(dir, 'ca.pem'), `${endpoint}/health`]);
    return r.status === 0 ? true : undefined;
  });
});

after(async () => {
  for (const w of workers) await w.stop(60_000);
  await gateway?.stop();
});

/** A worker process whose object store is the TLS gateway; `trust` adds the test CA. */
function tlsWorker(trust: boolean): Proc {
  const env: NodeJS.ProcessEnv = { ...process.env, E3_S3_ENDPOINT: endpoint, E3_S3_BUCKET: BUCKET };
  if (trust) env.NODE_EXTRA_CA_CERTS = path.join(dir, 'ca.pem');
  else delete env.NODE_EXTRA_CA_CERTS;
  const w = start(process.execPath, ['--import', 'tsx', path.join(ROOT, 'cli', 'e3.ts'), 'worker'], env);
  workers.push(w);
  return w;
}

test('the gateway serves https only with the test CA: plain curl refuses its certificate', () => {
  const r = spawnSync('curl', ['-s', '-o', '/dev/null', `${endpoint}/health`]);
  assert.equal(r.status, 60, 'curl without the CA must fail certificate verification (exit 60)');
});

test(
  'without the CA trusted, a worker stops on its own naming the endpoint and the certificate problem',
  { timeout: 300_000 },
  async () => {
    const w = tlsWorker(false);
    const code = await w.exited;
    assert.notEqual(code, 0);
    const out = w.output();
    assert.match(
      out,
      new RegExp(`the object store at ${endpoint.replace(/\./g, '\\.')} presented a TLS certificate this process does not accept`),
    );
    assert.match(out, /\((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY): /);
    assert.match(out, /NODE_EXTRA_CA_CERTS/);
    // Not the "servers are down" advice: the server is up, its certificate is the problem.
    assert.doesNotMatch(out, /npx e3 up/);
  },
);

test('an activity that meets the untrusted certificate fails non-retryable (ObjectStoreTLS), naming the endpoint', async () => {
  // This test process does not trust the test CA either.
  const s = new ObjectStore({ ...store().cfg, endpoint, bucket: BUCKET });
  await assert.rejects(s.exists('anything'), (e) => e instanceof StoreTlsError && e.endpoint === endpoint);
  const acts = createActivities({
    store: new ObjectStore({ ...store().cfg, endpoint, bucket: BUCKET }),
    queue: `tls-${process.pid}`,
    backend: 'wasm',
    reportDir: mkdtempSync(path.join(tmpdir(), 'e3-tls-')),
    log: () => {},
  });
  await assert.rejects(acts.prepareRun({ config: 'tiny', runId: uid('tls-untrusted') }), (e) => {
    assert.ok(e instanceof ApplicationFailure, String(e));
    assert.equal(e.type, ErrorTypes.storeTls);
    assert.equal(e.nonRetryable, true);
    assert.ok(e.message.includes(endpoint), e.message);
    return true;
  });
});

test('with the CA trusted (NODE_EXTRA_CA_CERTS), a worker runs the tiny DAG against the https store', { timeout: 1_500_000 }, async () => {
  const w = tlsWorker(true);
  await waitFor('the TLS worker to poll', 300_000, async () => {
    if (w.child.exitCode !== null) throw new Error(`worker exited: ${w.output()}`);
    return /polling e3 /.test(w.output()) ? true : undefined;
  });
  const runId = uid('tls-tiny');
  const c = await client();
  try {
    const h = await c.client.workflow.start('pipeline', { taskQueue: TASK_QUEUE, workflowId: runId, args: [{ config: 'tiny', runId }] });
    const r = (await h.result()) as { results: Record<string, { kind: string }> };
    assert.deepEqual(Object.keys(r.results).sort(), ['eval', 'report', 'select', 'stage1', 'stage2', 'warmstart']);
  } finally {
    await c.close();
  }
  // The run's objects are on the TLS gateway's disk (not on the plain-HTTP test store).
  const runDir = path.join(dir, 's3', BUCKET, 'runs', runId);
  assert.ok(existsSync(runDir), `${runDir} missing`);
  assert.ok(readdirSync(runDir).includes('stage2'));
  assert.equal(await store().exists(`runs/${runId}/manifest.json`), false);
});
