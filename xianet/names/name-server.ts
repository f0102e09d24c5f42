/**
 * `xmig nameserver`: the name service on the well-known SID (xia-core's SID_NS),
 * over DGRAM, through any NodeApi (in-process in the testbed, the node's socket
 * as a daemon). Registrations must carry an owner-signed record (name-record.ts).
 *
 * Outside input is screened cheapest first: does it decode, is the signing key the
 * name's owner (a stranger's update costs no signature check), is the key within its
 * rate, is a new name within the new-name budget; then the signature; then the store's
 * rules and bounds (name-store.ts). Every refusal is answered and counted.
 */
import type { Registry } from 'prom-client';
import { Counter } from 'prom-client';
import { zeroSeries } from '../../shared/metrics.js';
import { errorMessage } from '../../shared/errors.js';
import { KeyedRateLimiter, Refusals, TokenBucket } from '../../shared/limits.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import { peekSigner } from '../../shared/signed-message.js';
import type { Startable } from '../../shared/startable.js';
import { WellKnownSid } from '../../shared/xid.js';
import { Dag } from '../../shared/dag.js';
import type { Datagram, DatagramSocket, NodeApi } from '../api/node-api.js';
import { NameLog, type NameStorage } from './name-log.js';
import { openNameRecord, type SignedNameRecord } from './name-record.js';
import { NameStore, type RefuseReason } from './name-store.js';
import { decodeNsMessage, encodeNsMessage, NS_FLAGS_MIGRATE, NsType, type NsMessage } from './xns-message.js';

export interface NameServerLimits {
  /** Most names in all (default 100,000). */
  maxNames?: number;
  /** Most names one key may own (default 64). */
  maxNamesPerOwner?: number;
  /** Registrations per second per owner key, and the burst (default 20 / 40). */
  registrationsPerKeyPerSecond?: number;
  registrationsPerKeyBurst?: number;
  /** Names not registered before, per second in all, and the burst (default 200 / 500): squatting is slowed, updates are not. */
  newNamesPerSecond?: number;
  newNamesBurst?: number;
}

export interface NameServerOptions {
  /** Where records are persisted (an append-only log); none keeps them in memory only. */
  databaseFile?: string;
  /** Storage other than a file (tests: a slow or failing one). Overrides databaseFile. */
  storage?: NameStorage;
  limits?: NameServerLimits;
  logger?: Logger;
  registry?: Registry;
}

const REFUSALS = [
  ['request', 'malformed'],
  ['registration', 'malformed'],
  ['registration', 'forbidden'],
  ['registration', 'stale'],
  ['registration', 'rate'],
  ['names', 'rate'],
  ['names', 'cap'],
  ['names-per-owner', 'cap'],
] as const;

