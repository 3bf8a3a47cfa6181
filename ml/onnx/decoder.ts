/**
 * The sampler's Decoder (ml/sampler.ts) on ONNX Runtime: one `run` per prefill group and
 * one per decode step, over graphs built from the policy's weights (ml/onnx/policyGraph.ts).
 * The KV cache lives here, in Float32Arrays fed to the step graph as inputs; the graph
 * returns only the new position's k and v, which are written in place.
 *
 * The cache holds `slots` rows with a common capacity C, a multiple of CHUNK: when a step
 * needs a position past C, or fewer than three quarters of the slots still run, the cache is
 * rebuilt for the running rows with C = the position needed plus 1/16 of it, rounded up to
 * CHUNK (a copy of what is cached, once per C/16 steps at most). Slots whose row does not
 * run in a step get token 0 at position 0 with every cached position masked, and their
 * outputs are dropped. So each step costs the longest running row plus at most ~6 % and
 * CHUNK positions, not the longest row the call may reach.
 *
 * Rows are independent: each row's numbers pass through the same per-row operations whatever
 * the other rows (every reduction is per row, along an axis of fixed length, or padded with
 * exact zeros at its end, or, for the softmax, padded to a multiple of SPAN), which
 * test/unit/ortSampler.test.ts and test/unit/pool.test.ts check bit for bit.
 */
import { createHash } from 'node:crypto';
import * as ort from 'onnxruntime-node';
import type { Decoder } from '../sampler';
import type { Policy } from '../policy';
import { checkCapacity, readParams } from '../policy';
import { InvalidArgumentError, ShapeMismatchError } from '../errors';
import { CHUNK, MASKED, SPAN, prefillModel, stepModel } from './policyGraph';
import type { Feeds, OrtSession, Results } from './runtime';
import { createSession } from './runtime';

interface Sessions {
  prefill: OrtSession;
  step: OrtSession;
}

/** One ORT thread per session: the compute pool runs one sampler per pool thread (compute/pool.ts). */
export const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
};

/** Sessions kept per process (policy versions); entries in use are never released. */
const KEEP = 3;
const cache = new Map<string, { sessions: Promise<Sessions>; users: number }>();

/** sha256 of the policy's config and weights, in parameter order: the session cache key. */
export function weightsKey(policy: Policy, values: ReadonlyMap<string, Float32Array>): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(policy.cfg));
  for (const [name, v] of values) {
    h.update(name);
    h.update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  }
  return h.digest('hex');
}

async function createSessions(policy: Policy, values: ReadonlyMap<string, Float32Array>): Promise<Sessions> {
  const [prefill, step] = await Promise.all([
    createSession(prefillModel(policy.cfg, values), SESSION_OPTIONS),
    createSession(stepModel(policy.cfg, values), SESSION_OPTIONS),
  ]);
  return { prefill, step };
}

/** The sessions for the policy's current weights (built once per weights version), held until `release`. */
async function acquire(policy: Policy): Promise<{ key: string; sessions: Sessions }> {
  const values = readParams(policy);
  const key = weightsKey(policy, values);
  let e = cache.get(key);
  if (e) {
    cache.delete(key); // re-insert: most recently used last
  } else {
    e = { sessions: createSessions(policy, values), users: 0 };
  }
  cache.set(key, e);
  e.users++;
  try {
    return { key, sessions: await e.sessions };
  } catch (err) {
    e.users--;
    cache.delete(key);
    throw err;
  }
}

function release(key: string): void {
  const e = cache.get(key);
  if (e) e.users--;
  for (const [k, v] of cache) {
    if (cache.size <= KEEP) break;
    if (v.users > 0) continue;
    cache.delete(k);
    void v.sessions
      .then((s) => {
        s.prefill.release();
        s.step.release();
      })
      .catch(() => undefined);
  }
}

const roundUp = (n: number, to = CHUNK) => Math.max(to, Math.ceil(n / to) * to);

/**
 * Cache buffers kept by this thread between rebuilds and between decoders, up to
 * RETAIN_BYTES. Memory a process writes for the first time costs a page fault per 4 KiB,
 * ~4 ms per MB on the VMs measured here against ~0.05 ms per MB for memory already written
 * (bench/NOTES.md "The cache's memory"), which made a fresh cache per rebuild cost more than
 * the steps. A buffer is allocated with half again the length asked for, so the next few
 * rebuilds of a growing cache find one. A reused buffer is zeroed (memory already written:
 * fast), so the step sees what a fresh allocation would give it.
 */
const RETAIN_BYTES = 768 * 2 ** 20;
const free: Float32Array[] = [];

function takeBuffer(n: number): Float32Array {
  let best = -1;
  for (let i = 0; i < free.length; i++) if (free[i].length >= n && (best < 0 || free[i].length < free[best].length)) best = i;
  if (best < 0) return new Float32Array(Math.ceil(n * 1.5)).subarray(0, n);
  return free.splice(best, 1)[0].subarray(0, n).fill(0);
}

/** Drop the buffers this thread keeps (tests: a decoder then starts from fresh memory). */
export function releaseCacheBuffers(): void {
  free.length = 0;
}

