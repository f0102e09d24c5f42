/**
 * The router side of mobility: takes HID-move notices on the mobility SID, checks
 * them (notice-verifier.ts), and redirects traffic for the moved HID:
 *
 *  - the new gateway installs HID → the VM's link and acknowledges to the VM;
 *  - the notice then travels router by router toward the old gateway (by the AD
 *    routes toward the old AD), each hop acknowledged and retried (notice-forwarder.ts);
 *    each router on the way, old gateway included, points the HID toward the new AD
 *    (route-rewriter.ts), so packets sent to the VM's old DAG follow it;
 *  - the old gateway tells the hosts on the VM's old link to drop their direct
 *    route to it (HID_MOVED, carrying the VM's own signed notice).
 *
 * A notice goes verify → apply → commit: it counts as accepted only once its route is
 * written, so a failed write leaves nothing and the sender's retry is applied again.
 * Notices of one HID are applied one at a time. A repeat (the applied notice again) is
 * acknowledged again and forwarded again if its forward is no longer running.
 *
 * Every change goes through a RouteBackend: the control port of an `xmig node` or
 * of an xia-core router, or the tables of the node this runs in. All state keyed by
 * outside identities is bounded, its refusals counted on
 * `xmig_plugin_refusals_total{resource,reason}`.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import { Refusals, type RefusalReason } from '../shared/limits.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { sealMoveAck, type MoveNotice } from '../shared/move-notice.js';
import type { RouteBackend } from '../shared/route-backend.js';
import type { Startable } from '../shared/startable.js';
import { BROADCAST_HID, WellKnownSid, Xid, XidType } from '../shared/xid.js';
import type { Datagram, DatagramSocket, NodeApi } from '../xianet/api/node-api.js';
import { encodeHidMoved } from '../xianet/xroute-message.js';
import { decodeMobility, encodeMobility, MobilityType, type MobilityTypeCode } from '../shared/mobility-message.js';
import { NoticeForwarder, type ForwarderOptions } from './notice-forwarder.js';
import { DURATION_BUCKETS_SECONDS, eachValue, zeroSeries } from '../shared/metrics.js';
import { NoticeVerifier, REJECT_REASONS, type RejectReason, type VerifierOptions } from './notice-verifier.js';
import { RouteRewriter, type Placement, type Role } from './route-rewriter.js';

export type { Role };

export interface MobilityPluginOptions {
  api: NodeApi;
  routes: RouteBackend;
  /** The router's own key (its HID): acknowledgements are signed with it. */
  identity: Identity;
  verifier?: VerifierOptions;
  forwarder?: ForwarderOptions;
  /** Most notices being applied at once (default 1024); more are refused and counted. */
  maxApplying?: number;
  logger?: Logger;
  registry?: Registry;
}

export interface Rewrite {
  hid: Xid;
  seq: number;
  role: Role;
  port: number;
  nextHop: string;
  /** ms from the VM signing the notice to this router's rewrite. */
  latencyMs: number;
}

/** What the plugin keeps per committed HID. */
interface Applied extends Placement {
  hid: string;
}

const XROUTE_BROADCAST = Dag.chain(BROADCAST_HID, WellKnownSid.XROUTE);

const REFUSAL_OF: Record<RejectReason, readonly [string, RefusalReason]> = {
  malformed: ['notice', 'malformed'],
  stale: ['notice', 'stale'],
  'old-sequence': ['notice', 'stale'],
  duplicate: ['notice', 'stale'],
  'bad-signature': ['notice', 'forbidden'],
  'key-mismatch': ['notice', 'forbidden'],
  'rate-limited': ['notice', 'rate'],
  'hid-rate': ['hid', 'rate'],
  'new-hid-rate': ['new-hid', 'rate'],
};

const DECLARED: Array<readonly [string, RefusalReason]> = [
  ...new Map(Object.values(REFUSAL_OF).map((p) => [p.join('/'), p])).values(),
  ['hid-routes', 'cap'],
  ['applying', 'cap'],
  ['forward', 'cap'],
  ['forward', 'timeout'],
  ['hop-ack', 'malformed'],
  ['hop-ack', 'forbidden'],
];

