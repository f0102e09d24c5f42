/**
 * A TCP tunnel's figures on /metrics (`xmig tunnel serve|connect --metrics-port`), the same
 * families at either end, labelled by `end` (`exit`: the service's side, `entry`: the
 * clients'): connections carried, bytes each way, connections that could not be carried
 * (the far end unreachable or lost), and the open ones now.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export type TunnelEnd = 'entry' | 'exit';

export interface TunnelFigures {
  connections: number;
  /** Bytes from the clients towards the service, and back. */
  toService: number;
  fromService: number;
  /** Connections that could not be carried, or broke. */
  failed: number;
  open: number;
}

export function registerTunnelMetrics(registry: Registry, end: TunnelEnd, figures: () => TunnelFigures): void {
  const counter = (name: string, help: string, value: (f: TunnelFigures) => Array<[Record<string, string>, number]>, labelNames: string[] = []): void => {
    new Counter({
      name,
      help,
      labelNames: ['end', ...labelNames],
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, n] of value(figures())) this.inc({ end, ...labels }, n);
      },
    });
  };
  counter('xmig_tunnel_connections_total', 'TCP connections carried over an XIA STREAM, by tunnel end', (f) => [[{}, f.connections]]);
  counter(
    'xmig_tunnel_bytes_total',
    'Bytes carried, by tunnel end and direction (to_service: from the clients)',
    (f) => [
      [{ direction: 'to_service' }, f.toService],
      [{ direction: 'from_service' }, f.fromService],
    ],
    ['direction'],
  );
  counter('xmig_tunnel_failed_connections_total', 'Connections not carried (the far end unreachable) or broken on the way, by tunnel end', (f) => [[{}, f.failed]]);
  new Gauge({
    name: 'xmig_tunnel_open_connections',
    help: 'Tunnelled connections open now, by tunnel end',
    labelNames: ['end'],
    registers: [registry],
    collect() {
      this.set({ end }, figures().open);
    },
  });
}
