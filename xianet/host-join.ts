/**
 * A host's XHCP client: hears beacons, adopts the AD and default routes of its
 * gateway, and registers its HID with the gateway (signed, retried until acked).
 *
 * It changes gateway only when the current one has gone quiet (or the interface
 * moved to another segment): a stray beacon from another router, while ours is
 * still talking, is counted and ignored. That is what keeps one lost or foreign
 * beacon from looking like a migration.
 */
import { EventEmitter } from 'node:events';
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import { KeyedRateLimiter, Refusals } from '../shared/limits.js';
import type { Startable } from '../shared/startable.js';
import { WellKnownSid, XidType, type Xid } from '../shared/xid.js';
import { datagramData } from './datagram.js';
import type { LinkAddress } from './link.js';
import type { Arrival, XiaNode } from './node.js';
import { XHCP_BROADCAST_DAG } from './beacon-service.js';
import { decodeXhcp, encodeSolicit, type ReceivedBeacon } from './xhcp.js';
import { encodeHostRegister, type RegisterAck } from './xroute-message.js';
import { AckWaiters, sendUntilAcked } from './send-until-acked.js';
import type { XrouteService } from './xroute-service.js';

export interface Gateway {
  ad: Xid;
  hid: Xid;
  port: number;
  address: LinkAddress;
  linkId: string | undefined;
  nameServer: Dag | undefined;
  seq: number;
  /** Monotonic ms when it was last heard. */
  lastHeard: number;
}

export type MoveKind = 'initial' | 'inter-ad' | 'intra-ad';

export interface GatewayChange {
  previous: Gateway | undefined;
  current: Gateway;
  kind: MoveKind;
  /** Monotonic ms of the beacon that caused the change. */
  at: number;
}

export interface HostJoinEvents {
  beacon: [{ beacon: ReceivedBeacon; port: number; from: LinkAddress }];
  gateway: [GatewayChange];
  /** `renewal`: the periodic refresh of a registration that stood, not one after a change or pause. */
  registered: [{ gateway: Gateway; seq: number; ms: number; renewal: boolean }];
  stray: [{ beacon: ReceivedBeacon; port: number }];
  rejected: [{ reason: string; ad?: Xid }];
}

export interface HostJoinOptions {
  /** ADs whose beacons are believed; empty = any AD whose beacon is signed by its own key. */
  trustedAds?: Xid[];
  /** Accept unsigned beacons (xia-core routers) when no AD is pinned (default false). */
  acceptUnsigned?: boolean;
  /** The routers' beacon period (default 100 ms); the current gateway is stale after 1.5 of them. */
  beaconIntervalMs?: number;
  /** First registration retry after this long, doubling up to registerRetryMaxMs (default 50 ms / 1 s). */
  registerRetryMs?: number;
  registerRetryMaxMs?: number;
  /** Re-register with the same gateway this often (default 10 s). */
  reregisterMs?: number;
  /** Beacon signatures checked per second per interface, and the burst (default 200 / 100). */
  beaconVerificationsPerSecond?: number;
  beaconVerificationsBurst?: number;
}

export class HostJoin extends EventEmitter<HostJoinEvents> implements Startable {
  private gatewayState: Gateway | undefined;
  private invalidated = false;
  private unbind: (() => void) | undefined;
  private readonly cleanups: Array<() => void> = [];
  private refreshTimer: NodeJS.Timeout | undefined;
  /** The registration being sent (a newer one, or stop(), aborts it). */
  private registration: AbortController | undefined;
  private readonly acks = new AckWaiters<string, RegisterAck>();
  /** Beacon signatures checked per second per interface (a flood of signed beacons costs no more). */
  private readonly verifications: KeyedRateLimiter<number>;
  readonly refusals = new Refusals([
    ['beacon', 'malformed'],
    ['beacon', 'forbidden'],
    ['beacon', 'rate'],
  ]);
  private adoptedAt = 0;
  private lastSeq = 0;
  private readonly staleAfterMs: number;
  readonly stats = { beacons: 0, strays: 0, rejected: 0, changes: 0, registrations: 0, registerRetries: 0 };

