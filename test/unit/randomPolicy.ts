import type { Policy, PolicyConfig } from '../../ml/policy';
import { assignParams, createPolicy } from '../../ml/policy';
import { Rng } from '../../ml/rng';

/**
 * A policy of `cfg`'s shape with random weights of size `scale` (distributions far from
 * uniform), for the sampler tests. Unit 0 of the final LayerNorm is pinned to 1 (g = 0, b = 1),
 * so head row 0 is an output bias: token `eos` gets `eosBias`, every other token 0.
 */
export function randomPolicy(cfg: PolicyConfig, seed: number, o: { scale: number; eos: number; eosBias: number }): Policy {
  const p = createPolicy({ ...cfg, seed });
  const rng = new Rng(seed);
  const values = new Map<string, Float32Array>();
  for (const [name, v] of p.params)
    values.set(
      name,
      Float32Array.from({ length: v.size }, () => (name.endsWith('.g') ? 1 : 0) + o.scale * rng.normal()),
    );
  values.get('lnf.g')![0] = 0;
  values.get('lnf.b')!.fill(0)[0] = 1;
  values.get('head')!.fill(0, 0, cfg.vocab)[o.eos] = o.eosBias;
  assignParams(p, values);
  return p;
}
