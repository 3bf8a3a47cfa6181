/**
 * Extra servers an integration test starts itself (prometheus, a TLS versitygw, a worker
 * process): free loopback ports near the test's Temporal port, child processes with their
 * output kept, and stopping exactly those processes by pid.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

/** Whether 127.0.0.1:port can be bound now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * `n` consecutive free loopback ports at the test's Temporal port + `offset` or above (the
 * integration tier's ports are set per engineer: E3_TEST_TEMPORAL_PORT, so these are too).
 */
export async function freePorts(offset: number, n = 1): Promise<number> {
  const base = Number(process.env.E3_TEMPORAL_PORT ?? 17233) + offset;
  for (let p = base; p < base + 100; p++) {
    let ok = true;
    for (let k = 0; k < n && ok; k++) ok = await bindable(p + k);
    if (ok) return p;
  }
  throw new Error(`no ${n} free consecutive ports on 127.0.0.1 in [${base}, ${base + 100})`);
}

export interface Proc {
  child: ChildProcess;
  pid: number;
  /** stdout and stderr so far. */
  output: () => string;
  /** SIGTERM the process (SIGKILL after `graceMs`) and wait for it to exit. */
  stop: (graceMs?: number) => Promise<void>;
  exited: Promise<number | null>;
}

export function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Proc {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const pid = child.pid!;
  return {
    child,
    pid,
    output: () => out,
    exited,
    stop: async (graceMs = 30_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone meanwhile */
        }
      }, graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Poll `check` every 250 ms until it returns a value (not undefined), or throw after `ms` with `what`. */
export async function waitFor<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