function giveBuffer(view: Float32Array): void {
  free.push(new Float32Array(view.buffer));
  free.sort((a, b) => b.length - a.length);
  let kept = 0;
  for (let i = 0; i < free.length; i++) {
    kept += free[i].byteLength;
    if (kept > RETAIN_BYTES) {
      free.length = i;
      break;
    }
  }
}

/** A decoder's step inputs before its first allocate and after dispose. */
const noIo = () => ({ tok: new Int32Array(0), pos: new Int32Array(0), bias: new Float32Array(0), feeds: {} as Feeds });

export class OrtDecoder implements Decoder {
  private key: string | undefined;
  private sessions: Sessions | undefined;
  private readonly heads: number;
  private readonly dh: number;
  private len: number[] = [];
  /** Row of each slot, and slot of each row (-1 once dropped). */
  private slotRow: number[] = [];
  private rowSlot: number[] = [];
  private cap = 0;
  private k: Float32Array[] = [];
  private vt: Float32Array[] = [];
  /** The step's inputs (`allocate`): token, position and mask per slot, written in place each step. */
  private io = noIo();

  /** `capacity[r]`: the longest row r will get (prompt + budget), at most the context. */
  constructor(
    private readonly policy: Policy,
    private readonly capacity: number[],
  ) {
    const { heads, dModel } = policy.cfg;
    this.heads = heads;
    this.dh = dModel / heads;
    checkCapacity(policy.cfg, capacity);
  }

  async prefill(prompts: number[][]): Promise<Float32Array[]> {
    if (!this.sessions) {
      const s = await acquire(this.policy);
      this.key = s.key;
      this.sessions = s.sessions;
    }
    const { layers, vocab } = this.policy.cfg;
    const { heads, dh } = this;
    const n = prompts.length;
    this.len = prompts.map(() => 0);
    this.slotRow = prompts.map((_, r) => r);
    this.rowSlot = prompts.map((_, r) => r);
    for (const a of [...this.k, ...this.vt]) giveBuffer(a);
    this.allocate(roundUp(Math.max(...prompts.map((p) => p.length)) + 1));
    const out: Float32Array[] = new Array(n);
    const groups = new Map<number, number[]>();
    prompts.forEach((p, r) => {
      if (p.length + 1 > this.capacity[r])
        throw new ShapeMismatchError(`sampler: row ${r} would pass its cache capacity ${this.capacity[r]}`);
      groups.set(p.length, [...(groups.get(p.length) ?? []), r]);
    });
    for (const [P, rows] of groups) {
      const g = rows.length;
      const mask = new Float32Array(P * P);
      for (let i = 0; i < P; i++) mask.fill(MASKED, i * P + i + 1, (i + 1) * P);
      const res = await this.sessions.prefill.run({
        tokens: new ort.Tensor('int32', Int32Array.from(rows.flatMap((r) => prompts[r])), [g, P]),
        positions: new ort.Tensor(
          'int32',
          Int32Array.from({ length: P }, (_, i) => i),
          [P],
        ),
        mask: new ort.Tensor('float32', mask, [P, P]),
      });
      const logits = res.logits.data as Float32Array;
      const C = this.cap;
      for (let l = 0; l < layers; l++) {
        const k = res[`k${l}`].data as Float32Array;
        const vt = res[`vt${l}`].data as Float32Array;
        rows.forEach((r, i) => {
          for (let h = 0; h < heads; h++) {
            const src = (i * heads + h) * P * dh;
            this.k[l].set(k.subarray(src, src + P * dh), (r * heads + h) * C * dh);
            for (let e = 0; e < dh; e++) this.vt[l].set(vt.subarray(src + e * P, src + (e + 1) * P), ((r * heads + h) * dh + e) * C);
          }
        });
      }
      rows.forEach((r, i) => {
        out[r] = logits.slice(i * vocab, (i + 1) * vocab);
        this.len[r] = P;
      });
      for (const t of Object.values(res)) t.dispose();
    }
    return out;
  }

  /**
   * Append tokens[i] to row rows[i]; returns those rows' next-token logits. A row left out of
   * a step may be dropped from the cache (sample() leaves out only finished rows): stepping
   * it later is an error. Synchronous where the session is (ml/onnx/runtime.ts).
   */
  step(rows: number[], tokens: number[]): Float32Array[] | Promise<Float32Array[]> {
    const sessions = this.sessions;
    if (!sessions) throw new InvalidArgumentError('sampler: step before prefill');
    let need = 0;
    for (const r of rows) {
      if (this.rowSlot[r] === undefined || this.rowSlot[r] < 0)
        throw new InvalidArgumentError(`sampler: row ${r} was dropped from the cache (it missed a step)`);
      if (this.len[r] + 1 > this.capacity[r])
        throw new ShapeMismatchError(`sampler: row ${r} would pass its cache capacity ${this.capacity[r]}`);
      need = Math.max(need, this.len[r] + 1);
    }
    if (need > this.cap || rows.length < 0.75 * this.slotRow.length) this.rebuild(rows, roundUp(need + (need >> 4)));
    const { tok, pos, bias } = this.io;
    const span = bias.length / this.slotRow.length;
    tok.fill(0);
    pos.fill(0);
    bias.fill(MASKED);
    rows.forEach((r, i) => {
      const s = this.rowSlot[r];
      tok[s] = tokens[i];
      pos[s] = this.len[r];
      bias.fill(0, s * span, s * span + this.len[r]);
    });
    const res = sessions.step.run(this.io.feeds);
    return res instanceof Promise ? res.then((out) => this.stepped(rows, out)) : this.stepped(rows, res);
  }

