/**
 * A worker's one Prometheus scrape target (docs/OPERATIONS.md "Metrics"): GET /metrics on
 * E3_METRICS_HOST:E3_METRICS_PORT (default host 127.0.0.1; off unless the port is set) answers
 * e3's metrics (activities/metrics.ts) followed by the Temporal SDK's own runtime metrics. The
 * SDK exports those on a loopback port of its own, E3_SDK_METRICS_PORT (default
 * E3_METRICS_PORT + 1), which this server reads at each scrape: Prometheus needs only the one
 * address; the SDK's port may be scraped directly too. A worker that polls the general queue
 * also reports the last outcome of each schedule (watchSchedules).
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { Client } from '@temporalio/client';
import type { E3Metrics } from '../activities/metrics';

export interface MetricsAddress {
  host: string;
  port: number;
  /** Loopback port of the Temporal SDK's own exporter. */
  sdkPort: number;
}

const portOf = (name: string, raw: string): number => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`${name} must be a TCP port (1-65535), got "${raw}"`);
  return n;
};

/** The metrics address from the environment, or undefined when E3_METRICS_PORT is not set (metrics off). */
export function metricsAddress(env: NodeJS.ProcessEnv = process.env): MetricsAddress | undefined {
  const raw = env.E3_METRICS_PORT;
  if (raw === undefined || raw === '') return undefined;
  const port = portOf('E3_METRICS_PORT', raw);
  const sdkPort = env.E3_SDK_METRICS_PORT ? portOf('E3_SDK_METRICS_PORT', env.E3_SDK_METRICS_PORT) : port + 1;
  if (sdkPort === port) throw new Error(`E3_SDK_METRICS_PORT must differ from E3_METRICS_PORT (both ${port})`);
  return { host: env.E3_METRICS_HOST || '127.0.0.1', port, sdkPort };
}

/** Runtime.install telemetry options: the SDK's Prometheus exporter on the loopback SDK port (seconds, counters with _total). */
export function sdkTelemetry(addr: MetricsAddress) {
  return {
    metrics: {
      prometheus: { bindAddress: `127.0.0.1:${addr.sdkPort}`, countersTotalSuffix: true, useSecondsForDurations: true },
    },
  };
}

/** The SDK exporter's text, or a comment saying why it is missing (a scrape never fails for it). */
async function sdkText(port: number): Promise<string> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
    if (!r.ok) return `# Temporal SDK metrics unavailable: HTTP ${r.status}\n`;
    return await r.text();
  } catch (e) {
    return `# Temporal SDK metrics unavailable: ${(e as Error).message.replace(/\n/g, ' ')}\n`;
  }
}

/** Serve e3's and the SDK's metrics on one address; resolves once listening. */
export function serveMetrics(metrics: E3Metrics, addr: MetricsAddress): Promise<Server> {
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || (url !== '/metrics' && url !== '/')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('e3 worker: metrics are at /metrics\n');
      return;
    }
    void Promise.all([metrics.registry.metrics(), sdkText(addr.sdkPort)]).then(
      ([own, sdk]) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(`${own}${own.endsWith('\n') ? '' : '\n'}${sdk}`);
      },
      (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`metrics: cannot listen on ${addr.host}:${addr.port} (E3_METRICS_PORT): ${e.message}`)));
    server.listen(addr.port, addr.host, () => {
      server.unref();
      resolve(server);
    });
  });
}

/** Final states of a scheduled run that an operator must look at. */
const FAILED_STATES = new Set(['FAILED', 'TIMED_OUT', 'TERMINATED']);

/**
 * Poll the namespace's schedules every `everyMs` (E3_SCHEDULE_POLL_MS, default 60 s) for
 * e3_schedule_last_run_failed: the status of each schedule's most recent run. Errors are
 * ignored (the next poll tries again). Returns a stopper.
 */
export function watchSchedules(metrics: E3Metrics, client: Client, everyMs: number): () => void {
  let busy = false;
  const poll = async () => {
    if (busy) return;
    busy = true;
    try {
      const last = new Map<string, boolean>();
      for await (const s of client.schedule.list()) {
        const d = await client.schedule.getHandle(s.scheduleId).describe();
        const recent = d.info.recentActions[d.info.recentActions.length - 1];
        if (!recent) {
          last.set(s.scheduleId, false);
          continue;
        }
        const w = await client.workflow.getHandle(recent.action.workflow.workflowId).describe();
        last.set(s.scheduleId, FAILED_STATES.has(w.status.name));
      }
      metrics.schedules(last);
    } catch {
      /* Temporal unreachable for a moment: keep the last values */
    } finally {
      busy = false;
    }
  };
  void poll();
  const timer = setInterval(() => void poll(), everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
