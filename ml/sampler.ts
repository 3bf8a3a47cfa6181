/**
 * Batched autoregressive sampling with a preallocated KV cache: host-side on the CPU backends
 * (below), device-resident on accelerator backends (DeviceKVDecoder, chosen by deviceResident).
 *
 * Per decode step the position-wise work (LayerNorm, q|k|v, out-projection, MLP, head)
 * runs in tfjs as [rows, d] 2-D matmuls; attention for the one new position per row runs
 * on the host over Float32Array caches sized once per row (prompt + budget), so appending
 * is a write, never a concat (docs/ARCHITECTURE.md: growing the cache by concat cost more than the
 * attention itself). Prompts are prefilled the same way, all their tokens at once, so rows
 * of different lengths are never padded. Cache memory: 2 * layers * (prompt + budget) * d
 * floats per row (1 MiB per row for the demo model at 256 positions).
 *
 * Draws use our own PRNG on host-side logits, one `Rng(seeds[r])` per row and one draw per
 * sampled token, so row r's tokens depend only on its seed, prompt and the model — not on
 * which other rows share the batch.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Rng } from './rng';
import type { Policy } from './policy';
import { activationBytes, blockQkv, blockTail, checkCapacity, forwardHidden, headLogits, layerNorm, param, tokenLogProbs } from './policy';
import { InvalidArgumentError, ShapeMismatchError } from './errors';
import { deviceResident } from './backend';
import { OrtDecoder } from './onnx/decoder';

export interface SampleOptions {
  /** Most response tokens per row (sampled and forced together, eos included). */
  budget: number;
  /** Softmax temperature; 0 means greedy (argmax, lowest index on ties). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables top-p. */
  topP: number;
  /** One seed per prompt row (from deriveSeed). */
  seeds: number[];
  eos: number;
  /**
   * Tool-computed tokens: called before each new token while the row has no forced tokens
   * queued; a non-empty return is written next, token by token, without sampling (cut at
   * the budget). A forced eos ends the row.
   */
  forced?: (row: number, responseSoFar: number[]) => number[];
  /**
   * What computes the logits: this process's tfjs backend (default) or ONNX Runtime on the CPU
   * (ml/onnx/decoder.ts; one intra-op thread). The draws are the same code either way.
   */
  engine?: SampleEngine;
  /** Use the KV cache (default) or recompute the whole prefix every step (reference; tfjs only). */
  kvCache?: boolean;
  /** Where the KV cache lives: on the device for backends that keep tensors there (deviceResident), else on the host; unless given. */
  cache?: 'host' | 'device';
  /** Yield to the event loop every this many decode steps (default 4) so activities can heartbeat. */
  yieldEvery?: number;
  /** Called after every decode step with the number of rows still running. */
  onStep?: (step: number, activeRows: number) => void;
}

export type SampleEngine = 'tfjs' | 'ort';

export interface SampleResult {
  /** Response tokens per row: sampled and forced, including eos when produced. */
  responses: number[][];
  /**
   * Per response token: log-probability under the temperature-scaled full-vocabulary
   * distribution log softmax(logits / temperature)[token] (before the top-p cut; equal to
   * the distribution actually sampled when topP = 1). 0 for forced tokens and for greedy
   * (temperature 0) draws.
   */
  logp: Float32Array[];
  /** 1 where the environment wrote the token (forced), 0 where the policy sampled it. */
  forcedMask: Uint8Array[];
  /** Hit the budget without producing eos. */
  truncated: boolean[];
}

/** Next-token logits for each row as rows are extended one token at a time. */
export interface Decoder {
  /** Feed whole prompts; returns each row's next-token logits. */
  prefill(prompts: number[][]): Float32Array[] | Promise<Float32Array[]>;
  /** Append tokens[i] to row rows[i]; returns those rows' next-token logits, in order. */
  step(rows: number[], tokens: number[]): Float32Array[] | Promise<Float32Array[]>;
  /** Free what the decoder holds outside the JS heap (device tensors). */
  dispose?(): void;
}

