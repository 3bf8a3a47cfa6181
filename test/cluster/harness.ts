/**
 * Hosts emulated on one machine (docs/OPERATIONS.md "Emulated hosts and network faults"):
 * Temporal, the object store and toxiproxy in one network namespace (`e3c-<k>-srv-<pid>`), each
 * worker in its own (`e3c-<k>-<name>`), all joined by veth pairs to a bridge in the server
 * namespace on 10.233.<k>.0/24. Temporal and versitygw bind only the server namespace's
 * loopback; toxiproxy binds the namespace's bridge address and is the only way in, one proxy
 * per worker and path (worker -> Temporal, worker -> object store), so latency, bandwidth
 * limits and reset connections are injected per worker and per path through toxiproxy's HTTP
 * API. A worker's link goes down and up with `ip link set eth0 down|up` in its namespace. The
 * controlling process (this one) reaches the servers over a host veth, through proxies
 * without toxics.
 *
 * Everything made is undone by `down()` (processes by pid, then the namespaces with their
 * veths), which `withCluster` runs in a `finally`, and on SIGINT/SIGTERM.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { start, waitFor } from '../integration/procs';
import type { Proc } from '../integration/procs';

export const ROOT = path.resolve(__dirname, '..', '..');
const BIN = path.join(ROOT, 'infra', 'bin');

/** Ports inside the server namespace (its own network stack: nothing else binds there). */
const INNER = { temporal: 7233, ui: 8233, s3: 7070, toxiproxy: 8474 };
const PROXY_BASE = 20000;
const PREFIX = 'e3c-';

export type Path = 'temporal' | 's3';

export interface WorkerSpec {
  /** Short name (letters and digits, at most 6): the namespace is e3c-<k>-<name>. */
  name: string;
  queues: 'all' | 'general' | 'trainer' | 'rollout';
}

export interface Toxic {
  type: 'latency' | 'bandwidth' | 'reset_peer' | 'timeout' | 'slow_close' | 'limit_data';
  /** downstream: server -> worker; upstream: worker -> server. */
  stream?: 'upstream' | 'downstream';
  attributes: Record<string, number>;
  toxicity?: number;
}

interface HostWorker {
  spec: WorkerSpec;
  index: number;
  ns: string;
  addr: string;
  proc?: Proc;
  logFile: string;
}

function ip(...args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, err: (r.stderr || r.error?.message || '').trim() };
}