  constructor(
    private readonly node: XiaNode,
    private readonly xroute: XrouteService,
    private readonly options: HostJoinOptions = {},
  ) {
    super();
    this.staleAfterMs = (options.beaconIntervalMs ?? 100) * 1.5;
    this.verifications = new KeyedRateLimiter(options.beaconVerificationsPerSecond ?? 200, options.beaconVerificationsBurst ?? 100, 64, node.clock);
    if (node.registry) this.refusals.register(node.registry, 'xianet_xhcp_client_refusals_total', 'Beacons a host refused, by resource and reason');
  }

  get gateway(): Gateway | undefined {
    return this.gatewayState;
  }

  async start(): Promise<void> {
    if (this.unbind) return;
    this.unbind = this.node.bind(WellKnownSid.XHCP, (packet, arrival) => this.onPacket(packet, arrival));
    const onAck = (ack: RegisterAck): void => void this.acks.settle(`${ack.seq}/${ack.gatewayHid.key}`, ack);
    this.xroute.on('register-ack', onAck);
    this.cleanups.push(() => this.xroute.off('register-ack', onAck));
    // A new segment under our interface: the old gateway is gone; take the next beacon at once.
    this.cleanups.push(
      this.node.onAttach((port) => {
        if (this.gatewayState?.port === port) this.invalidate();
        this.solicit(port);
      }),
    );
    this.refreshTimer = setInterval(() => {
      if (this.gatewayState && this.registration === undefined) this.register(true);
    }, this.options.reregisterMs ?? 10_000);
    this.refreshTimer.unref();
    this.solicit();
  }

  async stop(): Promise<void> {
    this.unbind?.();
    this.unbind = undefined;
    for (const cleanup of this.cleanups.splice(0)) cleanup();
    this.registration?.abort(new Error('host join stopped'));
    this.registration = undefined;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
  }

  /** Forget the current gateway's freshness: the next good beacon is adopted (after a pause or a move). */
  invalidate(): void {
    this.invalidated = true;
  }

  /** Asks the routers on one or all interfaces for a beacon now. */
  solicit(port?: number): void {
    const data = encodeSolicit(this.node.hid);
    const ports = port === undefined ? this.node.interfaceList.map((i) => i.port) : [port];
    for (const p of ports) this.node.sendDatagramOnPort(p, 'broadcast', XHCP_BROADCAST_DAG, data);
  }

  private reject(reason: string, ad?: Xid): void {
    this.stats.rejected++;
    this.emit('rejected', { reason, ad });
    this.node.logger.debug('beacon.rejected', { reason, ...(ad ? { ad: ad.toString() } : {}) });
  }

  private onPacket(packet: Buffer, arrival: Arrival): void {
    if (arrival.port < 0 || arrival.from === undefined) return;
    const data = datagramData(packet, arrival);
    if (!data) return;
    let message;
    try {
      // Signatures are checked within the interface's budget; past it a beacon counts as unsigned.
      message = decodeXhcp(data, { mayVerify: () => this.verifications.take(arrival.port) });
    } catch (error) {
      this.refusals.refuse('beacon', 'malformed');
      return this.reject(errorMessage(error));
    }
    if (message.kind !== 'beacon') return;
    if (message.beacon.unverified) {
      this.refusals.refuse('beacon', 'rate');
      return this.reject('over the interface\'s verification budget', message.beacon.ad);
    }
    this.onBeacon(message.beacon, arrival.port, arrival.from);
  }

  private trusted(beacon: ReceivedBeacon): string | undefined {
    const pinned = this.options.trustedAds ?? [];
    if (pinned.length > 0 && !pinned.some((ad) => ad.equals(beacon.ad))) return 'AD not trusted';
    if (!beacon.authenticated && (pinned.length > 0 || !this.options.acceptUnsigned)) return 'beacon not signed by its AD';
    return undefined;
  }

  private onBeacon(beacon: ReceivedBeacon, port: number, from: LinkAddress): void {
    const refusal = this.trusted(beacon);
    if (refusal) {
      this.refusals.refuse('beacon', 'forbidden');
      return this.reject(refusal, beacon.ad);
    }
    this.stats.beacons++;
    const now = this.node.clock.monotonic();
    const current = this.gatewayState;
    const same =
      current !== undefined &&
      current.hid.equals(beacon.gatewayHid) &&
      current.ad.equals(beacon.ad) &&
      current.port === port &&
      current.linkId === beacon.linkId;
    if (same && !this.invalidated) {
      current.lastHeard = now;
      current.seq = beacon.seq;
      current.address = from;
      current.nameServer = beacon.nameServer ?? current.nameServer;
      this.emit('beacon', { beacon, port, from });
      return;
    }
    const stale = current === undefined || this.invalidated || now - current.lastHeard > this.staleAfterMs;
    if (!stale) {
      this.stats.strays++;
      this.emit('stray', { beacon, port });
      this.node.logger.debug('beacon.stray', { ad: beacon.ad.toString(), gateway: beacon.gatewayHid.short, port });
      return;
    }
    this.adopt(beacon, port, from, now);
    this.emit('beacon', { beacon, port, from });
  }

