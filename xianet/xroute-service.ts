/**
 * The node's side of SID_XROUTE: neighbour discovery by signed HELLOs on every
 * interface, and (on routers) host registration, xia-core's HOST_REGISTER, which
 * installs the route to a host's HID. Hosts install direct routes to the other
 * hosts on their segment from HELLOs; routers learn each other's HIDs and ADs.
 *
 * Every HELLO and registration is signed by the sender's HID key and must be newer
 * than the last one accepted for that HID, so neither a forged nor a replayed
 * message can point a HID at the wrong place.
 */
import { EventEmitter } from 'node:events';
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Xid} from '../shared/xid.js';
import { BROADCAST_HID, WellKnownSid, XidType } from '../shared/xid.js';
import { openMoveNotice, type MoveNotice } from '../shared/move-notice.js';
import { datagramData } from './datagram.js';
import type { LinkAddress } from './link.js';
import type { Arrival, XiaNode } from './node.js';
import {
  decodeXrouteMessage,
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
  /** How far a signed timestamp may be from our clock (default 60 s). */
  freshnessMs?: number;
}

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

export class XrouteService extends EventEmitter<XrouteEvents> {
  private readonly helloIntervalMs: number;
  private readonly deadIntervals: number;
  private readonly freshnessMs: number;
  private timer: NodeJS.Timeout | undefined;
  private unbind: (() => void) | undefined;
  private unsubscribe: (() => void) | undefined;
  /** Latest accepted timestamp (HELLO) and sequence (registration) per HID: replays lose. */
  private readonly helloClock = new Map<string, number>();
  private readonly registerSeq = new Map<string, number>();
  private readonly movedSeq = new Map<string, number>();
  readonly stats = { hellosSent: 0, hellosAccepted: 0, registrations: 0, rejected: 0 };

  constructor(
    private readonly node: XiaNode,
    options: XrouteServiceOptions = {},
  ) {
    super();
    this.helloIntervalMs = options.helloIntervalMs ?? 1000;
    this.deadIntervals = options.deadIntervals ?? 3.5;
    this.freshnessMs = options.freshnessMs ?? 60_000;
  }

  start(): void {
    this.unbind = this.node.bind(WellKnownSid.XROUTE, (packet, arrival) => this.onPacket(packet, arrival));
    this.unsubscribe = this.node.onAttach((port) => this.sendHello(port));
    this.sendHellos();
    this.timer = setInterval(() => this.sendHellos(), this.helloIntervalMs);
    this.timer.unref();
  }

  stop(): void {
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

  private reject(reason: string, arrival: Arrival): void {
    this.stats.rejected++;
    this.emit('rejected', { reason, port: arrival.port, from: arrival.from ?? '' });
    this.node.logger.debug('xroute.rejected', { reason, port: arrival.port, from: arrival.from });
  }

  private onPacket(packet: Buffer, arrival: Arrival): void {
    if (arrival.port < 0 || arrival.from === undefined) return;
    const data = datagramData(packet, arrival);
    if (!data) return this.reject('not a datagram', arrival);
    let message;
    try {
      message = decodeXrouteMessage(data);
    } catch (error) {
      return this.reject(errorMessage(error), arrival);
    }
    switch (message.type) {
      case XrouteType.HELLO:
        return this.onHello(message.hello, arrival);
      case XrouteType.HOST_REGISTER:
        return this.onRegister(message.register, arrival);
      case XrouteType.REGISTER_ACK:
        if (message.ack.hid.equals(this.node.hid)) this.emit('register-ack', message.ack);
        return;
      case XrouteType.HID_MOVED:
        return this.onHidMoved(message.notice, arrival);
    }
  }

  private fresh(timestamp: number): boolean {
    return Math.abs(this.node.clock.now() - timestamp) <= this.freshnessMs;
  }

  private onHello(hello: Hello, arrival: Arrival): void {
    if (hello.hid.equals(this.node.hid)) return;
    const key = hello.hid.key;
    if (!this.fresh(hello.timestamp)) return this.reject('stale hello', arrival);
    if ((this.helloClock.get(key) ?? -1) >= hello.timestamp) return this.reject('replayed hello', arrival);
    this.helloClock.set(key, hello.timestamp);
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
    if (this.node.role !== 'host') return;
    let notice: MoveNotice;
    try {
      notice = openMoveNotice(sealed).notice;
    } catch (error) {
      return this.reject(`bad move notice: ${errorMessage(error)}`, arrival);
    }
    if (!this.fresh(notice.timestamp)) return this.reject('stale move notice', arrival);
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
    if (this.node.role !== 'router' || !register.gatewayHid.equals(this.node.hid)) return;
    if (!this.node.ad || !register.ad.equals(this.node.ad)) return this.reject('registration for another AD', arrival);
    if (!this.fresh(register.timestamp)) return this.reject('stale registration', arrival);
    const key = register.hid.key;
    const last = this.registerSeq.get(key);
    if (last !== undefined && register.seq < last) return this.reject('old registration', arrival);
    const port = arrival.port;
    this.node.neighbors.learn({
      hid: register.hid,
      port,
      address: arrival.from!,
      role: 'host',
      ad: register.ad,
      expiresAt: this.node.clock.now() + this.helloIntervalMs * this.deadIntervals,
    });
    const ack = encodeRegisterAck({ hid: register.hid, gatewayHid: this.node.hid, seq: register.seq }, this.node.identity);
    this.node.sendDatagramOnPort(port, arrival.from!, Dag.chain(register.hid, WellKnownSid.XROUTE), ack);
    if (last === register.seq) return; // a retry of what we already installed: ack again, nothing else
    this.registerSeq.set(key, register.seq);
    const previous = this.node.routes.route(register.hid);
    this.node.routes.set(XidType.HID, { xid: register.hid, port, nextHop: register.hid, flags: 0, origin: 'register' });
    this.stats.registrations++;
    this.node.logger.info('host.registered', {
      hid: register.hid.toString(),
      port,
      previousPort: previous?.port,
      linkId: register.linkId,
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

