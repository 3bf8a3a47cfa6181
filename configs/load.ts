/**
 * Named configs → validated RunConfig, with optional overrides.
 *
 * User configs are configs/<name>.json; the configs of recorded experiments are
 * configs/experiments/<name>.json, named `experiments/<name>` (a bare `<name>` finds them too,
 * so the commands in docs/results/ keep working). A config file may start from another with
 * `extends` and state only its changes: the parent is resolved first (recursively, cycles
 * refused), then the file is merged into it the way `--set` overrides are (`merge`). The file's
 * `description` is for `npx e3 configs` only: neither field reaches the resolved config, so
 * a run computes (and stores) the same config whichever way its file is written.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { ConfigHeaderSchema, resolveConfig } from './schema';
import { ConfigError } from './errors';
import type { RunConfig } from './schema';

export const CONFIG_DIR = __dirname;
/** Where experiment configs live (under CONFIG_DIR), and the prefix of their names. */
export const EXPERIMENTS = 'experiments';

const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const jsonNames = (dir: string): string[] =>
  existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => f.endsWith('.json'))
        .map((f) => f.slice(0, -5))
        .sort()
    : [];

/** User config names (configs/<name>.json), sorted. */
export const userConfigNames = (root = CONFIG_DIR): string[] => jsonNames(root);

/** Every config name: the user configs, then the experiments as `experiments/<name>`. */
export function configNames(root = CONFIG_DIR): string[] {
  return [...userConfigNames(root), ...jsonNames(path.join(root, EXPERIMENTS)).map((n) => `${EXPERIMENTS}/${n}`)];
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * Deep merge for objects (RFC 7386 JSON merge patch): arrays and scalars are replaced, `null`
 * removes the key. Keys keep the base's order; new keys follow (node order is run order among
 * ready nodes: configs/schema.ts topoOrder).
 */
export function merge(base: unknown, over: unknown): unknown {
  if (!isObject(base) || !isObject(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else out[k] = k in base ? merge(base[k], v) : v;
  }
  return out;
}

/** Parse JSON text naming the file on error. */
export function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: malformed JSON (${(e as Error).message})`);
  }
}

/** Edit distance (Levenshtein), to put the nearest known name first when a name is unknown. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next.push(Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)));
    row = next;
  }
  return row[b.length];
}

/** The user configs, nearest to `name` first (the experiments are listed by `npx e3 configs`). */
function known(name: string, root: string): string {
  const base = name.replace(`${EXPERIMENTS}/`, '');
  const names = userConfigNames(root).sort((a, b) => distance(base, a) - distance(base, b) || a.localeCompare(b));
  return `known: ${names.join(', ')}; \`npx e3 configs\` lists them all`;
}

/** The file of a config name (`tiny`, `experiments/ablation-256`, or a bare experiment name) or of a path ending in .json. */
export function configFile(nameOrPath: string, field = 'config', root = CONFIG_DIR): string {
  if (nameOrPath.endsWith('.json')) {
    const file = path.resolve(nameOrPath);
    if (!existsSync(file)) throw new ConfigError(`${field}: file ${file} does not exist`);
    return file;
  }
  const [dir, name] = nameOrPath.startsWith(`${EXPERIMENTS}/`)
    ? [path.join(root, EXPERIMENTS), nameOrPath.slice(EXPERIMENTS.length + 1)]
    : [root, nameOrPath];
  if (!NAME.test(name))
    throw new ConfigError(
      `${field}: ${JSON.stringify(nameOrPath)} is not a config name (letters, digits, '_', '-', optionally after "${EXPERIMENTS}/"; ${known(nameOrPath, root)})`,
    );
  for (const file of dir === root
    ? [path.join(dir, `${name}.json`), path.join(dir, EXPERIMENTS, `${name}.json`)]
    : [path.join(dir, `${name}.json`)]) {
    if (existsSync(file)) return file;
  }
  throw new ConfigError(`${field}: no config named "${nameOrPath}" (${known(nameOrPath, root)})`);
}

/** The name a run records for a config: its file's base name (`experiments/ablation-256` → `ablation-256`). */
export const configRunName = (nameOrPath: string): string => path.basename(nameOrPath, '.json');

const shown = (file: string) => path.relative(process.cwd(), file) || file;

/** A config file's header (extends, description), checked: errors name the file and the field. */
function header(raw: unknown, file: string) {
  if (!isObject(raw)) throw new ConfigError(`${shown(file)}: (root): expected an object`);
  const r = ConfigHeaderSchema.safeParse({ extends: raw.extends, description: raw.description });
  if (!r.success) {
    const i = r.error.issues[0];
    throw new ConfigError(`${shown(file)}: ${i.path.join('.') || '(root)'}: ${i.message}`);
  }
  const { extends: _e, description: _d, ...body } = raw;
  return { ...r.data, body };
}

/** A config file with its `extends` chain merged in (not yet validated); `chain` holds the files that extend it. */
function readResolved(file: string, root: string, chain: string[] = []): Record<string, unknown> {
  const h = header(parseJson(readFileSync(file, 'utf8'), shown(file)), file);
  if (h.extends === undefined) return h.body;
  const parent = configFile(h.extends, `${shown(file)}: extends`, root);
  const seen = [...chain, file];
  if (seen.includes(parent)) throw new ConfigError(`${shown(file)}: extends: cycle ${[...seen, parent].map(shown).join(' → ')}`);
  return merge(readResolved(parent, root, seen), h.body) as Record<string, unknown>;
}

/** The description of a config file (its first line, for listings). */
export function configDescription(nameOrPath: string, root = CONFIG_DIR): string {
  const file = configFile(nameOrPath, 'config', root);
  return header(parseJson(readFileSync(file, 'utf8'), shown(file)), file).description ?? '';
}

/**
 * A config as its runs record it, before validation: the `extends` chain merged, `extends` and
 * `description` dropped, `name` set to the file's base name unless the file gives one.
 */
export function rawConfig(nameOrPath: string, root = CONFIG_DIR): Record<string, unknown> {
  const file = configFile(nameOrPath, 'config', root);
  const raw = readResolved(file, root);
  return 'name' in raw ? raw : { ...raw, name: configRunName(file) };
}

/** Load a config by name (or a path ending in .json), apply overrides, validate. `root`: the configs folder (tests use their own). */
export function loadConfig(nameOrPath: string, overrides: Record<string, unknown> = {}, root = CONFIG_DIR): RunConfig {
  if (!isObject(overrides)) throw new ConfigError('overrides: must be an object');
  const raw = rawConfig(nameOrPath, root);
  return resolveConfig(merge(raw, overrides), shown(configFile(nameOrPath, 'config', root)));
}
