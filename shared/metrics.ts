/**
 * Prometheus metrics. Each daemon (and each node of an in-process testbed) owns its
 * own registry, so many nodes can live in one process without their counters mixing;
 * `startMetricsServer` exposes a registry on `/metrics`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics, Counter, Gauge, Histogram } from 'prom-client';

export { Registry, Counter, Gauge, Histogram };

export interface MetricsOptions {
  /** Process-level metrics (CPU, memory, event-loop lag); only for a daemon's own registry. */
  processMetrics?: boolean;
  /** Labels added to every series, e.g. { node: 'R1' }. */
  defaultLabels?: Record<string, string>;
}

export function createRegistry(options: MetricsOptions = {}): Registry {
  const registry = new Registry();
  if (options.defaultLabels) registry.setDefaultLabels(options.defaultLabels);
  if (options.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'xmig_' });
  return registry;
}

export interface MetricsServer {
  readonly url: string;
  close(): Promise<void>;
}

/** Serves `GET /metrics` (and `/healthz`) for the given registries on host:port. */
export async function startMetricsServer(
  registries: Registry | Registry[],
  options: { port: number; host?: string },
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
  return {
    url: `http://${shownHost}:${address.port}/metrics`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
