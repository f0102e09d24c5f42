/**
 * Talking to the name service: register (with an owner-signed record), resolve a
 * name, reverse-resolve a DAG. DGRAM may lose a request, so each is sent until
 * answered (send-until-acked.ts), the deadline passes or the caller aborts; answers
 * are matched by request id, so many requests may be out at once.
 */
import { randomInt } from 'node:crypto';
import { Dag } from '../../shared/dag.js';
import { XmigError, errorMessage, isXmigError } from '../../shared/errors.js';
import type { Identity } from '../../shared/identity.js';
import type { DatagramSocket, NodeApi } from '../api/node-api.js';
import { AckWaiters, sendUntilAcked } from '../send-until-acked.js';
import { openNameRecord, sealNameRecord, type SignedNameRecord } from './name-record.js';
import { decodeNsMessage, encodeNsMessage, NS_FLAGS_MIGRATE, NsType, type NsMessage } from './xns-message.js';

export interface NameClientOptions {
  /** The name server's DAG; default: the one the node heard in beacons. */
  nameServer?: Dag;
  /** How long a request is retransmitted before it fails (default 3 s; per call: `deadlineMs`). */
  timeoutMs?: number;
  /** The first retransmission after this long, doubling up to maxRetryMs (default 200 ms / 1 s). */
  retryMs?: number;
  maxRetryMs?: number;
}

export interface ExchangeOptions {
  signal?: AbortSignal;
  /** Overrides the client's timeoutMs; Infinity: until answered or `signal` aborts. */
  deadlineMs?: number;
  /** Hears every retransmission (a counter). */
  onRetry?: () => void;
}

export interface Resolved {
  dag: Dag;
  /** The owner-signed record, when the server is an xmig one. */
  record: SignedNameRecord | undefined;
}

/** The name server answered a registration with a refusal (not a lost request: a retry needs a change). */
export class NameRefusedError extends XmigError {
  constructor(
    readonly recordName: string,
    readonly reason: string,
  ) {
    super('ERR_NAME', `registration of "${recordName}" refused: ${reason}`);
  }

  /** Refused because another key owns the name: no retry will change that. */
  get permanent(): boolean {
    return /owned by another key/.test(this.reason);
  }
}

export class NameClient {
  private socket: DatagramSocket | undefined;
  private opening: Promise<DatagramSocket> | undefined;
  private readonly answers = new AckWaiters<number, NsMessage>();
  /** Aborted by close(): no request outlives the client. */
  private closing = new AbortController();

  constructor(
    private readonly api: NodeApi,
    private readonly options: NameClientOptions = {},
  ) {}

  private open(): Promise<DatagramSocket> {
    this.opening ??= this.bind().catch((error: unknown) => {
      this.opening = undefined;
      throw error;
    });
    return this.opening;
  }

  private async bind(): Promise<DatagramSocket> {
    const socket = await this.api.bindDatagram();
    socket.onMessage(({ data }) => {
      let message: NsMessage;
      try {
        message = decodeNsMessage(data);
      } catch {
        return;
      }
      if (message.requestId !== undefined) this.answers.settle(message.requestId, message);
    });
    this.socket = socket;
    return socket;
  }

  private async server(): Promise<Dag> {
    if (this.options.nameServer) return this.options.nameServer;
    const info = await this.api.info();
    if (!info.nameServer) throw new XmigError('ERR_NAME', 'no name server known: none announced in beacons and none configured');
    return info.nameServer;
  }

  private async exchange(request: NsMessage, options: ExchangeOptions = {}): Promise<NsMessage> {
    const closing = this.closing.signal;
    const socket = await this.open();
    const server = await this.server();
    const requestId = this.nextRequestId();
    const bytes = encodeNsMessage({ ...request, requestId });
    const deadlineMs = options.deadlineMs ?? this.options.timeoutMs ?? 3000;
    try {
      const { ack } = await sendUntilAcked(
        () => socket.send(server, bytes),
        (signal) => this.answers.wait(requestId, signal),
        {
          signal: options.signal ? AbortSignal.any([options.signal, closing]) : closing,
          deadlineMs,
          backoff: { firstMs: this.options.retryMs ?? 200, maxMs: this.options.maxRetryMs ?? 1000 },
          what: `request to the name server ${server}`,
          onRetry: options.onRetry,
        },
      );
      return ack;
    } catch (error) {
      if (options.signal?.aborted || closing.aborted) throw new XmigError('ERR_NAME', 'name-service request aborted', { cause: error });
      if (isXmigError(error, 'ERR_TIMEOUT')) throw new XmigError('ERR_TIMEOUT', `no answer from the name server ${server} within ${deadlineMs} ms`);
      throw error;
    }
  }

  /** Request ids are random (a restarted client must not reuse a pending one), never 0, never in use. */
  private nextRequestId(): number {
    for (;;) {
      const id = randomInt(1, 0xffffffff);
      if (!this.answers.has(id)) return id;
    }
  }

  /**
   * Registers `name` → `dag`, signed by `owner`. `seq` must grow with each update of
   * the name (default: the current time in ms, which does).
   */
  async register(name: string, dag: Dag, owner: Identity, options: { seq?: number; migrate?: boolean } & ExchangeOptions = {}): Promise<void> {
    const record = sealNameRecord(
      { name, dag, seq: options.seq ?? Date.now(), timestamp: Date.now(), migrated: options.migrate ?? false },
      owner,
    );
    const answer = await this.exchange(
      { type: NsType.REGISTER, flags: options.migrate ? NS_FLAGS_MIGRATE : 0, name, dag: dag.toDagString(), record },
      options,
    );
    if (answer.type !== NsType.RESPONSE_REGISTER) {
      throw new NameRefusedError(name, answer.error ?? 'error');
    }
  }

  async resolve(name: string, signal?: AbortSignal): Promise<Resolved> {
    const answer = await this.exchange({ type: NsType.QUERY, flags: 0, name }, { signal });
    if (answer.type !== NsType.RESPONSE_QUERY || !answer.dag) {
      throw new XmigError('ERR_NAME', `cannot resolve "${name}": ${answer.error ?? 'error'}`);
    }
    let dag: Dag;
    try {
      dag = Dag.parse(answer.dag);
    } catch (error) {
      throw new XmigError('ERR_NAME', `name server sent a bad DAG for "${name}": ${errorMessage(error)}`);
    }
    let record: SignedNameRecord | undefined;
    if (answer.record) {
      record = openNameRecord(answer.record);
      if (record.name !== name || !record.dag.equals(dag)) throw new XmigError('ERR_NAME', `name server's record for "${name}" does not match its answer`);
    }
    return { dag, record };
  }

  async reverse(dag: Dag, signal?: AbortSignal): Promise<string> {
    const answer = await this.exchange({ type: NsType.RQUERY, flags: 0, dag: dag.toDagString() }, { signal });
    if (answer.type !== NsType.RESPONSE_RQUERY || answer.name === undefined) {
      throw new XmigError('ERR_NAME', `no name for ${dag}: ${answer.error ?? 'error'}`);
    }
    return answer.name;
  }

  async close(): Promise<void> {
    this.closing.abort(new XmigError('ERR_NAME', 'name client closed'));
    this.closing = new AbortController();
    const opening = this.opening;
    this.opening = undefined;
    await opening?.catch(() => undefined);
    await this.socket?.close();
    this.socket = undefined;
  }
}
