/**
 * The demo's stage 1 alone, as the rollout benches run it (bench/fanout.bench.ts,
 * bench/scaling.ts): `demo` run overrides that drop every other node and give stage 1 a fixed
 * budget, `iterations` iterations committed once at the end, and `rolloutParts` when set.
 */
export function demoStage1Overrides(o: { budget: number; iterations: number; rolloutParts?: number }) {
  return {
    nodes: {
      select1: null,
      select2: null,
      stage2: null,
      'eval-base': null,
      'eval-stage1': null,
      'eval-stage2': null,
      report: null,
      stage1: {
        deps: [],
        budget: o.budget,
        iterations: o.iterations,
        ckptEvery: o.iterations,
        ...(o.rolloutParts !== undefined ? { rolloutParts: o.rolloutParts } : {}),
      },
    },
  };
}
