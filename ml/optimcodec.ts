/** The AdamW state as checkpoint bytes (optim.bin): step count, then m and v per parameter. */
import { ShapeMismatchError } from './errors';
import type { AdamWState } from './optim';
import { deserializeTensors, serializeTensors } from './serialize';

export function encodeOptState(s: AdamWState): Uint8Array {
  const map = new Map<string, Float32Array>();
  for (const [k, v] of Object.entries(s.m)) map.set(`m/${k}`, v);
  for (const [k, v] of Object.entries(s.v)) map.set(`v/${k}`, v);
  return serializeTensors(map, { kind: 'adamw', step: s.step }).bytes;
}

export function decodeOptState(bytes: Uint8Array): AdamWState {
  const { meta, tensors } = deserializeTensors(bytes);
  const step = (meta as { step?: unknown } | null)?.step;
  if (typeof step !== 'number') throw new ShapeMismatchError('optimiser state: header has no step');
  const s: AdamWState = { step, m: {}, v: {} };
  for (const [k, t] of tensors) {
    if (!(t.data instanceof Float32Array)) throw new ShapeMismatchError(`optimiser state: ${k} is not float32`);
    if (k.startsWith('m/')) s.m[k.slice(2)] = t.data;
    else if (k.startsWith('v/')) s.v[k.slice(2)] = t.data;
  }
  return s;
}