function mustIp(...args: string[]): void {
  const r = ip(...args);
  if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.err}`);
}

/**
 * Why network namespaces cannot be made here (not root, no `ip`, no veth or bridge support,
 * toxiproxy not built), or undefined when they can: the probe makes and removes one.
 */
export function namespacesUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root (ip netns add); run as root';
  const v = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return `the ip command (iproute2) is not available: ${v.error?.message ?? v.stderr}`;
  const probe = `${PREFIX}probe-${process.pid}`;
  const made = ip('netns', 'add', probe);
  if (!made.ok) return `ip netns add failed: ${made.err}`;
  try {
    const br = ip('-n', probe, 'link', 'add', 'probebr', 'type', 'bridge');
    if (!br.ok) return `no bridge devices in a network namespace: ${br.err}`;
    const veth = ip('-n', probe, 'link', 'add', 'probea', 'type', 'veth', 'peer', 'name', 'probeb');
    if (!veth.ok) return `no veth pairs in a network namespace: ${veth.err}`;
  } finally {
    ip('netns', 'del', probe);
  }
  for (const b of ['temporal', 'versitygw', 'toxiproxy-server'])
    if (spawnSync('test', ['-x', path.join(BIN, b)]).status !== 0) return `${path.join(BIN, b)} missing: run bash infra/install`;
  return undefined;
}

/** A /24 under 10.233.0.0/16 that no other e3c- namespace on this machine uses. */
function freeSubnet(): number {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  const used = new Set(
    (r.stdout ?? '')
      .split('\n')
      .map((l) => new RegExp(`^${PREFIX}(\\d+)-`).exec(l)?.[1])
      .filter(Boolean)
      .map(Number),
  );
  const first = 1 + (process.pid % 200);
  for (let j = 0; j < 250; j++) {
    const k = 1 + ((first - 1 + j) % 250);
    if (!used.has(k)) return k;
  }
  throw new Error('no free 10.233.k.0/24: 250 e3c- clusters exist (ip netns list)');
}

export class Cluster {
  readonly k: number;
  readonly serverNs: string;
  /** The server namespace's address on the bridge. */
  readonly serverAddr: string;
  readonly dataDir: string;
  readonly accessKey = 'e3-cluster-access';
  readonly secretKey = 'e3-cluster-secret-0123456789abcdef';
  readonly bucket = 'e3-cluster';
  private readonly workers = new Map<string, HostWorker>();
  private readonly namespaces: string[] = [];
  private readonly hostVeth: string;
  private toxiproxy?: Proc;
  private serversUp = false;
  private closed = false;
  private readonly onSignal = () => {
    void this.down().finally(() => process.exit(130));
  };

  private constructor(
    dataDir: string,
    readonly log: (msg: string) => void,
  ) {
    this.k = freeSubnet();
    // The controlling process's pid in the name: removeStale leaves a live cluster alone.
    this.serverNs = `${PREFIX}${this.k}-srv-${process.pid}`;
    this.serverAddr = `10.233.${this.k}.1`;
    this.hostVeth = `e3c${this.k}host`;
    this.dataDir = path.join(dataDir, `c${this.k}`);
  }

  /** Make the namespaces, bridge and veths, start the servers and toxiproxy (not the workers). */
  static async up(specs: WorkerSpec[], opts: { dataDir: string; log?: (msg: string) => void }): Promise<Cluster> {
    for (const s of specs)
      if (!/^[a-z0-9]{1,6}$/.test(s.name)) throw new Error(`worker name must be 1-6 lowercase letters or digits (got "${s.name}")`);
    const c = new Cluster(opts.dataDir, opts.log ?? (() => {}));
    process.once('SIGINT', c.onSignal);
    process.once('SIGTERM', c.onSignal);
    try {
      await c.make(specs);
      return c;
    } catch (e) {
      await c.down();
      throw e;
    }
  }

  private netns(name: string): void {
    mustIp('netns', 'add', name);
    this.namespaces.push(name);
    mustIp('-n', name, 'link', 'set', 'lo', 'up');
  }

  private async make(specs: WorkerSpec[]): Promise<void> {
    rmSync(this.dataDir, { recursive: true, force: true });
    mkdirSync(this.dataDir, { recursive: true });
    const srv = this.serverNs;
    this.netns(srv);
    const br = `e3c${this.k}br`;
    mustIp('-n', srv, 'link', 'add', br, 'type', 'bridge');
    mustIp('-n', srv, 'addr', 'add', `${this.serverAddr}/24`, 'dev', br);
    mustIp('-n', srv, 'link', 'set', br, 'up');
    // The controller's link: a veth from this namespace to the bridge.
    mustIp('link', 'add', this.hostVeth, 'type', 'veth', 'peer', 'name', 'hostlink', 'netns', srv);
    mustIp('-n', srv, 'link', 'set', 'hostlink', 'master', br, 'up');
    mustIp('addr', 'add', `10.233.${this.k}.254/24`, 'dev', this.hostVeth);
    mustIp('link', 'set', this.hostVeth, 'up');
    specs.forEach((spec, index) => {
      const ns = `${PREFIX}${this.k}-${spec.name}`;
      this.netns(ns);
      const side = `e3c${this.k}${spec.name}`;
      mustIp('-n', srv, 'link', 'add', side, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      mustIp('-n', srv, 'link', 'set', side, 'master', br, 'up');
      const addr = `10.233.${this.k}.${10 + index}`;
      mustIp('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
      mustIp('-n', ns, 'link', 'set', 'eth0', 'up');
      this.workers.set(spec.name, { spec, index, ns, addr, logFile: path.join(this.dataDir, `worker-${spec.name}.log`) });
    });
    this.log(`namespaces ${this.namespaces.join(', ')} on 10.233.${this.k}.0/24 (servers at ${this.serverAddr})`);

    // Temporal and versitygw by infra/up inside the server namespace (bound to its loopback).
    const up = this.infra('up');
    if (up.status !== 0) throw new Error(`infra/up in ${srv} failed: ${up.output}`);
    this.serversUp = true;
    this.toxiproxy = start(
      'ip',
      [
        'netns',
        'exec',
        srv,
        path.join(BIN, 'toxiproxy-server'),
        '-host',
        this.serverAddr,
        '-port',
        String(INNER.toxiproxy),
        // Connections accepted and closed (info), not every byte moved (debug, trace).
      ],
      { ...process.env, LOG_LEVEL: 'info' },
    );
    await waitFor('toxiproxy to answer', 30_000, async () => ((await fetch(`${this.api()}/version`)).ok ? true : undefined));
    // One proxy per worker and path, and the controller's pair (index 99, never toxic).
    for (const [name, idx] of [...[...this.workers.values()].map((w) => [w.spec.name, w.index] as const), ['ctl', 99] as const]) {
      await this.createProxy(`${name}-temporal`, this.proxyPort(idx, 'temporal'), INNER.temporal);
      await this.createProxy(`${name}-s3`, this.proxyPort(idx, 's3'), INNER.s3);
    }
    this.log(`servers up in ${srv}; toxiproxy API ${this.api()}`);
  }

  private infra(script: 'up' | 'down'): { status: number; output: string } {
    const r = spawnSync('ip', ['netns', 'exec', this.serverNs, 'bash', path.join(ROOT, 'infra', script)], {
      encoding: 'utf8',
      env: this.serverEnv(),
    });
    return { status: r.status ?? 1, output: `${r.stdout}${r.stderr}` };
  }

  private serverEnv(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      E3_DATA_DIR: path.join(this.dataDir, 'servers'),
      E3_TEMPORAL_PORT: String(INNER.temporal),
      E3_TEMPORAL_UI_PORT: String(INNER.ui),
      E3_TEMPORAL_HTTP_PORT: String(INNER.temporal + 1),
      E3_TEMPORAL_METRICS_PORT: String(INNER.temporal + 2),
      E3_S3_PORT: String(INNER.s3),
      E3_S3_ACCESS_KEY: this.accessKey,
      E3_S3_SECRET_KEY: this.secretKey,
    };
  }

  private proxyPort(index: number, p: Path): number {
    return PROXY_BASE + index * 10 + (p === 'temporal' ? 0 : 1);
  }

  api(): string {
    return `http://${this.serverAddr}:${INNER.toxiproxy}`;
  }

  private async toxi(method: string, url: string, body?: unknown): Promise<unknown> {
    const r = await fetch(`${this.api()}${url}`, {
      method,
      headers: { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`toxiproxy ${method} ${url}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  }

  private async createProxy(name: string, listen: number, upstream: number): Promise<void> {
    await this.toxi('POST', '/proxies', {
      name,
      listen: `${this.serverAddr}:${listen}`,
      upstream: `127.0.0.1:${upstream}`,
      enabled: true,
    });
  }

  /** Environment for a process that talks to the servers through `who`'s proxies. */
  envFor(who: string, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
    const idx = who === 'ctl' ? 99 : this.host(who).index;
    const env: NodeJS.ProcessEnv = {
      ...base,
      E3_TEMPORAL_ADDRESS: `${this.serverAddr}:${this.proxyPort(idx, 'temporal')}`,
      E3_S3_ENDPOINT: `http://${this.serverAddr}:${this.proxyPort(idx, 's3')}`,
      E3_S3_ACCESS_KEY: this.accessKey,
      E3_S3_SECRET_KEY: this.secretKey,
      E3_S3_BUCKET: this.bucket,
      E3_NAMESPACE: 'default',
      E3_DATA_DIR: path.join(this.dataDir, 'hosts', who),
    };
    for (const k of [
      'TEMPORAL_ADDRESS',
      'TEMPORAL_NAMESPACE',
      'TEMPORAL_TLS',
      'TEMPORAL_API_KEY',
      'E3_METRICS_PORT',
      'E3_SDK_METRICS_PORT',
    ])
      delete env[k];
    return env;
  }

  /** The controller's environment (host veth, proxies without toxics). */
  controllerEnv(): NodeJS.ProcessEnv {
    return this.envFor('ctl');
  }

  private host(name: string): HostWorker {
    const w = this.workers.get(name);
    if (!w) throw new Error(`no worker named "${name}" in this cluster (${[...this.workers.keys()].join(', ')})`);
    return w;
  }

  names(): string[] {
    return [...this.workers.keys()];
  }

  /** Start `name`'s worker process in its namespace (one compute thread: two cores for the whole cluster). */
  async startWorker(name: string, timeoutMs = 240_000): Promise<Proc> {
    const w = this.host(name);
    if (w.proc && w.proc.child.exitCode === null) throw new Error(`worker ${name} already running (pid ${w.proc.pid})`);
    const env = this.envFor(name, { ...process.env, E3_THREADS: process.env.E3_THREADS ?? '1' });
    mkdirSync(env.E3_DATA_DIR!, { recursive: true });
    // `ip netns exec` execs the command: the pid is the worker's own.
    w.proc = start(
      'ip',
      ['netns', 'exec', w.ns, process.execPath, '--import', 'tsx', path.join(ROOT, 'cli', 'e3.ts'), 'worker', '--queues', w.spec.queues],
      env,
    );
    const p = w.proc;
    await waitFor(`worker ${name} to poll its queues`, timeoutMs, async () => {
      if (p.child.exitCode !== null) throw new Error(`worker ${name} exited (${p.child.exitCode}): ${p.output().slice(-2000)}`);
      return /polling /.test(p.output()) ? true : undefined;
    }).catch((e: Error) => {
      throw new Error(p.child.exitCode !== null ? `worker ${name} exited (${p.child.exitCode}): ${p.output().slice(-2000)}` : e.message);
    });
    return p;
  }

  /** The worker's pid (its process), if running. */
  pidOf(name: string): number | undefined {
    const p = this.host(name).proc;
    return p && p.child.exitCode === null ? p.pid : undefined;
  }

  /** The worker running with this pid. */
  nameOf(pid: number): string | undefined {
    for (const w of this.workers.values()) if (w.proc?.pid === pid) return w.spec.name;
    return undefined;
  }

  /** toxiproxy's log so far (one JSON object a line: connections accepted and closed, per proxy). */
  toxiproxyLog(): string {
    return this.toxiproxy?.output() ?? '';
  }

  output(name: string): string {
    return this.host(name).proc?.output() ?? '';
  }

  /** Take `name`'s link down (`ip link set eth0 down` in its namespace). */
  linkDown(name: string): void {
    mustIp('-n', this.host(name).ns, 'link', 'set', 'eth0', 'down');
  }

  linkUp(name: string): void {
    const w = this.host(name);
    mustIp('-n', w.ns, 'link', 'set', 'eth0', 'up');
  }

  /** Add a toxic on `name`'s path to Temporal or the object store; returns its name for removeToxic. */
  async addToxic(name: string, p: Path, t: Toxic): Promise<string> {
    this.host(name);
    const toxicName = `${t.type}-${t.stream ?? 'downstream'}`;
    await this.toxi('POST', `/proxies/${name}-${p}/toxics`, {
      name: toxicName,
      type: t.type,
      stream: t.stream ?? 'downstream',
      toxicity: t.toxicity ?? 1,
      attributes: t.attributes,
    });
    return toxicName;
  }

  async removeToxic(name: string, p: Path, toxicName: string): Promise<void> {
    await this.toxi('DELETE', `/proxies/${name}-${p}/toxics/${toxicName}`);
  }

  /** Remove every toxic on every proxy. */
  async resetToxics(): Promise<void> {
    await this.toxi('POST', '/reset');
  }

  /** SIGTERM `name`'s worker (SIGKILL after graceMs) and wait for it. */
  async stopWorker(name: string, graceMs = 15_000): Promise<void> {
    await this.host(name).proc?.stop(graceMs);
  }

  /** Stop every process this cluster started (by pid) and delete its namespaces and veths. Idempotent. */
  async down(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    process.removeListener('SIGINT', this.onSignal);
    process.removeListener('SIGTERM', this.onSignal);
    const errors: string[] = [];
    // Links up first: a worker draining over a dead link would wait for its grace period.
    for (const w of this.workers.values()) ip('-n', w.ns, 'link', 'set', 'eth0', 'up');
    await Promise.all([...this.workers.values()].map((w) => w.proc?.stop(10_000)));
    await this.toxiproxy?.stop(5_000);
    if (this.serversUp) {
      const d = this.infra('down');
      if (d.status !== 0) errors.push(`infra/down in ${this.serverNs}: ${d.output}`);
    }
    const hv = ip('link', 'del', this.hostVeth);
    if (!hv.ok && !/Cannot find device/.test(hv.err)) errors.push(hv.err);
    // Deleting a namespace deletes its veth ends (and their peers).
    for (const ns of [...this.namespaces].reverse()) {
      const r = ip('netns', 'del', ns);
      if (!r.ok) errors.push(`ip netns del ${ns}: ${r.err}`);
    }
    this.log(`cluster ${this.k} down: namespaces ${this.namespaces.join(', ')} deleted`);
    if (errors.length) throw new Error(`cluster clean-up: ${errors.join('; ')}`);
  }
}

/**
 * Remove what a cluster whose controlling process died without cleaning up (SIGKILL) left:
 * for each e3c- namespace of a cluster whose controller (the pid in its server namespace's
 * name) is gone, the processes in it (`ip netns pids`: only this harness starts processes
 * there) get SIGKILL, then the namespace and its host veth are deleted. Returns the
 * namespaces removed.
 */
export function removeStale(log: (msg: string) => void = () => {}): string[] {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  const names = (list.stdout ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(PREFIX));
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  // Clusters (by subnet) whose controlling process still runs.
  const live = new Set<string>();
  for (const n of names) {
    const m = new RegExp(`^${PREFIX}(\\d+)-srv-(\\d+)$`).exec(n);
    if (m && alive(Number(m[2]))) live.add(m[1]);
  }
  const removed: string[] = [];
  for (const ns of names) {
    const k = new RegExp(`^${PREFIX}(\\d+)-`).exec(ns)?.[1];
    if (k && live.has(k)) continue;
    const pids = (spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '').split('\n').filter(Boolean).map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
    }
    if (k && ns.includes('-srv-')) ip('link', 'del', `e3c${k}host`);
    ip('netns', 'del', ns);
    removed.push(ns);
    log(`removed ${ns}${pids.length ? ` (killed ${pids.join(', ')})` : ''}`);
  }
  return removed;
}

/** Run `fn` on a fresh cluster and take it down afterwards, whatever happens. */
export async function withCluster<T>(
  specs: WorkerSpec[],
  opts: { dataDir: string; log?: (msg: string) => void },
  fn: (c: Cluster) => Promise<T>,
): Promise<T> {
  const c = await Cluster.up(specs, opts);
  try {
    return await fn(c);
  } finally {
    await c.down();
  }
}
