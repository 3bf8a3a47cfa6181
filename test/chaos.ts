/**
 * Fault injection (a crashed run resumes and ends byte-identical: docs/ARCHITECTURE.md "One RL iteration"): run a config once uninterrupted, then
 * again with the same seed while, at moments drawn from a seeded PRNG, worker processes are
 * SIGKILLed and started again, the S3 server is stopped and restarted, and the Temporal
 * server is stopped and restarted (same SQLite file). The final committed checkpoint of
 * every training node must be byte-identical (weights.bin and optim.bin sha256). Faults of
 * different kinds may overlap; workers that exit on their own (one started while a server
 * was down gives up) are started again, as a process supervisor would.
 *
 *   npm run chaos -- [--config tiny] [--seed 7] [--chaos-seed 1] [--kills 2] [--s3 1]
 *                    [--temporal 1] [--s3-down-ms 2000-8000] [--temporal-down-ms 1000-5000]
 *                    [--workers 2] [--victim random|trainer] [--window 0.1-0.7]
 *
 * As a script it starts its own servers (E3_CHAOS_TEMPORAL_PORT / _TEMPORAL_UI_PORT /
 * _S3_PORT / _DATA_DIR; defaults 37233 / 38233 / 37070 / .e3/chaos), prints the table, stops
 * exactly what it started and exits 1 when a node differs. test/integration/chaos.test.ts
 * calls `runChaos` on the servers of the integration runner.
 */
import { Client, Connection } from '@temporalio/client';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { TASK_QUEUE } from '../activities/types';
import type { PipelineInput } from '../activities/types';
import { loadConfig } from '../configs/load';
import { Rng, deriveSeed } from '../ml/rng';
import { readLatest } from '../storage/checkpoints';
import type { CheckpointManifest } from '../storage/checkpoints';
import { keys } from '../storage/layout';
import { ObjectStore, dataDir } from '../storage/store';
import { temporalTarget } from '../workers/connection';
import type { PipelineResult } from '../workflows/pipeline';

