/**
 * Soak (issue: operations): a long tiny-model run on one long-lived worker process, watched.
 * `configs/soak.json` is 500 RL iterations in ten 50-iteration stages, an evaluation after
 * each, so sessions open and close ten times and twenty evaluations load policies. The run
 * goes twice on the same worker: once continuing-as-new every ~`--history` events, once never;
 * the final checkpoints of every stage must be byte-identical. Prints, every 50 iterations,
 * the iteration time (from the stages' histories), the worker's RSS and each compute thread's
 * wasm heap and live tensors (the worker logs them every 2 s), and the slopes after warm-up.
 *
 *   npm run soak -- [--history 120]
 *
 * It starts its own servers (E3_SOAK_TEMPORAL_PORT / _TEMPORAL_UI_PORT / _S3_PORT / _DATA_DIR;
 * defaults 47233 / 48233 / 47070 / .e3/soak) and stops exactly what it started.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { loadConfig } from '../configs/load';
import { ObjectStore } from '../storage/store';
import { ROOT, awaitPipeline, finalCheckpoints, runWithOwnServers, startPipeline, temporalClient } from './chaos';

const CONFIG = 'soak';

interface Sample {
  at: number;
  rss: number;
  heap: number[];
  tensors: number[];
}

function parseMemory(log: string): Sample[] {
  const out: Sample[] = [];
  for (const line of log.split('\n')) {
    const m = /^(\d+) .*memory rss=(\d+) heap=([\d,]+) tensors=([\d,]+)/.exec(line);
    if (m) out.push({ at: Number(m[1]), rss: Number(m[2]), heap: m[3].split(',').map(Number), tensors: m[4].split(',').map(Number) });
  }
  return out;
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den > 0 ? num / den : 0;
}

async function main(): Promise<number> {
  const i = process.argv.indexOf('--history');
  const history = i >= 0 ? Number(process.argv[i + 1]) : 120;
  const env = process.env;
  const logFile = path.join(env.E3_DATA_DIR!, 'worker.log'); // set by runWithOwnServers
  const fd = openSync(logFile, 'a');
  // One long-lived worker for both runs; it stamps its memory lines with the epoch ms.
  const worker = spawn(
    'bash',
    [
      '-c',
      `exec node --import tsx ${JSON.stringify(path.join(ROOT, 'workers', 'worker.ts'))} | while IFS= read -r l; do echo "$(date +%s%3N) $l"; done`,
    ],
    {
      cwd: ROOT,
      env: { ...env, E3_MEMORY_LOG_MS: '2000' },
      stdio: ['ignore', fd, fd],
      detached: true, // its own process group: the stop below reaches node, not only the shell
    },
  );
  let rc = 1;
  const c = await temporalClient();
  try {
    const store = ObjectStore.fromEnv();
    const cfg = loadConfig(CONFIG);
    const stages = Object.keys(cfg.nodes).filter((n) => cfg.nodes[n].kind === 'rl');
    const runs = { can: `soak-can-${Date.now().toString(36)}`, plain: `soak-plain-${Date.now().toString(36)}` };
    const t0 = Date.now();
    await startPipeline(c.client, runs.can, { config: CONFIG, overrides: { maxHistoryEvents: history } });
    await awaitPipeline(c.client, runs.can, 3_600_000);
    const t1 = Date.now();
    await startPipeline(c.client, runs.plain, { config: CONFIG, overrides: { maxHistoryEvents: 40_000 } });
    await awaitPipeline(c.client, runs.plain, 3_600_000);
    const t2 = Date.now();

    // Iteration times and continue-as-new counts from the first run's stage histories.
    const ends: number[] = [];
    let cans = 0;
    for (const s of stages) {
      const id = `${runs.can}/${s}`;
      const list = c.client.workflow.list({ query: `WorkflowId = '${id}'` });
      for await (const ex of list) {
        const h = await c.client.workflow.getHandle(id, ex.runId).fetchHistory();
        if (ex.status.name === 'CONTINUED_AS_NEW') cans++;
        const names = new Map<string, { type: string; args: unknown[] }>();
        let last: number | undefined;
        for (const e of h.events ?? []) {
          const sched = e.activityTaskScheduledEventAttributes;
          if (sched)
            names.set(String(e.eventId), {
              type: sched.activityType?.name ?? '',
              args: (sched.input?.payloads ?? []).map((p) => (p.data ? JSON.parse(Buffer.from(p.data).toString('utf8')) : undefined)),
            });
          const done = e.activityTaskCompletedEventAttributes;
          const act = done ? names.get(String(done.scheduledEventId)) : undefined;
          if (!act) continue;
          const at = Number(e.eventTime?.seconds ?? 0) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6;
          if (['rlIteration', 'rlUpdate'].includes(act.type)) ends.push(at);
          // a commit window (rlIterations(s, t, to, ...)): its iterations spread evenly since the
          // history's previous session activity ended (the open's own first window is not counted)
          if (act.type === 'rlIterations' && last !== undefined) {
            const n = Number(act.args[2]) - Number(act.args[1]);
            for (let k = 1; k <= n; k++) ends.push(last + ((at - last) * k) / n);
          }
          if (['openTrainer', 'rlIterations', 'rlIteration', 'rlUpdate'].includes(act.type)) last = at;
        }
      }
    }
    ends.sort((a, b) => a - b);
    const mem = parseMemory(readFileSync(logFile, 'utf8')).filter((m) => m.at >= t0 && m.at <= t1);
    const rows: string[] = [
      '| iterations | mean iteration ms | worker RSS MiB | wasm heap MiB (per thread) | live tensors (per thread) |',
      '|---|---|---|---|---|',
    ];
    const xs: number[] = [];
    const rss: number[] = [];
    const heap: number[] = [];
    const iterMs: number[] = [];
    for (let k = 50; k <= ends.length; k += 50) {
      const seg = ends.slice(k - 50, k);
      const gaps = seg.slice(1).map((t, j) => t - seg[j]);
      const ms = gaps.reduce((a, b) => a + b, 0) / (gaps.length || 1);
      const at = ends[k - 1];
      const m = mem.filter((x) => x.at <= at).pop() ?? mem[0];
      if (!m) continue;
      rows.push(
        `| ${k} | ${ms.toFixed(0)} | ${(m.rss / 2 ** 20).toFixed(0)} | ${m.heap.map((h) => (h / 2 ** 20).toFixed(0)).join(' / ')} | ${m.tensors.join(' / ')} |`,
      );
      if (k > 100) {
        xs.push(k);
        rss.push(m.rss / 2 ** 20);
        heap.push(Math.max(...m.heap) / 2 ** 20);
        iterMs.push(ms);
      }
    }
    const finals = { can: await finalCheckpoints(store, runs.can, stages), plain: await finalCheckpoints(store, runs.plain, stages) };
    const same = stages.every(
      (s) =>
        finals.can[s].weights === finals.plain[s].weights &&
        finals.can[s].optim === finals.plain[s].optim &&
        finals.can[s].step === finals.plain[s].step,
    );
    console.log(
      `soak: config ${CONFIG}, ${ends.length} RL iterations in ${stages.length} stages + ${stages.length} evaluations on one worker; run 1 continued-as-new ${cans} times (maxHistoryEvents ${history}), run 2 never`,
    );
    console.log(rows.join('\n'));
    const per100 = (v: number) => (v * 100).toFixed(2);
    console.log(
      `slopes after warm-up (iterations 150..${xs[xs.length - 1] ?? '?'}), per 100 iterations: RSS ${per100(slope(xs, rss))} MiB, wasm heap ${per100(slope(xs, heap))} MiB, iteration time ${per100(slope(xs, iterMs))} ms`,
    );
    console.log(`wall: run 1 ${((t1 - t0) / 1000).toFixed(0)} s, run 2 ${((t2 - t1) / 1000).toFixed(0)} s`);
    console.log(`final checkpoints of ${stages.join(', ')}: ${same ? 'IDENTICAL' : 'DIFFERENT'} with and without continue-as-new`);
    rc = same && cans >= stages.length ? 0 : 1;
  } finally {
    await c.close().catch(() => undefined);
    if (worker.pid) process.kill(-worker.pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 3000));
    closeSync(fd);
  }
  return rc;
}

runWithOwnServers('soak', { temporal: 47233, ui: 48233, s3: 47070 }, main);
