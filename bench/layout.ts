/**
 * Worker layouts for the benches that time one run on several worker processes
 * (bench/scaling.ts, bench/offpolicy.bench.ts): each worker with its own `--queues` and
 * compute threads (E3_THREADS), logging to its own file.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ROOT } from '../test/chaos';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Layout {
  name: string;
  what: string;
  workers: Array<{ role: string; queues: string; threads: number }>;
}

/** Start the layout's workers (each logging to its own file) and wait until each polls. */
export async function startLayout(l: Layout, logDir: string): Promise<Array<{ role: string; proc: ChildProcess; log: string }>> {
  mkdirSync(logDir, { recursive: true });
  const out = l.workers.map((w) => {
    const log = path.join(logDir, `${l.name}-${w.role}.log`);
    const fd = openSync(log, 'a');
    const proc = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'workers', 'worker.ts'), '--queues', w.queues], {
      cwd: ROOT,
      env: { ...process.env, E3_THREADS: String(w.threads) },
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    return { role: w.role, proc, log };
  });
  const end = Date.now() + 180_000;
  while (!out.every((w) => /\] polling /.test(readFileSync(w.log, 'utf8')))) {
    const dead = out.find((w) => w.proc.exitCode !== null);
    if (dead) throw new Error(`worker ${dead.role} exited during start-up; log: ${dead.log}`);
    if (Date.now() > end) throw new Error(`workers did not start polling within 180 s; logs in ${logDir}`);
    await sleep(200);
  }
  return out;
}

export async function stopLayout(ws: Array<{ proc: ChildProcess }>): Promise<void> {
  await Promise.all(
    ws.map(async ({ proc }) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      await gone;
      clearTimeout(t);
    }),
  );
}