  /**
   * Write a step's new k and v rows into the cache; the rows' logits, as views of the step's
   * output (a fresh buffer every run, so a view stays valid after the next step).
   */
  private stepped(rows: number[], res: Results): Float32Array[] {
    const { layers, vocab, dModel: d } = this.policy.cfg;
    const { heads, dh } = this;
    const C = this.cap;
    const out = res.out.data as Float32Array;
    const width = vocab + 2 * layers * d;
    for (let l = 0; l < layers; l++) {
      const K = this.k[l];
      const Vt = this.vt[l];
      for (const r of rows) {
        const s = this.rowSlot[r];
        const p = this.len[r];
        const kAt = s * width + vocab + 2 * l * d;
        const vAt = kAt + d;
        for (let h = 0; h < heads; h++) {
          const kTo = ((s * heads + h) * C + p) * dh;
          const vTo = (s * heads + h) * dh * C + p;
          const from = h * dh;
          for (let e = 0; e < dh; e++) {
            K[kTo + e] = out[kAt + from + e];
            Vt[vTo + e * C] = out[vAt + from + e];
          }
        }
      }
    }
    return rows.map((r) => {
      const s = this.rowSlot[r];
      this.len[r] += 1;
      return out.subarray(s * width, s * width + vocab);
    });
  }

  /** A cache of capacity `cap` for the current slots (buffers from takeBuffer), and the step's feeds over it (reused every step). */
  private allocate(cap: number): void {
    const { layers } = this.policy.cfg;
    const { heads, dh } = this;
    const S = this.slotRow.length;
    const size = S * heads * dh * cap;
    const span = roundUp(cap, SPAN);
    this.cap = cap;
    this.k = Array.from({ length: layers }, () => takeBuffer(size));
    this.vt = Array.from({ length: layers }, () => takeBuffer(size));
    const tok = new Int32Array(S);
    const pos = new Int32Array(S);
    const bias = new Float32Array(S * span);
    const feeds: Feeds = {
      tokens: new ort.Tensor('int32', tok, [S]),
      pos: new ort.Tensor('int32', pos, [S]),
      bias: new ort.Tensor('float32', bias, [S, 1, 1, span]),
      pads: new ort.Tensor('int64', BigInt64Array.of(0n, 0n, 0n, 0n, 0n, 0n, 0n, BigInt(span - cap)), [8]),
      pastEnd: new ort.Tensor('int64', BigInt64Array.of(BigInt(cap + 1)), [1]),
    };
    for (let l = 0; l < layers; l++) {
      feeds[`k${l}`] = new ort.Tensor('float32', this.k[l], [S, heads, cap, dh]);
      feeds[`vt${l}`] = new ort.Tensor('float32', this.vt[l], [S, heads, dh, cap]);
    }
    this.io = { tok, pos, bias, feeds };
  }

  /** Keep only `rows` (in slot order), with capacity `cap`: copy their cached positions. */
  private rebuild(rows: number[], cap: number): void {
    const { heads, dh } = this;
    const keep = [...rows].sort((a, b) => this.rowSlot[a] - this.rowSlot[b]);
    const oldK = this.k;
    const oldVt = this.vt;
    const oldCap = this.cap;
    const oldSlot = keep.map((r) => this.rowSlot[r]);
    for (const r of this.slotRow) this.rowSlot[r] = -1;
    this.slotRow = keep;
    keep.forEach((r, s) => (this.rowSlot[r] = s));
    this.allocate(cap);
    oldK.forEach((K, l) => {
      keep.forEach((r, s) => {
        const n = this.len[r];
        for (let h = 0; h < heads; h++) {
          const src = (oldSlot[s] * heads + h) * oldCap * dh;
          this.k[l].set(K.subarray(src, src + n * dh), (s * heads + h) * cap * dh);
          for (let e = 0; e < dh; e++) {
            const from = ((oldSlot[s] * heads + h) * dh + e) * oldCap;
            this.vt[l].set(oldVt[l].subarray(from, from + n), ((s * heads + h) * dh + e) * cap);
          }
        }
      });
    });
    for (const a of [...oldK, ...oldVt]) giveBuffer(a);
  }

  dispose(): void {
    for (const a of [...this.k, ...this.vt]) giveBuffer(a);
    this.k = [];
    this.vt = [];
    this.io = noIo();
    if (this.key) release(this.key);
    this.key = undefined;
    this.sessions = undefined;
  }
}
