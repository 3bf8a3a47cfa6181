/**
 * Tensors <-> bytes for the object store: one self-describing, self-verifying blob.
 *
 *   "E3TENSOR" | u32 LE header length | header JSON (utf-8) | zero pad to 8 |
 *   data (each tensor raw little-endian, 8-aligned) | sha256 of everything before (32 bytes)
 *
 * The header lists {name, dtype, shape, offset, byteLength} per tensor (offsets relative to
 * the data start) plus free-form `meta` (the policy config, optimiser step, ...). The
 * trailing digest makes any flipped byte detectable without outside information; the
 * `sha256` returned alongside is the digest of the whole blob, for manifests and
 * `expectedSha256` checks on load.
 */
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import type { Policy, PolicyConfig } from './policy';
import { checkConfig, createPolicy, paramShapes, readParams } from './policy';
import { InvalidArgumentError, ShapeMismatchError } from './errors';

const MAGIC = 'E3TENSOR';
const FORMAT_VERSION = 1;
const DIGEST_BYTES = 32;
const LITTLE_ENDIAN = endianness() === 'LE';

export type TensorData = Float32Array | Int32Array;
/** A bare array is stored with shape [length]. */
export type TensorEntry = TensorData | { shape: number[]; data: TensorData };
export interface DecodedTensor {
  shape: number[];
  dtype: 'float32' | 'int32';
  data: TensorData;
}

interface HeaderEntry {
  name: string;
  dtype: 'float32' | 'int32';
  shape: number[];
  offset: number;
  byteLength: number;
}
interface Header {
  format: 'e3-tensors';
  version: number;
  meta: unknown;
  tensors: HeaderEntry[];
  dataBytes: number;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

const align8 = (n: number) => (n + 7) & ~7;
const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function writeData(dst: Uint8Array, at: number, data: TensorData): void {
  if (LITTLE_ENDIAN) {
    dst.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    return;
  }
  const view = new DataView(dst.buffer, dst.byteOffset + at, data.byteLength);
  for (let i = 0; i < data.length; i++) {
    if (data instanceof Float32Array) view.setFloat32(i * 4, data[i], true);
    else view.setInt32(i * 4, data[i], true);
  }
}

function readData(src: Uint8Array, at: number, e: HeaderEntry): TensorData {
  const n = e.byteLength / 4;
  const out = e.dtype === 'float32' ? new Float32Array(n) : new Int32Array(n);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(src.subarray(at, at + e.byteLength));
    return out;
  }
  const view = new DataView(src.buffer, src.byteOffset + at, e.byteLength);
  for (let i = 0; i < n; i++) out[i] = e.dtype === 'float32' ? view.getFloat32(i * 4, true) : view.getInt32(i * 4, true);
  return out;
}

/** Encode named tensors (in iteration order) and optional JSON-able `meta`. */
export function serializeTensors(
  tensors: Record<string, TensorEntry> | ReadonlyMap<string, TensorEntry>,
  meta: unknown = null,
): { bytes: Uint8Array; sha256: string } {
  const list = tensors instanceof Map ? [...tensors] : Object.entries(tensors as Record<string, TensorEntry>);
  const entries: HeaderEntry[] = [];
  const datas: TensorData[] = [];
  let offset = 0;
  for (const [name, t] of list) {
    const bare = t instanceof Float32Array || t instanceof Int32Array;
    const data = bare ? t : t.data;
    const shape = bare ? [t.length] : t.shape.slice();
    const dtype = data instanceof Float32Array ? 'float32' : data instanceof Int32Array ? 'int32' : null;
    if (!dtype) throw new InvalidArgumentError(`serializeTensors: ${name} must be a Float32Array or Int32Array`);
    if (sizeOf(shape) !== data.length)
      throw new ShapeMismatchError(`serializeTensors: ${name} has ${data.length} values but shape [${shape}]`);
    entries.push({ name, dtype, shape, offset, byteLength: data.byteLength });
    datas.push(data);
    offset = align8(offset + data.byteLength);
  }
  const header: Header = { format: 'e3-tensors', version: FORMAT_VERSION, meta, tensors: entries, dataBytes: offset };
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const dataStart = align8(12 + headerBytes.length);
  const bytes = new Uint8Array(dataStart + offset + DIGEST_BYTES);
  bytes.set(new TextEncoder().encode(MAGIC), 0);
  new DataView(bytes.buffer).setUint32(8, headerBytes.length, true);
  bytes.set(headerBytes, 12);
  entries.forEach((e, i) => writeData(bytes, dataStart + e.offset, datas[i]));
  const body = bytes.subarray(0, bytes.length - DIGEST_BYTES);
  bytes.set(createHash('sha256').update(body).digest(), body.length);
  return { bytes, sha256: sha256Hex(bytes) };
}

function corrupt(why: string): Error {
  return new Error(`deserializeTensors: ${why}`);
}

