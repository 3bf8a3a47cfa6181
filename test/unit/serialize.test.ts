import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../ml/backend';
import type { PolicyConfig } from '../../ml/policy';
import { createPolicy, disposePolicy, forwardLogits, paramShapes, readParams } from '../../ml/policy';
import { deserializeTensors, loadPolicy, serializePolicy, serializeTensors } from '../../ml/serialize';

const CFG: PolicyConfig = { vocab: 9, layers: 2, dModel: 16, heads: 4, context: 12, seed: 5 };

before(async () => {
  await initBackend();
});

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] ^= 0x01;
  return copy;
}

test('policy -> bytes -> policy is bit-exact: same bytes again, same logits', () => {
  const a = createPolicy(CFG);
  const { bytes, sha256 } = serializePolicy(a);
  assert.equal(sha256, createHash('sha256').update(bytes).digest('hex'));
  const b = loadPolicy(bytes, sha256);
  try {
    assert.deepEqual(b.cfg, a.cfg);
    const again = serializePolicy(b);
    assert.equal(again.sha256, sha256);
    assert.deepEqual(again.bytes, bytes);
    const toks = tf.tensor2d([[1, 2, 3, 4, 5, 6, 7, 8]], undefined, 'int32');
    const [la, lb] = [forwardLogits(a, toks), forwardLogits(b, toks)];
    assert.deepEqual(la.dataSync(), lb.dataSync());
    tf.dispose([toks, la, lb]);
    // The same config and seed serialise to the same bytes in a fresh policy too.
    const c = createPolicy(CFG);
    assert.equal(serializePolicy(c).sha256, sha256);
    disposePolicy(c);
  } finally {
    disposePolicy(a);
    disposePolicy(b);
  }
});

test('any flipped byte is detected, with or without an expected sha256', () => {
  const p = createPolicy(CFG);
  const { bytes, sha256 } = serializePolicy(p);
  disposePolicy(p);
  const headerLen = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
  const positions = {
    magic: 2,
    'header length': 9,
    header: 12 + Math.floor(headerLen / 2),
    data: bytes.length - 1000,
    'trailing digest': bytes.length - 5,
  };
  for (const [where, at] of Object.entries(positions)) {
    const bad = flip(bytes, at);
    assert.throws(() => loadPolicy(bad), /deserializeTensors/, `flip in ${where} not detected`);
    assert.throws(() => loadPolicy(bad, sha256), /sha256 mismatch: expected [0-9a-f]{64}, got [0-9a-f]{64}/, where);
  }
  assert.throws(() => loadPolicy(bytes, '0'.repeat(64)), /sha256 mismatch/);
  assert.throws(() => loadPolicy(bytes.subarray(0, bytes.length - 1)), /corrupt|short/);
  assert.throws(() => loadPolicy(new Uint8Array(10)), /too short/);
});

test('generic tensors: shapes, dtypes, order, meta and exact bits (NaN payloads, -0) survive', () => {
  const weird = new Float32Array([NaN, -0, Infinity, -Infinity, 1e-45, 3.4028234e38]);
  const weirdBits = new Uint32Array(weird.buffer).slice();
  weirdBits[0] = 0x7fc00123; // a NaN with a payload
  const f = new Float32Array(weirdBits.buffer);
  const input = {
    'adam/m/wte': { shape: [2, 3], data: f },
    step: new Int32Array([42]),
    z: { shape: [0], data: new Float32Array(0) },
    'a.b': Float32Array.from({ length: 7 }, (_, i) => i / 3),
  };
  const { bytes, sha256 } = serializeTensors(input, { step: 42, note: 'optimizer' });
  const { meta, tensors } = deserializeTensors(bytes, sha256);
  assert.deepEqual(meta, { step: 42, note: 'optimizer' });
  assert.deepEqual([...tensors.keys()], ['adam/m/wte', 'step', 'z', 'a.b']);
  const m = tensors.get('adam/m/wte')!;
  assert.deepEqual([m.dtype, m.shape], ['float32', [2, 3]]);
  assert.deepEqual(new Uint32Array(m.data.buffer), weirdBits);
  assert.deepEqual([tensors.get('step')!.dtype, Array.from(tensors.get('step')!.data)], ['int32', [42]]);
  assert.deepEqual(tensors.get('z')!.shape, [0]);
  assert.deepEqual(tensors.get('a.b')!.data, input['a.b']);
  // Maps keep insertion order too.
  const fromMap = serializeTensors(new Map(Object.entries(input)), { step: 42, note: 'optimizer' });
  assert.equal(fromMap.sha256, sha256);
  assert.throws(() => serializeTensors({ bad: { shape: [4], data: new Float32Array(3) } }), /shape/);
});

test('loadPolicy rejects blobs that are not a matching policy', () => {
  const notPolicy = serializeTensors({ x: new Float32Array(3) }, { kind: 'adam' });
  assert.throws(() => loadPolicy(notPolicy.bytes), /not an e3 policy/);
  const p = createPolicy(CFG);
  const values = readParams(p);
  disposePolicy(p);
  const params = new Map(paramShapes(CFG).map(([name, shape]) => [name, { shape, data: values.get(name)! }]));
  const badCfg = serializeTensors(params, { kind: 'e3-policy', config: { ...CFG, heads: 3 } });
  assert.throws(() => loadPolicy(badCfg.bytes), /multiple of heads/);
  const otherShape = serializeTensors(params, { kind: 'e3-policy', config: { ...CFG, context: 13 } });
  assert.throws(() => loadPolicy(otherShape.bytes), /wpe is float32 \[12,16\], expected float32 \[13,16\]/);
  params.delete('head');
  const missing = serializeTensors(params, { kind: 'e3-policy', config: CFG });
  assert.throws(() => loadPolicy(missing.bytes), /do not match/);
});
