/**
 * The arithmetic ceiling the benches measure others against: best-of plain [n, n] @ [n, n]
 * GFLOP/s on the active tfjs backend (wasm's fast path: rank 2, no transpose flags), on seeded
 * inputs, the first two passes not counted (a thread's first pass at a size is slower).
 */
import * as tf from '@tensorflow/tfjs-core';
import { Rng, deriveSeed } from '../ml/rng';

/** A seeded [n, n] matrix of standard normals (salted per use). */
export function randomMatrix(n: number, salt: string): Float32Array {
  const rng = new Rng(deriveSeed(1234, 'bench', salt));
  return Float32Array.from({ length: n * n }, () => rng.normal());
}

/** Best of `reps` timed passes (after two warm-up passes), in GFLOP/s. */
export function tfjsMatmulPeak(n = 512, reps = 6): number {
  const a = tf.tensor2d(randomMatrix(n, 'a'), [n, n]);
  const b = tf.tensor2d(randomMatrix(n, 'b'), [n, n]);
  let best = Infinity;
  for (let i = 0; i < reps + 2; i++) {
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
    if (i >= 2) best = Math.min(best, performance.now() - t0);
  }
  tf.dispose([a, b]);
  return (2 * n ** 3) / (best / 1000) / 1e9;
}
