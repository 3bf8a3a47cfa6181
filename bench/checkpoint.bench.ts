/**
 * Checkpoint commit and load through the object store (storage/checkpoints.ts over the S3
 * server) against the same protocol on local disk, side by side in one run (issue: every
 * core, item 5). The disk variant does what a commit must do to be as safe: sha256 of every
 * blob, each blob written and fsynced, the manifest, then LATEST by an atomic rename; a load
 * reads LATEST, the manifest and the blobs, and checks every sha256.
 *
 * Two sizes: the committed base's (weights 1.6 MB + AdamW state 2x) and the `gpu` config's
 * (8 x 384, context 2112: 15.6 M parameters, weights 62 MB + state 2x, synthetic bytes).
 * Needs the S3 server up (`npx e3 up`). Prints a table; never fails on speed.
 *
 *   npx tsx bench/checkpoint.bench.ts [repeats=3]
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { commitCheckpoint, loadCheckpoint } from '../storage/checkpoints';
import { ObjectStore } from '../storage/store';
import { paramShapes } from '../ml/policy';
import { VOCAB_SIZE } from '../ml/tokenizer';

const REPEATS = Number(process.argv[2] ?? 3);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function writeSynced(file: string, bytes: Uint8Array | string): Promise<void> {
  const f = await open(file, 'w');
  try {
    await f.writeFile(bytes);
    await f.sync();
  } finally {
    await f.close();
  }
}

/** The commit protocol on a local directory. */
async function diskCommit(dir: string, step: number, blobs: Record<string, Uint8Array | string>): Promise<void> {
  const at = path.join(dir, String(step).padStart(6, '0'));
  await mkdir(at, { recursive: true });
  const files: Record<string, string> = {};
  for (const [name, b] of Object.entries(blobs)) {
    const bytes = typeof b === 'string' ? Buffer.from(b) : b;
    files[name] = sha(bytes);
    await writeSynced(path.join(at, name), bytes);
  }
  await writeSynced(path.join(at, 'manifest.json'), JSON.stringify({ step, files }));
  await writeSynced(path.join(dir, 'LATEST.tmp'), String(step));
  await rename(path.join(dir, 'LATEST.tmp'), path.join(dir, 'LATEST'));
}

async function diskLoad(dir: string): Promise<number> {
  const step = (await readFile(path.join(dir, 'LATEST'), 'utf8')).trim();
  const at = path.join(dir, step.padStart(6, '0'));
  const m = JSON.parse(await readFile(path.join(at, 'manifest.json'), 'utf8')) as { files: Record<string, string> };
  let bytes = 0;
  for (const [name, want] of Object.entries(m.files)) {
    const b = await readFile(path.join(at, name));
    if (sha(b) !== want) throw new Error(`${name}: sha256 mismatch`);
    bytes += b.length;
  }
  return bytes;
}

function paramsOf(model: { layers: number; dModel: number; heads: number; context: number }): number {
  return paramShapes({ vocab: VOCAB_SIZE, ...model, seed: 1 }).reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0);
}

async function main() {
  const store = ObjectStore.fromEnv();
  await store.ensureBucket().catch((e: Error) => {
    throw new Error(
      `checkpoint bench: the object store at ${store.cfg.endpoint} is not reachable (start the servers: npx e3 up): ${e.message}`,
    );
  });
  const base = readFileSync(path.join(__dirname, '..', 'configs', 'base', 'base.e3w'));
  const gpuParams = paramsOf({ layers: 8, dModel: 384, heads: 6, context: 2112 });
  const sizes = [
    { name: 'base (3x96)', weights: new Uint8Array(base), optim: randomBytes(2 * base.length) },
    {
      name: `gpu (8x384, ${(gpuParams / 1e6).toFixed(1)} M params)`,
      weights: randomBytes(4 * gpuParams),
      optim: randomBytes(8 * gpuParams),
    },
  ];
  const run = `bench-ckpt-${process.pid}`;
  const rows: string[] = [];
  for (const sz of sizes) {
    const blobs = { 'weights.bin': sz.weights, 'optim.bin': sz.optim, 'state.json': JSON.stringify({ step: 0 }) };
    const mb = (sz.weights.length + sz.optim.length) / 1e6;
    const dir = mkdtempSync(path.join(tmpdir(), 'e3-ckpt-bench-'));
    const t = { s3c: 0, s3l: 0, dc: 0, dl: 0 };
    try {
      for (let k = 1; k <= REPEATS; k++) {
        let t0 = performance.now();
        await commitCheckpoint(store, run, sz.name.split(' ')[0], k, blobs, {}, { retention: { keepLast: 2, keepBest: false } });
        t.s3c += performance.now() - t0;
        t0 = performance.now();
        const got = await loadCheckpoint(store, run, sz.name.split(' ')[0]);
        t.s3l += performance.now() - t0;
        if (!got || sha(got.files['weights.bin']) !== sha(sz.weights)) throw new Error('S3 load returned other bytes');
        t0 = performance.now();
        await diskCommit(dir, k, blobs);
        t.dc += performance.now() - t0;
        t0 = performance.now();
        await diskLoad(dir);
        t.dl += performance.now() - t0;
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await store.remove(await store.list(`runs/${run}/`));
    }
    const ms = (x: number) => x / REPEATS;
    rows.push(
      `| ${sz.name} | ${mb.toFixed(1)} | ${ms(t.s3c).toFixed(0)} | ${ms(t.dc).toFixed(0)} | ${(t.s3c / t.dc).toFixed(2)} | ${ms(t.s3l).toFixed(0)} | ${ms(t.dl).toFixed(0)} | ${(t.s3l / t.dl).toFixed(2)} | ${(mb / (ms(t.s3c) / 1000)).toFixed(0)} / ${(mb / (ms(t.s3l) / 1000)).toFixed(0)} |`,
    );
  }
  console.log(
    `checkpoint bench: ${REPEATS} commits + loads per size, S3 (versitygw on loopback, ${store.cfg.endpoint}) vs local disk (fsync + atomic rename), sha256 checked both ways`,
  );
  console.log(
    '| checkpoint | MB | S3 commit ms | disk commit ms | S3/disk | S3 load ms | disk load ms | S3/disk | S3 MB/s commit / load |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}

void main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