/** Group row indices by sequence length (equal lengths batch together, unpadded). */
function byLength(lengths: number[], rows: number[]): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  for (const r of rows) {
    const g = groups.get(lengths[r]);
    if (g) g.push(r);
    else groups.set(lengths[r], [r]);
  }
  return groups;
}

/** Last-position logits [g, V] of g equal-length sequences, by a full forward pass. */
function lastLogits(policy: Policy, seqs: number[][]): Float32Array {
  const g = seqs.length;
  const len = seqs[0].length;
  const flat = new Int32Array(g * len);
  seqs.forEach((s, i) => flat.set(s, i * len));
  const lastIdx = Int32Array.from(seqs, (_, i) => i * len + len - 1);
  const logitsT = tf.tidy(() => {
    const hidden = forwardHidden(policy, tf.tensor2d(flat, [g, len], 'int32'));
    return headLogits(policy, tf.gather(hidden, tf.tensor1d(lastIdx, 'int32')) as tf.Tensor2D);
  });
  // Read after the tidy: returning typed arrays from tf.tidy walks every element.
  const logits = logitsT.dataSync() as Float32Array;
  logitsT.dispose();
  return logits;
}

function splitRows(data: Float32Array, n: number, width: number): Float32Array[] {
  return Array.from({ length: n }, (_, i) => data.slice(i * width, (i + 1) * width));
}

/** Reference decoder: recomputes the full forward pass over each row's whole prefix every step. */
export class RecomputeDecoder implements Decoder {
  private seqs: number[][] = [];
  constructor(private readonly policy: Policy) {}

  prefill(prompts: number[][]): Float32Array[] {
    this.seqs = prompts.map((p) => p.slice());
    return this.logitsFor(prompts.map((_, r) => r));
  }

  step(rows: number[], tokens: number[]): Float32Array[] {
    rows.forEach((r, i) => this.seqs[r].push(tokens[i]));
    return this.logitsFor(rows);
  }

  private logitsFor(rows: number[]): Float32Array[] {
    const out = new Map<number, Float32Array>();
    const v = this.policy.cfg.vocab;
    for (const group of byLength(
      this.seqs.map((s) => s.length),
      rows,
    ).values()) {
      const logits = splitRows(
        lastLogits(
          this.policy,
          group.map((r) => this.seqs[r]),
        ),
        group.length,
        v,
      );
      group.forEach((r, i) => out.set(r, logits[i]));
    }
    return rows.map((r) => out.get(r)!);
  }
}

/**
 * KV-cache decoder. Each row owns K and V caches laid out [layer][head][position][dh] in
 * Float32Arrays of its final size, so a step writes one position and reads a contiguous
 * prefix per head.
 */
export class KVCacheDecoder implements Decoder {
  private k: Float32Array[] = [];
  private v: Float32Array[] = [];
  private len: number[] = [];
  private cap: number[] = [];
  private readonly heads: number;
  private readonly dh: number;
  private scores: Float64Array;
  /** Scratch: the scaled query and the output accumulator of one head. */
  private q: Float64Array;
  private acc: Float64Array;

  /** `capacity[r]`: the longest row r will get (prompt + budget), at most the context. */
  constructor(
    private readonly policy: Policy,
    private readonly capacity: number[],
  ) {
    const { heads, dModel } = policy.cfg;
    this.heads = heads;
    this.dh = dModel / heads;
    checkCapacity(policy.cfg, capacity);
    this.scores = new Float64Array(Math.max(1, ...capacity));
    this.q = new Float64Array(this.dh);
    this.acc = new Float64Array(this.dh);
  }

  prefill(prompts: number[][]): Float32Array[] {
    const { layers, context } = this.policy.cfg;
    const { heads, dh } = this;
    prompts.forEach((p, r) => {
      const cap = Math.min(context, Math.max(this.capacity[r], p.length));
      this.cap[r] = cap;
      this.k[r] = new Float32Array(layers * heads * cap * dh);
      this.v[r] = new Float32Array(layers * heads * cap * dh);
      this.len[r] = 0;
    });
    return this.extend(
      prompts.map((_, r) => r),
      prompts,
    );
  }

