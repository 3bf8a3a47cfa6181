/**
 * Network faults on an emulated cluster (test/cluster/harness.ts) and what they cost: each
 * faulted run of a DAG is compared with an uninterrupted run of the same config and seed on
 * the same cluster (final weights.bin and optim.bin sha256 of every training node), and its
 * workflow histories give the recovery time and the work done again.
 */
import { Client, Connection } from '@temporalio/client';
import type { PipelineInput } from '../../activities/types';
import { loadConfig } from '../../configs/load';
import { ObjectStore, storeConfigFromEnv } from '../../storage/store';
import { awaitPipeline, finalCheckpoints, runWork, startPipeline, trainerPid, trainingNodes } from '../chaos';
import type { NodeFinal } from '../chaos';
import type { Cluster, Path, Toxic } from './harness';

/** A pipeline input with its config named. */
export type RunInput = PipelineInput & { config: string; overrides: Record<string, unknown> };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

type Ts = { seconds?: unknown; nanos?: number | null } | null | undefined;
const ms = (ts: Ts) => Number(ts?.seconds ?? 0) * 1000 + Math.floor((ts?.nanos ?? 0) / 1e6);

export interface Controller {
  client: Client;
  store: ObjectStore;
  close: () => Promise<void>;
}

/** A Temporal client and an object store reached over the controller's link (proxies without toxics). */
export async function controller(c: Cluster): Promise<Controller> {
  const env = c.controllerEnv();
  const connection = await Connection.connect({ address: env.E3_TEMPORAL_ADDRESS! });
  return {
    client: new Client({ connection, namespace: 'default' }),
    store: new ObjectStore(storeConfigFromEnv(env)),
    close: () => connection.close(),
  };
}

/** What a fault did: its window (wall-clock ms) and a sentence. */
export interface Injected {
  startMs: number;
  endMs: number;
  detail: string;
  /** Toxics: connections accepted or terminated on the toxic proxies while they were active. */
  connections?: number;
}

export interface Fault {
  /** The table's first column. */
  label: string;
  /** Wait for the moment (the run is `runId`), inject, and undo; resolves once the fault is over. */
  inject: (c: Cluster, ctl: Controller, runId: string, nodes: string[]) => Promise<Injected>;
}

export interface FaultResult {
  label: string;
  runId: string;
  injected?: Injected;
  /** Why the fault was not injected (the run ended before its moment). */
  notInjected?: string;
  wallMs: number;
  /** Longest time without an activity completing in the run, among the gaps that overlap the fault window. */
  stallMs: number;
  /** RL iterations and SFT steps started beyond those needed. */
  recomputedUnits: number;
  /** Rollout-part attempts beyond the first. */
  partRetries: number;
  /** Trainer sessions re-opened. */
  reopens: number;
  /** Activity attempts that timed out or failed and were retried (worker logs + histories). */
  failedAttempts: number;
  identical: boolean;
  /** Nodes whose final bytes differ. */
  differ: string[];
}

interface Timeline {
  /** Completion times of every activity of the run (pipeline and node workflows). */
  completions: number[];
  partRetries: number;
}

async function timeline(c: Client, runId: string, nodeIds: string[]): Promise<Timeline> {
  const completions: number[] = [];
  let partRetries = 0;
  for (const id of [runId, ...nodeIds.map((n) => `${runId}/${n}`)]) {
    const events = (await c.workflow.getHandle(id).fetchHistory()).events ?? [];
    const types = new Map<string, string>();
    for (const e of events) {
      const s = e.activityTaskScheduledEventAttributes;
      if (s) types.set(String(e.eventId), s.activityType?.name ?? '');
      const st = e.activityTaskStartedEventAttributes;
      if (st && types.get(String(st.scheduledEventId)) === 'rolloutPart') partRetries += Math.max(0, (st.attempt ?? 1) - 1);
      if (e.activityTaskCompletedEventAttributes) completions.push(ms(e.eventTime));
    }
  }
  return { completions: completions.sort((a, b) => a - b), partRetries };
}

/** The longest gap between activity completions (or the window's start) that overlaps [from, to]. */
export function longestStall(completions: number[], from: number, to: number): number {
  const before = completions.filter((t) => t <= from);
  let prev = before.length ? before[before.length - 1] : from;
  let best = 0;
  for (const t of completions.filter((x) => x > from)) {
    if (prev <= to) best = Math.max(best, t - prev);
    prev = t;
  }
  return best;
}