  private adopt(beacon: ReceivedBeacon, port: number, from: LinkAddress, now: number): void {
    const previous = this.gatewayState;
    this.invalidated = false;
    const gateway: Gateway = {
      ad: beacon.ad,
      hid: beacon.gatewayHid,
      port,
      address: from,
      linkId: beacon.linkId,
      nameServer: beacon.nameServer,
      seq: beacon.seq,
      lastHeard: now,
    };
    this.gatewayState = gateway;
    const kind: MoveKind = !previous ? 'initial' : previous.ad.equals(beacon.ad) ? 'intra-ad' : 'inter-ad';
    if (previous && kind !== 'initial' && previous.hid.equals(gateway.hid) && previous.port === port && previous.linkId === gateway.linkId) {
      // Same gateway heard again after a pause: nothing moved.
      this.register();
      return;
    }
    this.stats.changes++;
    this.node.neighbors.learn({
      hid: beacon.gatewayHid,
      port,
      address: from,
      ad: beacon.ad,
      role: 'router',
      expiresAt: this.node.clock.now() + 3_600_000,
    });
    this.node.setAd(beacon.ad);
    for (const type of [XidType.AD, XidType.HID, XidType.SID, XidType.CID]) {
      this.node.routes.set(type, { xid: undefined, port, nextHop: beacon.gatewayHid, flags: 0, origin: 'beacon' });
    }
    this.node.logger.info('gateway.adopted', {
      kind,
      ad: beacon.ad.toString(),
      gateway: beacon.gatewayHid.toString(),
      port,
      ...(beacon.linkId !== undefined ? { linkId: beacon.linkId } : {}),
      ...(previous ? { previousAd: previous.ad.toString() } : {}),
    });
    this.emit('gateway', { previous, current: gateway, kind, at: now });
    this.adoptedAt = now;
    this.register();
  }

  /**
   * Sends a HOST_REGISTER to the current gateway until it is acknowledged (sendUntilAcked),
   * a newer registration or a change of gateway supersedes it, or stop().
   */
  register(renewal = false): void {
    const gateway = this.gatewayState;
    if (!gateway) return;
    this.registration?.abort(new Error('superseded'));
    const controller = new AbortController();
    this.registration = controller;
    const seq = Math.max(this.node.clock.now(), this.lastSeq + 1);
    this.lastSeq = seq;
    const message = encodeHostRegister(
      {
        hid: this.node.hid,
        gatewayHid: gateway.hid,
        ad: gateway.ad,
        linkId: gateway.linkId ?? '',
        seq,
        timestamp: this.node.clock.now(),
      },
      this.node.identity,
    );
    const dst = Dag.chain(gateway.hid, WellKnownSid.XROUTE);
    sendUntilAcked(
      () => {
        if (this.gatewayState !== gateway) {
          controller.abort(new Error('gateway changed'));
          return;
        }
        this.node.sendDatagramOnPort(gateway.port, gateway.address, dst, message);
      },
      (signal) => this.acks.wait(`${seq}/${gateway.hid.key}`, signal),
      {
        signal: controller.signal,
        backoff: { firstMs: this.options.registerRetryMs ?? 50, maxMs: this.options.registerRetryMaxMs ?? 1000 },
        onRetry: () => this.stats.registerRetries++,
      },
    ).then(
      () => this.onRegistered(gateway, seq, renewal),
      () => undefined, // superseded or stopped: whoever did that registers (or not) next
    ).finally(() => {
      if (this.registration === controller) this.registration = undefined;
    });
  }

  private onRegistered(gateway: Gateway, seq: number, renewal: boolean): void {
    this.stats.registrations++;
    const ms = this.node.clock.monotonic() - this.adoptedAt;
    this.emit('registered', { gateway, seq, ms, renewal });
    this.node.logger.debug('host.registered', { gateway: gateway.hid.short, seq, ms: Math.round(ms) });
  }
}
