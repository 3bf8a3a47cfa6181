/**
 * Object keys of the store layout (docs/ARCHITECTURE.md "Object store layout"). Pure: also imported
 * (by type and value) from workflows, so no Node built-ins here.
 */
const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

/** Run ids, node ids and lineage names become key segments: no separators, no dot-dot. */
export function checkId(field: string, value: string): string {
  if (typeof value !== 'string' || !ID.test(value) || value.includes('..')) {
    throw new Error(
      `${field}: ${JSON.stringify(value)} is not a valid id (letters, digits, '.', '_', '-'; at most 100; no path separators or '..')`,
    );
  }
  return value;
}

export const pad6 = (n: number): string => String(n).padStart(6, '0');

export const keys = {
  manifest: (run: string) => `runs/${run}/manifest.json`,
  metrics: (run: string) => `runs/${run}/metrics.jsonl`,
  metricsPart: (run: string, node: string, step: number) => `runs/${run}/metrics/${node}/${pad6(step)}.json`,
  ckptDir: (run: string, node: string) => `runs/${run}/${node}/ckpt/`,
  ckpt: (run: string, node: string, step: number) => `runs/${run}/${node}/ckpt/${pad6(step)}/`,
  latest: (run: string, node: string) => `runs/${run}/${node}/ckpt/LATEST`,
  rollouts: (run: string, node: string, step: number, shard: number) => `runs/${run}/${node}/rollouts/${pad6(step)}/shard-${shard}.json`,
  /** An RL node's policy as its trainer published it for rollout workers: content-addressed by the sha256 of its bytes. */
  policy: (run: string, sha256: string) => `runs/${run}/policies/${sha256}.e3w`,
  /** Graded rows of part `part` of `parts` of iteration `step`, sampled with the policy whose sha256 starts with `policy`. */
  rolloutPart: (run: string, node: string, step: number, part: number, parts: number, policy: string) =>
    `runs/${run}/${node}/rollouts/${pad6(step)}/part-${part}-of-${parts}-${policy.slice(0, 16)}.json`,
  graded: (run: string, node: string, step: number) => `runs/${run}/${node}/rollouts/${pad6(step)}/graded.json`,
  /** Counts of an evaluation's problems [from, from + chunk), written as it goes (a retry resumes from its heartbeat cursor). */
  evalChunk: (run: string, node: string, from: number) => `runs/${run}/${node}/eval/${pad6(from)}.json`,
  /**
   * Per-problem counts of part `part` of `parts` of an evaluation or select-budget node, sampled with the policy
   * `policy` (a sha256, or the seeded init); beside eval/, not in it (readers list eval/ for the chunks).
   */
  evalPart: (run: string, node: string, part: number, parts: number, policy: string) =>
    `runs/${run}/${node}/eval-parts/part-${part}-of-${parts}-${policy.slice(0, 16)}.json`,
  result: (run: string, node: string) => `runs/${run}/${node}/result.json`,
  report: (run: string, file = 'index.html') => `runs/${run}/report/${file}`,
  lineage: (name: string) => `lineages/${name}/LATEST`,
};
