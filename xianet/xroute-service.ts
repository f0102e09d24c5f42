/**
 * The node's side of SID_XROUTE: neighbour discovery by signed HELLOs on every
 * interface, and (on routers) host registration, xia-core's HOST_REGISTER, which
 * installs the route to a host's HID. Hosts install direct routes to the other
 * hosts on their segment from HELLOs; routers learn each other's HIDs and ADs.
 *
 * Every HELLO and registration is signed by the sender's HID key and must be newer
 * than the last one accepted for that HID, so neither a forged nor a replayed
 * message can point a HID at the wrong place.
 *
 * HIDs are free to mint, so what they can make a node hold is bounded: signatures are
 * checked within a per-link budget, after the cheap checks; HIDs not seen before are
 * admitted at a per-link rate; the per-HID replay state is an LRU (forgetting a HID
 * whose message is still fresh raises a floor its replays cannot pass); hosts registered
 * on a router are an LRU too, and a host pushed out loses its route (a genuine host
 * re-registers every few seconds, so it is never the least recently seen). Refusals are
 * `xianet_xroute_refusals_total{resource,reason}`.
 */
import { EventEmitter } from 'node:events';
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import { KeyedRateLimiter, LruMap, Refusals } from '../shared/limits.js';
import type { Startable } from '../shared/startable.js';
import { BROADCAST_HID, WellKnownSid, Xid, XidType } from '../shared/xid.js';
import { openMoveNotice, type MoveNotice } from '../shared/move-notice.js';
import { datagramData } from './datagram.js';
import type { LinkAddress } from './link.js';
import type { Arrival, XiaNode } from './node.js';
import {
  peekXrouteMessage,
  encodeHello,
  encodeRegisterAck,
  XrouteType,
  type Hello,
  type HostRegister,
  type RegisterAck,
} from './xroute-message.js';

export interface XrouteServiceOptions {
  /** Period of HELLOs on every interface (default 1000 ms). */
  helloIntervalMs?: number;
  /** A neighbour not heard for this many periods is forgotten (default 3.5). */
  deadIntervals?: number;
  /**
   * Routers: how long a registered host's link address is kept after its last registration
   * (default 60 s: six renewals at a host's default 10 s). A registration's route stands
   * until the host moves or is evicted; the address it needs must not go with the dead
   * interval of hellos, or a host that is only slow to speak — a VM starved of CPU, one
   * paused for a move — is called unreachable though its route is there.
   */
  registeredHostMs?: number;
  /** How far a signed timestamp may be from our clock (default 60 s). */
  freshnessMs?: number;
  /** Signature checks per second per link, and the burst (default 500 / 200). */
  verificationsPerSecond?: number;
  verificationsBurst?: number;
  /** HIDs not seen before, per second per link, and the burst (default 20 / 50). */
  newHidsPerSecond?: number;
  newHidsBurst?: number;
  /** Most HIDs whose HELLO / HID_MOVED state is kept (default 16,384). */
  maxHids?: number;
  /** Most hosts registered on a router (default 4,096). */
  maxHosts?: number;
}

const REFUSALS = [
  ['message', 'malformed'],
  ['message', 'forbidden'],
  ['message', 'stale'],
  ['message', 'rate'],
  ['new-hid', 'rate'],
  ['hid-state', 'cap'],
  ['host-routes', 'cap'],
] as const;

export interface HostRegistered {
  hid: Xid;
  port: number;
  address: LinkAddress;
  previousPort: number | undefined;
  register: HostRegister;
}

export interface XrouteEvents {
  'host-registered': [HostRegistered];
  'register-ack': [RegisterAck];
  neighbor: [{ hid: Xid; port: number; role: 'router' | 'host'; ad: Xid | undefined; isNew: boolean }];
  rejected: [{ reason: string; port: number; from: LinkAddress }];
  'moved-away': [{ hid: Xid; port: number; routeRemoved: boolean }];
}

export const XROUTE_BROADCAST_DAG = Dag.chain(BROADCAST_HID, WellKnownSid.XROUTE);

