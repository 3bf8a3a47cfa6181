/**
 * AdamW (Loshchilov & Hutter 2019; PyTorch's `torch.optim.AdamW` update) with global
 * grad-norm clipping and a constant learning rate, as the recipe trains (docs/RECIPE.md:
 * "AdamW, constant LR, grad-norm clip 1.0"). Written out rather than tf.train.adam because
 * tfjs has no decoupled weight decay and no global-norm clip, and because a checkpoint needs
 * the moments as plain arrays (`getState` / `setState` round-trip exactly).
 *
 * Per step t, for each parameter p with gradient g (after clipping):
 *   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
 *   p ← p − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)
 * Clipping as `torch.nn.utils.clip_grad_norm_`: g ← g·min(1, maxGradNorm / (‖g‖ + 1e-6)),
 * ‖g‖ the global L2 norm over all gradients passed to `step`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InvalidArgumentError, NonFiniteError, ShapeMismatchError } from './errors';

export interface AdamWConfig {
  /** Constant learning rate. @default 1e-5 */
  lr: number;
  /** @default 0.9 */
  beta1: number;
  /** @default 0.999 */
  beta2: number;
  /** @default 1e-8 */
  eps: number;
  /** Decoupled weight decay (applied to parameters `decay(name)` accepts). @default 0.01 */
  weightDecay: number;
  /** Global grad-norm clip; Infinity disables clipping (the norm is still checked). @default 1.0 */
  maxGradNorm: number;
}

export const DEFAULT_ADAMW: Readonly<AdamWConfig> = Object.freeze({
  lr: 1e-5,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
  maxGradNorm: 1.0,
});

/** Optimiser state for checkpoints; m and v are keyed like the parameters. */
export interface AdamWState {
  step: number;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

export class AdamW {
  readonly cfg: Readonly<AdamWConfig>;
  private t = 0;
  private readonly m: Record<string, tf.Variable> = {};
  private readonly v: Record<string, tf.Variable> = {};

  /**
   * `params` maps a name to its variable. Key them by `variable.name` so that
   * `tf.variableGrads(f).grads` can be passed to `step` as it is.
   * `decay(name)` says which parameters get weight decay (default: all).
   */
  constructor(
    private readonly params: Record<string, tf.Variable>,
    cfg: Partial<AdamWConfig> = {},
    private readonly decay: (name: string) => boolean = () => true,
  ) {
    for (const k of Object.keys(cfg)) if (!(k in DEFAULT_ADAMW)) throw new InvalidArgumentError(`AdamW: unknown config key "${k}"`);
    const c = { ...DEFAULT_ADAMW, ...cfg };
    for (const [k, x] of Object.entries(c)) {
      if (typeof x !== 'number' || Number.isNaN(x) || x < 0) throw new InvalidArgumentError(`AdamW: ${k} must be a number >= 0 (got ${x})`);
    }
    if (c.beta1 >= 1 || c.beta2 >= 1) throw new InvalidArgumentError('AdamW: beta1 and beta2 must be < 1');
    if (!(c.maxGradNorm > 0))
      throw new InvalidArgumentError(`AdamW: maxGradNorm must be > 0 (got ${c.maxGradNorm}); Infinity disables clipping`);
    this.cfg = Object.freeze(c);
    for (const [name, p] of Object.entries(params)) {
      this.m[name] = zeroVariable(p);
      this.v[name] = zeroVariable(p);
    }
  }

  /** Steps taken so far (the t of the bias correction). */
  get stepCount(): number {
    return this.t;
  }

