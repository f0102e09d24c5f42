/**
 * `xmig nameserver`: the name service on the well-known SID (xia-core's SID_NS),
 * over DGRAM, through any NodeApi (in-process in the testbed, the node's socket
 * as a daemon). Registrations must carry an owner-signed record (name-record.ts).
 */
import { Counter, type Registry } from 'prom-client';
import { errorMessage } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import { WellKnownSid } from '../../shared/xid.js';
import { Dag } from '../../shared/dag.js';
import type { Datagram, DatagramSocket, NodeApi } from '../api/node-api.js';
import { openNameRecord, type SignedNameRecord } from './name-record.js';
import { NameStore } from './name-store.js';
import { decodeNsMessage, encodeNsMessage, NS_FLAGS_MIGRATE, NsType, type NsMessage } from './xns-message.js';

export interface NameServerOptions {
  /** Where records are persisted; none keeps them in memory only. */
  databaseFile?: string;
  logger?: Logger;
  registry?: Registry;
}

export class NameServer {
  readonly store: NameStore;
  private socket: DatagramSocket | undefined;
  private readonly logger: Logger;
  readonly stats = { queries: 0, registrations: 0, rejected: 0, malformed: 0 };
  private readonly requests: Counter<'type' | 'result'> | undefined;
  private readonly recordListeners = new Set<(record: SignedNameRecord) => void>();

  /** Called with every record accepted (the testbed times re-registration with it). */
  onRecord(listener: (record: SignedNameRecord) => void): () => void {
    this.recordListeners.add(listener);
    return () => this.recordListeners.delete(listener);
  }

  constructor(
    private readonly api: NodeApi,
    options: NameServerOptions = {},
  ) {
    this.store = new NameStore(options.databaseFile);
    this.logger = (options.logger ?? silentLogger()).child({ component: 'nameserver' });
    if (options.registry) {
      this.requests = new Counter({
        name: 'xmig_nameserver_requests_total',
        help: 'Name-service requests by type and result',
        labelNames: ['type', 'result'] as const,
        registers: [options.registry],
      });
    }
  }

  async start(): Promise<Dag> {
    const loaded = await this.store.load();
    this.socket = await this.api.bindDatagram(WellKnownSid.NAME_SERVER);
    this.socket.onMessage((datagram) => void this.onDatagram(datagram));
    const address = await this.socket.address();
    this.logger.info('nameserver.started', { records: loaded, dag: address.toString() });
    return address;
  }

  async stop(): Promise<void> {
    await this.socket?.close();
    this.socket = undefined;
  }

  async address(): Promise<Dag> {
    if (!this.socket) throw new Error('name server not started');
    return this.socket.address();
  }

  private reply(to: Dag, message: NsMessage): void {
    this.socket?.send(to, encodeNsMessage(message)).catch(() => undefined);
  }

  private async onDatagram({ data, from }: Datagram): Promise<void> {
    let request: NsMessage;
    try {
      request = decodeNsMessage(data);
    } catch {
      this.stats.malformed++;
      this.requests?.inc({ type: 'unknown', result: 'malformed' });
      return;
    }
    const requestId = request.requestId;
    const fail = (type: string, error: string): void => {
      this.stats.rejected++;
      this.requests?.inc({ type, result: 'error' });
      this.reply(from, { type: NsType.RESPONSE_ERROR, flags: 0, requestId, error });
    };
    switch (request.type) {
      case NsType.QUERY: {
        this.stats.queries++;
        const record = this.store.get(request.name ?? '');
        if (!record) return fail('query', `no such name "${request.name}"`);
        this.requests?.inc({ type: 'query', result: 'ok' });
        this.reply(from, { type: NsType.RESPONSE_QUERY, flags: 0, dag: record.dag.toDagString(), requestId, record: record.sealed });
        return;
      }
      case NsType.RQUERY: {
        this.stats.queries++;
        const record = this.store.reverse(request.dag ?? '');
        if (!record) return fail('rquery', 'no name for that DAG');
        this.requests?.inc({ type: 'rquery', result: 'ok' });
        this.reply(from, { type: NsType.RESPONSE_RQUERY, flags: 0, name: record.name, requestId });
        return;
      }
      case NsType.REGISTER: {
        if (!request.record) return fail('register', 'registration without an owner-signed record');
        let record;
        try {
          record = openNameRecord(request.record);
        } catch (error) {
          return fail('register', `bad record: ${errorMessage(error)}`);
        }
        if (record.name !== request.name || !sameDag(request.dag, record.dag)) {
          return fail('register', 'the signed record does not match the name and DAG sent');
        }
        const result = await this.store.accept(record);
        if (!result.accepted) {
          this.logger.warn('name.rejected', { name: record.name, reason: result.reason, seq: record.seq });
          return fail('register', result.reason === 'wrong-owner' ? 'name is owned by another key' : 'sequence number is not newer');
        }
        this.stats.registrations++;
        this.requests?.inc({ type: 'register', result: 'ok' });
        this.logger.info('name.registered', {
          name: record.name,
          dag: record.dag.toString(),
          seq: record.seq,
          migrate: (request.flags & NS_FLAGS_MIGRATE) !== 0,
          previous: result.previous?.dag.toString(),
        });
        this.reply(from, { type: NsType.RESPONSE_REGISTER, flags: 0, requestId });
        for (const listener of this.recordListeners) listener(record);
        return;
      }
      default:
        this.stats.malformed++;
    }
  }
}

function sameDag(text: string | undefined, dag: Dag): boolean {
  try {
    return text !== undefined && Dag.parse(text).equals(dag);
  } catch {
    return false;
  }
}