/** The run's DAG on the cluster, uninterrupted; returns its final bytes and wall time. */
export async function uninterrupted(
  ctl: Controller,
  runId: string,
  input: RunInput,
  timeoutMs: number,
): Promise<{ finals: Record<string, NodeFinal>; wallMs: number; longestGapMs: number }> {
  const t0 = Date.now();
  await startPipeline(ctl.client, runId, input);
  await awaitPipeline(ctl.client, runId, timeoutMs);
  const end = Date.now();
  const tl = await timeline(ctl.client, runId, Object.keys(loadConfig(input.config, input.overrides).nodes));
  return {
    finals: await finalCheckpoints(ctl.store, runId, trainingNodes(input.config, input.overrides)),
    wallMs: end - t0,
    // The same measure as a fault's recovery, over the whole run: what an undisturbed run shows.
    longestGapMs: longestStall(tl.completions, tl.completions[0] ?? t0, end),
  };
}

/** Run the DAG once with `fault` injected and compare with `baseline`. */
export async function faulted(
  c: Cluster,
  ctl: Controller,
  runId: string,
  input: RunInput,
  fault: Fault,
  baseline: Record<string, NodeFinal>,
  timeoutMs: number,
): Promise<FaultResult> {
  const nodes = trainingNodes(input.config, input.overrides);
  const t0 = Date.now();
  await startPipeline(ctl.client, runId, input);
  const done = awaitPipeline(ctl.client, runId, timeoutMs);
  // The fault waits for its moment; if the run closes first, it resolves with notInjected set.
  const injecting = fault.inject(c, ctl, runId, nodes).catch((e: Error) => {
    if (e instanceof NotInjected) return e;
    throw e;
  });
  // A failed injection (toxiproxy or ip refused) must not leave the run going unwatched.
  const [, outcome] = await Promise.all([done, injecting]);
  const wallMs = Date.now() - t0;
  const injected = outcome instanceof NotInjected ? undefined : outcome;
  const notInjected = outcome instanceof NotInjected ? outcome.message : undefined;
  const finals = await finalCheckpoints(ctl.store, runId, nodes);
  const differ = nodes.filter(
    (n) => finals[n].weights !== baseline[n].weights || finals[n].optim !== baseline[n].optim || finals[n].step !== baseline[n].step,
  );
  const cfgNodes = Object.keys(loadConfig(input.config, input.overrides).nodes);
  const tl = await timeline(ctl.client, runId, cfgNodes);
  const logs = c
    .names()
    .map((n) => c.output(n))
    .join('\n');
  const work = await runWork(ctl.client, runId, input.config, input.overrides, logs);
  const nodeWork = Object.values(work.nodes);
  return {
    label: fault.label,
    runId,
    injected,
    notInjected,
    wallMs,
    stallMs: injected ? longestStall(tl.completions, injected.startMs, injected.endMs) : 0,
    recomputedUnits: nodeWork.reduce((a, w) => a + Math.max(0, w.scheduled - w.needed), 0),
    partRetries: tl.partRetries,
    reopens: nodeWork.reduce((a, w) => a + Math.max(0, w.reopens), 0),
    failedAttempts: Object.values(work.failed).reduce((a, v) => a + v, 0) + work.timeouts,
    identical: differ.length === 0,
    differ,
  };
}

/** The run closed before the fault's moment came. */
export class NotInjected extends Error {}

/** Poll until `check` returns a value; undefined once the run has closed. */
async function until<T>(ctl: Controller, runId: string, check: () => Promise<T | undefined>): Promise<T | undefined> {
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    const st = await ctl.client.workflow
      .getHandle(runId)
      .describe()
      .then((d) => d.status.name)
      .catch(() => 'RUNNING');
    if (st !== 'RUNNING') return undefined;
    await sleep(100);
  }
}

/** The RL node with a rollout part running on `worker` now. */
async function partRunningOn(c: Cluster, ctl: Controller, runId: string, worker: string, nodes: string[]): Promise<string | undefined> {
  const pid = c.pidOf(worker);
  if (pid === undefined) return undefined;
  for (const n of nodes) {
    const d = await ctl.client.workflow
      .getHandle(`${runId}/${n}`)
      .describe()
      .catch(() => undefined);
    const p = d?.raw.pendingActivities?.find(
      (a) => a.activityType?.name === 'rolloutPart' && (a.lastWorkerIdentity ?? '').startsWith(`${pid}@`) && String(a.state) === '2',
    );
    if (p) return n;
  }
  return undefined;
}