export class XrouteService extends EventEmitter<XrouteEvents> implements Startable {
  private readonly helloIntervalMs: number;
  private readonly deadIntervals: number;
  private readonly registeredHostMs: number;
  private readonly freshnessMs: number;
  private timer: NodeJS.Timeout | undefined;
  private unbind: (() => void) | undefined;
  private unsubscribe: (() => void) | undefined;
  /** Latest accepted timestamp (HELLO) and sequence (registration) per HID: replays lose. */
  private readonly helloClock: LruMap<string, number>;
  private readonly registered: LruMap<string, { seq: number; port: number }>;
  private readonly movedSeq: LruMap<string, number>;
  /** HELLOs of HIDs we do not know must be signed after this (see the file comment). */
  private helloFloor = 0;
  private readonly verifications: KeyedRateLimiter<number>;
  private readonly newHids: KeyedRateLimiter<number>;
  readonly refusals = new Refusals(REFUSALS);
  readonly stats = { hellosSent: 0, hellosAccepted: 0, registrations: 0, rejected: 0, evictedHosts: 0 };

  constructor(
    private readonly node: XiaNode,
    options: XrouteServiceOptions = {},
  ) {
    super();
    this.helloIntervalMs = options.helloIntervalMs ?? 1000;
    this.deadIntervals = options.deadIntervals ?? 3.5;
    this.registeredHostMs = Math.max(options.registeredHostMs ?? 60_000, this.helloIntervalMs * this.deadIntervals);
    this.freshnessMs = options.freshnessMs ?? 60_000;
    const clock = node.clock;
    this.verifications = new KeyedRateLimiter(options.verificationsPerSecond ?? 500, options.verificationsBurst ?? 200, 1024, clock);
    this.newHids = new KeyedRateLimiter(options.newHidsPerSecond ?? 20, options.newHidsBurst ?? 50, 1024, clock);
    const maxHids = options.maxHids ?? 16_384;
    this.helloClock = new LruMap({
      maxEntries: maxHids,
      onEvict: (_key, timestamp) => {
        this.refusals.refuse('hid-state', 'cap');
        if (this.fresh(timestamp)) this.helloFloor = Math.max(this.helloFloor, timestamp);
      },
    });
    this.movedSeq = new LruMap({ maxEntries: maxHids, onEvict: () => this.refusals.refuse('hid-state', 'cap') });
    this.registered = new LruMap({
      maxEntries: options.maxHosts ?? 4096,
      onEvict: (key, host) => this.evictHost(key, host.port),
    });
    if (node.registry) {
      this.refusals.register(node.registry, 'xianet_xroute_refusals_total', 'Neighbour and host-registration messages refused, by resource and reason');
    }
  }

  /** Hosts registered on this router (bounded by maxHosts). */
  get hosts(): number {
    return this.registered.size;
  }

  private evictHost(key: string, port: number): void {
    this.stats.evictedHosts++;
    this.refusals.refuse('host-routes', 'cap');
    let hid: Xid;
    try {
      hid = Xid.parse(key);
    } catch {
      return;
    }
    const route = this.node.routes.route(hid);
    if (route?.origin === 'register' && route.port === port) this.node.routes.remove(XidType.HID, hid);
    this.node.neighbors.forget(port, hid);
  }