/**
 * Decode and verify a blob from `serializeTensors`. Throws naming the problem: a whole-blob
 * checksum different from `expectedSha256`, a trailing digest that does not match the
 * content (any flipped byte), or a malformed header.
 */
export function deserializeTensors(bytes: Uint8Array, expectedSha256?: string): { meta: unknown; tensors: Map<string, DecodedTensor> } {
  if (expectedSha256 !== undefined) {
    const got = sha256Hex(bytes);
    if (got !== expectedSha256.toLowerCase())
      throw corrupt(`sha256 mismatch: expected ${expectedSha256}, got ${got} (${bytes.length} bytes)`);
  }
  if (bytes.length < 12 + DIGEST_BYTES) throw corrupt(`${bytes.length} bytes is too short for an e3 tensor blob`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== MAGIC) throw corrupt(`bad magic ${JSON.stringify(magic)} (expected ${MAGIC})`);
  const body = bytes.subarray(0, bytes.length - DIGEST_BYTES);
  const stored = Buffer.from(bytes.subarray(body.length)).toString('hex');
  const actual = createHash('sha256').update(body).digest('hex');
  if (stored !== actual) throw corrupt(`embedded sha256 ${stored} does not match the content's ${actual}: the blob is corrupt`);

  const headerLen = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
  if (12 + headerLen > body.length) throw corrupt(`header length ${headerLen} runs past the end`);
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(12, 12 + headerLen))) as Header;
  } catch (e) {
    throw corrupt(`header is not valid JSON (${(e as Error).message})`);
  }
  if (header.format !== 'e3-tensors' || header.version !== FORMAT_VERSION)
    throw corrupt(`unsupported format ${header.format} v${header.version}`);
  const dataStart = align8(12 + headerLen);
  if (!Number.isInteger(header.dataBytes) || dataStart + header.dataBytes !== body.length) {
    throw corrupt(`header says ${header.dataBytes} data bytes, the blob holds ${body.length - dataStart}`);
  }
  if (!Array.isArray(header.tensors)) throw corrupt('header has no tensor list');
  const tensors = new Map<string, DecodedTensor>();
  for (const e of header.tensors) {
    const ok =
      typeof e.name === 'string' &&
      (e.dtype === 'float32' || e.dtype === 'int32') &&
      Array.isArray(e.shape) &&
      e.shape.every((s) => Number.isInteger(s) && s >= 0) &&
      Number.isInteger(e.offset) &&
      e.offset >= 0 &&
      e.offset % 4 === 0 &&
      e.byteLength === sizeOf(e.shape) * 4 &&
      e.offset + e.byteLength <= header.dataBytes;
    if (!ok) throw corrupt(`bad header entry ${JSON.stringify(e)}`);
    if (tensors.has(e.name)) throw corrupt(`duplicate tensor ${e.name}`);
    tensors.set(e.name, { shape: e.shape, dtype: e.dtype, data: readData(bytes, dataStart + e.offset, e) });
  }
  return { meta: header.meta, tensors };
}

interface PolicyMeta {
  kind: 'e3-policy';
  config: PolicyConfig;
}

/** A policy's config and parameters (stable order) as one blob. */
export function serializePolicy(policy: Policy): { bytes: Uint8Array; sha256: string } {
  const values = readParams(policy);
  const tensors = new Map<string, TensorEntry>();
  for (const [name, v] of policy.params) tensors.set(name, { shape: v.shape.slice(), data: values.get(name)! });
  const meta: PolicyMeta = { kind: 'e3-policy', config: policy.cfg };
  return serializeTensors(tensors, meta);
}

/** A new policy from `serializePolicy` bytes; throws if the blob is corrupt or not a matching policy. */
export function loadPolicy(bytes: Uint8Array, expectedSha256?: string): Policy {
  const { meta, tensors } = deserializeTensors(bytes, expectedSha256);
  const m = meta as Partial<PolicyMeta> | null;
  if (!m || m.kind !== 'e3-policy' || typeof m.config !== 'object')
    throw new ShapeMismatchError('loadPolicy: blob is not an e3 policy (meta.kind)');
  const cfg = checkConfig(m.config);
  const expected = paramShapes(cfg);
  const names = [...tensors.keys()];
  if (names.length !== expected.length || expected.some(([n], i) => names[i] !== n)) {
    throw new ShapeMismatchError(
      `loadPolicy: parameters [${names.join(', ')}] do not match the config's [${expected.map(([n]) => n).join(', ')}]`,
    );
  }
  const values = new Map<string, Float32Array>();
  for (const [name, shape] of expected) {
    const t = tensors.get(name)!;
    if (t.dtype !== 'float32' || t.shape.join(',') !== shape.join(',')) {
      throw new ShapeMismatchError(`loadPolicy: ${name} is ${t.dtype} [${t.shape}], expected float32 [${shape}]`);
    }
    values.set(name, t.data as Float32Array);
  }
  return createPolicy(cfg, values);
}
