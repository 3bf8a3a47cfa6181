/**
 * tfjs backend selection (docs/ARCHITECTURE.md "Compute backends"): `tensorflow` from the optional
 * tfjs-node-gpu / tfjs-node packages, else `wasm` (SIMD), else the pure-JS `cpu` backend.
 * `E3_BACKEND` forces one. The chosen name is returned so runs and checkpoints record it.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

let ready: Promise<BackendName> | undefined;
/** The `tensorflow` backend came from tfjs-node-gpu (tensors on a GPU), not tfjs-node (host memory). */
let tensorflowOnGpu = false;

/** Whether the active backend keeps tensors off the host (the sampler then keeps its KV cache there too). */
export function deviceResident(): boolean {
  const b = tf.getBackend();
  return b === 'webgl' || b === 'webgpu' || (b === 'tensorflow' && tensorflowOnGpu);
}

async function tryTensorflow(): Promise<boolean> {
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      // Optional dependencies: absent (MODULE_NOT_FOUND) or without their native library here.
      require(pkg);
      tensorflowOnGpu = pkg.endsWith('-gpu');
      if (await tf.setBackend('tensorflow')) return true;
    } catch {
      /* fall through to the next choice */
    }
  }
  return false;
}

async function tryWasm(): Promise<boolean> {
  try {
    const wasm = require('@tensorflow/tfjs-backend-wasm') as typeof import('@tensorflow/tfjs-backend-wasm');
    const dir = require('path').dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
    wasm.setWasmPaths(require('path').join(dir, 'dist') + '/');
    return await tf.setBackend('wasm');
  } catch {
    return false;
  }
}

async function select(): Promise<BackendName> {
  const forced = process.env.E3_BACKEND as BackendName | undefined;
  if (forced !== undefined && !['tensorflow', 'wasm', 'cpu'].includes(forced)) {
    throw new Error(`E3_BACKEND must be one of tensorflow, wasm, cpu (got "${forced}")`);
  }
  const order: BackendName[] = forced ? [forced] : ['tensorflow', 'wasm', 'cpu'];
  for (const name of order) {
    const ok = name === 'tensorflow' ? await tryTensorflow() : name === 'wasm' ? await tryWasm() : await tf.setBackend('cpu');
    if (ok) {
      await tf.ready();
      return name;
    }
  }
  throw new Error(`E3_BACKEND=${forced}: that backend could not be initialised here`);
}

/** Initialise the backend once per process; later calls return the same choice. */
export function initBackend(): Promise<BackendName> {
  ready ??= select();
  return ready;
}
