// ESLint flat config: typescript-eslint with type information; workflow files are
// restricted to deterministic imports (docs/ARCHITECTURE.md: no Node built-ins, tfjs, minio, or
// activity implementations — `import type` only).
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = builtinModules.flatMap((m) => [m, `node:${m}`]);

export default tseslint.config(
  { ignores: ['node_modules/**', 'infra/**', '.e3/**', 'test/fixtures/**', 'out/**', 'eslint.config.mjs'] },
  ...tseslint.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', name: ['test', 'it', 'describe', 'suite'], package: 'node:test' }] },
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { disallowTypeAnnotations: false }],
      '@typescript-eslint/no-require-imports': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // The compute pool sits below activities/: its errors are its own (compute/errors.ts), mapped there.
    files: ['compute/**/*.ts', 'ml/**/*.ts', 'storage/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '(^|/)(activities|workflows|workers)(/|$)',
              message: 'compute/, ml/ and storage/ do not import the layers above them.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'Workflows must be deterministic: no Node built-ins.' })),
          patterns: [
            { group: ['@tensorflow/*'], message: 'Workflows may not import tfjs.' },
            { group: ['minio', 'minio/*'], message: 'Workflows may not import minio.' },
            {
              regex: '(^|/)activities(/(?!types$)[^/]+)?$',
              allowTypeImports: true,
              message: 'Workflows import activities by type only (activities/types holds pure shared constants).',
            },
            {
              regex: '(^|/)(ml|storage)/(?!layout$)[^/]+$',
              allowTypeImports: true,
              message: 'Workflows import ml/ and storage/ by type only (storage/layout is pure).',
            },
            {
              group: ['@temporalio/client', '@temporalio/worker', '@temporalio/activity'],
              message: 'Workflows use @temporalio/workflow only.',
            },
          ],
        },
      ],
    },
  },
);
