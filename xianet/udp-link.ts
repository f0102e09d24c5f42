/**
 * A link over UDP: one XIP packet per datagram. Neighbours are `host:port`
 * (`[v6addr%scope]:port` for IPv6, link-local included). The segment is either a
 * list of peers (broadcast = a copy to each) or a multicast group (a real LAN or a
 * bridge between network namespaces), or both.
 *
 * This is the forwarding hot path, so it uses node:dgram directly: the promise
 * wrapper would cost an allocation per packet for nothing (see bench/forwarding).
 */
import { createSocket, type Socket, type RemoteInfo } from 'node:dgram';
import { lookup, type LookupOneOptions } from 'node:dns';
import { isIP, isIPv6 } from 'node:net';
import { XmigError } from '../shared/errors.js';
import type { Link, LinkAddress, LinkReceiver } from './link.js';

export interface UdpLinkOptions {
  name: string;
  /** Local address to bind ("0.0.0.0", "::", "127.0.0.2", "fe80::1%veth0"). */
  bindAddress: string;
  /** Local port; 0 picks a free one. */
  port: number;
  /** Neighbours on this segment ("127.0.0.1:7001", "[fe80::2%veth0]:7000"). */
  peers?: string[];
  /** Multicast group standing for the segment ("239.255.88.1", "ff02::88"); uses `port`. */
  multicastGroup?: string;
  /** Interface for multicast (an address on it, or "::%ifname"). */
  multicastInterface?: string;
  mtu?: number;
  /** Kernel socket buffers; large ones matter at high packet rates. */
  socketBufferBytes?: number;
}

export interface SocketAddress {
  host: string;
  port: number;
}

/** Parses "host:port" and "[v6%scope]:port". */
export function parseSocketAddress(text: string): SocketAddress {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  const plain = /^([^:]+):(\d+)$/.exec(text);
  const match = bracketed ?? plain;
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new XmigError('ERR_CONFIG', `"${text}" is not a socket address (host:port or [v6addr]:port)`);
  }
  return { host: match[1]!, port };
}

export function formatSocketAddress(host: string, port: number): LinkAddress {
  return isIPv6(host.split('%')[0]!) ? `[${host}]:${port}` : `${host}:${port}`;
}

export class UdpLink implements Link {
  readonly name: string;
  readonly mtu: number;
  private socket: Socket | undefined;
  private receiver: LinkReceiver | undefined;
  private readonly attachListeners: Array<() => void> = [];
  private peers: SocketAddress[];
  private boundAddress: LinkAddress | undefined;
  /** Parsed neighbour addresses: the forwarding path must not run a regex per packet. */
  private readonly resolved = new Map<LinkAddress, SocketAddress>();
  /** Datagrams the kernel refused to send (e.g. EHOSTUNREACH after a move). */
  readonly stats = { sendErrors: 0 };

  constructor(private readonly options: UdpLinkOptions) {
    this.name = options.name;
    this.mtu = options.mtu ?? 65000;
    this.peers = (options.peers ?? []).map(parseSocketAddress);
  }

  get address(): LinkAddress | undefined {
    return this.boundAddress;
  }

  get port(): number | undefined {
    return this.socket?.address().port;
  }

  async start(): Promise<void> {
    const v6 = isIPv6(this.options.bindAddress.split('%')[0]!);
    const socket = createSocket({ type: v6 ? 'udp6' : 'udp4', reuseAddr: this.options.multicastGroup !== undefined, lookup: numericLookup });
    this.socket = socket;
    socket.on('message', (message: Buffer, remote: RemoteInfo) => {
      this.receiver?.(message, formatSocketAddress(remote.address, remote.port));
    });
    socket.on('error', () => {
      // Asynchronous send errors (ICMP unreachable on a moved peer) must not kill the daemon.
      this.stats.sendErrors++;
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(this.options.port, this.options.bindAddress, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    if (this.options.socketBufferBytes) {
      socket.setRecvBufferSize(this.options.socketBufferBytes);
      socket.setSendBufferSize(this.options.socketBufferBytes);
    }
    if (this.options.multicastGroup) {
      socket.addMembership(this.options.multicastGroup, this.options.multicastInterface);
      if (this.options.multicastInterface) socket.setMulticastInterface(this.options.multicastInterface);
      socket.setMulticastLoopback(false);
    } else if (!v6) {
      socket.setBroadcast(true);
    }
    const local = socket.address();
    this.boundAddress = formatSocketAddress(local.address, local.port);
    for (const listener of this.attachListeners) listener();
  }

  async stop(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    this.boundAddress = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  send(packet: Buffer, to: LinkAddress, tail?: Buffer): void {
    if (!this.socket) return;
    let peer = this.resolved.get(to);
    if (!peer) {
      peer = parseSocketAddress(to);
      if (this.resolved.size >= 4096) this.resolved.clear();
      this.resolved.set(to, peer);
    }
    // A tail goes out with its header in one sendmsg (an iovec of two): no copy here.
    this.socket.send(tail ? [packet, tail] : packet, peer.port, peer.host, this.onSent);
  }

  broadcast(packet: Buffer): void {
    const socket = this.socket;
    if (!socket) return;
    for (const peer of this.peers) socket.send(packet, peer.port, peer.host, this.onSent);
    if (this.options.multicastGroup) socket.send(packet, this.options.port, this.options.multicastGroup, this.onSent);
  }

  private readonly onSent = (error: Error | null): void => {
    if (error) this.stats.sendErrors++;
  };

  /** Puts this interface on another segment: new neighbours, same socket. */
  setPeers(peers: string[]): void {
    this.peers = peers.map(parseSocketAddress);
    for (const listener of this.attachListeners) listener();
  }

  onReceive(receiver: LinkReceiver): void {
    this.receiver = receiver;
  }

  onAttach(listener: () => void): void {
    this.attachListeners.push(listener);
  }
}

/** The family of each address seen (0: a name); a link talks to few addresses. */
const addressFamilies = new Map<string, number>();

/**
 * Neighbours are mostly numeric addresses: hand them straight back instead of
 * letting dgram ask dns.lookup, which tests the string with a regex and defers
 * every send by a tick. Names still go to dns.lookup.
 */
// dgram passes the family as a number (4 or 6); its types say lookup options.
function numericLookup(address: string, family: LookupOneOptions | number, callback: (error: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  let known = addressFamilies.get(address);
  if (known === undefined) {
    known = isIP(address.split('%')[0]!);
    if (addressFamilies.size >= 4096) addressFamilies.clear();
    addressFamilies.set(address, known);
  }
  if (known !== 0) callback(null, address, known);
  else lookup(address, typeof family === 'number' ? { family } : family, callback);
}
