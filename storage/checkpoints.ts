/**
 * Checkpoints: one folder per step, `runs/<run>/<node>/ckpt/<step:06d>/`, holding the
 * blobs, then `manifest.json` (sha256 and size of every blob, the resolved config, the
 * metrics), then the node's `LATEST` pointer, written last: the commit point. A folder
 * without a LATEST that ever pointed at it is not a checkpoint. Loading verifies every
 * sha256; a corrupt or missing commit falls back to the previous one and says so.
 */
import { keys } from './layout';
import type { ObjectStore } from './store';
import { MissingObjectError } from './errors';
import { CorruptObjectError } from './errors';

export interface CheckpointManifest {
  step: number;
  files: Record<string, { sha256: string; size: number }>;
  /** Free-form small JSON: resolved config, metrics, backend, cursor. */
  meta: Record<string, unknown>;
  /** Higher is better; retention keeps the best one besides the last N. */
  score?: number;
}

export interface Latest {
  step: number;
  manifestSha256: string;
}

export interface LoadedCheckpoint {
  manifest: CheckpointManifest;
  files: Record<string, Buffer>;
  /** Steps that were tried first and rejected (corrupt or missing), newest first. */
  skipped: Array<{ step: number; error: string }>;
}

export interface Retention {
  /** Keep this many newest commits. @default 2 */
  keepLast: number;
  /** Also keep the commit with the best score. @default true */
  keepBest: boolean;
}

const stepOfKey = (prefix: string, key: string): number | null => {
  const m = /^(\d{6})\//.exec(key.slice(prefix.length));
  return m ? Number(m[1]) : null;
};

/** Write blobs, then the manifest, then LATEST; prune old commits only afterwards. */
export async function commitCheckpoint(
  store: ObjectStore,
  run: string,
  node: string,
  step: number,
  blobs: Record<string, Uint8Array | string>,
  meta: Record<string, unknown>,
  opts: { score?: number; retention?: Retention } = {},
): Promise<Latest> {
  const dir = keys.ckpt(run, node, step);
  const files: CheckpointManifest['files'] = {};
  for (const [name, bytes] of Object.entries(blobs)) files[name] = await store.put(dir + name, bytes);
  const manifest: CheckpointManifest = { step, files, meta, ...(opts.score !== undefined ? { score: opts.score } : {}) };
  const { sha256 } = await store.putJson(dir + 'manifest.json', manifest);
  const latest: Latest = { step, manifestSha256: sha256 };
  await store.putJson(keys.latest(run, node), latest);
  await pruneCheckpoints(store, run, node, step, opts.retention ?? { keepLast: 2, keepBest: true });
  return latest;
}

async function readCommit(store: ObjectStore, run: string, node: string, step: number, manifestSha?: string): Promise<LoadedCheckpoint> {
  const dir = keys.ckpt(run, node, step);
  const manifest = await store.getJson<CheckpointManifest>(dir + 'manifest.json', manifestSha);
  if (manifest.step !== step) throw new CorruptObjectError(dir + 'manifest.json', `step ${step}`, `step ${manifest.step}`);
  const files: Record<string, Buffer> = {};
  for (const [name, f] of Object.entries(manifest.files)) files[name] = await store.get(dir + name, f.sha256);
  return { manifest, files, skipped: [] };
}

/** Steps that have a manifest, ascending. */
async function committedSteps(store: ObjectStore, run: string, node: string): Promise<number[]> {
  const prefix = keys.ckptDir(run, node);
  const steps = new Set<number>();
  for (const k of await store.list(prefix)) {
    const s = stepOfKey(prefix, k);
    if (s !== null && k.endsWith('/manifest.json')) steps.add(s);
  }
  return [...steps].sort((a, b) => a - b);
}

export async function readLatest(store: ObjectStore, run: string, node: string): Promise<Latest | null> {
  try {
    return await store.getJson<Latest>(keys.latest(run, node));
  } catch (e) {
    if (e instanceof MissingObjectError) return null;
    throw e;
  }
}

/**
 * Load the newest valid commit: LATEST first, then older committed steps if it is corrupt
 * or missing (each rejection reported through `onSkip` and in `skipped`). Null when the
 * node has no checkpoint at all.
 */
export async function loadCheckpoint(
  store: ObjectStore,
  run: string,
  node: string,
  onSkip: (step: number, error: string) => void = () => {},
): Promise<LoadedCheckpoint | null> {
  let latest: Latest | null = null;
  const skipped: LoadedCheckpoint['skipped'] = [];
  try {
    latest = await readLatest(store, run, node);
  } catch (e) {
    if (!(e instanceof CorruptObjectError)) throw e;
    skipped.push({ step: -1, error: e.message });
    onSkip(-1, e.message);
  }
  const older = (await committedSteps(store, run, node)).reverse().filter((s) => latest === null || s < latest.step);
  const candidates: Array<[number, string | undefined]> = [
    ...(latest ? ([[latest.step, latest.manifestSha256]] as Array<[number, string]>) : []),
    ...older.map((s) => [s, undefined] as [number, undefined]),
  ];
  // Without a readable LATEST, only folders from before a corrupt pointer are candidates;
  // a folder with a manifest but no LATEST ever written may be an unfinished commit, but its
  // every blob is still checked against the manifest's sha256, so it is complete if it loads.
  for (const [step, sha] of candidates) {
    try {
      const c = await readCommit(store, run, node, step, sha);
      return { ...c, skipped };
    } catch (e) {
      if (!(e instanceof CorruptObjectError || e instanceof MissingObjectError)) throw e;
      skipped.push({ step, error: e.message });
      onSkip(step, e.message);
    }
  }
  return null;
}

/** Delete commits older than `committed` except the newest `keepLast` and the best by score. */
export async function pruneCheckpoints(store: ObjectStore, run: string, node: string, committed: number, r: Retention): Promise<number[]> {
  const prefix = keys.ckptDir(run, node);
  const all = await store.list(prefix);
  const byStep = new Map<number, string[]>();
  for (const k of all) {
    const s = stepOfKey(prefix, k);
    if (s !== null && s <= committed) byStep.set(s, [...(byStep.get(s) ?? []), k]);
  }
  const steps = [...byStep.keys()].sort((a, b) => b - a);
  const withManifest = steps.filter((s) => byStep.get(s)!.some((k) => k.endsWith('/manifest.json')));
  const keep = new Set<number>(withManifest.slice(0, Math.max(1, r.keepLast)));
  keep.add(committed);
  if (r.keepBest) {
    let best: { step: number; score: number } | null = null;
    for (const s of withManifest) {
      try {
        const m = await store.getJson<CheckpointManifest>(keys.ckpt(run, node, s) + 'manifest.json');
        if (m.score !== undefined && (best === null || m.score > best.score)) best = { step: s, score: m.score };
      } catch {
        /* a corrupt old manifest is simply not a candidate for best */
      }
    }
    if (best) keep.add(best.step);
  }
  const drop = steps.filter((s) => !keep.has(s));
  await store.remove(drop.flatMap((s) => byStep.get(s)!));
  return drop;
}
