/**
 * The router side of mobility: takes HID-move notices on the mobility SID, checks
 * them (notice-verifier.ts), and redirects traffic for the moved HID:
 *
 *  - the new gateway installs HID → the VM's link and acknowledges to the VM;
 *  - the notice then travels router by router toward the old gateway (by the AD
 *    routes toward the old AD); each router on the way, old gateway included,
 *    points the HID toward the new AD, so packets sent to the VM's old DAG follow
 *    it;
 *  - the old gateway tells the hosts on the VM's old link to drop their direct
 *    route to it (HID_MOVED, carrying the VM's own signed notice).
 *
 * Every change goes through a RouteBackend: the control port of an `xmig node` or
 * of an xia-core router, or the tables of the node this runs in. Rewrites are
 * set4s of the whole route, so repeating one is harmless and a later move (A → B
 * → A) simply overwrites the path of the earlier one.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { sealMoveAck, type MoveNotice } from '../shared/move-notice.js';
import type { ListedRoute, RouteBackend } from '../shared/route-backend.js';
import { BROADCAST_HID, WellKnownSid, Xid, XidType } from '../shared/xid.js';
import type { Datagram, DatagramSocket, NodeApi } from '../xianet/api/node-api.js';
import { encodeHidMoved } from '../xianet/xroute-message.js';
import { decodeMobility, encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { NoticeVerifier, type RejectReason, type VerifierOptions } from './notice-verifier.js';

export interface MobilityPluginOptions {
  api: NodeApi;
  routes: RouteBackend;
  /** The router's own key (its HID): acknowledgements are signed with it. */
  identity: Identity;
  verifier?: VerifierOptions;
  logger?: Logger;
  registry?: Registry;
}

export type Role = 'new-gateway' | 'transit' | 'old-gateway' | 'same-gateway';

export interface Rewrite {
  hid: Xid;
  seq: number;
  role: Role;
  port: number;
  nextHop: string;
  /** ms from the VM signing the notice to this router's rewrite. */
  latencyMs: number;
}

const XROUTE_BROADCAST = Dag.chain(BROADCAST_HID, WellKnownSid.XROUTE);

export class MobilityPlugin {
  private socket: DatagramSocket | undefined;
  private hid!: Xid;
  private ad: Xid | undefined;
  private readonly verifier: NoticeVerifier;
  private readonly logger: Logger;
  private readonly listeners = new Set<(rewrite: Rewrite) => void>();
  readonly stats = { received: 0, accepted: 0, rewritten: 0, forwarded: 0, purged: 0, rejected: {} as Partial<Record<RejectReason, number>> };
  private readonly metrics:
    | { received: Counter<'kind'>; accepted: Counter<'role'>; rejected: Counter<'reason'>; rewritten: Counter; latency: Histogram<'role'> }
    | undefined;

  constructor(private readonly options: MobilityPluginOptions) {
    this.verifier = new NoticeVerifier(options.verifier);
    this.logger = (options.logger ?? silentLogger()).child({ component: 'router-plugin' });
    const registry = options.registry;
    if (registry) {
      this.metrics = {
        received: new Counter({ name: 'xmig_plugin_notices_received_total', help: 'Mobility messages received', labelNames: ['kind'] as const, registers: [registry] }),
        accepted: new Counter({ name: 'xmig_plugin_notices_accepted_total', help: 'Notices accepted, by this router\'s role', labelNames: ['role'] as const, registers: [registry] }),
        rejected: new Counter({ name: 'xmig_plugin_notices_rejected_total', help: 'Notices rejected, by reason', labelNames: ['reason'] as const, registers: [registry] }),
        rewritten: new Counter({ name: 'xmig_plugin_routes_rewritten_total', help: 'HID routes rewritten', registers: [registry] }),
        latency: new Histogram({
          name: 'xmig_plugin_propagation_ms',
          help: 'From the VM signing a notice to this router rewriting its route (ms)',
          labelNames: ['role'] as const,
          buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
          registers: [registry],
        }),
      };
    }
  }