export class MobilityPlugin implements Startable {
  private socket: DatagramSocket | undefined;
  private hid!: Xid;
  private ad: Xid | undefined;
  private rewriter!: RouteRewriter;
  private forwarder!: NoticeForwarder;
  private starting: Promise<void> | undefined;
  private readonly verifier: NoticeVerifier<Applied>;
  private readonly applying = new Map<string, Promise<void>>();
  private readonly tasks = new Set<Promise<void>>();
  private readonly maxApplying: number;
  private readonly logger: Logger;
  private readonly listeners = new Set<(rewrite: Rewrite) => void>();
  readonly refusals = new Refusals(DECLARED);
  readonly stats = {
    received: 0,
    accepted: 0,
    repeats: 0,
    rewritten: 0,
    applyFailed: 0,
    purged: 0,
    evicted: 0,
    rejected: {} as Partial<Record<RejectReason, number>>,
  };
  private readonly metrics:
    | { received: Counter<'kind'>; accepted: Counter<'role'>; rejected: Counter<'reason'>; rewritten: Counter; latency: Histogram<'role'> }
    | undefined;

  constructor(private readonly options: MobilityPluginOptions) {
    this.verifier = new NoticeVerifier<Applied>(options.verifier);
    this.verifier.onEvict = (_key, committed) => this.onEvict(committed.applied);
    this.maxApplying = options.maxApplying ?? 1024;
    this.logger = (options.logger ?? silentLogger()).child({ component: 'router-plugin' });
    const registry = options.registry;
    if (registry) {
      this.metrics = {
        received: new Counter({ name: 'xmig_plugin_notices_received_total', help: 'Mobility messages received', labelNames: ['kind'] as const, registers: [registry] }),
        accepted: new Counter({ name: 'xmig_plugin_notices_accepted_total', help: 'Notices accepted, by this router\'s role', labelNames: ['role'] as const, registers: [registry] }),
        rejected: new Counter({ name: 'xmig_plugin_notices_rejected_total', help: 'Notices rejected, by reason', labelNames: ['reason'] as const, registers: [registry] }),
        rewritten: new Counter({ name: 'xmig_plugin_routes_rewritten_total', help: 'HID routes rewritten', registers: [registry] }),
        latency: new Histogram({
          name: 'xmig_plugin_propagation_seconds',
          help: 'From the VM signing a notice to this router rewriting its route',
          labelNames: ['role'] as const,
          buckets: DURATION_BUCKETS_SECONDS,
          registers: [registry],
        }),
      };
      this.refusals.register(registry, 'xmig_plugin_refusals_total', 'Mobility messages and state refused, by resource and reason');
      // Every known series at 0: a dashboard's rate() of a reason never seen is 0, not absent.
      const roles = ['new-gateway', 'same-gateway', 'old-gateway', 'transit'];
      zeroSeries(this.metrics.received, eachValue('kind', ['notice', 'forwarded', 'ack', 'junk']));
      zeroSeries(this.metrics.accepted, eachValue('role', roles));
      zeroSeries(this.metrics.rejected, eachValue('reason', [...REJECT_REASONS]));
      for (const role of roles) this.metrics.latency.zero({ role });
    }
  }