  step(rows: number[], tokens: number[]): Float32Array[] {
    return this.extend(
      rows,
      tokens.map((t) => [t]),
    );
  }

  /**
   * Append tokens[i] (one or more) to row rows[i] and return each row's next-token logits.
   * Position-wise work runs on all new tokens at once as [sum of counts, d]; attention runs
   * on the host token by token, so row lengths never need padding (O(k^2) per row for k
   * new tokens: meant for prompts of tens of tokens, not thousands).
   */
  extend(rows: number[], tokens: number[][]): Float32Array[] {
    const { policy } = this;
    const { layers, dModel: d } = policy.cfg;
    const offsets: number[] = [];
    let total = 0;
    rows.forEach((r, i) => {
      const k = tokens[i].length;
      if (k < 1) throw new InvalidArgumentError(`sampler: no tokens to append to row ${r}`);
      if (this.len[r] + k > this.cap[r]) throw new ShapeMismatchError(`sampler: row ${r} would pass its cache capacity ${this.cap[r]}`);
      offsets.push(total);
      total += k;
    });
    const ids = new Int32Array(total);
    const pos = new Int32Array(total);
    const last = new Int32Array(rows.length);
    rows.forEach((r, i) => {
      tokens[i].forEach((t, j) => {
        ids[offsets[i] + j] = t;
        pos[offsets[i] + j] = this.len[r] + j;
      });
      last[i] = offsets[i] + tokens[i].length - 1;
    });
    let x = tf.tidy(() =>
      tf.add(tf.gather(param(policy, 'wte'), tf.tensor1d(ids, 'int32')), tf.gather(param(policy, 'wpe'), tf.tensor1d(pos, 'int32'))),
    ) as tf.Tensor2D;
    for (let l = 0; l < layers; l++) {
      const qkvT = tf.tidy(() => blockQkv(policy, l, x));
      const qkv = qkvT.dataSync() as Float32Array;
      qkvT.dispose();
      const att = new Float32Array(total * d);
      rows.forEach((r, i) => {
        for (let j = 0; j < tokens[i].length; j++) {
          const at = offsets[i] + j;
          this.attend(r, l, this.len[r] + j, qkv, at * 3 * d, att, at * d);
        }
      });
      const next = tf.tidy(() => blockTail(policy, l, x, tf.tensor2d(att, [total, d])));
      x.dispose();
      x = next;
    }
    const logitsT = tf.tidy(() => {
      const h = total === rows.length ? x : (tf.gather(x, tf.tensor1d(last, 'int32')) as tf.Tensor2D);
      return headLogits(policy, layerNorm(h, param(policy, 'lnf.g'), param(policy, 'lnf.b')));
    });
    x.dispose();
    const logits = logitsT.dataSync() as Float32Array;
    logitsT.dispose();
    rows.forEach((r, i) => (this.len[r] += tokens[i].length));
    return splitRows(logits, rows.length, policy.cfg.vocab);
  }

