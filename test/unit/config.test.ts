import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { configNames, loadConfig } from '../../configs/load';
import { ConfigError, policySource, resolveConfig, topoOrder } from '../../configs/schema';
import { checkId } from '../../storage/layout';

const base = () => ({
  name: 't',
  nodes: {
    sft: { kind: 'sft' },
    rl: { kind: 'rl', deps: ['sft'] },
  },
});

const rejects = (raw: unknown, re: RegExp) => assert.throws(() => resolveConfig(raw), (e: Error) => e instanceof ConfigError && re.test(e.message), `expected ${re}`);

test('negative-gradients is the committed (b) experiment: ablation-search with klCoef 0.05 and pgMarks ok on both arms, nothing else', () => {
  const arm = { grpo: { klCoef: 0.05, pgMarks: 'ok' } };
  const { name: a, ...viaOverrides } = loadConfig('ablation-search', { nodes: { grpo: arm, 'positive-only': arm } });
  const { name: b, ...committed } = loadConfig('negative-gradients');
  assert.deepEqual(committed, viaOverrides);
  assert.notEqual(a, b);
  assert.notDeepEqual(loadConfig('ablation-search').nodes.grpo, committed.nodes.grpo);
});

test('every shipped config validates, with defaults filled in', () => {
  assert.ok(configNames().includes('tiny'));
  for (const name of configNames()) {
    const c = loadConfig(name);
    assert.equal(c.name, name);
    assert.equal(typeof c.seed, 'number');
    assert.ok(Object.keys(c.nodes).length > 0);
  }
  const t = loadConfig('tiny');
  const rl = t.nodes.stage1;
  assert.equal(rl.kind, 'rl');
  if (rl.kind === 'rl') {
    assert.equal(rl.grpo.epsLow, 0.2);
    assert.equal(rl.grpo.epsHigh, 0.35);
    assert.equal(rl.temperature, 0.6);
  }
});

test('unknown keys, wrong types and out-of-range values are rejected naming the field', () => {
  rejects({ ...base(), sede: 3 }, /\(root\).*sede|Unrecognized key.*sede/);
  rejects({ ...base(), seed: 'three' }, /^config: seed: /);
  rejects({ ...base(), seed: -1 }, /^config: seed: /);
  rejects({ ...base(), nodes: { ...base().nodes, rl: { kind: 'rl', deps: ['sft'], iterations: 0 } } }, /nodes\.rl\.iterations/);
  rejects({ ...base(), nodes: { ...base().nodes, rl: { kind: 'rl', deps: ['sft'], grpo: { epsLo: 0.1 } } } }, /nodes\.rl\.grpo/);
  rejects({ ...base(), nodes: { x: { kind: 'train' } } }, /nodes\.x/);
  rejects({ ...base(), model: { dModel: 30, heads: 4 } }, /model\.dModel/);
});

test('graph errors: cycles, missing dependencies, impossible budgets', () => {
  rejects({ name: 't', nodes: { a: { kind: 'sft', deps: ['b'] }, b: { kind: 'sft', deps: ['a'] } } }, /cycle/);
  rejects({ name: 't', nodes: { a: { kind: 'rl', deps: ['nope'] } } }, /nodes\.a\.deps: unknown node "nope"/);
  rejects({ ...base(), model: { context: 64 }, nodes: { ...base().nodes, rl: { kind: 'rl', deps: ['sft'], budget: 60 } } }, /nodes\.rl: budget 60 .* exceeds model\.context 64/);
  rejects({ name: 't', nodes: { e: { kind: 'eval' } } }, /nodes\.e: no policy to start from/);
  rejects({ ...base(), nodes: { ...base().nodes, rl: { kind: 'rl', deps: ['sft'], budget: { fromNode: 'sft' } } } }, /budget\.fromNode: "sft" is not a select-budget node/);
  rejects({ ...base(), nodes: { ...base().nodes, s: { kind: 'select-budget', deps: ['sft'], grid: [10, 30, 10] } } }, /nodes\.s\.grid: a budget appears twice/);
  // Eq. 6.1 measures J(2B) for the largest candidate: 2 x 48 plus the prompt must fit the context.
  rejects({ ...base(), model: { context: 96 }, nodes: { ...base().nodes, s: { kind: 'select-budget', deps: ['sft'], grid: [20, 48] } } }, /nodes\.s\.grid: Eq\. 6\.1 measures J\(2B\) for the largest candidate, so budget 96 plus the prompt .* exceeds model\.context 96/);
});

test('topological order respects dependencies and config order', () => {
  assert.deepEqual(topoOrder({ c: { deps: ['a', 'b'] }, a: { deps: [] }, b: { deps: ['a'] } }), ['a', 'b', 'c']);
});

test('malformed JSON names the file; unknown config names list the known ones', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'e3cfg-'));
  const f = path.join(dir, 'broken.json');
  writeFileSync(f, '{ "seed": 1, ');
  assert.throws(() => loadConfig(f), (e: Error) => e instanceof ConfigError && e.message.includes('broken.json') && /malformed JSON/.test(e.message));
  assert.throws(() => loadConfig('nope'), /no config named "nope" \(known: .*tiny/);
  assert.throws(() => loadConfig('../etc/passwd'), /is not a config name/);
});

test('ids with path separators or odd characters are refused', () => {
  for (const bad of ['a/b', '../x', 'a\\b', '', '.hidden', 'a..b', 'x y', 'é']) assert.throws(() => checkId('runId', bad), /runId: .* is not a valid id/);
  assert.equal(checkId('runId', 'demo-abc_1.2'), 'demo-abc_1.2');
});

test('overrides merge deeply and are validated too', () => {
  const c = loadConfig('tiny', { seed: 11, nodes: { stage1: { iterations: 2 } } });
  assert.equal(c.seed, 11);
  assert.equal(c.nodes.stage1.kind === 'rl' && c.nodes.stage1.iterations, 2);
  assert.throws(() => loadConfig('tiny', { nodes: { stage1: { iterations: 'many' } } }), /nodes\.stage1\.iterations/);
});

test('difficulty knobs and "@init": validated, and "@init" starts from the run init', () => {
  assert.throws(() => loadConfig('tiny', { nodes: { stage1: { difficulty: { count: 3, minSteps: 3 } } } }), /nodes\.stage1\.difficulty\.minSteps: minSteps must be <= count - 1/);
  assert.throws(() => loadConfig('tiny', { nodes: { stage1: { from: 'nope' } } }), /nodes\.stage1\.from: unknown node "nope"/);
  const cur = loadConfig('curriculum');
  assert.equal(policySource(cur, 'stage2'), 'stage1');
  assert.equal(policySource(cur, 'none'), null, 'an arm that waits on select2 still starts from the base');
  assert.equal(policySource(cur, 'budget-only-2'), 'budget-only-1');
  // scratch init and "@init" with no policy anywhere: refused
  assert.throws(() => loadConfig('tiny', { nodes: { stage1: { from: '@init' } } }), /nodes\.stage1: no policy to start from/);
});