  /** Called after every rewrite (tests and the testbed watch convergence with it). */
  onRewrite(listener: (rewrite: Rewrite) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** HIDs whose notice state (and route) this router holds. */
  get hids(): number {
    return this.verifier.size;
  }

  /** The highest sequence applied for a HID. */
  lastSeq(hid: Xid): number | undefined {
    return this.verifier.lastSeq(hid.key);
  }

  /** Forwards still waiting for their next hop's ack. */
  get forwardsInFlight(): number {
    return this.forwarder?.inFlight ?? 0;
  }

  get forwarding(): NoticeForwarder['stats'] {
    return this.forwarder.stats;
  }

  start(): Promise<void> {
    this.starting ??= this.open().catch((error: unknown) => {
      this.starting = undefined;
      throw error;
    });
    return this.starting;
  }

  private async open(): Promise<void> {
    const info = await this.options.api.info();
    // Beside an xia-core Click router the router is Click: its HID and AD are what its tables say.
    const [hid, ad] = await Promise.all([this.options.routes.ownXid?.('HID'), this.options.routes.ownXid?.('AD')]);
    this.hid = hid ? Xid.parse(hid) : info.hid;
    this.ad = ad ? Xid.parse(ad) : info.ad;
    if (!this.options.identity.xid(XidType.HID).equals(this.hid)) {
      throw new Error(`the plugin's key is not the key of router ${info.name} (${this.hid})`);
    }
    this.rewriter = new RouteRewriter(this.options.routes, { hid: this.hid, ad: this.ad });
    this.forwarder = new NoticeForwarder(() => this.socket, this.rewriter, this.refusals, this.logger, {
      freshnessMs: this.options.verifier?.freshnessMs,
      ...this.options.forwarder,
    });
    this.socket = await this.options.api.bindDatagram(WellKnownSid.MOBILITY);
    this.socket.onMessage((datagram) => this.track(this.onDatagram(datagram)));
    this.logger.info('plugin.started', { hid: this.hid.toString(), ...(this.ad ? { ad: this.ad.toString() } : {}) });
  }

  async stop(): Promise<void> {
    const starting = this.starting;
    if (!starting) return;
    this.starting = undefined;
    await starting.catch(() => undefined);
    await this.forwarder?.stop();
    await this.socket?.close();
    this.socket = undefined;
    while (this.tasks.size > 0) await Promise.all(this.tasks);
    await this.options.routes.close();
  }

  /** Runs `work` in the background, so stop() can wait for it; nothing thrown escapes. */
  private track(work: Promise<void>): void {
    const task = work
      .catch((error: unknown) => this.logger.error('notice.failed', { reason: errorMessage(error) }))
      .finally(() => this.tasks.delete(task));
    this.tasks.add(task);
  }

  private reject(reason: RejectReason, detail: string, notice: MoveNotice | undefined, port: number): void {
    this.stats.rejected[reason] = (this.stats.rejected[reason] ?? 0) + 1;
    this.metrics?.rejected.inc({ reason });
    const [resource, why] = REFUSAL_OF[reason];
    this.refusals.refuse(resource, why);
    // Junk and floods are counted, not logged line by line: a flood must not flood the journal too.
    if (reason === 'malformed' || reason === 'rate-limited' || reason === 'hid-rate' || reason === 'new-hid-rate') return;
    this.logger.warn('notice.rejected', {
      reason,
      detail,
      port,
      ...(notice ? { hid: notice.hid.toString(), seq: notice.seq } : {}),
    });
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
    if (message.type === MobilityType.ACK) {
      this.forwarder.onAck(message.sealed);
      return;
    }
    const verdict = this.verifier.check(message.sealed, datagram.port);
    if (!verdict.accepted) return this.reject(verdict.reason, verdict.detail, verdict.notice, datagram.port);
    const notice = verdict.notice;
    const key = notice.hid.key;
    if (verdict.repeat) return this.onRepeat(notice, message.type, message.sealed, datagram);
    if (!this.applying.has(key) && this.applying.size >= this.maxApplying) {
      this.refusals.refuse('applying', 'cap');
      return;
    }
    // One HID at a time: a notice waits for the one of its HID being applied, then is judged against it.
    const before = this.applying.get(key) ?? Promise.resolve();
    const run = before.then(() => this.apply(notice, message.type, message.sealed, datagram));
    this.applying.set(key, run);
    try {
      await run;
    } finally {
      if (this.applying.get(key) === run) this.applying.delete(key);
    }
  }

  private async apply(notice: MoveNotice, type: MobilityTypeCode, sealed: Buffer, datagram: Datagram): Promise<void> {
    const key = notice.hid.key;
    const last = this.verifier.lastSeq(key);
    if (last !== undefined && last >= notice.seq) {
      // Another copy was applied while this one waited.
      if (last === notice.seq && this.verifier.get(key)?.sealed.equals(sealed)) return this.onRepeat(notice, type, sealed, datagram);
      return this.reject('old-sequence', `seq ${notice.seq} <= applied ${last}`, notice, datagram.port);
    }
    const hid = notice.hid.toString();
    let placement: Placement | undefined;
    try {
      placement = await this.rewriter.place(notice, datagram.port);
      if (!placement) {
        this.logger.warn('notice.no-route', { hid, seq: notice.seq, toward: notice.newAd.toString() });
        return;
      }
      await this.rewriter.write(notice.hid, placement);
    } catch (error) {
      // Not applied, so not committed: the sender's retry is applied afresh.
      this.stats.applyFailed++;
      this.logger.warn('notice.apply-failed', { hid, seq: notice.seq, reason: errorMessage(error) });
      return;
    }
    this.verifier.commit(notice, sealed, { ...placement, hid });
    this.stats.accepted++;
    this.stats.rewritten++;
    const latencyMs = Math.max(0, Date.now() - notice.timestamp);
    this.metrics?.rewritten.inc();
    this.metrics?.accepted.inc({ role: placement.role });
    this.metrics?.latency.observe({ role: placement.role }, latencyMs / 1000);
    this.logger.info('route.rewritten', { hid, seq: notice.seq, role: placement.role, port: placement.port, nextHop: placement.nextHop, ms: latencyMs, ad: notice.newAd.toString() });
    const rewrite: Rewrite = { hid: notice.hid, seq: notice.seq, role: placement.role, port: placement.port, nextHop: placement.nextHop, latencyMs };
    for (const listener of this.listeners) listener(rewrite);
    await this.acknowledge(notice, type, datagram.from);
    await this.passOn(notice, sealed, placement);
  }

  /** The applied notice again: its sender did not hear our ack, or our forward may have ended. */
  private async onRepeat(notice: MoveNotice, type: MobilityTypeCode, sealed: Buffer, datagram: Datagram): Promise<void> {
    this.stats.repeats++;
    const key = notice.hid.key;
    this.verifier.touch(key);
    await this.acknowledge(notice, type, datagram.from);
    const applied = this.verifier.get(key)?.applied;
    if (applied) await this.passOn(notice, sealed, applied);
  }

  /** Acks a NOTICE to the VM (if we are its new gateway) and a FORWARDED to the router before us. */
  private async acknowledge(notice: MoveNotice, type: MobilityTypeCode, to: Dag): Promise<void> {
    if (type === MobilityType.NOTICE && !notice.newRouterHid.equals(this.hid)) return;
    const ack = sealMoveAck({ hid: notice.hid, seq: notice.seq, routerHid: this.hid }, this.options.identity);
    await this.socket?.send(to, encodeMobility(MobilityType.ACK, ack)).catch((error: unknown) => {
      this.logger.debug('notice.ack-failed', { hid: notice.hid.toString(), seq: notice.seq, reason: errorMessage(error) });
    });
  }

  /** Toward the old gateway (forward), or, at the old gateway, to the hosts of the old link (purge). */
  private async passOn(notice: MoveNotice, sealed: Buffer, placement: Placement): Promise<void> {
    if (placement.role === 'old-gateway' || placement.role === 'same-gateway') {
      const oldPort = this.rewriter.portOf(notice.oldLinkId);
      if (oldPort !== undefined && oldPort !== placement.port) await this.purge(notice, sealed, oldPort);
      return;
    }
    this.forwarder.forward(notice, sealed);
  }

  /** Tells the hosts of the VM's old link that it has gone (their direct route to it is stale). */
  private async purge(notice: MoveNotice, sealed: Buffer, port: number): Promise<void> {
    try {
      await this.socket?.sendOnLink(port, XROUTE_BROADCAST, encodeHidMoved(notice.hid, sealed));
      this.stats.purged++;
      this.logger.info('hosts.purged', { hid: notice.hid.toString(), seq: notice.seq, port });
    } catch (error) {
      this.logger.warn('hosts.purge-failed', { hid: notice.hid.toString(), seq: notice.seq, port, reason: errorMessage(error) });
    }
  }

  /** The verifier forgot a HID (its bound): its route goes too, so routes stay bounded with it. */
  private onEvict(applied: Applied): void {
    this.stats.evicted++;
    this.refusals.refuse('hid-routes', 'cap');
    this.track(
      this.rewriter.remove(applied.hid).then(
        () => undefined,
        (error: unknown) => this.logger.debug('route.evict-failed', { hid: applied.hid, reason: errorMessage(error) }),
      ),
    );
  }
}
