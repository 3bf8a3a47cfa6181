/** Named configs (configs/<name>.json) → validated RunConfig, with optional overrides. */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, resolveConfig } from './schema';
import type { RunConfig } from './schema';

export const CONFIG_DIR = __dirname;

export function configNames(): string[] {
  return readdirSync(CONFIG_DIR).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Deep merge for objects; arrays and scalars are replaced. */
export function merge(base: unknown, over: unknown): unknown {
  if (!isObject(base) || !isObject(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in base ? merge(base[k], v) : v;
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

/** Load configs/<name>.json (or a path ending in .json), apply overrides, validate. */
export function loadConfig(nameOrPath: string, overrides: Record<string, unknown> = {}): RunConfig {
  let file: string;
  if (nameOrPath.endsWith('.json')) file = path.resolve(nameOrPath);
  else {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(nameOrPath)) throw new ConfigError(`config: ${JSON.stringify(nameOrPath)} is not a config name (letters, digits, '_', '-'; known: ${configNames().join(', ')})`);
    file = path.join(CONFIG_DIR, `${nameOrPath}.json`);
    if (!existsSync(file)) throw new ConfigError(`config: no config named "${nameOrPath}" (known: ${configNames().join(', ')})`);
  }
  if (!existsSync(file)) throw new ConfigError(`config: file ${file} does not exist`);
  const raw = parseJson(readFileSync(file, 'utf8'), file);
  if (!isObject(overrides)) throw new ConfigError('overrides: must be an object');
  const named = isObject(raw) && !('name' in raw) ? { ...raw, name: path.basename(file, '.json') } : raw;
  return resolveConfig(merge(named, overrides), path.relative(process.cwd(), file) || file);
}
