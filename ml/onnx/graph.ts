/**
 * A small builder for ONNX graphs over the `onnx-proto` messages: named values, nodes in
 * topological order, float32 initialisers stored raw, and int64 constants for shapes and
 * slice bounds. Only what ml/onnx/policyGraph.ts needs; the ONNX operator semantics are
 * those of the default domain at OPSET.
 */
import { onnx } from 'onnx-proto';

/** Default-domain opset: LayerNormalization needs 17. */
export const OPSET = 17;

type Attr = number | number[] | string;
/** A dimension: a fixed size or a symbolic name (bound by the caller at run time). */
export type Dim = number | string;

const { DataType } = onnx.TensorProto;

function attribute(name: string, v: Attr): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if (Number.isInteger(v)) return { name, type: T.INT, i: v };
  return { name, type: T.FLOAT, f: v };
}

function valueInfo(name: string, elemType: number, dims: Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

export class GraphBuilder {
  private readonly nodes: onnx.INodeProto[] = [];
  private readonly inits: onnx.ITensorProto[] = [];
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private readonly consts = new Map<string, string>();
  private count = 0;

  /** A fresh value name with a readable stem. */
  fresh(stem: string): string {
    return `${stem}_${this.count++}`;
  }

  input(name: string, type: 'float32' | 'int32' | 'int64', dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type === 'float32' ? DataType.FLOAT : type === 'int32' ? DataType.INT32 : DataType.INT64, dims));
    return name;
  }

  output(name: string, type: 'float32' | 'int32', dims: Dim[]): void {
    this.outputs.push(valueInfo(name, type === 'float32' ? DataType.FLOAT : DataType.INT32, dims));
  }

  /** A float32 initialiser (the weights, baked into the model). */
  weight(name: string, data: Float32Array, dims: number[]): string {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
    this.inits.push({ name, dataType: DataType.FLOAT, dims, rawData: bytes });
    return name;
  }

  /** A float32 scalar constant, shared by value. */
  scalar(v: number): string {
    return this.constant(`f:${v}`, () => ({ dataType: DataType.FLOAT, dims: [], rawData: new Uint8Array(Float32Array.of(v).buffer) }));
  }

  /** An int64 vector constant (shapes, axes, slice bounds), shared by value. */
  ints(v: number[]): string {
    return this.constant(`i:${v.join(',')}`, () => ({
      dataType: DataType.INT64,
      dims: [v.length],
      rawData: new Uint8Array(BigInt64Array.from(v, (x) => BigInt(x)).buffer),
    }));
  }

  private constant(key: string, make: () => onnx.ITensorProto): string {
    let name = this.consts.get(key);
    if (!name) {
      name = this.fresh('const');
      this.inits.push({ ...make(), name });
      this.consts.set(key, name);
    }
    return name;
  }

  /** Append a node; returns its output names (`outs` of them, or the names given). */
  node(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, outs: number | string[] = 1): string[] {
    const output = typeof outs === 'number' ? Array.from({ length: outs }, () => this.fresh(opType.toLowerCase())) : outs;
    this.nodes.push({
      opType,
      input: inputs,
      output,
      name: this.fresh(`n_${opType}`),
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return output;
  }

  /** A single-output node. */
  op(opType: string, inputs: string[], attrs: Record<string, Attr> = {}, out?: string): string {
    return this.node(opType, inputs, attrs, out ? [out] : 1)[0];
  }

  /** The serialised ModelProto. */
  build(graphName: string): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'e3',
      opsetImport: [{ domain: '', version: OPSET }],
      graph: { name: graphName, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}