  /**
   * Write row r's k, v for position p (from qkv[at..at+3d)) in layer l, then
   * attend over positions 0..p into out[outAt..outAt+d). Hot loop: offsets, no views.
   */
  private attend(r: number, l: number, p: number, qkv: Float32Array, at: number, out: Float32Array, outAt: number): void {
    const { heads, dh, q, acc } = this;
    const d = heads * dh;
    const cap = this.cap[r];
    const K = this.k[r];
    const V = this.v[r];
    const s = this.scores;
    const scale = 1 / Math.sqrt(dh);
    for (let h = 0; h < heads; h++) {
      const base = (l * heads + h) * cap * dh;
      const src = at + h * dh;
      const dst = base + p * dh;
      for (let e = 0; e < dh; e++) {
        q[e] = qkv[src + e] * scale;
        K[dst + e] = qkv[src + d + e];
        V[dst + e] = qkv[src + 2 * d + e];
        acc[e] = 0;
      }
      let max = -Infinity;
      for (let j = 0, kj = base; j <= p; j++, kj += dh) {
        let dot = 0;
        for (let e = 0; e < dh; e++) dot += q[e] * K[kj + e];
        s[j] = dot;
        if (dot > max) max = dot;
      }
      let z = 0;
      for (let j = 0; j <= p; j++) {
        const w = Math.exp(s[j] - max);
        s[j] = w;
        z += w;
      }
      for (let j = 0, vj = base; j <= p; j++, vj += dh) {
        const w = s[j];
        for (let e = 0; e < dh; e++) acc[e] += w * V[vj + e];
      }
      const o = outAt + h * dh;
      for (let e = 0; e < dh; e++) out[o + e] = acc[e] / z;
    }
  }
}

/**
 * Device-resident KV cache, for backends whose tensors live on an accelerator (tfjs-node-gpu's
 * `tensorflow`, `webgl`, `webgpu`), where KVCacheDecoder's host-side attention would read q|k|v
 * back from the device once per layer per token. Here K and V stay tensors, [rows, heads,
 * capacity, dh] per layer; a step writes each row's new position with one scatter-add (a
 * position is written once, so adding to its zeros is a write) and attends with batched
 * matmuls under a length mask. The only read-back is the step's logits (the draw is host-side,
 * on our PRNG). Prompts are prefilled position by position (tens of tokens). Numerically the
 * host decoder's twin up to float32 rounding (test/unit/sampler.test.ts, on cpu and wasm);
 * on the CPU backends it is slower (batched matmuls) and is not chosen. tfjs has no in-place
 * update, so each step's scatter-add and gather copy a layer's whole cache: O(rows x capacity
 * x d) device memory traffic per token, which the attention itself costs anyway.
 */
export class DeviceKVDecoder implements Decoder {
  private k: tf.Tensor4D[] = [];
  private v: tf.Tensor4D[] = [];
  private len: number[] = [];
  private readonly cap: number;
  private readonly heads: number;
  private readonly dh: number;

  constructor(
    private readonly policy: Policy,
    capacity: number[],
  ) {
    const { heads, dModel } = policy.cfg;
    this.heads = heads;
    this.dh = dModel / heads;
    checkCapacity(policy.cfg, capacity);
    this.cap = Math.max(1, ...capacity);
  }

  prefill(prompts: number[][]): Float32Array[] {
    const { layers } = this.policy.cfg;
    const shape: [number, number, number, number] = [prompts.length, this.heads, this.cap, this.dh];
    for (let l = 0; l < layers; l++) {
      this.k.push(tf.zeros(shape));
      this.v.push(tf.zeros(shape));
    }
    this.len = prompts.map(() => 0);
    const out: Float32Array[] = new Array(prompts.length);
    const longest = Math.max(0, ...prompts.map((p) => p.length));
    for (let j = 0; j < longest; j++) {
      const rows = prompts.flatMap((p, r) => (p.length > j ? [r] : []));
      const logits = this.step(
        rows,
        rows.map((r) => prompts[r][j]),
      );
      rows.forEach((r, i) => {
        if (prompts[r].length === j + 1) out[r] = logits[i];
      });
    }
    return out;
  }

