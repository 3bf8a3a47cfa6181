/**
 * tfjs backend selection (docs/ARCHITECTURE.md "Compute backends"), safe on every machine:
 *
 * - `E3_BACKEND` (tensorflow | wasm | cpu) forces one; tfjs-node on a CPU-only host is opt-in
 *   this way.
 * - Otherwise `tensorflow` is taken only when a GPU device is actually visible (an NVIDIA
 *   device node or driver entry, not hidden by CUDA_VISIBLE_DEVICES) and the optional
 *   `@tensorflow/tfjs-node-gpu` loads; never because a package happened to install.
 * - Else `wasm` (SIMD), else the pure-JS `cpu` backend.
 *
 * The wasm backend is registered whatever is chosen, so a parity test can switch to it. The
 * choice and its reason are logged once by the worker and shown in the report; runs and
 * checkpoints record the name.
 */
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { InvalidArgumentError } from './errors';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
const NAMES: readonly BackendName[] = ['tensorflow', 'wasm', 'cpu'];

export interface BackendChoice {
  name: BackendName;
  /** Why this one, in words (logged once, shown in the report). */
  reason: string;
  /** Tensors live on a GPU (the sampler then keeps its KV cache there too). */
  onGpu: boolean;
}

let ready: Promise<BackendChoice> | undefined;
let onGpu = false;

/** Whether the active backend keeps tensors off the host (the sampler then keeps its KV cache there too). */
export function deviceResident(): boolean {
  const b = tf.getBackend();
  return b === 'webgl' || b === 'webgpu' || (b === 'tensorflow' && onGpu);
}

/**
 * A GPU the process may use: `E3_GPU` (1 or 0) overrides the probe; CUDA_VISIBLE_DEVICES set to
 * "" or -1 hides every device; else an NVIDIA device node (/dev/nvidia0 …) or driver entry
 * (/proc/driver/nvidia/gpus/*) must exist.
 */
export function gpuVisible(env: NodeJS.ProcessEnv = process.env, root = '/'): { visible: boolean; why: string } {
  const o = env.E3_GPU;
  if (o !== undefined && o !== '') {
    if (o !== '0' && o !== '1') throw new InvalidArgumentError(`E3_GPU must be 1 or 0 (got "${o}")`);
    return { visible: o === '1', why: `E3_GPU=${o}` };
  }
  const cvd = env.CUDA_VISIBLE_DEVICES;
  if (cvd !== undefined && (cvd.trim() === '' || cvd.trim() === '-1'))
    return { visible: false, why: `CUDA_VISIBLE_DEVICES="${cvd}" hides every GPU` };
  const dev = path.join(root, 'dev');
  const nodes = existsSync(dev) ? readdirSync(dev).filter((f) => /^nvidia\d+$/.test(f)) : [];
  if (nodes.length) return { visible: true, why: `GPU device ${path.join(dev, nodes[0])}` };
  const gpus = path.join(root, 'proc/driver/nvidia/gpus');
  if (existsSync(gpus) && readdirSync(gpus).length) return { visible: true, why: `GPU driver entry in ${gpus}` };
  return { visible: false, why: 'no GPU device visible' };
}

function registerWasm(): boolean {
  try {
    const wasm = require('@tensorflow/tfjs-backend-wasm') as typeof import('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + '/');
    return true;
  } catch {
    return false;
  }
}

/** Load tfjs-node(-gpu) (optional dependencies: absent, or without their native library here). */
function loadTensorflow(pkgs: readonly string[]): string | null {
  for (const pkg of pkgs) {
    try {
      require(pkg);
      return pkg;
    } catch {
      /* the next one */
    }
  }
  return null;
}

async function use(name: BackendName): Promise<boolean> {
  try {
    if (!(await tf.setBackend(name))) return false;
    await tf.ready();
    return true;
  } catch {
    return false;
  }
}

async function select(env: NodeJS.ProcessEnv): Promise<BackendChoice> {
  const forced = env.E3_BACKEND === '' ? undefined : (env.E3_BACKEND as BackendName | undefined);
  if (forced !== undefined && !NAMES.includes(forced))
    throw new InvalidArgumentError(`E3_BACKEND must be one of ${NAMES.join(', ')} (got "${forced}")`);
  const wasmOk = registerWasm();
  const gpu = gpuVisible(env);
  if (forced === 'tensorflow' || (forced === undefined && gpu.visible)) {
    // With a GPU, the -gpu package first; forced on a CPU host, tfjs-node first (the -gpu one would look for CUDA).
    const pkg = loadTensorflow(
      gpu.visible ? ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] : ['@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu'],
    );
    if (pkg && (await use('tensorflow'))) {
      onGpu = gpu.visible && pkg.endsWith('-gpu');
      return {
        name: 'tensorflow',
        onGpu,
        reason: `${forced ? 'E3_BACKEND=tensorflow' : gpu.why} (${pkg}${onGpu ? ', tensors on the GPU' : ', tensors in host memory'})`,
      };
    }
    if (forced)
      throw new InvalidArgumentError('E3_BACKEND=tensorflow: neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node loads here');
  }
  if (forced === 'cpu') {
    if (await use('cpu')) return { name: 'cpu', onGpu: false, reason: 'E3_BACKEND=cpu' };
    throw new InvalidArgumentError('E3_BACKEND=cpu: the cpu backend could not be initialised');
  }
  if (wasmOk && (await use('wasm'))) {
    const why = forced
      ? 'E3_BACKEND=wasm'
      : gpu.visible
        ? `${gpu.why}, but no tfjs-node-gpu loads`
        : `${gpu.why} (tfjs-node on a CPU host is opt-in: E3_BACKEND=tensorflow)`;
    return { name: 'wasm', onGpu: false, reason: why };
  }
  if (forced === 'wasm') throw new InvalidArgumentError('E3_BACKEND=wasm: the wasm backend could not be initialised here');
  if (await use('cpu'))
    return { name: 'cpu', onGpu: false, reason: 'wasm could not be initialised; the pure-JS cpu backend is ~25x slower' };
  throw new InvalidArgumentError('no tfjs backend could be initialised');
}

/** Initialise the backend once per process; later calls return the same choice. */
export function initBackend(): Promise<BackendName> {
  return backendChoice().then((c) => c.name);
}

/** The backend and why it was chosen (initialising it on first call). */
export function backendChoice(): Promise<BackendChoice> {
  ready ??= select(process.env);
  return ready;
}