/** A rollout worker's link down for `downMs`, taken down while it samples a part. */
export function rolloutLinkDown(worker: string, downMs: number): Fault {
  return {
    label: `rollout worker link down ${downMs / 1000} s (mid-part)`,
    inject: async (c, ctl, runId, nodes) => {
      const node = await until(ctl, runId, () => partRunningOn(c, ctl, runId, worker, nodes));
      if (!node) throw new NotInjected(`the run ended before a rollout part ran on ${worker}`);
      const startMs = Date.now();
      c.linkDown(worker);
      await sleep(downMs);
      c.linkUp(worker);
      return { startMs, endMs: Date.now(), detail: `${worker}'s link down ${downMs} ms while it sampled a part of ${node}` };
    },
  };
}

/** The link of the worker holding the running RL node's trainer session down for `downMs` (past the 6 s session heartbeat window). */
export function trainerLinkDown(downMs: number, rlNodes: string[]): Fault {
  return {
    label: `trainer link down ${downMs / 1000} s (session holder)`,
    inject: async (c, ctl, runId) => {
      const holder = await until(ctl, runId, async () => {
        const pid = await trainerPid(ctl.client, runId, rlNodes);
        return pid !== undefined ? c.nameOf(pid) : undefined;
      });
      if (!holder) throw new NotInjected('the run ended before an RL node held a trainer session on a cluster worker');
      const startMs = Date.now();
      c.linkDown(holder);
      await sleep(downMs);
      c.linkUp(holder);
      return { startMs, endMs: Date.now(), detail: `${holder} (session holder)'s link down ${downMs} ms` };
    },
  };
}

/**
 * Connection events on `proxies` in toxiproxy's log text: clients accepted, and connections
 * terminated (a reset one among them; logged as warnings).
 */
export function connectionEvents(log: string, proxies: Set<string>): number {
  return log
    .split('\n')
    .filter((l) => (l.includes('"Accepted client"') || l.includes('"level":"warn"')) && proxies.has(/"name":"([^"]+)"/.exec(l)?.[1] ?? ''))
    .length;
}

/**
 * Toxics on every worker's `path` for `windowMs`, from the moment an RL node holds a session.
 * With `untilTraffic`, the toxics stay on past `windowMs` until a connection through them
 * has been accepted or terminated (at most `untilTraffic` ms in all): a reset that met no
 * traffic tested nothing.
 */
export function toxics(label: string, p: Path, list: Toxic[], windowMs: number, rlNodes: string[], untilTraffic?: number): Fault {
  return {
    label,
    inject: async (c, ctl, runId) => {
      const ready = await until(ctl, runId, async () => ((await trainerPid(ctl.client, runId, rlNodes)) !== undefined ? true : undefined));
      if (!ready) throw new NotInjected('the run ended before an RL node held a trainer session');
      const startMs = Date.now();
      const logFrom = c.toxiproxyLog().length;
      const proxies = new Set(c.names().map((w) => `${w}-${p}`));
      const events = () => connectionEvents(c.toxiproxyLog().slice(logFrom), proxies);
      const added: Array<{ w: string; name: string }> = [];
      try {
        for (const w of c.names()) for (const t of list) added.push({ w, name: await c.addToxic(w, p, t) });
        await sleep(windowMs);
        while (untilTraffic !== undefined && events() === 0 && Date.now() - startMs < untilTraffic) await sleep(100);
      } finally {
        for (const a of added) await c.removeToxic(a.w, p, a.name);
      }
      const endMs = Date.now();
      const connections = events();
      return {
        startMs,
        endMs,
        detail: `${list.map((t) => t.type).join(' + ')} on every worker -> ${p} for ${endMs - startMs} ms (${connections} connection event(s) meanwhile)`,
        connections,
      };
    },
  };
}

const pad = (s: string, n: number) => s.padEnd(n);

/** The table: fault, recovery seconds, recomputed work, bytes equal. */
export function formatTable(rows: FaultResult[], baselineMs: number): string {
  const head = ['fault', 'recovery s', 'recomputed work', 'run s', 'bytes equal'];
  const body = rows.map((r) => [
    r.label,
    r.injected ? (r.stallMs / 1000).toFixed(1) : `not injected: ${r.notInjected}`,
    `${r.partRetries} part(s), ${r.recomputedUnits} iteration(s), ${r.reopens} re-open(s), ${r.failedAttempts} failed attempt(s)`,
    `${(r.wallMs / 1000).toFixed(0)} (${r.wallMs >= baselineMs ? '+' : ''}${((r.wallMs - baselineMs) / 1000).toFixed(0)})`,
    r.identical ? 'yes' : `NO (${r.differ.join(', ')})`,
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => `| ${cells.map((x, i) => pad(x, w[i])).join(' | ')} |`;
  return [line(head), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...body.map(line)].join('\n');
}
