/**
 * Many runs at once on a few workers (docs/OPERATIONS.md "Workers": trainer admission). For
 * each worker count W and each N, starts N runs of one config and seed together and prints:
 *   - makespan (first start to last close, server times) against N x the single run's time
 *     (the N = 1 row of the same W, measured in the same invocation);
 *   - the trainer's busy fraction: per worker, the union of the intervals in which an activity
 *     of a trainer session (open, steps, commit, close) ran on it, over the makespan; the
 *     mean over workers;
 *   - each worker's peak RSS (its E3_MEMORY_LOG_MS lines, every 500 ms);
 *   - failed activity attempts (the workers' "Activity failed" entries), openTrainer's apart:
 *     an open that waits for a trainer must wait in the task queue, not fail and retry;
 *   - whether every run's final stage-2 weights (sha256) equal the single run's.
 * Never fails on speed; exits 1 when a run's bytes differ.
 *
 *   npx tsx bench/load.ts [--ns 1,4,12,32] [--workers 1,2] [--config tiny] [--seed 7] [--node stage2]
 *
 * Starts its own servers (E3_LOAD_TEMPORAL_PORT / _TEMPORAL_UI_PORT / _S3_PORT / _DATA_DIR;
 * defaults 47433 / 48433 / 47170 / .e3/load) and stops exactly what it started.
 */
import type { Client } from '@temporalio/client';
import * as path from 'node:path';
import {
  WorkerPool,
  awaitPipeline,
  failedAttempts,
  finalCheckpoints,
  runWithOwnServers,
  startPipeline,
  temporalClient,
} from '../test/chaos';
import { ObjectStore, dataDir } from '../storage/store';

interface Row {
  workers: number;
  n: number;
  makespanS: number;
  singleS: number;
  busy: number[];
  peakRssMb: number[];
  failed: number;
  failedOpen: number;
  identical: boolean;
  stage2: string;
}

const ms = (t: { seconds?: { toString(): string } | null; nanos?: number | null } | null | undefined): number =>
  Number(t?.seconds ?? 0) * 1000 + (t?.nanos ?? 0) / 1e6;

type Ev = {
  eventId?: { toString(): string } | null;
  eventTime?: { seconds?: { toString(): string } | null; nanos?: number | null } | null;
  activityTaskScheduledEventAttributes?: {
    activityType?: { name?: string | null } | null;
    taskQueue?: { name?: string | null } | null;
  } | null;
  activityTaskStartedEventAttributes?: { scheduledEventId?: { toString(): string } | null; identity?: string | null } | null;
  activityTaskCompletedEventAttributes?: { scheduledEventId?: { toString(): string } | null } | null;
  activityTaskFailedEventAttributes?: { scheduledEventId?: { toString(): string } | null } | null;
  activityTaskTimedOutEventAttributes?: { scheduledEventId?: { toString(): string } | null } | null;
  activityTaskCanceledEventAttributes?: { scheduledEventId?: { toString(): string } | null } | null;
};

/** Intervals [start, end] (ms) of trainer-session activities in one node's history, keyed by worker pid. */
function sessionIntervals(events: Ev[], into: Map<number, Array<[number, number]>>): void {
  const sched = new Map<string, { name: string; queue: string }>();
  const started = new Map<string, { at: number; pid: number }>();
  for (const e of events) {
    const id = String(e.eventId);
    const s = e.activityTaskScheduledEventAttributes;
    if (s) sched.set(id, { name: s.activityType?.name ?? '', queue: s.taskQueue?.name ?? '' });
    const st = e.activityTaskStartedEventAttributes;
    if (st) {
      const k = String(st.scheduledEventId);
      const a = sched.get(k);
      // A session's activities run on its worker's own queue; the open on e3-trainer, by the worker that will hold it.
      const pid = Number(/^(\d+)@/.exec(st.identity ?? '')?.[1] ?? NaN);
      if (a && (a.name === 'openTrainer' || /^e3-trainer-/.test(a.queue)) && Number.isFinite(pid))
        started.set(k, { at: ms(e.eventTime), pid });
    }
    const end =
      e.activityTaskCompletedEventAttributes ??
      e.activityTaskFailedEventAttributes ??
      e.activityTaskTimedOutEventAttributes ??
      e.activityTaskCanceledEventAttributes;
    if (end) {
      const k = String(end.scheduledEventId);
      const s0 = started.get(k);
      if (s0) {
        const list = into.get(s0.pid) ?? [];
        list.push([s0.at, ms(e.eventTime)]);
        into.set(s0.pid, list);
        started.delete(k);
      }
    }
  }
}

/** Length of the union of intervals clipped to [lo, hi]. */
function unionLength(iv: Array<[number, number]>, lo: number, hi: number): number {
  const xs = iv
    .map(([a, b]) => [Math.max(a, lo), Math.min(b, hi)] as [number, number])
    .filter(([a, b]) => b > a)
    .sort((p, q) => p[0] - q[0]);
  let total = 0;
  let cur: [number, number] | undefined;
  for (const x of xs) {
    if (cur && x[0] <= cur[1]) cur[1] = Math.max(cur[1], x[1]);
    else {
      if (cur) total += cur[1] - cur[0];
      cur = [x[0], x[1]];
    }
  }
  if (cur) total += cur[1] - cur[0];
  return total;
}

