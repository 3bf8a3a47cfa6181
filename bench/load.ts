/**
 * Many runs at once on a few workers (docs/OPERATIONS.md "Workers": trainer admission). For
 * each worker count W and each N, starts N runs of one config and seed together and prints:
 *   - makespan (first start to last close, server times) against N x the single run's time
 *     (the N = 1 row of the same W, measured in the same invocation);
 *   - the trainer's busy fraction: per worker, the union of the intervals in which an activity
 *     of a trainer session (open, steps, commit, close) ran on it, over the makespan;
 *   - the trainer's idle fraction while runs wait: per worker, the part of the time in which
 *     at least one `openTrainer` waits (scheduled, not yet started) during which no session
 *     activity ran on it (the gaps a waiting run pays for: hand-offs, the workflow task
 *     between two of a holder's activities, opens and closes are busy);
 *   - each worker's peak RSS (its E3_MEMORY_LOG_MS lines, every 500 ms);
 *   - failed activity attempts (the workers' "Activity failed" entries), openTrainer's apart:
 *     an open that waits for a trainer must wait in the task queue, not fail and retry;
 *   - the same idle fraction with the sessions' work ahead counted as busy (E3_WORK_AHEAD:
 *     a session trains its next commit window between its activities; the workers log when);
 *   - whether every run's final stage-2 weights (sha256) equal the single run's.
 * Never fails on speed; exits 1 when a run's bytes differ.
 *
 *   npx tsx bench/load.ts [--ns 1,4,12,32] [--workers 1,2] [--work-ahead 0,1] [--config tiny] [--seed 7] [--node stage2]
 *
 * Each worker count runs once per --work-ahead setting (default 1, the workers' default),
 * side by side in one invocation.
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
  workAhead: boolean;
  busy: number[];
  idleWhileWaiting: number[];
  /** Idle while waiting, the sessions' work ahead (between their activities) counted as busy. */
  idleComputing: number[];
  waitS: number;
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

/**
 * Intervals [start, end] (ms) of trainer-session activities in one node's history, keyed by
 * worker pid; and, into `waits`, the intervals in which an open waited (scheduled to started;
 * for a retried open, Temporal records the last attempt's start against the first schedule).
 */
function sessionIntervals(
  events: Ev[],
  into: Map<number, Array<[number, number]>>,
  waits: Array<[number, number]> = [],
  labelled?: Map<number, Labelled[]>,
  node = '',
): void {
  const sched = new Map<string, { name: string; queue: string; at: number }>();
  const started = new Map<string, { at: number; pid: number }>();
  for (const e of events) {
    const id = String(e.eventId);
    const s = e.activityTaskScheduledEventAttributes;
    if (s) sched.set(id, { name: s.activityType?.name ?? '', queue: s.taskQueue?.name ?? '', at: ms(e.eventTime) });
    const st = e.activityTaskStartedEventAttributes;
    if (st) {
      const k = String(st.scheduledEventId);
      const a = sched.get(k);
      // A session's activities run on its worker's own queue; the open on e3-trainer, by the worker that will hold it.
      const pid = Number(/^(\d+)@/.exec(st.identity ?? '')?.[1] ?? NaN);
      if (a?.name === 'openTrainer') waits.push([a.at, ms(e.eventTime)]);
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
        const l = labelled?.get(s0.pid) ?? [];
        l.push({ from: s0.at, to: ms(e.eventTime), node, activity: sched.get(k)?.name ?? '?' });
        labelled?.set(s0.pid, l);
        started.delete(k);
      }
    }
  }
}

/**
 * The intervals [start, end] (ms) in which a session of one of `runs` worked ahead
 * (activities/train.ts workAhead), from the workers' logs, keyed by worker pid.
 */
