/**
 * Talking to the name service: register (with an owner-signed record), resolve a
 * name, reverse-resolve a DAG. DGRAM may lose a request, so each is retried until
 * answered or the deadline passes; answers are matched by request id.
 */
import { randomInt } from 'node:crypto';
import { Dag } from '../../shared/dag.js';
import { XmigError, errorMessage } from '../../shared/errors.js';
import type { Identity } from '../../shared/identity.js';
import type { DatagramSocket, NodeApi } from '../api/node-api.js';
import { openNameRecord, sealNameRecord, type SignedNameRecord } from './name-record.js';
import { decodeNsMessage, encodeNsMessage, NS_FLAGS_MIGRATE, NsType, type NsMessage } from './xns-message.js';

export interface NameClientOptions {
  /** The name server's DAG; default: the one the node heard in beacons. */
  nameServer?: Dag;
  timeoutMs?: number;
  retryMs?: number;
}

export interface Resolved {
  dag: Dag;
  /** The owner-signed record, when the server is an xmig one. */
  record: SignedNameRecord | undefined;
}

export class NameClient {
  private socket: DatagramSocket | undefined;
  private readonly pending = new Map<number, (message: NsMessage) => void>();

  constructor(
    private readonly api: NodeApi,
    private readonly options: NameClientOptions = {},
  ) {}

  private async open(): Promise<DatagramSocket> {
    if (this.socket) return this.socket;
    const socket = await this.api.bindDatagram();
    socket.onMessage(({ data }) => {
      let message: NsMessage;
      try {
        message = decodeNsMessage(data);
      } catch {
        return;
      }
      if (message.requestId !== undefined) this.pending.get(message.requestId)?.(message);
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

  private async exchange(request: NsMessage, signal?: AbortSignal): Promise<NsMessage> {
    const socket = await this.open();
    const server = await this.server();
    const requestId = randomInt(1, 0xffffffff);
    const timeoutMs = this.options.timeoutMs ?? 3000;
    const retryMs = this.options.retryMs ?? 200;
    const bytes = encodeNsMessage({ ...request, requestId });
    return new Promise<NsMessage>((resolve, reject) => {
      let retry: NodeJS.Timeout | undefined;
      const finish = (error: Error | undefined, message?: NsMessage): void => {
        clearTimeout(deadline);
        clearTimeout(retry);
        this.pending.delete(requestId);
        signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(message!);
      };
      const deadline = setTimeout(
        () => finish(new XmigError('ERR_TIMEOUT', `no answer from the name server ${server} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = (): void => finish(new XmigError('ERR_NAME', 'name-service request aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(requestId, (message) => finish(undefined, message));
      const send = (): void => {
        socket.send(server, bytes).catch(() => undefined);
        retry = setTimeout(send, retryMs);
      };
      send();
    });
  }

  /**
   * Registers `name` → `dag`, signed by `owner`. `seq` must grow with each update of
   * the name (default: the current time in ms, which does).
   */
  async register(name: string, dag: Dag, owner: Identity, options: { seq?: number; migrate?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    const record = sealNameRecord(
      { name, dag, seq: options.seq ?? Date.now(), timestamp: Date.now(), migrated: options.migrate ?? false },
      owner,
    );
    const answer = await this.exchange(
      { type: NsType.REGISTER, flags: options.migrate ? NS_FLAGS_MIGRATE : 0, name, dag: dag.toDagString(), record },
      options.signal,
    );
    if (answer.type !== NsType.RESPONSE_REGISTER) {
      throw new XmigError('ERR_NAME', `registration of "${name}" refused: ${answer.error ?? 'error'}`);
    }
  }

  async resolve(name: string, signal?: AbortSignal): Promise<Resolved> {
    const answer = await this.exchange({ type: NsType.QUERY, flags: 0, name }, signal);
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
    const answer = await this.exchange({ type: NsType.RQUERY, flags: 0, dag: dag.toDagString() }, signal);
    if (answer.type !== NsType.RESPONSE_RQUERY || answer.name === undefined) {
      throw new XmigError('ERR_NAME', `no name for ${dag}: ${answer.error ?? 'error'}`);
    }
    return answer.name;
  }

  async close(): Promise<void> {
    await this.socket?.close();
    this.socket = undefined;
  }
}
