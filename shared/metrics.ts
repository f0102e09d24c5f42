/**
 * Prometheus metrics. Each daemon (and each node of an in-process testbed) owns its
 * own registry, so many nodes can live in one process without their counters mixing;
 * `startMetricsServer` exposes a registry on `/metrics`.
 *
 * What every family here keeps to (`promtool check metrics` checks most of it, in CI):
 * counters end in `_total`, durations are `_seconds` and sizes `_bytes`, every family has
 * help text, and a labelled family has its series for the label values it knows at 0
 * before the first event (`zeroSeries`), so rate() and absent() work from the start. The
 * process and Node.js families are prom-client's defaults under their standard names
 * (`process_cpu_seconds_total`, `nodejs_heap_size_used_bytes`, ...), which the usual
 * dashboards expect.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics, Counter, Gauge, Histogram } from 'prom-client';
import type { Logger } from './logger.js';

export { Registry, Counter, Gauge, Histogram };

export interface MetricsOptions {
  /** Process-level metrics (CPU, memory, event-loop lag); only for a daemon's own registry. */
  processMetrics?: boolean;
  /** Labels added to every series, e.g. { node: 'R1' }. */
  defaultLabels?: Record<string, string>;
}

/**
 * prom-client's gauges that end in `_total` (a gauge must not: promtool fails them);
 * their labelled twins `nodejs_active_handles{type}` etc. say the same, summed.
 */
const GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function createRegistry(options: MetricsOptions = {}): Registry {
  const registry = new Registry();
  if (options.defaultLabels) registry.setDefaultLabels(options.defaultLabels);
  if (options.processMetrics) {
    collectDefaultMetrics({ register: registry });
    for (const name of GAUGES_NAMED_TOTAL) registry.removeSingleMetric(name);
  }
  return registry;
}

/** Histogram buckets for durations, in seconds: 1 ms to 30 s. */
export const DURATION_BUCKETS_SECONDS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.5, 1, 2, 5, 10, 30];

/** Creates the series of a labelled counter or gauge at 0, one per label set (so they exist before the first event). */
export function zeroSeries<T extends string>(metric: Counter<T> | Gauge<T>, labelSets: ReadonlyArray<Partial<Record<T, string | number>>>): void {
  for (const labels of labelSets) (metric as Counter<T>).inc(labels, 0);
}

/** Label sets for one label's values, for zeroSeries. */
export function eachValue<T extends string>(label: T, values: readonly string[]): Array<Record<T, string>> {
  return values.map((value) => ({ [label]: value }) as Record<T, string>);
}

export interface MetricsServer {
  readonly url: string;
  close(): Promise<void>;
}

/** Serves `GET /metrics` (and `/healthz`) for the given registries on host:port. */
export async function startMetricsServer(
  registries: Registry | Registry[],
  options: { port: number; host?: string; logger?: Logger },
): Promise<MetricsServer> {
  const list = Array.isArray(registries) ? registries : [registries];
  const server: Server = createServer((request, response) => {
    if (request.url === '/metrics') {
      // Merged per request: metrics registered after start must show up too.
      const merged = list.length === 1 ? list[0]! : Registry.merge(list);
      merged
        .metrics()
        .then((text) => {
          response.writeHead(200, { 'content-type': merged.contentType });
          response.end(text);
        })
        .catch((error: unknown) => {
          response.writeHead(500, { 'content-type': 'text/plain' });
          response.end(String(error));
        });
      return;
    }
    if (request.url === '/healthz') {
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end('ok\n');
      return;
    }
    response.writeHead(404, { 'content-type': 'text/plain' });
    response.end('not found\n');
  });
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${shownHost}:${address.port}/metrics`;
  options.logger?.info('metrics.listening', { url });
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
