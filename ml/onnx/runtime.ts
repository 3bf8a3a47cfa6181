/**
 * ONNX Runtime sessions run synchronously. `ort.InferenceSession.run` defers every call by a
 * `setImmediate` and a promise (onnxruntime-node's dist/backend.js) before it enters the
 * native session, which costs 0.1–0.2 ms a call: a fifth to a third of the demo model's whole
 * decode step at an empty cache (bench/NOTES.md "Sampling engines"). The native session that
 * `InferenceSession` wraps is the package's own binding (`onnxruntime-node/dist/binding`), the
 * same library and the same kernels, so a synchronous `run` gives the same bits; the sampler
 * yields to the event loop itself every few steps (ml/sampler.ts `yieldEvery`).
 *
 * Where that binding cannot be loaded (a release of onnxruntime-node that moved it), sessions
 * fall back to the public asynchronous API, which is slower and gives the same bits.
 */
import { createRequire } from 'node:module';
import * as ort from 'onnxruntime-node';

export type Feeds = Record<string, ort.Tensor>;
export type Results = Record<string, ort.Tensor>;

export interface OrtSession {
  /** One inference; synchronous where the native binding is at hand. */
  run(feeds: Feeds): Results | Promise<Results>;
  release(): void;
}

interface NativeSession {
  loadModel(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, options: ort.InferenceSession.SessionOptions): void;
  run(feeds: Feeds, fetches: Record<string, null>, options: object): Results;
  dispose(): void;
  readonly outputMetadata: Array<{ name: string }>;
}

interface Binding {
  binding: { InferenceSession: new () => NativeSession };
  initOrt(): void;
}

let native: Binding | null | undefined;

function loadBinding(): Binding | null {
  if (native !== undefined) return native;
  try {
    const b = createRequire(__filename)('onnxruntime-node/dist/binding') as Partial<Binding>;
    native = typeof b.initOrt === 'function' && typeof b.binding?.InferenceSession === 'function' ? (b as Binding) : null;
  } catch {
    native = null;
  }
  return native;
}

/** Whether sessions run synchronously through the native binding (false: the public async API). */
export function nativeSessions(): boolean {
  return loadBinding() !== null;
}

/** A session for an ONNX model's bytes; `native` false takes the public asynchronous API (tests compare the two). */
export async function createSession(model: Uint8Array, options: ort.InferenceSession.SessionOptions, native = true): Promise<OrtSession> {
  const b = native ? loadBinding() : null;
  if (!b) {
    const s = await ort.InferenceSession.create(model, options);
    return { run: (feeds) => s.run(feeds), release: () => void s.release() };
  }
  b.initOrt();
  const s = new b.binding.InferenceSession();
  s.loadModel(model.buffer, model.byteOffset, model.byteLength, options);
  const fetches: Record<string, null> = {};
  for (const { name } of s.outputMetadata) fetches[name] = null;
  return { run: (feeds) => s.run(feeds, fetches, {}), release: () => s.dispose() };
}