  /** Called after every rewrite (tests and the testbed watch convergence with it). */
  onRewrite(listener: (rewrite: Rewrite) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(): Promise<void> {
    const info = await this.options.api.info();
    // Beside an xia-core Click router the router is Click: its HID and AD are what its tables say.
    const [hid, ad] = await Promise.all([this.options.routes.ownXid?.('HID'), this.options.routes.ownXid?.('AD')]);
    this.hid = hid ? Xid.parse(hid) : info.hid;
    this.ad = ad ? Xid.parse(ad) : info.ad;
    if (!this.options.identity.xid(XidType.HID).equals(this.hid)) {
      throw new Error(`the plugin's key is not the key of router ${info.name} (${this.hid})`);
    }
    this.socket = await this.options.api.bindDatagram(WellKnownSid.MOBILITY);
    this.socket.onMessage((datagram) => {
      this.onDatagram(datagram).catch((error: unknown) => this.logger.error('notice.failed', { reason: errorMessage(error) }));
    });
    this.logger.info('plugin.started', { hid: this.hid.toString(), ad: this.ad?.toString() });
  }

  async stop(): Promise<void> {
    await this.socket?.close();
    this.socket = undefined;
    await this.options.routes.close();
  }

  private reject(reason: RejectReason, detail: string, notice: MoveNotice | undefined, port: number): void {
    this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + 1;
    this.metrics?.rejected.inc({ reason });
    // Junk is counted, not logged line by line: a flood must not flood the journal too.
    if (reason !== 'malformed' && reason !== 'rate-limited') {
      this.logger.warn('notice.rejected', { reason, detail, hid: notice?.hid.toString(), seq: notice?.seq, port });
    }
  }

  private async onDatagram(datagram: Datagram): Promise<void> {
    this.stats.received++;
    let message;
    try {
      message = decodeMobility(datagram.data);
    } catch (error) {
      this.metrics?.received.inc({ kind: 'junk' });
      return this.reject('malformed', errorMessage(error), undefined, datagram.port);
    }
    this.metrics?.received.inc({ kind: message.type === MobilityType.NOTICE ? 'notice' : message.type === MobilityType.FORWARDED ? 'forwarded' : 'ack' });
    if (message.type === MobilityType.ACK) return;
    const verdict = this.verifier.check(message.sealed, datagram.port);
    if (!verdict.accepted) return this.reject(verdict.reason, verdict.detail, verdict.notice, datagram.port);
    const notice = verdict.notice;
    if (!verdict.repeat) {
      this.stats.accepted++;
      await this.redirect(notice, message.sealed, datagram.port);
    }
    // Acknowledged after the route to the VM is in place, so the ack can reach it.
    if (notice.newRouterHid.equals(this.hid) && message.type === MobilityType.NOTICE) await this.acknowledge(notice, datagram.from);
  }

  private async acknowledge(notice: MoveNotice, to: Dag): Promise<void> {
    const ack = sealMoveAck({ hid: notice.hid, seq: notice.seq, routerHid: this.hid }, this.options.identity);
    await this.socket?.send(to, encodeMobility(MobilityType.ACK, ack));
  }

  /** This router's port named by a beacon link id ("<hid prefix>/<port>"), if the link id is ours. */
  private portOf(linkId: string): number | undefined {
    const [prefix, port] = linkId.split('/');
    if (!prefix || port === undefined || !this.hid.id.toString('hex').startsWith(prefix)) return undefined;
    const n = Number(port);
    return Number.isInteger(n) && n >= 0 ? n : undefined;
  }

  private async routeTo(xid: Xid): Promise<ListedRoute | undefined> {
    const type = xid.type === XidType.AD ? 'AD' : 'HID';
    const text = xid.toString().toLowerCase();
    return (await this.options.routes.listRoutes(type)).find((r) => r.xid.toLowerCase() === text && r.port >= 0);
  }

  private async redirect(notice: MoveNotice, sealed: Buffer, arrivalPort: number): Promise<void> {
    const hid = notice.hid.toString();
    const isNew = notice.newRouterHid.equals(this.hid);
    const isOld = notice.oldRouterHid.equals(this.hid);
    let role: Role;
    let port: number;
    let nextHop: string;
    if (isNew) {
      role = isOld ? 'same-gateway' : 'new-gateway';
      port = this.portOf(notice.newLinkId) ?? arrivalPort;
      nextHop = hid;
    } else {
      // Toward the new location: by AD, or (same AD, another router) by that router's HID.
      const toward = this.ad && notice.newAd.equals(this.ad) ? await this.routeTo(notice.newRouterHid) : await this.routeTo(notice.newAd);
      if (!toward) {
        this.logger.warn('notice.no-route', { hid, toward: notice.newAd.toString() });
        return;
      }
      role = isOld ? 'old-gateway' : 'transit';
      port = toward.port;
      nextHop = toward.nextHop;
    }
    await this.options.routes.setRoute('HID', hid, port, nextHop, 0);
    const latencyMs = Math.max(0, Date.now() - notice.timestamp);
    this.stats.rewritten++;
    this.metrics?.rewritten.inc();
    this.metrics?.accepted.inc({ role });
    this.metrics?.latency.observe({ role }, latencyMs);
    this.logger.info('route.rewritten', { hid, seq: notice.seq, role, port, nextHop, ms: latencyMs, ad: notice.newAd.toString() });
    const rewrite: Rewrite = { hid: notice.hid, seq: notice.seq, role, port, nextHop, latencyMs };
    for (const listener of this.listeners) listener(rewrite);

    if (isOld) {
      const oldPort = this.portOf(notice.oldLinkId);
      if (oldPort !== undefined && oldPort !== port) await this.purge(notice, sealed, oldPort);
      return;
    }
    await this.forwardTowardOld(notice, sealed);
  }

  /** Tells the hosts of the VM's old link that it has gone (their direct route to it is stale). */
  private async purge(notice: MoveNotice, sealed: Buffer, port: number): Promise<void> {
    try {
      await this.socket?.sendOnLink(port, XROUTE_BROADCAST, encodeHidMoved(notice.hid, sealed));
      this.stats.purged++;
      this.logger.info('hosts.purged', { hid: notice.hid.toString(), port });
    } catch (error) {
      this.logger.warn('hosts.purge-failed', { hid: notice.hid.toString(), port, reason: errorMessage(error) });
    }
  }

  private async forwardTowardOld(notice: MoveNotice, sealed: Buffer): Promise<void> {
    const sameAd = this.ad !== undefined && notice.oldAd.equals(this.ad);
    const toward = sameAd ? await this.routeTo(notice.oldRouterHid) : await this.routeTo(notice.oldAd);
    if (!toward || !toward.nextHop) {
      this.logger.warn('notice.cannot-forward', { hid: notice.hid.toString(), toward: (sameAd ? notice.oldRouterHid : notice.oldAd).toString() });
      return;
    }
    const next = Dag.chain(Xid.parse(toward.nextHop), WellKnownSid.MOBILITY);
    await this.socket?.send(next, encodeMobility(MobilityType.FORWARDED, sealed));
    this.stats.forwarded++;
    this.logger.debug('notice.forwarded', { hid: notice.hid.toString(), to: toward.nextHop });
  }
}
