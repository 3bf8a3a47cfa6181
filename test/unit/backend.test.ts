/**
 * The backend a user gets is safe on every machine (ml/backend.ts): tfjs-node(-gpu) is taken
 * only for a visible GPU or by E3_BACKEND, never because the package installed; and the
 * tests that assert bytes run on wasm whatever got installed. A stand-in
 * `@tensorflow/tfjs-node-gpu` (the cpu kernels registered under the name `tensorflow`) plays
 * the package a user's machine with internet would install, with the GPU flag on and off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { gpuVisible } from '../../ml/backend';

const ROOT = path.resolve(__dirname, '..', '..');

test('a GPU is visible only through a device node or driver entry, and CUDA_VISIBLE_DEVICES or E3_GPU can hide it', () => {
  const none = mkdtempSync(path.join(tmpdir(), 'e3-gpu-none-'));
  mkdirSync(path.join(none, 'dev'));
  writeFileSync(path.join(none, 'dev', 'null'), '');
  assert.deepEqual(gpuVisible({}, none), { visible: false, why: 'no GPU device visible' });
  const dev = mkdtempSync(path.join(tmpdir(), 'e3-gpu-dev-'));
  mkdirSync(path.join(dev, 'dev'));
  writeFileSync(path.join(dev, 'dev', 'nvidia0'), '');
  assert.equal(gpuVisible({}, dev).visible, true);
  assert.match(gpuVisible({}, dev).why, /nvidia0/);
  const drv = mkdtempSync(path.join(tmpdir(), 'e3-gpu-drv-'));
  mkdirSync(path.join(drv, 'proc/driver/nvidia/gpus/0000:00:04.0'), { recursive: true });
  assert.equal(gpuVisible({}, drv).visible, true);
  assert.equal(gpuVisible({ CUDA_VISIBLE_DEVICES: '-1' }, dev).visible, false);
  assert.equal(gpuVisible({ CUDA_VISIBLE_DEVICES: '' }, drv).visible, false);
  assert.equal(gpuVisible({ CUDA_VISIBLE_DEVICES: '0' }, dev).visible, true);
  assert.deepEqual(gpuVisible({ E3_GPU: '0' }, dev), { visible: false, why: 'E3_GPU=0' });
  assert.deepEqual(gpuVisible({ E3_GPU: '1' }, none), { visible: true, why: 'E3_GPU=1' });
  assert.throws(() => gpuVisible({ E3_GPU: 'yes' }, none), /E3_GPU must be 1 or 0 \(got "yes"\)/);
});

/** A node_modules with the stand-in tfjs-node-gpu, ahead of the project's own on NODE_PATH. */
function standIn(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'e3-standin-'));
  const pkg = path.join(dir, 'node_modules', '@tensorflow', 'tfjs-node-gpu');
  mkdirSync(pkg, { recursive: true });
  writeFileSync(
    path.join(pkg, 'package.json'),
    JSON.stringify({ name: '@tensorflow/tfjs-node-gpu', version: '0.0.0-standin', main: 'index.js' }),
  );
  writeFileSync(
    path.join(pkg, 'index.js'),
    `// Stand-in: the pure-JS cpu kernels under the name the native package registers.
const tf = require('@tensorflow/tfjs-core');
const { MathBackendCPU } = require('@tensorflow/tfjs-backend-cpu');
tf.registerBackend('tensorflow', () => new MathBackendCPU(), 3);
for (const k of tf.getKernelsForBackend('cpu')) tf.registerKernel({ ...k, backendName: 'tensorflow' });
`,
  );
  return [path.join(dir, 'node_modules'), path.join(ROOT, 'node_modules')].join(path.delimiter);
}

function run(args: string[], env: NodeJS.ProcessEnv) {
  const base = { ...process.env };
  delete base.E3_BACKEND;
  delete base.E3_GPU;
  delete base.NODE_TEST_CONTEXT; // a child `--test` run reports on its own
  const r = spawnSync(process.execPath, ['--import', 'tsx', ...args], {
    cwd: ROOT,
    env: { ...base, ...env },
    encoding: 'utf8',
    timeout: 240_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('with tfjs-node-gpu installed: tensorflow only on a visible GPU or when asked; wasm by default otherwise', () => {
  const NODE_PATH = standIn();
  const probe = path.join(mkdtempSync(path.join(tmpdir(), 'e3-probe-')), 'probe.ts');
  writeFileSync(
    probe,
    `import { backendChoice, deviceResident } from ${JSON.stringify(path.join(ROOT, 'ml', 'backend'))};\nbackendChoice().then((c) => console.log(JSON.stringify({ ...c, resident: deviceResident() })));\n`,
  );
  const choice = (env: NodeJS.ProcessEnv) => {
    const r = run([probe], { NODE_PATH, ...env });
    assert.equal(r.status, 0, r.out);
    return JSON.parse(r.out.trim().split('\n').pop()!) as { name: string; reason: string; onGpu: boolean; resident: boolean };
  };
  const cpuHost = choice({ E3_GPU: '0' });
  assert.deepEqual([cpuHost.name, cpuHost.onGpu, cpuHost.resident], ['wasm', false, false]);
  assert.match(cpuHost.reason, /E3_GPU=0.*opt-in: E3_BACKEND=tensorflow/);
  const gpuHost = choice({ E3_GPU: '1' });
  assert.deepEqual([gpuHost.name, gpuHost.onGpu, gpuHost.resident], ['tensorflow', true, true]);
  assert.match(gpuHost.reason, /tfjs-node-gpu, tensors on the GPU/);
  const optIn = choice({ E3_GPU: '0', E3_BACKEND: 'tensorflow' });
  assert.deepEqual([optIn.name, optIn.onGpu, optIn.resident], ['tensorflow', false, false]);
  const pinned = choice({ E3_GPU: '1', E3_BACKEND: 'wasm' });
  assert.deepEqual([pinned.name, pinned.reason], ['wasm', 'E3_BACKEND=wasm']);
  // Without the stand-in (this machine): tensorflow cannot be forced, with one clear error.
  const none = run([probe], { E3_BACKEND: 'tensorflow', E3_GPU: '1' });
  assert.notEqual(none.status, 0);
  assert.match(none.out, /E3_BACKEND=tensorflow: neither @tensorflow\/tfjs-node-gpu nor @tensorflow\/tfjs-node loads here/);
  assert.match(run([probe], { E3_BACKEND: 'webgl' }).out, /E3_BACKEND must be one of tensorflow, wasm, cpu \(got "webgl"\)/);
});

test('the byte tests pass on wasm with the stand-in tensorflow backend installed, GPU flag on and off', () => {
  const NODE_PATH = standIn();
  for (const gpu of ['1', '0']) {
    // As `npm run test:unit` runs them: E3_BACKEND=wasm pins every byte-asserting test.
    const r = run(['--test', '--test-reporter=spec', 'test/unit/trainer.test.ts'], { NODE_PATH, E3_GPU: gpu, E3_BACKEND: 'wasm' });
    assert.equal(r.status, 0, r.out.slice(-3000));
    assert.match(r.out, /byte tests on wasm/, `E3_GPU=${gpu}`);
    assert.doesNotMatch(r.out, /\bfail [1-9]/);
  }
});