  step(rows: number[], tokens: number[]): Float32Array[] {
    const { policy, heads, dh, cap } = this;
    const { layers, dModel: d, vocab } = policy.cfg;
    const n = rows.length;
    for (const r of rows) if (this.len[r] + 1 > cap) throw new ShapeMismatchError(`sampler: row ${r} would pass its cache capacity ${cap}`);
    const pos = rows.map((r) => this.len[r]);
    // Row i sees positions 0..pos[i]; the rest of its cache is masked out.
    const mask = new Float32Array(n * cap);
    pos.forEach((p, i) => mask.fill(-1e9, i * cap + p + 1, (i + 1) * cap));
    // Where (row, head, position) each new k/v goes: [n * heads, 3].
    const at = new Int32Array(n * heads * 3);
    rows.forEach((r, i) => {
      for (let h = 0; h < heads; h++) at.set([r, h, pos[i]], (i * heads + h) * 3);
    });
    const logitsT = tf.tidy(() => {
      const rowIdx = tf.tensor1d(rows, 'int32');
      const where = tf.tensor2d(at, [n * heads, 3], 'int32');
      const bias = tf.tensor4d(mask, [n, 1, 1, cap]);
      let x = tf.add(
        tf.gather(param(policy, 'wte'), tf.tensor1d(tokens, 'int32')),
        tf.gather(param(policy, 'wpe'), tf.tensor1d(pos, 'int32')),
      ) as tf.Tensor2D;
      for (let l = 0; l < layers; l++) {
        const qkv = blockQkv(policy, l, x);
        const [q, k, v] = tf.split(qkv, 3, 1).map((t) => tf.reshape(t, [n * heads, dh]));
        const kNew = tf.add(this.k[l], tf.scatterND(where, k, this.k[l].shape)) as tf.Tensor4D;
        const vNew = tf.add(this.v[l], tf.scatterND(where, v, this.v[l].shape)) as tf.Tensor4D;
        tf.keep(kNew);
        tf.keep(vNew);
        this.k[l].dispose();
        this.v[l].dispose();
        this.k[l] = kNew;
        this.v[l] = vNew;
        const K = tf.reshape(tf.gather(kNew, rowIdx), [n * heads, cap, dh]);
        const V = tf.reshape(tf.gather(vNew, rowIdx), [n * heads, cap, dh]);
        const scores = tf.add(
          tf.reshape(tf.matMul(tf.reshape(tf.mul(q, 1 / Math.sqrt(dh)), [n * heads, 1, dh]), K, false, true), [n, heads, 1, cap]),
          bias,
        );
        const probs = tf.reshape(tf.softmax(scores), [n * heads, 1, cap]);
        const att = tf.reshape(tf.matMul(probs, V), [n, d]) as tf.Tensor2D;
        x = blockTail(policy, l, x, att);
      }
      return headLogits(policy, layerNorm(x, param(policy, 'lnf.g'), param(policy, 'lnf.b')));
    });
    const logits = logitsT.dataSync() as Float32Array;
    logitsT.dispose();
    rows.forEach((r) => (this.len[r] += 1));
    return splitRows(logits, n, vocab);
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    this.k = [];
    this.v = [];
  }
}

/**
 * One token from next-token logits: temperature, then top-p (smallest set of most likely
 * tokens whose mass reaches topP), then inverse-CDF with one `rng.next()` draw. Returns the
 * token and its log-prob under softmax(logits / temperature) (see SampleResult.logp).
 */
export function drawToken(logits: Float32Array, temperature: number, topP: number, rng: Rng): { token: number; logp: number } {
  const v = logits.length;
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < v; i++) if (logits[i] > logits[best]) best = i;
    return { token: best, logp: 0 };
  }
  let max = -Infinity;
  for (let i = 0; i < v; i++) max = Math.max(max, logits[i] / temperature);
  const w = new Float64Array(v);
  let z = 0;
  for (let i = 0; i < v; i++) {
    w[i] = Math.exp(logits[i] / temperature - max);
    z += w[i];
  }
  let order: number[];
  let mass = z;
  if (topP >= 1) {
    order = Array.from({ length: v }, (_, i) => i);
  } else {
    const sorted = Array.from({ length: v }, (_, i) => i).sort((a, b) => w[b] - w[a] || a - b);
    order = [];
    mass = 0;
    for (const i of sorted) {
      order.push(i);
      mass += w[i];
      if (mass >= topP * z) break;
    }
  }
  const u = rng.next() * mass;
  let token = order[order.length - 1];
  let acc = 0;
  for (const i of order) {
    acc += w[i];
    if (u < acc) {
      token = i;
      break;
    }
  }
  return { token, logp: logits[token] / temperature - max - Math.log(z) };
}

