/**
 * The task registry (ml/tasks.ts): countdown is registered by default and is what a config
 * without `task` trains on, with the same data, prompts and data/* metrics the trainer drew by
 * name; a task registered from outside ml/ is found by name, its warm-start examples drawn like
 * countdown's; an unknown name is one error naming the field, in a config too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { ConfigError } from '../../configs/errors';
import { loadConfig } from '../../configs/load';
import { resolveConfig } from '../../configs/schema';
import { countdownPrompt, difficultyProfile, generateCountdown } from '../../ml/countdown';
import { dataMetrics, heldOutProblem, iterationProblems, taskFor } from '../../ml/rollouts';
import { deriveSeed } from '../../ml/rng';
import { sftBatch } from '../../ml/traces';
import { DEFAULT_TASK, UnknownTaskError, loadTaskModules, registerTask, registeredTasks, sftExamples, taskNamed } from '../../ml/tasks';

const D = { count: 3, min: 1, max: 9, ops: '+-*' };

test('countdown is the default task: the same problems, prompts, traces and data metrics as by name', () => {
  assert.equal(DEFAULT_TASK, 'countdown');
  assert.ok(registeredTasks().includes('countdown'));
  const ps = iterationProblems(7, 'stage1', 2, 4, D);
  const s = deriveSeed(7, 'rl-data', 'stage1');
  assert.deepEqual(
    ps,
    [0, 1, 2, 3].map((i) => generateCountdown(s, 2 * 4 + i, D, 'train')),
  );
  assert.deepEqual(heldOutProblem(7, 'eval', D, 3), generateCountdown(deriveSeed(7, 'eval-data'), 3, D, 'eval'));
  assert.equal(taskFor(true).prompt(ps[0]), countdownPrompt(ps[0]));
  assert.deepEqual(sftExamples(undefined, 7, 1, 8, [D]), sftBatch(7, 1, 8, [D]));
  const prof = difficultyProfile(ps);
  const m = dataMetrics('data', ps);
  assert.equal(m['data/min_steps_mean'], prof.meanMinSteps);
  assert.equal(m['data/needs_all'], prof.needsAll);
  assert.deepEqual(Object.keys(m).slice(0, 2), ['data/min_steps_mean', 'data/needs_all']);
});

test('a task from a module outside ml/ (E3_TASK_MODULES) is found by name and draws its own warm-start examples', () => {
  const mods = loadTaskModules(' test/tasks/reverse.ts ,', path.resolve(__dirname, '..', '..'));
  assert.deepEqual(mods, ['test/tasks/reverse.ts']);
  const rev = taskNamed('reverse');
  const ex = sftExamples('reverse', 7, 0, 6, [D]);
  assert.equal(ex.length, 6);
  for (const e of ex) {
    assert.equal(e.prompt, `${e.problem.numbers.join('')}:`);
    assert.equal(rev.task(false).verify(e.problem, e.response, false).reward, 1, e.response);
  }
  assert.deepEqual(sftExamples('reverse', 7, 0, 6, [D]), ex, 'a pure function of (seed, step)');
  assert.deepEqual(
    dataMetrics(
      'data',
      ex.map((e) => e.problem),
      'reverse',
    ),
    {},
    'no profile: no data metrics',
  );
  assert.throws(() => loadTaskModules('no/such/module.ts'), /E3_TASK_MODULES: cannot load task module .*no\/such\/module\.ts/);
});

test('an unknown task is one error naming the field; a name is registered once', () => {
  assert.throws(
    () => taskNamed('nope'),
    (e: unknown) => e instanceof UnknownTaskError && /^task: unknown task "nope" \(registered: countdown/.test(e.message),
  );
  const cfg = { ...loadConfig('tiny'), task: 'nope' };
  assert.throws(
    () => resolveConfig(cfg, 'tiny'),
    (e: unknown) => e instanceof ConfigError && /^tiny: task: unknown task "nope"/.test(e.message),
  );
  assert.equal(resolveConfig({ ...loadConfig('tiny'), task: 'countdown' }, 'tiny').task, 'countdown');
  assert.equal('task' in resolveConfig(loadConfig('tiny'), 'tiny'), false, 'absent from a resolved config when not given');
  const t = taskNamed('countdown');
  assert.throws(() => registerTask('countdown', { ...t }), /already registered/);
  assert.throws(() => registerTask('bad name', t), /registerTask: name "bad name"/);
});
