/**
 * The Goldbach service on a node: listens on a SID (one owned by the service's key,
 * so its address is stable across restarts) and answers every connection; and the
 * client side that asks through any NodeApi.
 */
import type { Dag } from '../../shared/dag.js';
import type { Identity } from '../../shared/identity.js';
import type { Logger } from '../../shared/logger.js';
import { XidType, type Xid } from '../../shared/xid.js';
import type { ConnectOptions, NodeApi, StreamServer } from '../api/node-api.js';
import { askGoldbach, serveGoldbachConnection, type AskOptions, type AskReport } from './goldbach-protocol.js';

export interface GoldbachServer {
  sid: Xid;
  address(): Promise<Dag>;
  readonly stats: { connections: number; answers: number };
  close(): Promise<void>;
}

export async function serveGoldbach(api: NodeApi, options: { identity?: Identity; sid?: Xid; logger?: Logger } = {}): Promise<GoldbachServer> {
  const sid = options.sid ?? options.identity?.xid(XidType.SID);
  const server: StreamServer = await api.listen(sid);
  const stats = { connections: 0, answers: 0 };
  server.onConnection((connection) => {
    stats.connections++;
    options.logger?.info('goldbach.connection', { remote: connection.remote.toString() });
    void serveGoldbachConnection(connection).then((answered) => {
      stats.answers += answered;
      options.logger?.info('goldbach.closed', { answered });
    });
  });
  return { sid: server.sid, address: () => server.address(), stats, close: () => server.close() };
}

/** Connects to the service at `dst` and asks until told to stop (or the connection breaks). */
export async function askGoldbachAt(api: NodeApi, dst: Dag, options: AskOptions & { connect?: ConnectOptions } = {}): Promise<AskReport> {
  const connection = await api.connect(dst, options.connect);
  return askGoldbach(connection, options);
}
