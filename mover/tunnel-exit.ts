/**
 * The far end of a TCP tunnel over XIA (`xmig tunnel serve`): STREAMs taken on a SID,
 * each joined to a fresh TCP connection to one local service (`to`, say iperf3 on
 * 127.0.0.1:5201), bytes untouched both ways with backpressure (byte-splice.ts). The
 * near end is a LocalTunnel listening on TCP (`xmig tunnel connect`); between the two the
 * connection is an XIA STREAM, so it rides out what STREAMs ride out — the VM the service
 * runs in moving to another host or AD.
 *
 * A STREAM carries nothing but the client's bytes: no opening frame, so any XIA client
 * that speaks the service's protocol over a STREAM can reach it too. Anyone who can reach
 * the SID may open one, so each must earn its place: only from an allowed source
 * (`admit`, if given), at most `maxConnections` at once; every refusal is counted, as
 * `tunnel-stream{forbidden|cap|timeout}` (timeout: the service did not take the TCP
 * connection in `connectTimeoutMs`). A STREAM whose service connection fails is closed,
 * so the client sees its server gone.
 */
import { connect as tcpConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import type { Dag } from '../shared/dag.js';
import { errorMessage, XmigError } from '../shared/errors.js';
import { Refusals } from '../shared/limits.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import type { Xid } from '../shared/xid.js';
import type { NodeApi, StreamServer } from '../xianet/api/node-api.js';
import { formatSocketAddress, type SocketAddress } from '../xianet/udp-link.js';
import { splice, type Splice } from './byte-splice.js';
import { registerTunnelMetrics } from './tunnel-metrics.js';

export const TUNNEL_STREAM = 'tunnel-stream';

export interface TunnelExitOptions {
  api: NodeApi;
  /** The SID the STREAMs come to. */
  sid: Xid;
  /** The local TCP service every STREAM is joined to. */
  to: SocketAddress;
  /** Why this STREAM may not reach the service (not an allowed source), or undefined to admit it. */
  admit?: (stream: Duplex) => string | undefined;
  /** Connections at once, open or being opened (default 64); more are refused. */
  maxConnections?: number;
  /** The service must accept its TCP connection in this long (default 10 s). */
  connectTimeoutMs?: number;
  /** Its figures on /metrics (tunnel-metrics.ts, end="exit") and its refusals. */
  registry?: Registry;
  logger?: Logger;
}

export interface TunnelExitCounts {
  /** STREAMs joined to the service. */
  connections: number;
  /** Bytes from the STREAMs to the service, and back. */
  toService: number;
  fromService: number;
  /** STREAMs whose service connection could not be made (refused, reset, timed out). */
  unreachable: number;
  /** Joined connections that ended other than cleanly. */
  lost: number;
}

export class TunnelExit implements Startable {
  private server: StreamServer | undefined;
  private readonly live = new Set<Splice>();
  private readonly opening = new Map<Duplex, Socket>();
  private readonly logger: Logger;
  private readonly totals: TunnelExitCounts = { connections: 0, toService: 0, fromService: 0, unreachable: 0, lost: 0 };
  private readonly target: string;
  readonly refusals = new Refusals((['forbidden', 'cap', 'timeout'] as const).map((reason) => [TUNNEL_STREAM, reason]));
  private stopping = false;

  constructor(private readonly options: TunnelExitOptions) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'mover', role: 'tunnel-exit' });
    this.target = formatSocketAddress(options.to.host, options.to.port);
    if (options.registry) {
      registerTunnelMetrics(options.registry, 'exit', () => ({ ...this.totals, failed: this.totals.unreachable + this.totals.lost, open: this.open }));
      this.refusals.register(options.registry, 'xmig_tunnel_refusals_total', 'STREAMs refused at the tunnel exit (not an allowed source, too many open, the service silent), by resource and reason');
    }
  }

  get counts(): TunnelExitCounts {
    return { ...this.totals };
  }

  /** Connections open now (joined, or waiting for the service). */
  get open(): number {
    return this.live.size + this.opening.size;
  }

  /** The DAG clients connect to (this node's address and the SID). */
  async address(): Promise<Dag> {
    if (!this.server) throw new XmigError('ERR_STATE', 'the tunnel is not started');
    return this.server.address();
  }

  async start(): Promise<void> {
    if (this.server) return;
    this.stopping = false;
    const server = await this.options.api.listen(this.options.sid);
    server.onConnection((stream) => this.take(stream));
    this.server = server;
  }

  private refuse(stream: Duplex, reason: 'forbidden' | 'cap' | 'timeout', why: string): void {
    this.refusals.refuse(TUNNEL_STREAM, reason);
    this.logger.warn('tunnel.refused', { reason, why });
    stream.destroy();
  }

  private take(stream: Duplex): void {
    stream.on('error', () => undefined);
    if (this.stopping) return void stream.destroy();
    const forbidden = this.options.admit?.(stream);
    if (forbidden !== undefined) return this.refuse(stream, 'forbidden', forbidden);
    const cap = this.options.maxConnections ?? 64;
    if (this.open >= cap) return this.refuse(stream, 'cap', `${this.open} connections open (at most ${cap})`);
    // Nothing is read from the STREAM until the service is there to take it.
    stream.pause();
    // Half-open: the client's end reaches the service as a FIN, its answer still comes back.
    const service = tcpConnect({ port: this.options.to.port, host: this.options.to.host, allowHalfOpen: true });
    service.on('error', () => undefined);
    service.setNoDelay(true);
    this.opening.set(stream, service);
    const waitMs = this.options.connectTimeoutMs ?? 10_000;
    const fail = (reason: string, timedOut: boolean): void => {
      if (!this.opening.delete(stream)) return;
      clearTimeout(timer);
      service.destroy();
      stream.destroy();
      if (this.stopping) return;
      if (timedOut) this.refusals.refuse(TUNNEL_STREAM, 'timeout');
      this.totals.unreachable++;
      this.logger.warn('tunnel.unreachable', { to: this.target, reason });
    };
    const timer = setTimeout(() => fail(`no answer in ${waitMs} ms`, true), waitMs);
    service.once('error', (error) => fail(errorMessage(error), false));
    // The client went away while the service was being reached.
    stream.once('close', () => fail('the STREAM closed first', false));
    service.once('connect', () => {
      if (!this.opening.delete(stream)) return;
      clearTimeout(timer);
      this.join(stream, service);
    });
  }

  private join(stream: Duplex, service: Socket): void {
    this.totals.connections++;
    const joined = splice(stream, service, (direction, bytes) => {
      if (direction === 'aToB') this.totals.toService += bytes;
      else this.totals.fromService += bytes;
    });
    this.live.add(joined);
    this.logger.info('tunnel.connected', { to: this.target, connection: this.totals.connections });
    void joined.closed.then((failure) => {
      this.live.delete(joined);
      if (failure && !this.stopping) this.totals.lost++;
      this.logger.info('tunnel.closed', { bytes: joined.counts.aToB + joined.counts.bToA, ...(failure ? { reason: failure } : {}) });
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const server = this.server;
    this.server = undefined;
    for (const [stream, service] of [...this.opening]) {
      this.opening.delete(stream);
      service.destroy();
      stream.destroy();
    }
    const closing = [...this.live].map((s) => {
      s.destroy();
      return s.closed;
    });
    await server?.close();
    await Promise.all(closing);
  }
}
