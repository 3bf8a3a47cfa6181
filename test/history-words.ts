/**
 * Lint (run by `npm run lint`): docs, configs and code speak of the project, not of its
 * making. A reference to a working session by number ("session" or "sessions" followed by a
 * number, any case, across a line break too) fails the check in every tracked file; name a
 * run by its id, config and commit instead (history lives in git log).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const PATTERN = /\bsessions?\s+\d/gi;
/** Not part of the repository's text (when there is no git index to ask). */
const SKIP = new Set(['node_modules', '.git', '.e3', 'out', path.join('infra', 'bin')]);

/** Each match in `text`: its 1-based line and that line. */
export function historyRefs(text: string): Array<{ line: number; text: string }> {
  const lines = text.split('\n');
  const out: Array<{ line: number; text: string }> = [];
  for (const m of text.matchAll(PATTERN)) {
    const line = text.slice(0, m.index).split('\n').length;
    out.push({ line, text: lines[line - 1].trim() });
  }
  return out;
}

/** Tracked files (git ls-files), else every file under the root but the skipped folders. */
function files(): string[] {
  const git = spawnSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' });
  if (git.status === 0) return git.stdout.split('\0').filter(Boolean);
  const walk = (dir: string): string[] =>
    readdirSync(path.join(ROOT, dir)).flatMap((n) => {
      const rel = path.join(dir, n);
      if (SKIP.has(rel)) return [];
      return statSync(path.join(ROOT, rel)).isDirectory() ? walk(rel) : [rel];
    });
  return walk('');
}

function main(): void {
  let hits = 0;
  for (const f of files()) {
    let buf: Buffer;
    try {
      buf = readFileSync(path.join(ROOT, f));
    } catch {
      continue; // deleted in the work tree, not yet in the index
    }
    if (buf.subarray(0, 8000).includes(0)) continue; // binary
    for (const h of historyRefs(buf.toString('utf8'))) {
      console.error(`${f}:${h.line}: names a working session by number (name the run by id, config, commit): ${h.text}`);
      hits++;
    }
  }
  if (hits > 0) {
    console.error(`${hits} reference(s) to working sessions by number`);
    process.exit(1);
  }
}

if (require.main === module) main();