async function measure(
  c: Client,
  pool: WorkerPool,
  store: ObjectStore,
  o: { workers: number; n: number; config: string; seed: number; node: string; tag: string },
) {
  const ids = Array.from({ length: o.n }, (_, k) => `load-${o.tag}-${o.workers}w-n${o.n}-${k}`);
  const before = pool.logs().length;
  await Promise.all(ids.map((id) => startPipeline(c, id, { config: o.config, overrides: { seed: o.seed } })));
  await Promise.all(ids.map((id) => awaitPipeline(c, id, 3_600_000)));
  let first = Infinity;
  let last = 0;
  const busy = new Map<number, Array<[number, number]>>();
  for (const id of ids) {
    const d = await c.workflow.getHandle(id).describe();
    first = Math.min(first, d.startTime.getTime());
    last = Math.max(last, d.closeTime!.getTime());
    for (const node of ['warmstart', 'stage1', 'stage2']) {
      const h = await c.workflow
        .getHandle(`${id}/${node}`)
        .fetchHistory()
        .catch(() => undefined);
      if (h) sessionIntervals((h.events ?? []) as Ev[], busy);
    }
  }
  const logs = pool.logs().slice(before);
  const failures = ids.flatMap((id) => failedAttempts(logs, id));
  const rss = new Map<string, number>();
  for (const m of logs.matchAll(/\[worker (\d+)\] memory rss=(\d+)/g)) rss.set(m[1], Math.max(rss.get(m[1]) ?? 0, Number(m[2])));
  const shas = await Promise.all(ids.map(async (id) => (await finalCheckpoints(store, id, [o.node]))[o.node].weights));
  return {
    makespanS: (last - first) / 1000,
    busy: [...busy.values()].map((iv) => unionLength(iv, first, last) / (last - first)),
    peakRssMb: [...rss.values()].map((b) => b / 2 ** 20),
    failed: failures.length,
    failedOpen: failures.filter((f) => f.activityType === 'openTrainer').length,
    shas,
  };
}

function parseArgs(argv: string[]) {
  const get = (flag: string, dflt: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
  };
  const list = (flag: string, dflt: string) => {
    const xs = get(flag, dflt).split(',').map(Number);
    if (!xs.every((x) => Number.isInteger(x) && x >= 1)) throw new Error(`${flag} must be a comma-separated list of positive integers`);
    return xs;
  };
  const ns = list('--ns', '1,4,12,32');
  if (!ns.includes(1)) ns.unshift(1); // the single run every ratio divides by
  return {
    ns: [...new Set(ns)].sort((a, b) => a - b),
    workers: list('--workers', '1,2'),
    config: get('--config', 'tiny'),
    seed: Number(get('--seed', '7')),
    node: get('--node', 'stage2'),
  };
}

const pad = (s: string | number, n: number) => String(s).padStart(n);

function format(r: Row): string {
  const seq = r.n * r.singleS;
  return `${pad(r.workers, 7)} ${pad(r.n, 4)} ${pad(r.makespanS.toFixed(1), 10)} ${pad(seq.toFixed(1), 12)} ${pad((r.makespanS / seq).toFixed(2), 6)} ${pad(r.busy.map((b) => b.toFixed(2)).join('/'), 10)} ${pad(r.peakRssMb.map((m) => m.toFixed(0)).join('/'), 12)} ${pad(`${r.failed} (${r.failedOpen})`, 14)}  ${r.identical ? 'yes' : 'NO'}`;
}

if (require.main === module) {
  process.env.E3_MEMORY_LOG_MS ??= '500';
  runWithOwnServers('load', { temporal: 47433, ui: 48433, s3: 47170 }, async () => {
    const o = parseArgs(process.argv.slice(2));
    const store = ObjectStore.fromEnv();
    const c = await temporalClient();
    const rows: Row[] = [];
    const tag = Date.now().toString(36);
    let reference: string | undefined;
    console.log(
      `config ${o.config} seed ${o.seed}; E3_TRAINER_SESSIONS=${process.env.E3_TRAINER_SESSIONS ?? 1}, E3_THREADS=${process.env.E3_THREADS ?? 'one per core'}`,
    );
    console.log('workers    N  makespan_s  N x single_s  ratio  busy(per w)  peakRSS_MB  failed (open)  same bytes');
    try {
      for (const w of o.workers) {
        const pool = new WorkerPool(path.join(dataDir(), 'load-logs', `${tag}-${w}w`), w);
        try {
          await pool.start();
          let single = NaN;
          for (const n of o.ns) {
            const m = await measure(c.client, pool, store, { workers: w, n, config: o.config, seed: o.seed, node: o.node, tag });
            if (n === 1) single = m.makespanS;
            reference ??= m.shas[0];
            const row: Row = {
              workers: w,
              n,
              makespanS: m.makespanS,
              singleS: single,
              busy: m.busy,
              peakRssMb: m.peakRssMb,
              failed: m.failed,
              failedOpen: m.failedOpen,
              identical: m.shas.every((s) => s === reference),
              stage2: m.shas[0],
            };
            rows.push(row);
            console.log(format(row));
          }
        } finally {
          await pool.stop();
        }
      }
    } finally {
      await c.close().catch(() => undefined);
    }
    const one = rows.find((r) => r.workers === 1 && r.n === Math.max(...o.ns));
    const two = rows.find((r) => r.workers === 2 && r.n === Math.max(...o.ns));
    if (one && two) console.log(`${one.n} runs: two workers' makespan / one worker's = ${(two.makespanS / one.makespanS).toFixed(2)}`);
    console.log(`${o.node} weights sha256 of the single run: ${reference}`);
    return rows.every((r) => r.identical) ? 0 : 1;
  });
}