function checkOptions(policy: Policy, prompts: number[][], o: SampleOptions): void {
  const { vocab, context } = policy.cfg;
  const isToken = (t: number) => Number.isInteger(t) && t >= 0 && t < vocab;
  if (o.seeds.length !== prompts.length) throw new ShapeMismatchError(`sampler: ${prompts.length} prompts but ${o.seeds.length} seeds`);
  if (!Number.isInteger(o.budget) || o.budget < 1)
    throw new InvalidArgumentError(`sampler: budget must be an integer >= 1 (got ${o.budget})`);
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature))
    throw new InvalidArgumentError(`sampler: temperature must be >= 0 (got ${o.temperature})`);
  if (!(o.topP > 0 && o.topP <= 1)) throw new InvalidArgumentError(`sampler: topP must be in (0, 1] (got ${o.topP})`);
  if (!isToken(o.eos)) throw new InvalidArgumentError(`sampler: eos ${o.eos} is not a token id`);
  prompts.forEach((p, r) => {
    if (p.length === 0) throw new InvalidArgumentError(`sampler: prompt ${r} is empty`);
    if (!p.every(isToken)) throw new InvalidArgumentError(`sampler: prompt ${r} has a token outside [0, ${vocab})`);
    if (p.length + o.budget > context)
      throw new ShapeMismatchError(`sampler: prompt ${r} (${p.length} tokens) + budget ${o.budget} exceeds the context ${context}`);
  });
}

function makeDecoder(policy: Policy, caps: number[], opts: SampleOptions): Decoder {
  const engine = opts.engine ?? 'tfjs';
  if (engine === 'ort') {
    if (opts.kvCache === false || opts.cache === 'device')
      throw new InvalidArgumentError('sampler: engine ort has only its own host KV cache (kvCache and cache are tfjs options)');
    return new OrtDecoder(policy, caps);
  }
  if (engine !== 'tfjs') throw new InvalidArgumentError(`sampler: engine must be 'tfjs' or 'ort' (got ${String(engine)})`);
  const kind = opts.cache ?? (deviceResident() ? 'device' : 'host');
  return opts.kvCache === false
    ? new RecomputeDecoder(policy)
    : kind === 'device'
      ? new DeviceKVDecoder(policy, caps)
      : new KVCacheDecoder(policy, caps);
}