export const ROOT = path.resolve(__dirname, '..');

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Run infra/<script>; its output goes to `log` (a file) so the table stays readable. */
export function infra(script: 'up' | 'down', ...args: string[]): void {
  const r = spawnSync('bash', [path.join(ROOT, 'infra', script), ...args], { env: process.env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`infra/${script} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
}

/** infra/<script> without blocking the event loop (faults overlap and the run is watched meanwhile). */
export function infraAsync(script: 'up' | 'down', ...args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [path.join(ROOT, 'infra', script), ...args], { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`infra/${script} ${args.join(' ')} failed (${code}): ${out}`))));
  });
}

/**
 * Worker processes (`node --import tsx workers/worker.ts`), each logging to its own file,
 * supervised: a worker that exits on its own (e.g. it started while Temporal was down and
 * gave up connecting) is started again after a second, as systemd or Kubernetes would.
 */
export class WorkerPool {
  private readonly procs = new Map<number, ChildProcess>();
  private readonly killed = new Set<ChildProcess>();
  private stopping = false;
  private started = 0;
  readonly logFiles: string[] = [];
  /** Workers that exited without being killed, and were started again. */
  readonly exits: Array<{ slot: number; code: number | null; log: string }> = [];

  constructor(
    readonly logDir: string,
    readonly size: number,
    /** Set in every worker's environment over this process's. */
    readonly env: NodeJS.ProcessEnv = {},
  ) {
    mkdirSync(logDir, { recursive: true });
  }

  /** Start the worker of `slot` (stdout and stderr appended to its log; one log per process). */
  spawn(slot: number): ChildProcess {
    const file = path.join(this.logDir, `worker-${slot}-${this.started++}.log`);
    this.logFiles.push(file);
    const fd = openSync(file, 'a');
    const p = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'workers', 'worker.ts')], {
      cwd: ROOT,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    this.procs.set(slot, p);
    p.once('exit', (code) => {
      if (this.stopping || this.killed.has(p) || this.procs.get(slot) !== p) return;
      this.exits.push({ slot, code, log: file });
      setTimeout(() => {
        if (!this.stopping && this.procs.get(slot) === p) this.spawn(slot);
      }, 1000);
    });
    return p;
  }

  /** Start every slot and wait until each process polls its queues. */
  async start(timeoutMs = 180_000): Promise<void> {
    const files: string[] = [];
    for (let k = 0; k < this.size; k++) {
      this.spawn(k);
      files.push(this.logFiles[this.logFiles.length - 1]);
    }
    const end = Date.now() + timeoutMs;
    while (!files.every((f) => /\] polling /.test(readFileSync(f, 'utf8')))) {
      if (this.exits.length) throw new Error(`a worker exited during start-up (code ${this.exits[0].code}); log: ${this.exits[0].log}`);
      if (Date.now() > end) throw new Error(`workers did not start polling within ${timeoutMs} ms; logs: ${files.join(', ')}`);
      await sleep(200);
    }
  }

  /** The slot whose current process has this pid. */
  slotOf(pid: number): number | undefined {
    for (const [slot, p] of this.procs) if (p.pid === pid && p.exitCode === null) return slot;
    return undefined;
  }

  /** SIGKILL the worker of `slot` and wait until it is gone. */
  async kill(slot: number): Promise<void> {
    const p = this.procs.get(slot);
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    this.killed.add(p);
    p.kill('SIGKILL');
    await gone;
  }

  /** SIGTERM every worker (graceful drain), SIGKILL what is left after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    this.stopping = true;
    await Promise.all(
      [...this.procs.values()].map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return;
        const gone = new Promise<void>((r) => p.once('exit', () => r()));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
        await gone;
        clearTimeout(t);
      }),
    );
    this.procs.clear();
  }

  /** Everything the workers wrote (stdout and stderr). */
  logs(): string {
    return this.logFiles.map((f) => readFileSync(f, 'utf8')).join('\n');
  }
}

export async function temporalClient(): Promise<{ client: Client; close: () => Promise<void> }> {
  const t = temporalTarget();
  const connection = await Connection.connect({ address: t.address });
  return { client: new Client({ connection, namespace: t.namespace }), close: () => connection.close() };
}

/** Start the pipeline (id = run id) without waiting. */
export async function startPipeline(c: Client, runId: string, input: PipelineInput): Promise<void> {
  await c.workflow.start('pipeline', { taskQueue: TASK_QUEUE, workflowId: runId, args: [{ ...input, runId }] });
}

/**
 * Wait for the pipeline to close, riding out a Temporal server that is down or restarting
 * (describe is retried; only a closed workflow ends the wait). Throws if it did not complete.
 */
export async function awaitPipeline(c: Client, runId: string, timeoutMs = 900_000): Promise<PipelineResult> {
  const h = c.workflow.getHandle(runId);
  const end = Date.now() + timeoutMs;
  for (;;) {
    let status: string | undefined;
    try {
      status = (await h.describe()).status.name;
    } catch {
      status = undefined; // server down or restarting
    }
    if (status === 'COMPLETED') return (await h.result()) as PipelineResult;
    if (status && status !== 'RUNNING') {
      // Surface the failure with its cause chain.
      await h.result();
      throw new Error(`pipeline ${runId} closed as ${status}`);
    }
    if (Date.now() > end)
      throw new Error(`pipeline ${runId} did not finish within ${timeoutMs} ms (last status ${status ?? 'unreachable'})`);
    await sleep(500);
  }
}

export const trainingNodes = (config: string, overrides: Record<string, unknown> = {}): string[] => {
  const cfg = loadConfig(config, overrides);
  return Object.keys(cfg.nodes).filter((id) => ['sft', 'rl'].includes(cfg.nodes[id].kind));
};

export interface NodeFinal {
  step: number;
  weights: string;
  optim: string;
}

/** The final committed checkpoint of each node: LATEST → manifest (checked) → blob sha256s. */
export async function finalCheckpoints(store: ObjectStore, runId: string, nodes: string[]): Promise<Record<string, NodeFinal>> {
  const out: Record<string, NodeFinal> = {};
  for (const n of nodes) {
    const latest = await readLatest(store, runId, n);
    if (!latest) throw new Error(`${runId}/${n} has no LATEST`);
    const m = await store.getJson<CheckpointManifest>(keys.ckpt(runId, n, latest.step) + 'manifest.json', latest.manifestSha256);
    out[n] = { step: m.step, weights: m.files['weights.bin'].sha256, optim: m.files['optim.bin'].sha256 };
  }
  return out;
}

interface HistEvent {
  eventId?: { toString(): string } | null;
  activityTaskTimedOutEventAttributes?: unknown;
  activityTaskScheduledEventAttributes?: {
    activityType?: { name?: string | null } | null;
    input?: { payloads?: Array<{ data?: Uint8Array | null }> | null } | null;
  } | null;
  activityTaskStartedEventAttributes?: {
    scheduledEventId?: { toString(): string } | null;
    attempt?: number | null;
    lastFailure?: { timeoutFailureInfo?: unknown } | null;
  } | null;
  activityTaskCompletedEventAttributes?: {
    scheduledEventId?: { toString(): string } | null;
    result?: { payloads?: Array<{ data?: Uint8Array | null }> | null } | null;
  } | null;
}

/**
 * A retried attempt of an open that trains its first commit window (`openTrainer` with a
 * second argument) after a timeout: its worker was lost mid-open or mid-window. The retry is
 * the re-open (a history keeps only an activity's last attempt, so no timed-out event shows it).
 */
const reopenedOpen = (name: string, args: unknown[], st: NonNullable<HistEvent['activityTaskStartedEventAttributes']>): boolean =>
  name === 'openTrainer' && args.length > 1 && (st.attempt ?? 1) > 1 && Boolean(st.lastFailure?.timeoutFailureInfo);

const payloadJson = (p: { data?: Uint8Array | null } | undefined): unknown =>
  p?.data ? JSON.parse(Buffer.from(p.data).toString('utf8')) : undefined;

export interface Work {
  /**
   * Units scheduled (SFT steps summed over chunk inputs; RL iterations started = rlIteration,
   * the window of rlIterations, publishPolicy with rolloutParts, or in recorded runs rlRollouts
   * / rlSample of shard 0; the first window an open trained, from its result: the window of an
   * open attempt lost with its worker is not in the history, so not counted).
   */
  scheduled: number;
  /** Units the node needs (steps / iterations). */
  needed: number;
  /** Trainer sessions opened beyond the first (each one a rewind to the last commit). */
  reopens: number;
  /** Activities that timed out (heartbeat or schedule-to-start: their worker was gone). */
  timeouts: number;
  /** Activity attempts that failed on a live worker (its log's "Activity failed" entries). */
  failed: number;
}

export interface RunWork {
  /** Training nodes only. */
  nodes: Record<string, Work>;
  /** Failed attempts over the pipeline and all its node workflows, by activity type. */
  failed: Record<string, number>;
  timeouts: number;
}

/** "Activity failed" entries (the SDK's WARN, one per failed attempt) in worker logs, by workflow id and activity type. */
export function failedAttempts(logs: string, runId: string): Array<{ workflowId: string; activityType: string }> {
  const out: Array<{ workflowId: string; activityType: string }> = [];
  for (const block of logs.split('[WARN] Activity failed {').slice(1)) {
    const body = block.slice(0, block.indexOf('\n}'));
    const wf = /workflowId: '([^']+)'/.exec(body)?.[1];
    const type = /activityType: '([^']+)'/.exec(body)?.[1];
    if (wf && type && (wf === runId || wf.startsWith(runId + '/'))) out.push({ workflowId: wf, activityType: type });
  }
  return out;
}

/**
 * Work done by each training node, from its workflow history: how many SFT steps / RL
 * iterations were scheduled against how many the node needs. An interrupted iteration
 * that was started again counts as one recomputed unit, whether it died early or late.
 * Failed attempts come from the workers' logs (a history keeps only an activity's last attempt).
 */
export async function runWork(
  c: Client,
  runId: string,
  config: string,
  overrides: Record<string, unknown>,
  logs: string,
): Promise<RunWork> {
  const cfg = loadConfig(config, overrides);
  const failures = failedAttempts(logs, runId);
  const out: RunWork = { nodes: {}, failed: {}, timeouts: 0 };
  for (const f of failures) out.failed[f.activityType] = (out.failed[f.activityType] ?? 0) + 1;
  for (const id of [runId, ...Object.keys(cfg.nodes).map((n) => `${runId}/${n}`)]) {
    const n = id === runId ? undefined : id.slice(runId.length + 1);
    const node = n ? cfg.nodes[n] : undefined;
    const hist = await c.workflow.getHandle(id).fetchHistory();
    const w: Work = {
      scheduled: 0,
      needed: node?.kind === 'sft' ? node.steps : node?.kind === 'rl' ? node.iterations : 0,
      reopens: -1,
      timeouts: 0,
      failed: failures.filter((f) => f.workflowId === id).length,
    };
    const byId = new Map<string, { name: string; args: unknown[] }>();
    for (const e of (hist.events ?? []) as HistEvent[]) {
      const sch = e.activityTaskScheduledEventAttributes;
      if (sch) {
        const name = sch.activityType?.name ?? '?';
        const args = (sch.input?.payloads ?? []).map(payloadJson);
        byId.set(String(e.eventId), { name, args });
        if (name === 'openTrainer') w.reopens++;
        if (name === 'sftChunk' || name === 'rlIterations') w.scheduled += (args[2] as number) - (args[1] as number);
        if (name === 'rlIteration' || name === 'publishPolicy' || name === 'rlRollouts' || (name === 'rlSample' && args[2] === 0))
          w.scheduled++;
      }
      const st = e.activityTaskStartedEventAttributes;
      const a = st && byId.get(String(st.scheduledEventId));
      if (st && a && reopenedOpen(a.name, a.args, st)) {
        w.timeouts++;
        w.reopens++;
      }
      const done = e.activityTaskCompletedEventAttributes;
      const o = done && byId.get(String(done.scheduledEventId));
      if (done && o?.name === 'openTrainer') {
        const r = payloadJson(done.result?.payloads?.[0]) as { step: number; first?: { iteration: number } } | undefined;
        if (r?.first) w.scheduled += r.first.iteration - r.step;
      }
      if (e.activityTaskTimedOutEventAttributes) w.timeouts++;
    }
    out.timeouts += w.timeouts;
    if (n && (node?.kind === 'sft' || node?.kind === 'rl')) out.nodes[n] = w;
  }
  return out;
}

/**
 * The pid of the worker holding the session of the training node running now: a started
 * session activity (the open, which trains the first commit window, or a later window) names
 * its worker (`<pid>@<host>`); between activities, the queue of the node's last scheduled
 * activity is that worker's own (`e3-trainer-<host>-<pid>-<id>`).
 */
export async function trainerPid(c: Client, runId: string, nodes: string[]): Promise<number | undefined> {
  for (const n of nodes) {
    const h = c.workflow.getHandle(`${runId}/${n}`);
    try {
      const d = await h.describe();
      if (d.status.name !== 'RUNNING') continue;
      for (const a of d.raw.pendingActivities ?? []) {
        const name = a.activityType?.name ?? '';
        // Rollout and evaluation parts run on any worker; every other activity of a training node is its session's.
        if (String(a.state) !== '2' || name === 'rolloutPart' || name === 'evalPart') continue;
        const m = /^(\d+)@/.exec(a.lastWorkerIdentity ?? '');
        if (m) return Number(m[1]);
      }
      const events = (await h.fetchHistory()).events ?? [];
      for (let i = events.length - 1; i >= 0; i--) {
        const q = events[i].activityTaskScheduledEventAttributes?.taskQueue?.name;
        const m = q ? /^e3-trainer-.+-(\d+)-[0-9a-f]{8}$/.exec(q) : null;
        if (m) return Number(m[1]);
      }
    } catch {
      /* not started yet, or the server is restarting */
    }
  }
  return undefined;
}

export type FaultKind = 'kill-worker' | 's3-restart' | 'temporal-restart';

export interface ChaosOptions {
  config: string;
  seed: number;
  /** Seeds the fault schedule (moments, victims, down times). */
  chaosSeed: number;
  faults: { kill: number; s3: number; temporal: number };
  /** [min, max] ms a server stays down. */
  s3DownMs: [number, number];
  temporalDownMs: [number, number];
  /** Worker processes (one per core). */
  workers: number;
  /**
   * Which worker a kill hits: `random` (the seeded draw), or `trainer`: the worker holding
   * the session of the training node that is running, at the drawn moment or, when no
   * session is live then (between nodes, or one being re-opened), as soon as one is.
   * @default random
   */
  victim?: 'random' | 'trainer';
  /** Faults fall in [from, to] x the baseline's wall time after the chaos run starts. */
  window?: [number, number];
  log?: (msg: string) => void;
}

export interface Injected {
  kind: FaultKind;
  plannedMs: number;
  atMs: number;
  detail: string;
  /** kill-worker of the session holder: wall-clock ms (Date.now) of the SIGKILL. */
  holderKilledAt?: number;
}

export interface ChaosReport {
  runIds: { baseline: string; chaos: string };
  baseline: { wallMs: number; finals: Record<string, NodeFinal>; work: RunWork };
  chaos: { wallMs: number; finals: Record<string, NodeFinal>; work: RunWork };
  /** Workers that exited on their own during the chaos run and were started again. */
  workerExits: number;
  injected: Injected[];
  planned: number;
  identical: boolean;
  /** Per node: both sha256s equal. */
  perNode: Record<string, boolean>;
  /** Per SIGKILL of the session holder: ms until a training activity of that node started again on a re-opened session. */
  recoveryMs: number[];
  logDir: string;
}

interface PlannedFault {
  kind: FaultKind;
  at: number;
  victim: number;
  pauseMs: number;
}

/** The fault schedule: a pure function of the chaos seed and the baseline's wall time. */
export function planFaults(
  o: Pick<ChaosOptions, 'chaosSeed' | 'faults' | 's3DownMs' | 'temporalDownMs' | 'workers' | 'window'>,
  baselineMs: number,
): PlannedFault[] {
  const rng = new Rng(deriveSeed(o.chaosSeed, 'chaos-schedule'));
  const [lo, hi] = o.window ?? [0.1, 0.7];
  const kinds: FaultKind[] = [
    ...Array<FaultKind>(o.faults.kill).fill('kill-worker'),
    ...Array<FaultKind>(o.faults.s3).fill('s3-restart'),
    ...Array<FaultKind>(o.faults.temporal).fill('temporal-restart'),
  ];
  return kinds
    .map((kind) => {
      const at = Math.round(baselineMs * (lo + (hi - lo) * rng.next()));
      const victim = rng.int(0, o.workers - 1);
      const range = kind === 's3-restart' ? o.s3DownMs : kind === 'temporal-restart' ? o.temporalDownMs : [0, 2000];
      return { kind, at, victim, pauseMs: rng.int(range[0], range[1]) };
    })
    .sort((a, b) => a.at - b.at);
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? ((m: string) => console.log(`[chaos] ${m}`));
  const suffix = `${process.pid}-${Date.now().toString(36)}`;
  const runIds = { baseline: `chaos-base-${suffix}`, chaos: `chaos-run-${suffix}` };
  const input: PipelineInput = { config: o.config, overrides: { seed: o.seed } };
  const nodes = trainingNodes(o.config, { seed: o.seed });
  const logDir = path.join(dataDir(), 'chaos-logs', suffix);
  const store = ObjectStore.fromEnv();
  const pool = new WorkerPool(logDir, o.workers);
  const c = await temporalClient();
  try {
    await pool.start();
    log(`${o.workers} workers polling; baseline run ${runIds.baseline} (config ${o.config}, seed ${o.seed})`);
    let t0 = Date.now();
    await startPipeline(c.client, runIds.baseline, input);
    await awaitPipeline(c.client, runIds.baseline);
    const baselineMs = Date.now() - t0;
    const baseFinals = await finalCheckpoints(store, runIds.baseline, nodes);
    const baseWork = await runWork(c.client, runIds.baseline, o.config, { seed: o.seed }, pool.logs());
    const exitsBefore = pool.exits.length;
    log(`baseline done in ${(baselineMs / 1000).toFixed(1)} s`);

    const plan = planFaults(o, baselineMs);
    log(
      `chaos run ${runIds.chaos}: ${plan.length} faults planned at ${plan.map((f) => `${f.kind}@${(f.at / 1000).toFixed(1)}s`).join(', ')}`,
    );
    const injected: Injected[] = [];
    const holderKills: number[] = [];
    t0 = Date.now();
    await startPipeline(c.client, runIds.chaos, input);
    let finished = false;
    // Only the wait ends the run; its failure is re-thrown by the await below.
    const done = awaitPipeline(c.client, runIds.chaos).finally(() => (finished = true));
    const settled = done.then(
      () => undefined,
      () => undefined,
    );
    // Each fault fires at its own moment, so faults of different kinds may overlap (a worker
    // killed while S3 is down); faults of one kind wait for the previous one of that kind.
    const inject = async (f: PlannedFault): Promise<void> => {
      if (finished) return;
      const atMs = Date.now() - t0;
      let detail: string;
      if (f.kind === 'kill-worker') {
        let heldSlot: number | undefined;
        while (o.victim === 'trainer' && !finished) {
          const held = await trainerPid(c.client, runIds.chaos, nodes);
          heldSlot = held !== undefined ? pool.slotOf(held) : undefined;
          if (heldSlot !== undefined) break;
          await sleep(250); // no live session right now (between nodes, or being re-opened)
        }
        if (finished) return;
        const slot = heldSlot ?? f.victim;
        if (heldSlot !== undefined) holderKills.push(Date.now());
        await pool.kill(slot);
        await sleep(f.pauseMs);
        const p = pool.spawn(slot);
        detail = `SIGKILL worker slot ${slot}${heldSlot !== undefined ? ' (it held the running session)' : ''}, new pid ${p.pid} after ${f.pauseMs} ms`;
      } else {
        // Clients (the workers', and this one) reconnect by themselves once the server is back.
        const what = f.kind === 's3-restart' ? 's3' : 'temporal';
        await infraAsync('down', what);
        await sleep(f.pauseMs);
        await infraAsync('up', what);
        detail = `${what === 's3' ? 'S3' : 'Temporal'} down ${f.pauseMs} ms`;
      }
      injected.push({ kind: f.kind, plannedMs: f.at, atMs, detail });
      log(`t=${(atMs / 1000).toFixed(1)}s ${f.kind}: ${detail}`);
    };
    const lanes = new Map<FaultKind, Promise<void>>();
    await Promise.all(
      plan.map(async (f) => {
        const wait = f.at - (Date.now() - t0);
        if (wait > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([new Promise<void>((r) => (timer = setTimeout(r, wait))), settled]);
          clearTimeout(timer);
        }
        const mine = (lanes.get(f.kind) ?? Promise.resolve()).then(() => inject(f));
        lanes.set(f.kind, mine);
        await mine;
      }),
    );
    injected.sort((a, b) => a.atMs - b.atMs);
    const result = await done;
    const chaosMs = Date.now() - t0;
    log(`chaos run done in ${(chaosMs / 1000).toFixed(1)} s (${Object.keys(result.results).length} nodes)`);
    const finals = await finalCheckpoints(store, runIds.chaos, nodes);
    const work = await runWork(c.client, runIds.chaos, o.config, { seed: o.seed }, pool.logs());
    const perNode = Object.fromEntries(
      nodes.map((n) => [
        n,
        finals[n].weights === baseFinals[n].weights && finals[n].optim === baseFinals[n].optim && finals[n].step === baseFinals[n].step,
      ]),
    );
    return {
      runIds,
      baseline: { wallMs: baselineMs, finals: baseFinals, work: baseWork },
      chaos: { wallMs: chaosMs, finals, work },
      workerExits: pool.exits.length - exitsBefore,
      injected,
      planned: plan.length,
      identical: Object.values(perNode).every(Boolean),
      perNode,
      recoveryMs: await recoveries(c.client, runIds.chaos, nodes, holderKills),
      logDir,
    };
  } finally {
    await pool.stop();
    await c.close().catch(() => undefined);
  }
}

/**
 * Time from each SIGKILL of a session holder to the node computing again: the first training
 * activity (not openTrainer) started after the session was re-opened, or the retried attempt of
 * an open that trains its first window (it computes once it has loaded the commit, so this
 * leaves out the load), read from the node's history (server timestamps; the server runs on
 * this machine, so one clock).
 */
async function recoveries(c: Client, runId: string, nodes: string[], kills: number[]): Promise<number[]> {
  const starts: number[] = [];
  for (const n of nodes) {
    const events = ((await c.workflow.getHandle(`${runId}/${n}`).fetchHistory()).events ?? []) as Array<
      HistEvent & { eventTime?: { seconds?: { toString(): string } | null; nanos?: number | null } | null }
    >;
    const scheduled = new Map<string, { name: string; args: unknown[] }>();
    let reopened = false;
    for (const e of events) {
      const at = () => Number(e.eventTime?.seconds ?? 0) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6;
      const sch = e.activityTaskScheduledEventAttributes;
      if (sch) {
        const name = sch.activityType?.name ?? '?';
        scheduled.set(String(e.eventId), { name, args: (sch.input?.payloads ?? []).map(payloadJson) });
        if (name === 'openTrainer') reopened = true;
      }
      const st = e.activityTaskStartedEventAttributes;
      const a = st && scheduled.get(String(st.scheduledEventId));
      if (st && a && reopenedOpen(a.name, a.args, st)) starts.push(at());
      else if (st && reopened && a && a.name !== 'openTrainer') {
        starts.push(at());
        reopened = false;
      }
    }
  }
  // Each kill's recovery: the first post-reopen start after it.
  return kills.map((k) => {
    const next = starts.filter((t) => t > k).sort((a, b) => a - b)[0];
    return next === undefined ? NaN : next - k;
  });
}

/** The report table: faults by kind, recomputed work, wall-clock overhead, identical or not. */
export function formatReport(r: ChaosReport): string {
  const lines: string[] = [];
  const count = (k: FaultKind) => r.injected.filter((f) => f.kind === k).length;
  lines.push(
    `faults injected: kill-worker ${count('kill-worker')}, s3-restart ${count('s3-restart')}, temporal-restart ${count('temporal-restart')} (${r.injected.length} of ${r.planned} planned)`,
  );
  if (r.injected.length < r.planned)
    lines.push(
      `  (${r.planned - r.injected.length} planned faults fell after the run had finished; a smaller --window moves them earlier)`,
    );
  for (const f of r.injected) lines.push(`  t=${(f.atMs / 1000).toFixed(1).padStart(6)} s  ${f.kind.padEnd(16)} ${f.detail}`);
  lines.push('');
  lines.push(
    'node        step  work (sched/needed)  recomputed  reopens  timeouts  failed  weights sha256 (baseline | chaos)       identical',
  );
  for (const n of Object.keys(r.perNode)) {
    const w = r.chaos.work.nodes[n];
    const b = r.baseline.finals[n];
    const f = r.chaos.finals[n];
    lines.push(
      `${n.padEnd(10)} ${String(f.step).padStart(5)}  ${`${w.scheduled}/${w.needed}`.padStart(19)}  ${String(w.scheduled - w.needed).padStart(10)}  ${String(w.reopens).padStart(7)}  ${String(w.timeouts).padStart(8)}  ${String(w.failed).padStart(6)}  ${b.weights.slice(0, 16)} | ${f.weights.slice(0, 16)}  ${r.perNode[n] ? 'yes' : 'NO'}`,
    );
  }
  const recomputed = Object.values(r.chaos.work.nodes).reduce((a, w) => a + w.scheduled - w.needed, 0);
  const failed = Object.entries(r.chaos.work.failed);
  const total = (x: Record<string, number>) => Object.values(x).reduce((a, v) => a + v, 0);
  const overhead = r.chaos.wallMs - r.baseline.wallMs;
  lines.push('');
  lines.push(`iterations recomputed (SFT steps + RL iterations started beyond those needed): ${recomputed}`);
  lines.push(
    `activity attempts failed and retried, whole run: ${total(r.chaos.work.failed)}${failed.length ? ` (${failed.map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}; timed out (worker gone): ${r.chaos.work.timeouts}; baseline: ${total(r.baseline.work.failed)} / ${r.baseline.work.timeouts}`,
  );
  lines.push(`workers that exited on their own and were restarted by the harness: ${r.workerExits}`);
  if (r.recoveryMs.length)
    lines.push(
      `recovery (SIGKILL of the session holder → the node computing again on a re-opened session): ${r.recoveryMs.map((m) => (Number.isFinite(m) ? `${(m / 1000).toFixed(1)} s` : 'n/a (the node had finished)')).join(', ')}`,
    );
  lines.push(
    `wall clock: baseline ${(r.baseline.wallMs / 1000).toFixed(1)} s, chaos ${(r.chaos.wallMs / 1000).toFixed(1)} s, overhead ${(overhead / 1000).toFixed(1)} s (${((overhead / r.baseline.wallMs) * 100).toFixed(0)}%)`,
  );
  lines.push(
    `result: ${r.identical ? 'IDENTICAL' : 'DIFFERENT'} final checkpoints (weights.bin and optim.bin sha256 of ${Object.keys(r.perNode).join(', ')})`,
  );
  lines.push(`worker logs: ${r.logDir}`);
  return lines.join('\n');
}

function parseArgs(argv: string[]): ChaosOptions {
  const get = (flag: string, dflt: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
  };
  const int = (flag: string, dflt: number) => {
    const v = Number(get(flag, String(dflt)));
    if (!Number.isInteger(v) || v < 0) throw new Error(`${flag} must be a non-negative integer`);
    return v;
  };
  const range = (flag: string, dflt: string): [number, number] => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(get(flag, dflt));
    if (!m) throw new Error(`${flag} must be MS or MIN-MAX`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new Error(`${flag}: MAX < MIN`);
    return [a, b];
  };
  const workers = int('--workers', 2);
  if (workers < 1) throw new Error('--workers must be >= 1');
  return {
    config: get('--config', 'tiny'),
    seed: int('--seed', 7),
    chaosSeed: int('--chaos-seed', 1),
    faults: { kill: int('--kills', 2), s3: int('--s3', 1), temporal: int('--temporal', 1) },
    s3DownMs: range('--s3-down-ms', '2000-8000'),
    temporalDownMs: range('--temporal-down-ms', '1000-5000'),
    workers,
    victim: get('--victim', 'random') === 'trainer' ? 'trainer' : 'random',
    window: ((w: string): [number, number] => {
      const m = /^(\d*\.?\d+)-(\d*\.?\d+)$/.exec(w);
      if (!m || Number(m[2]) < Number(m[1]))
        throw new Error('--window must be FROM-TO (fractions of the baseline wall time, e.g. 0.1-0.7)');
      return [Number(m[1]), Number(m[2])];
    })(get('--window', '0.1-0.7')),
  };
}

/**
 * A script's own servers (docs: `npm run chaos`, `npm run soak`): E3_<NAME>_TEMPORAL_PORT /
 * _TEMPORAL_UI_PORT / _S3_PORT / _DATA_DIR, else the given defaults, a fresh data dir and
 * bucket `e3-<name>`; started, `body` run, stopped (also when it throws), then exit with
 * its code (1 on an error).
 */
export function runWithOwnServers(
  name: 'chaos' | 'soak' | 'load' | 'fanout' | 'evalfan' | 'scaling' | 'offpolicy',
  ports: { temporal: number; ui: number; s3: number },
  body: () => Promise<number>,
): void {
  const env = process.env;
  const own = (k: string) => env[`E3_${name.toUpperCase()}_${k}`];
  env.E3_DATA_DIR = own('DATA_DIR') ?? path.join(ROOT, '.e3', name);
  env.E3_TEMPORAL_PORT = own('TEMPORAL_PORT') ?? String(ports.temporal);
  env.E3_TEMPORAL_UI_PORT = own('TEMPORAL_UI_PORT') ?? String(ports.ui);
  env.E3_S3_PORT = own('S3_PORT') ?? String(ports.s3);
  env.E3_S3_BUCKET ??= `e3-${name}`;
  for (const k of ['TEMPORAL_ADDRESS', 'E3_TEMPORAL_ADDRESS', 'E3_S3_ENDPOINT']) delete env[k];
  rmSync(env.E3_DATA_DIR, { recursive: true, force: true });
  const run = async () => {
    infra('up');
    try {
      return await body();
    } finally {
      infra('down');
    }
  };
  run().then(
    (rc) => process.exit(rc),
    (err) => {
      console.error(err instanceof Error ? (err.stack ?? err.message) : err);
      process.exit(1);
    },
  );
}

if (require.main === module) {
  runWithOwnServers('chaos', { temporal: 37233, ui: 38233, s3: 37070 }, async () => {
    const r = await runChaos(parseArgs(process.argv.slice(2)));
    console.log('\n' + formatReport(r));
    return r.identical ? 0 : 1;
  });
}