export class NameServer implements Startable {
  readonly store: NameStore;
  readonly refusals = new Refusals(REFUSALS);
  private socket: DatagramSocket | undefined;
  private starting: Promise<void> | undefined;
  private readonly logger: Logger;
  private readonly perKey: KeyedRateLimiter<string>;
  private readonly newNames: TokenBucket;
  private readonly inflight = new Set<Promise<void>>();
  readonly stats = { queries: 0, registrations: 0, repeats: 0, rejected: 0, malformed: 0, writeFailures: 0 };
  private readonly metrics: { requests: Counter<'type' | 'result'>; writeFailures: Counter } | undefined;
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
    const limits = options.limits ?? {};
    const storage = options.storage ?? (options.databaseFile ? new NameLog(options.databaseFile) : undefined);
    this.store = new NameStore({ storage, maxNames: limits.maxNames, maxNamesPerOwner: limits.maxNamesPerOwner });
    this.perKey = new KeyedRateLimiter(limits.registrationsPerKeyPerSecond ?? 20, limits.registrationsPerKeyBurst ?? 40, 4096);
    this.newNames = new TokenBucket(limits.newNamesPerSecond ?? 200, limits.newNamesBurst ?? 500);
    this.logger = (options.logger ?? silentLogger()).child({ component: 'nameserver' });
    if (options.registry) {
      this.metrics = {
        requests: new Counter({
          name: 'xmig_nameserver_requests_total',
          help: 'Name-service requests by type and result',
          labelNames: ['type', 'result'] as const,
          registers: [options.registry],
        }),
        writeFailures: new Counter({
          name: 'xmig_nameserver_write_failures_total',
          help: 'Accepted records that could not be made durable (answered with an error; the retry is judged again)',
          registers: [options.registry],
        }),
      };
      // The known series at 0 from the start.
      zeroSeries(this.metrics.requests, [
        ...['register', 'query', 'rquery'].flatMap((type) => [{ type, result: 'ok' }, { type, result: 'error' }]),
        { type: 'unknown', result: 'malformed' },
      ]);
      this.refusals.register(options.registry, 'xmig_nameserver_refusals_total', 'Name-service requests refused, by resource and reason');
    }
  }

  start(): Promise<void> {
    this.starting ??= (async () => {
      const loaded = await this.store.load();
      this.socket = await this.api.bindDatagram(WellKnownSid.NAME_SERVER);
      this.socket.onMessage((datagram) => this.onDatagram(datagram));
      const address = await this.socket.address();
      this.logger.info('nameserver.started', { records: loaded, dag: address.toString() });
    })();
    return this.starting;
  }

  async stop(): Promise<void> {
    const starting = this.starting;
    if (!starting) return;
    await starting.catch(() => undefined);
    this.starting = undefined;
    await this.socket?.close();
    this.socket = undefined;
    await Promise.all(this.inflight);
    await this.store.close();
  }

  async address(): Promise<Dag> {
    if (!this.socket) throw new Error('name server not started');
    return this.socket.address();
  }

  private onDatagram({ data, from }: Datagram): void {
    const handling = this.handle(data)
      .then((reply) => {
        if (reply) this.socket?.send(from, encodeNsMessage(reply)).catch(() => undefined);
      })
      .catch((error: unknown) => this.logger.error('nameserver.request-failed', { reason: errorMessage(error) }))
      .finally(() => this.inflight.delete(handling));
    this.inflight.add(handling);
  }

  /** Answers one request (undefined: nothing to answer). Never throws on what `data` holds. */
  async handle(data: Buffer): Promise<NsMessage | undefined> {
    let request: NsMessage;
    try {
      request = decodeNsMessage(data);
    } catch {
      this.stats.malformed++;
      this.refusals.refuse('request', 'malformed');
      this.metrics?.requests.inc({ type: 'unknown', result: 'malformed' });
      return undefined;
    }
    const requestId = request.requestId;
    const fail = (type: string, error: string): NsMessage => {
      this.stats.rejected++;
      this.metrics?.requests.inc({ type, result: 'error' });
      return { type: NsType.RESPONSE_ERROR, flags: 0, requestId, error };
    };
    switch (request.type) {
      case NsType.QUERY: {
        this.stats.queries++;
        const record = this.store.get(request.name ?? '');
        if (!record) return fail('query', `no such name "${(request.name ?? '').slice(0, 64)}"`);
        this.metrics?.requests.inc({ type: 'query', result: 'ok' });
        return { type: NsType.RESPONSE_QUERY, flags: 0, dag: record.dag.toDagString(), requestId, record: record.sealed };
      }
      case NsType.RQUERY: {
        this.stats.queries++;
        const record = this.store.reverse(request.dag ?? '');
        if (!record) return fail('rquery', 'no name for that DAG');
        this.metrics?.requests.inc({ type: 'rquery', result: 'ok' });
        return { type: NsType.RESPONSE_RQUERY, flags: 0, name: record.name, requestId };
      }
      case NsType.REGISTER:
        return this.register(request, fail);
      default:
        this.stats.malformed++;
        this.refusals.refuse('request', 'malformed');
        return undefined;
    }
  }

  private async register(request: NsMessage, fail: (type: string, error: string) => NsMessage): Promise<NsMessage> {
    const refuse = (resource: string, reason: Parameters<Refusals['refuse']>[1], error: string): NsMessage => {
      this.refusals.refuse(resource, reason);
      return fail('register', error);
    };
    const key = request.record ? peekSigner(request.record) : undefined;
    if (!request.record || !key) return refuse('registration', 'malformed', 'registration without an owner-signed record');
    const name = request.name ?? '';
    const existing = this.store.get(name);
    if (existing && !existing.publicKey.equals(key)) return refuse('registration', 'forbidden', 'name is owned by another key');
    if (existing?.sealed.equals(request.record)) {
      // A retransmission of the record in place: the same answer, no work.
      this.stats.repeats++;
      this.metrics?.requests.inc({ type: 'register', result: 'ok' });
      return { type: NsType.RESPONSE_REGISTER, flags: 0, requestId: request.requestId };
    }
    if (!this.perKey.take(key.toString('hex'))) return refuse('registration', 'rate', 'too many registrations by this key; retry later');
    if (!existing && !this.newNames.take()) return refuse('names', 'rate', 'too many new names; retry later');
    let record: SignedNameRecord;
    try {
      record = openNameRecord(request.record);
    } catch (error) {
      return refuse('registration', 'malformed', `bad record: ${errorMessage(error)}`);
    }
    if (record.name !== name || !sameDag(request.dag, record.dag)) {
      return refuse('registration', 'malformed', 'the signed record does not match the name and DAG sent');
    }
    const result = await this.store.accept(record);
    if (!result.accepted) {
      const [resource, reason] = REFUSAL_OF[result.reason];
      if (result.reason === 'write-failed') {
        this.stats.writeFailures++;
        this.metrics?.writeFailures.inc();
        this.logger.error('name.write-failed', { name: record.name, seq: record.seq, reason: result.detail });
        return fail('register', 'the record could not be stored; retry');
      }
      this.logger.debug('name.rejected', { name: record.name, reason: result.reason, seq: record.seq });
      return refuse(resource, reason, result.detail);
    }
    this.metrics?.requests.inc({ type: 'register', result: 'ok' });
    if (result.repeat) this.stats.repeats++;
    else {
      this.stats.registrations++;
      this.logger.info('name.registered', {
        name: record.name,
        dag: record.dag.toString(),
        seq: record.seq,
        migrate: (request.flags & NS_FLAGS_MIGRATE) !== 0,
        ...(result.previous ? { previous: result.previous.dag.toString() } : {}),
      });
      for (const listener of this.recordListeners) listener(record);
    }
    return { type: NsType.RESPONSE_REGISTER, flags: 0, requestId: request.requestId };
  }
}

const REFUSAL_OF: Record<RefuseReason, readonly [string, Parameters<Refusals['refuse']>[1]]> = {
  'wrong-owner': ['registration', 'forbidden'],
  'old-sequence': ['registration', 'stale'],
  'names-cap': ['names', 'cap'],
  'owner-cap': ['names-per-owner', 'cap'],
  'write-failed': ['registration', 'malformed'],
};

function sameDag(text: string | undefined, dag: Dag): boolean {
  try {
    return text !== undefined && Dag.parse(text).equals(dag);
  } catch {
    return false;
  }
}