/** Sample one response per prompt row (see SampleOptions / SampleResult). Leaves no tensors behind. */
export async function sample(policy: Policy, prompts: number[][], opts: SampleOptions): Promise<SampleResult> {
  checkOptions(policy, prompts, opts);
  const { budget, temperature, topP, eos, forced } = opts;
  const yieldEvery = opts.yieldEvery ?? 4;
  const n = prompts.length;
  const rngs = opts.seeds.map((s) => new Rng(s));
  const responses: number[][] = prompts.map(() => []);
  const logps: number[][] = prompts.map(() => []);
  const masks: number[][] = prompts.map(() => []);
  const truncated: boolean[] = new Array(n).fill(false);
  const queue: number[][] = prompts.map(() => []);
  const caps = prompts.map((p) => p.length + budget);
  const decoder = makeDecoder(policy, caps, opts);
  try {
    const logits: Float32Array[] = n ? await decoder.prefill(prompts) : [];
    let active = prompts.map((_, r) => r);
    for (let stepNo = 1; active.length > 0; stepNo++) {
      const feedRows: number[] = [];
      const feedTokens: number[] = [];
      for (const r of active) {
        const resp = responses[r];
        if (queue[r].length === 0 && forced) {
          const f = forced(r, resp.slice());
          for (const t of f)
            if (!(Number.isInteger(t) && t >= 0 && t < policy.cfg.vocab))
              throw new InvalidArgumentError(`sampler: forced token ${t} for row ${r} is not a token id`);
          queue[r] = f.slice(0, budget - resp.length);
        }
        let token: number;
        if (queue[r].length > 0) {
          token = queue[r].shift()!;
          logps[r].push(0);
          masks[r].push(1);
        } else {
          const d = drawToken(logits[r], temperature, topP, rngs[r]);
          token = d.token;
          logps[r].push(d.logp);
          masks[r].push(0);
        }
        resp.push(token);
        if (token === eos) continue;
        if (resp.length >= budget) {
          truncated[r] = true;
          continue;
        }
        feedRows.push(r);
        feedTokens.push(token);
      }
      active = feedRows;
      if (active.length > 0) (await decoder.step(feedRows, feedTokens)).forEach((l, i) => (logits[feedRows[i]] = l));
      opts.onStep?.(stepNo, active.length);
      if (stepNo % yieldEvery === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return {
      responses,
      logp: logps.map((l) => Float32Array.from(l)),
      forcedMask: masks.map((m) => Uint8Array.from(m)),
      truncated,
    };
  } finally {
    decoder.dispose?.();
  }
}

/** Activation budget of one rescoring pass (a forward only: well under the wasm limit). */
const SCORE_BYTES = 2 ** 28;
/** Rescored rows are padded to a multiple of this many tokens (fewer, larger passes). */
const SCORE_BUCKET = 32;

/**
 * The log-probs `sample` reports (SampleResult.logp: log softmax(logits / temperature) at
 * each sampled token, 0 at forced tokens) recomputed by the tfjs forward (tokenLogProbs):
 * what an update needs as its old log-probs (pi_old of the clipped GRPO ratio) when another
 * engine sampled, as verl, the paper's trainer (App. B.1, Table 3), recomputes them with the
 * actor's own forward. Rows are batched by their length rounded up to
 * SCORE_BUCKET and right-padded to it (causal: padding after a row never reaches its
 * log-probs), so a row's padded shape is a function of the row alone and its values do not
 * depend on the rows scored with it (test/unit/ortSampler.test.ts).
 */
export function scoreResponses(
  policy: Policy,
  prompts: number[][],
  responses: number[][],
  forcedMask: Uint8Array[],
  temperature: number,
): Float32Array[] {
  if (!(temperature > 0)) throw new InvalidArgumentError(`scoreResponses: temperature must be > 0 (got ${temperature})`);
  const out: Float32Array[] = responses.map((r) => new Float32Array(r.length));
  const { context } = policy.cfg;
  const padded = prompts.map((p, r) => Math.min(context, Math.ceil((p.length + responses[r].length) / SCORE_BUCKET) * SCORE_BUCKET));
  for (const [t, group] of byLength(
    padded,
    prompts.map((_, r) => r),
  )) {
    const per = Math.max(1, Math.floor(SCORE_BYTES / activationBytes(policy.cfg, 1, t)));
    for (let k = 0; k < group.length; k += per) {
      const rows = group.slice(k, k + per);
      const flat = new Int32Array(rows.length * t); // padded with token 0
      rows.forEach((r, i) => {
        flat.set(prompts[r], i * t);
        flat.set(responses[r], i * t + prompts[r].length);
      });
      const tokens = tf.tensor2d(flat, [rows.length, t], 'int32');
      const { logp, entropy } = tokenLogProbs(policy, tokens, { temperature });
      const lp = logp.dataSync() as Float32Array;
      tf.dispose([tokens, logp, entropy]);
      rows.forEach((r, i) => {
        const P = prompts[r].length;
        for (let j = 0; j < responses[r].length; j++) out[r][j] = forcedMask[r][j] ? 0 : lp[i * (t - 1) + P + j - 1];
      });
    }
  }
  return out;
}

/** `sample` with full recomputation every step (the KV cache's reference; slow). */
export function sampleNoCache(policy: Policy, prompts: number[][], opts: SampleOptions): Promise<SampleResult> {
  return sample(policy, prompts, { ...opts, kvCache: false });
}