  async start(): Promise<void> {
    if (this.unbind) return;
    this.unbind = this.node.bind(WellKnownSid.XROUTE, (packet, arrival) => this.onPacket(packet, arrival));
    this.unsubscribe = this.node.onAttach((port) => this.sendHello(port));
    this.sendHellos();
    this.timer = setInterval(() => this.sendHellos(), this.helloIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unbind?.();
    this.unsubscribe?.();
    this.unbind = undefined;
    this.unsubscribe = undefined;
  }

  /** HELLO on every interface now (e.g. right after this node moved). */
  sendHellos(): void {
    for (const iface of this.node.interfaceList) this.sendHello(iface.port);
  }

  sendHello(port: number): void {
    const hello: Hello = {
      hid: this.node.hid,
      ad: this.node.ad,
      role: this.node.role,
      port,
      timestamp: this.node.clock.now(),
    };
    const data = encodeHello(hello, this.node.identity);
    if (this.node.sendDatagramOnPort(port, 'broadcast', XROUTE_BROADCAST_DAG, data)) this.stats.hellosSent++;
  }

  private reject(reason: string, arrival: Arrival, refusal?: readonly [string, (typeof REFUSALS)[number][1]]): void {
    this.stats.rejected++;
    if (refusal) this.refusals.refuse(refusal[0], refusal[1]);
    this.emit('rejected', { reason, port: arrival.port, from: arrival.from ?? '' });
    this.node.logger.debug('xroute.rejected', { reason, port: arrival.port, ...(arrival.from !== undefined ? { from: arrival.from } : {}) });
  }

  private onPacket(packet: Buffer, arrival: Arrival): void {
    if (arrival.port < 0 || arrival.from === undefined) return;
    const data = datagramData(packet, arrival);
    if (!data) return this.reject('not a datagram', arrival, ['message', 'malformed']);
    let peeked;
    try {
      peeked = peekXrouteMessage(data);
    } catch (error) {
      return this.reject(errorMessage(error), arrival, ['message', 'malformed']);
    }
    const { message } = peeked;
    // Cheap screening first: is it for us, fresh, new, within its rate? Only then the signature.
    const screened = this.screen(message, arrival);
    if (screened) return this.reject(screened[0], arrival, screened[1]);
    if (message.type !== XrouteType.HID_MOVED) {
      if (!this.verifications.take(arrival.port)) return this.reject('over the link\'s verification budget', arrival, ['message', 'rate']);
      try {
        peeked.verify();
      } catch (error) {
        return this.reject(errorMessage(error), arrival, ['message', 'forbidden']);
      }
    }
    switch (message.type) {
      case XrouteType.HELLO:
        return this.onHello(message.hello, arrival);
      case XrouteType.HOST_REGISTER:
        return this.onRegister(message.register, arrival);
      case XrouteType.REGISTER_ACK:
        this.emit('register-ack', message.ack);
        return;
      case XrouteType.HID_MOVED:
        return this.onHidMoved(message.notice, arrival);
    }
  }

  /** Why a message is refused before its signature is checked; undefined if it may be verified. */
  private screen(message: ReturnType<typeof peekXrouteMessage>['message'], arrival: Arrival): [string, readonly [string, (typeof REFUSALS)[number][1]]] | undefined {
    switch (message.type) {
      case XrouteType.HELLO: {
        const { hello } = message;
        if (hello.hid.equals(this.node.hid)) return ['our own hello', ['message', 'malformed']];
        if (!this.fresh(hello.timestamp)) return ['stale hello', ['message', 'stale']];
        const last = this.helloClock.peek(hello.hid.key);
        if (last !== undefined && last >= hello.timestamp) return ['replayed hello', ['message', 'stale']];
        if (last === undefined && hello.timestamp <= this.helloFloor) return ['hello signed before hellos this node had to forget', ['message', 'stale']];
        if (last === undefined && !this.newHids.take(arrival.port)) return ['too many new HIDs on this link', ['new-hid', 'rate']];
        return undefined;
      }
      case XrouteType.HOST_REGISTER: {
        const { register } = message;
        if (this.node.role !== 'router' || !register.gatewayHid.equals(this.node.hid)) return ['registration for another router', ['message', 'malformed']];
        if (!this.node.ad || !register.ad.equals(this.node.ad)) return ['registration for another AD', ['message', 'malformed']];
        if (!this.fresh(register.timestamp)) return ['stale registration', ['message', 'stale']];
        const last = this.registered.peek(register.hid.key);
        if (last !== undefined && register.seq < last.seq) return ['old registration', ['message', 'stale']];
        if (last === undefined && !this.newHids.take(arrival.port)) return ['too many new HIDs on this link', ['new-hid', 'rate']];
        return undefined;
      }
      case XrouteType.REGISTER_ACK:
        return message.ack.hid.equals(this.node.hid) ? undefined : ['an ack for another host', ['message', 'malformed']];
      case XrouteType.HID_MOVED:
        return this.node.role === 'host' ? undefined : ['HID_MOVED on a router', ['message', 'malformed']];
    }
  }

  private fresh(timestamp: number): boolean {
    return Math.abs(this.node.clock.now() - timestamp) <= this.freshnessMs;
  }

  private onHello(hello: Hello, arrival: Arrival): void {
    this.helloClock.set(hello.hid.key, hello.timestamp);
    this.stats.hellosAccepted++;
    const port = arrival.port;
    const expiresAt = this.node.clock.now() + this.helloIntervalMs * this.deadIntervals;
    const { isNew } = this.node.neighbors.learn({
      hid: hello.hid,
      port,
      address: arrival.from!,
      ad: hello.ad,
      role: hello.role,
      expiresAt,
    });
    const routes = this.node.routes;
    const existing = routes.route(hello.hid);
    // Routes to hosts on a router come from registration only; everything else a HELLO may
    // set up as a direct route, unless someone installed a route on purpose.
    const mayRoute = this.node.role === 'host' || hello.role === 'router';
    const learned = existing === undefined || existing.origin === 'neighbor';
    if (mayRoute && learned) {
      routes.set(XidType.HID, { xid: hello.hid, port, nextHop: hello.hid, flags: 0, origin: 'neighbor', expiresAt });
    }
    const otherAd = hello.ad && !(this.node.ad && hello.ad.equals(this.node.ad)) ? hello.ad : undefined;
    if (this.node.role === 'router' && hello.role === 'router' && otherAd) {
      const adRoute = routes.route(otherAd);
      if (adRoute === undefined || adRoute.origin === 'neighbor') {
        routes.set(XidType.AD, { xid: otherAd, port, nextHop: hello.hid, flags: 0, origin: 'neighbor', expiresAt });
      }
    }
    if (isNew) this.node.logger.info('neighbor.up', { hid: hello.hid.toString(), port, role: hello.role, ad: hello.ad?.toString() });
    this.emit('neighbor', { hid: hello.hid, port, role: hello.role, ad: hello.ad, isNew });
  }

  /**
   * A HID moved away from the link this came on (the old gateway says so, with the
   * VM's own signed notice): drop the direct route and neighbour entry we learned for
   * it there, instead of black-holing traffic to it until they expire.
   */
  private onHidMoved(sealed: Buffer, arrival: Arrival): void {
    let notice: MoveNotice;
    try {
      notice = openMoveNotice(sealed).notice;
    } catch (error) {
      return this.reject(`bad move notice: ${errorMessage(error)}`, arrival, ['message', 'forbidden']);
    }
    if (!this.fresh(notice.timestamp)) return this.reject('stale move notice', arrival, ['message', 'stale']);
    const key = notice.hid.key;
    if ((this.movedSeq.get(key) ?? -1) >= notice.seq) return;
    this.movedSeq.set(key, notice.seq);
    const route = this.node.routes.route(notice.hid);
    const removed = route !== undefined && route.origin === 'neighbor' && route.port === arrival.port && this.node.routes.remove(XidType.HID, notice.hid);
    this.node.neighbors.forget(arrival.port, notice.hid);
    this.node.logger.info('neighbor.moved-away', { hid: notice.hid.toString(), port: arrival.port, routeRemoved: removed, toAd: notice.newAd.toString() });
    this.emit('moved-away', { hid: notice.hid, port: arrival.port, routeRemoved: removed });
  }

  private onRegister(register: HostRegister, arrival: Arrival): void {
    const key = register.hid.key;
    const last = this.registered.get(key)?.seq;
    const port = arrival.port;
    this.node.neighbors.learn({
      hid: register.hid,
      port,
      address: arrival.from!,
      role: 'host',
      ad: register.ad,
      expiresAt: this.node.clock.now() + this.registeredHostMs,
    });
    const ack = encodeRegisterAck({ hid: register.hid, gatewayHid: this.node.hid, seq: register.seq }, this.node.identity);
    this.node.sendDatagramOnPort(port, arrival.from!, Dag.chain(register.hid, WellKnownSid.XROUTE), ack);
    if (last === register.seq) return; // a retry of what we already installed: ack again, nothing else
    this.registered.set(key, { seq: register.seq, port });
    const previous = this.node.routes.route(register.hid);
    this.node.routes.set(XidType.HID, { xid: register.hid, port, nextHop: register.hid, flags: 0, origin: 'register' });
    // Moved to another of our ports: where it was is no longer where it is (its hold there would outlast it).
    if (previous?.origin === 'register' && previous.port >= 0 && previous.port !== port) this.node.neighbors.forget(previous.port, register.hid);
    this.stats.registrations++;
    // A renewal (same host, same port, every few seconds) is routine: debug. A new host, or one
    // that moved to another port, is news: info.
    const renewal = previous?.origin === 'register' && previous.port === port;
    this.node.logger[renewal ? 'debug' : 'info']('host.registered', {
      hid: register.hid.toString(),
      port,
      linkId: register.linkId,
      ...(previous ? { previousPort: previous.port } : {}),
    });
    this.emit('host-registered', {
      hid: register.hid,
      port,
      address: arrival.from!,
      previousPort: previous && previous.port >= 0 ? previous.port : undefined,
      register,
    });
  }
}