export function workAheadIntervals(logs: string, runs: string[]): Map<number, Array<[number, number]>> {
  const out = new Map<number, Array<[number, number]>>();
  const re = /\[worker (\d+)\] session (\S+)\/\S+ worked ahead \d+→\d+ in [\d.]+ s \((\S+) → (\S+)\)/g;
  for (const m of logs.matchAll(re)) {
    if (!runs.includes(m[2])) continue;
    const pid = Number(m[1]);
    out.set(pid, [...(out.get(pid) ?? []), [Date.parse(m[3]), Date.parse(m[4])]]);
  }
  return out;
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

interface Labelled {
  from: number;
  to: number;
  node: string;
  activity: string;
}

/**
 * Where a worker was idle while some open waited: each gap between its session activities,
 * clipped to the waits, by what ended before it and what started after (within one node: the
 * workflow task between two of its activities; across nodes: a hand-off), in seconds and count.
 */
export function idleGaps(waits: Array<[number, number]>, iv: Labelled[], lo: number, hi: number): Map<string, { s: number; n: number }> {
  const out = new Map<string, { s: number; n: number }>();
  const xs = [...iv].sort((a, b) => a.from - b.from);
  let prev: Labelled | undefined;
  for (const x of xs) {
    if (prev && x.from > prev.to) {
      const idle = unionLength(waits, Math.max(lo, prev.to), Math.min(hi, x.from));
      if (idle > 0) {
        const key = `${prev.node === x.node ? 'same node' : 'hand-off'}: ${prev.activity} → ${x.activity}`;
        const e = out.get(key) ?? { s: 0, n: 0 };
        e.s += idle / 1000;
        e.n++;
        out.set(key, e);
      }
    }
    if (!prev || x.to > prev.to) prev = x;
  }
  return out;
}

/** Part of the union of `waits` (clipped to [lo, hi]) covered by no interval of `busy`. */
export function idleWhileWaiting(waits: Array<[number, number]>, busy: Array<[number, number]>, lo: number, hi: number): number {
  const w = unionLength(waits, lo, hi);
  if (w === 0) return 0;
  // |W \ B| = |W u B| - |B| for unions W and B.
  return (unionLength([...waits, ...busy], lo, hi) - unionLength(busy, lo, hi)) / w;
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
  const waits: Array<[number, number]> = [];
  const labelled = new Map<number, Labelled[]>();
  for (const id of ids) {
    const d = await c.workflow.getHandle(id).describe();
    first = Math.min(first, d.startTime.getTime());
    last = Math.max(last, d.closeTime!.getTime());
    for (const node of ['warmstart', 'stage1', 'stage2']) {
      const h = await c.workflow
        .getHandle(`${id}/${node}`)
        .fetchHistory()
        .catch(() => undefined);
      if (h) sessionIntervals((h.events ?? []) as Ev[], busy, waits, labelled, `${id}/${node}`);
    }
  }
  const logs = pool.logs().slice(before);
  const ahead = workAheadIntervals(logs, ids);
  const computing = [...busy.entries()].map(([pid, iv]) => [...iv, ...(ahead.get(pid) ?? [])]);
  const failures = ids.flatMap((id) => failedAttempts(logs, id));
  const rss = new Map<string, number>();
  for (const m of logs.matchAll(/\[worker (\d+)\] memory rss=(\d+)/g)) rss.set(m[1], Math.max(rss.get(m[1]) ?? 0, Number(m[2])));
  const shas = await Promise.all(ids.map(async (id) => (await finalCheckpoints(store, id, [o.node]))[o.node].weights));
  return {
    makespanS: (last - first) / 1000,
    busy: [...busy.values()].map((iv) => unionLength(iv, first, last) / (last - first)),
    idleWhileWaiting: [...busy.values()].map((iv) => idleWhileWaiting(waits, iv, first, last)),
    idleComputing: computing.map((iv) => idleWhileWaiting(waits, iv, first, last)),
    waitS: unionLength(waits, first, last) / 1000,
    gaps: [...labelled.values()].map((iv) => idleGaps(waits, iv, first, last)),
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
    workAhead: get('--work-ahead', '1')
      .split(',')
      .map((x) => {
        if (x !== '0' && x !== '1') throw new Error(`--work-ahead must be a comma-separated list of 0 and 1, got "${x}"`);
        return x === '1';
      }),
    config: get('--config', 'tiny'),
    seed: Number(get('--seed', '7')),
    node: get('--node', 'stage2'),
  };
}

const pad = (s: string | number, n: number) => String(s).padStart(n);

function format(r: Row): string {
  const seq = r.n * r.singleS;
  return `${pad(r.workers, 7)} ${pad(r.workAhead ? 'on' : 'off', 5)} ${pad(r.n, 4)} ${pad(r.makespanS.toFixed(1), 10)} ${pad(seq.toFixed(1), 12)} ${pad((r.makespanS / seq).toFixed(2), 6)} ${pad(r.busy.map((b) => b.toFixed(2)).join('/'), 10)} ${pad(r.waitS.toFixed(1), 7)} ${pad(r.idleWhileWaiting.map((b) => b.toFixed(3)).join('/'), 12)} ${pad(r.idleComputing.map((b) => b.toFixed(3)).join('/'), 14)} ${pad(r.peakRssMb.map((m) => m.toFixed(0)).join('/'), 12)} ${pad(`${r.failed} (${r.failedOpen})`, 14)}  ${r.identical ? 'yes' : 'NO'}`;
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
    console.log(
      'workers  ahead    N  makespan_s  N x single_s  ratio  busy(per w)  wait_s  idle|waiting  (computing)  peakRSS_MB  failed (open)  same bytes',
    );
    try {
      for (const w of o.workers)
        for (const ahead of o.workAhead) {
          const env = { E3_WORK_AHEAD: ahead ? '1' : '0' };
          const pool = new WorkerPool(path.join(dataDir(), 'load-logs', `${tag}-${w}w-ahead${env.E3_WORK_AHEAD}`), w, env);
          try {
            await pool.start();
            let single = NaN;
            for (const n of o.ns) {
              const m = await measure(c.client, pool, store, {
                workers: w,
                n,
                config: o.config,
                seed: o.seed,
                node: o.node,
                tag: `${tag}-a${env.E3_WORK_AHEAD}`,
              });
              if (n === 1) single = m.makespanS;
              reference ??= m.shas[0];
              const row: Row = {
                workers: w,
                workAhead: ahead,
                n,
                makespanS: m.makespanS,
                singleS: single,
                busy: m.busy,
                idleWhileWaiting: m.idleWhileWaiting,
                idleComputing: m.idleComputing,
                waitS: m.waitS,
                peakRssMb: m.peakRssMb,
                failed: m.failed,
                failedOpen: m.failedOpen,
                identical: m.shas.every((s) => s === reference),
                stage2: m.shas[0],
              };
              rows.push(row);
              console.log(format(row));
              // Where the idle-while-waiting time went (per worker), largest first.
              m.gaps.forEach((g, k) => {
                for (const [what, e] of [...g.entries()].sort((a, b) => b[1].s - a[1].s).slice(0, 6))
                  console.log(`        idle while waiting, worker ${k + 1}: ${e.s.toFixed(1)} s in ${e.n} gaps, ${what}`);
              });
            }
          } finally {
            await pool.stop();
          }
        }
    } finally {
      await c.close().catch(() => undefined);
    }
    for (const ahead of o.workAhead) {
      const one = rows.find((r) => r.workers === 1 && r.workAhead === ahead && r.n === Math.max(...o.ns));
      const two = rows.find((r) => r.workers === 2 && r.workAhead === ahead && r.n === Math.max(...o.ns));
      if (one && two)
        console.log(
          `${one.n} runs, work ahead ${ahead ? 'on' : 'off'}: two workers' makespan / one worker's = ${(two.makespanS / one.makespanS).toFixed(2)}`,
        );
    }
    console.log(`${o.node} weights sha256 of the single run: ${reference}`);
    return rows.every((r) => r.identical) ? 0 : 1;
  });
}