  /**
   * One update from `grads` (name → gradient, same shape as the parameter). A parameter with
   * no entry is left alone this step (as PyTorch does for `p.grad is None`); the bias
   * correction uses the global step count. Returns the global norm before clipping.
   * Throws NonFiniteError, before touching anything, when that norm is not finite.
   */
  step(grads: Record<string, tf.Tensor>): { gradNorm: number; clipScale: number } {
    const names = Object.keys(grads);
    for (const name of names) {
      const p = this.params[name];
      if (!p) throw new ShapeMismatchError(`AdamW.step: gradient for unknown parameter "${name}"`);
      if (p.shape.join() !== grads[name].shape.join())
        throw new ShapeMismatchError(`AdamW.step: gradient "${name}" has shape [${grads[name].shape}], parameter has [${p.shape}]`);
    }
    if (names.length === 0) return { gradNorm: 0, clipScale: 1 };
    const normT = tf.tidy(() => tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n]))))));
    const gradNorm = normT.dataSync()[0];
    normT.dispose();
    if (!Number.isFinite(gradNorm))
      throw new NonFiniteError(`AdamW.step: gradient norm is ${gradNorm} at step ${this.t + 1}; no parameter was changed`);

    const { lr, beta1, beta2, eps, weightDecay, maxGradNorm } = this.cfg;
    const clipScale = Math.min(1, maxGradNorm / (gradNorm + 1e-6));
    this.t++;
    const bc1 = 1 - beta1 ** this.t;
    const bc2 = 1 - beta2 ** this.t;
    for (const name of names) {
      tf.tidy(() => {
        const p = this.params[name];
        const g = clipScale < 1 ? tf.mul(grads[name], clipScale) : grads[name];
        const m = tf.add(tf.mul(this.m[name], beta1), tf.mul(g, 1 - beta1));
        const v = tf.add(tf.mul(this.v[name], beta2), tf.mul(tf.square(g), 1 - beta2));
        const update = tf.div(tf.div(m, bc1), tf.add(tf.sqrt(tf.div(v, bc2)), eps));
        const wd = this.decay(name) ? weightDecay : 0;
        p.assign(tf.sub(tf.mul(p, 1 - lr * wd), tf.mul(update, lr)));
        this.m[name].assign(m);
        this.v[name].assign(v);
      });
    }
    return { gradNorm, clipScale };
  }

  /** Copies of the step count and both moments (exact float32). */
  getState(): AdamWState {
    const m: Record<string, Float32Array> = {};
    const v: Record<string, Float32Array> = {};
    for (const name of Object.keys(this.params)) {
      m[name] = Float32Array.from(this.m[name].dataSync());
      v[name] = Float32Array.from(this.v[name].dataSync());
    }
    return { step: this.t, m, v };
  }

  /** Restore a `getState()` result; the parameter set and sizes must match exactly. */
  setState(state: AdamWState): void {
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new InvalidArgumentError(`AdamW.setState: step must be an integer >= 0 (got ${state.step})`);
    const want = Object.keys(this.params).sort().join();
    for (const part of ['m', 'v'] as const) {
      if (Object.keys(state[part]).sort().join() !== want)
        throw new ShapeMismatchError(`AdamW.setState: ${part} names do not match the parameters`);
      for (const [name, arr] of Object.entries(state[part])) {
        if (arr.length !== this.params[name].size)
          throw new ShapeMismatchError(
            `AdamW.setState: ${part}["${name}"] has ${arr.length} values, parameter has ${this.params[name].size}`,
          );
      }
    }
    for (const name of Object.keys(this.params)) {
      const shape = this.params[name].shape;
      tf.tidy(() => {
        this.m[name].assign(tf.tensor(state.m[name], shape, 'float32'));
        this.v[name].assign(tf.tensor(state.v[name], shape, 'float32'));
      });
    }
    this.t = state.step;
  }

  /** Free the moment variables (the parameters belong to the caller). */
  dispose(): void {
    for (const name of Object.keys(this.params)) {
      this.m[name].dispose();
      this.v[name].dispose();
    }
  }
}

function zeroVariable(like: tf.Variable): tf.Variable {
  const zeros = tf.zerosLike(like);
  const v = tf.variable(zeros, false);
  zeros.dispose();
  return v;
}
