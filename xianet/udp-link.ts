/**
 * A link over UDP: one XIP packet per datagram. Neighbours are `host:port`
 * (`[v6addr%scope]:port` for IPv6, link-local included). The segment is either a
 * list of peers (broadcast = a copy to each) or a multicast group (a real LAN or a
 * bridge between network namespaces), or both.
 *
 * This is the forwarding hot path, so it uses node:dgram directly: the promise
 * wrapper would cost an allocation per packet for nothing (see bench/forwarding).
 *
 * Its MTU (the largest XIP packet it sends) is what the interface under it carries
 * in one IP packet: the interface's MTU (configured, or read from the system; the
 * smaller of the two when both are known) less the IP and UDP headers. Loopback
 * keeps its 64 KiB datagrams; a 1500-byte link gets 1472. Nothing larger is sent:
 * no datagram of ours ever relies on IP fragmentation. An optional impairment
 * (link-impairment.ts) loses, delays, reorders, duplicates or rate-limits what it sends.
 *
 * Unicast sends (and what the impairment lets through, when it lets it through) are queued
 * per neighbour for the rest of the event loop's turn and flushed with one sendmmsg and UDP
 * GSO by the native addon (udp-batch.ts); without it (or XMIG_UDP_BATCH=0), one node:dgram
 * send per packet. Broadcasts (the control plane) always go through node:dgram.
 *
 * On receive, with the addon, the socket has UDP_GRO: a run sent with GSO (or one the
 * kernel coalesced on the way in) arrives as one datagram, its XIP packets back to back,
 * instead of being cut into one datagram per packet before our socket sees it — one
 * system call and one JS callback for up to 64 packets. A datagram of one flow's packets,
 * alike but for the last one's payload length (xipRunStride: a GSO run of a chunk
 * response's fragments), goes to the node whole as a run, which it routes once and, when
 * forwarding, sends on whole (sendRun: one GSO message again). Any other the packets' own
 * lengths split (splitXipDatagram); what does not add up is passed on whole, for the node
 * to count as malformed. XMIG_UDP_GRO=0 (or `gro: false`) leaves it off.
 */
import { createSocket, type Socket, type RemoteInfo } from 'node:dgram';
import { lookup, type LookupOneOptions } from 'node:dns';
import { isIP, isIPv6 } from 'node:net';
import { XmigError } from '../shared/errors.js';
import { splitXipDatagram, xipPacketLengthAt, xipRunStride } from '../shared/xip-header.js';
import { socketFd, UdpBatcher, udpBatchAddon } from './udp-batch.js';
import { interfaceMtu, isV6Address, udpPayloadLimit } from './interface-mtu.js';
import type { Link, LinkAddress, LinkReceiver, LinkRunReceiver } from './link.js';
import { LinkImpairment, type ImpairmentConfig } from './link-impairment.js';

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
  /**
   * The IP MTU of the interface (1500 on Ethernet). Default: read from the system for
   * the bind address; if both are known the smaller wins.
   */
  mtu?: number;
  /** Kernel socket buffers, each way: what is in flight when this process pauses (see sizeBuffers). */
  socketBufferBytes?: number;
  /** Loss, delay, reordering, duplication, rate and MTU applied to what this link sends. */
  impairment?: ImpairmentConfig;
  /** Batch unicast sends with the native addon when it is there (udp-batch.ts). Default true; XMIG_UDP_BATCH=0 turns it off everywhere. */
  batch?: boolean;
  /** UDP_GRO on its socket when the addon is there: runs of packets received whole. Default true; XMIG_UDP_GRO=0 turns it off everywhere. */
  gro?: boolean;
}

/** What an impaired link holds until its time comes. */
interface Outgoing {
  packet: Buffer | Buffer[];
  port: number;
  host: string;
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
  /** Largest XIP packet (UDP payload) sent: known exactly once started. */
  mtu: number;
  /** The IP MTU it was derived from, and where that came from. */
  ipMtu: { bytes: number; source: 'config' | 'interface' | 'impairment' | 'default' };
  readonly impairment: LinkImpairment<Outgoing> | undefined;
  private socket: Socket | undefined;
  /** Receives the segment's multicast when the link is bound to one IPv6 address (see startGroupSocket). */
  private groupSocket: Socket | undefined;
  private receiver: LinkReceiver | undefined;
  private runReceiver: LinkRunReceiver | undefined;
  private readonly attachListeners: Array<() => void> = [];
  private peers: SocketAddress[];
  private boundAddress: LinkAddress | undefined;
  /** Parsed neighbour addresses: the forwarding path must not run a regex per packet. */
  private readonly resolved = new Map<LinkAddress, SocketAddress>();
  /**
   * Datagrams the kernel refused to send (e.g. EHOSTUNREACH after a move), datagrams larger
   * than the MTU not sent, and how the rest left: XIP packets in the addon's batches (and its
   * sendmmsg calls), handed to node:dgram when the socket buffer was full, or sent by
   * node:dgram one by one (no addon, multicast, a batcher that refused one). Exported by
   * udp-link-metrics.ts.
   */
  readonly stats = { sendErrors: 0, tooBig: 0, batchFallbacks: 0, batchedDatagrams: 0, batchCalls: 0, dgramPackets: 0, groDatagrams: 0, groPackets: 0, groRuns: 0, runsSent: 0 };
  /** UDP_GRO is on the unicast socket: a datagram may hold several XIP packets (counted in groDatagrams/groPackets). */
  gro = false;
  /** The socket's buffers as the kernel reports them (twice what was set; 0 before start), and why smaller than asked, if so. */
  readonly bufferBytes: { receive: number; send: number; limited?: string } = { receive: 0, send: 0 };
  /** Why not, when the addon is there but GRO is off (the kernel refused it, or it was turned off). */
  groUnavailable: string | undefined;
  /** Unicast sends queued per neighbour and flushed with sendmmsg + UDP GSO (udp-batch.ts); undefined: node:dgram per packet. */
  private batcher: UdpBatcher | undefined;
  /** Why this link sends with node:dgram although the addon loaded (no fd on its socket), if it does. */
  batchUnavailable: string | undefined;

  /** Whether unicast sends go through the addon's batches now (false before start, after stop, or without it). */
  get batching(): boolean {
    return this.batcher !== undefined;
  }
  private readonly v6: boolean;

  constructor(private readonly options: UdpLinkOptions) {
    this.name = options.name;
    this.v6 = isV6Address(options.bindAddress);
    this.peers = (options.peers ?? []).map(parseSocketAddress);
    const impaired = options.impairment ? new LinkImpairment<Outgoing>(options.impairment, options.name, this.transmit) : undefined;
    this.impairment = impaired && (impaired.active || impaired.config.mtu !== undefined) ? impaired : undefined;
    // Until start() has asked the system: the configured MTU, or Ethernet's.
    this.ipMtu = this.chooseMtu(undefined);
    this.mtu = udpPayloadLimit(this.ipMtu.bytes, this.v6);
  }

  private chooseMtu(detected: number | undefined): UdpLink['ipMtu'] {
    const candidates: UdpLink['ipMtu'][] = [];
    if (this.options.mtu !== undefined) candidates.push({ bytes: this.options.mtu, source: 'config' });
    if (detected !== undefined) candidates.push({ bytes: detected, source: 'interface' });
    const segment = this.impairment?.config.mtu;
    if (segment !== undefined) candidates.push({ bytes: segment, source: 'impairment' });
    if (candidates.length === 0) return { bytes: 1500, source: 'default' };
    return candidates.reduce((a, b) => (b.bytes < a.bytes ? b : a));
  }

  get address(): LinkAddress | undefined {
    return this.boundAddress;
  }

  get port(): number | undefined {
    return this.socket?.address().port;
  }

  async start(): Promise<void> {
    this.ipMtu = this.chooseMtu(await interfaceMtu(this.options.bindAddress, this.options.multicastInterface));
    this.mtu = udpPayloadLimit(this.ipMtu.bytes, this.v6);
    const v6 = this.v6;
    const socket = createSocket({ type: v6 ? 'udp6' : 'udp4', reuseAddr: this.options.multicastGroup !== undefined, lookup: numericLookup });
    this.socket = socket;
    socket.on('message', this.onMessage);
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
    if (this.options.socketBufferBytes) this.sizeBuffers(socket, this.options.socketBufferBytes);
    this.bufferBytes.receive = socket.getRecvBufferSize();
    this.bufferBytes.send = socket.getSendBufferSize();
    if (this.options.multicastGroup) {
      socket.addMembership(this.options.multicastGroup, this.options.multicastInterface);
      if (this.options.multicastInterface) socket.setMulticastInterface(this.options.multicastInterface);
      socket.setMulticastLoopback(false);
      if (v6 && !isWildcard(this.options.bindAddress)) await this.startGroupSocket(this.options.multicastGroup, socket.address().port);
    } else if (!v6) {
      socket.setBroadcast(true);
    }
    this.batcher = this.startBatcher(socket);
    this.gro = this.startGro(socket);
    const local = socket.address();
    this.boundAddress = formatSocketAddress(local.address, local.port);
    for (const listener of this.attachListeners) listener();
  }

  /**
   * The batcher for this socket, if the addon is there and wanted. Its fd comes from
   * node:dgram's internals: a Node.js that hides it leaves this link on node:dgram
   * (`batchUnavailable` says why) rather than failing the daemon.
   */
  private startBatcher(socket: Socket): UdpBatcher | undefined {
    const { addon } = udpBatchAddon();
    if (!addon || this.options.batch === false) return undefined;
    try {
      return new UdpBatcher(addon, socket, this.stats, this.onSent);
    } catch (error) {
      this.batchUnavailable = (error as Error).message;
      return undefined;
    }
  }

  /**
   * The socket's buffers, `bytes` each way. SO_RCVBUF (node:dgram's) stops silently at
   * net.core.rmem_max (208 KiB on a stock Debian, 4 MiB here), and a buffer that small
   * overflows whenever this process pauses (a GC, a busy core) while a long path keeps
   * delivering what is in flight. So, where the process may (CAP_NET_ADMIN, as a root
   * daemon has), the addon forces the size past the limit (SO_RCVBUFFORCE, as QUIC
   * servers do); otherwise what the kernel allowed is what `bufferBytes` says, and why.
   */
  private sizeBuffers(socket: Socket, bytes: number): void {
    socket.setRecvBufferSize(bytes);
    socket.setSendBufferSize(bytes);
    // Linux reports twice what was set (the doubling covers its bookkeeping).
    if (socket.getRecvBufferSize() < 2 * bytes || socket.getSendBufferSize() < 2 * bytes) {
      const { addon } = udpBatchAddon();
      if (!addon?.forceBuffers) this.bufferBytes.limited = addon ? 'the addon was built before forceBuffers (node native/udp-batch/build.js)' : 'no UDP addon';
      else {
        try {
          const done = addon.forceBuffers(socketFd(socket), bytes);
          if (done < 0) this.bufferBytes.limited = `SO_RCVBUFFORCE: errno ${-done}`;
        } catch (error) {
          this.bufferBytes.limited = (error as Error).message;
        }
      }
    }
    if (socket.getRecvBufferSize() >= 2 * bytes && socket.getSendBufferSize() >= 2 * bytes) this.bufferBytes.limited = undefined;
  }

  /** UDP_GRO on the socket, if the addon is there and it is wanted (see the file's comment). */
  private startGro(socket: Socket): boolean {
    const { addon } = udpBatchAddon();
    if (!addon) return false;
    if (this.options.gro === false || process.env['XMIG_UDP_GRO'] === '0') {
      this.groUnavailable = 'turned off';
      return false;
    }
    if (typeof addon.enableGro !== 'function') {
      this.groUnavailable = 'the addon was built before enableGro (node native/udp-batch/build.js)';
      return false;
    }
    try {
      const done = addon.enableGro(socketFd(socket));
      if (done < 0) this.groUnavailable = `setsockopt(UDP_GRO): errno ${-done}`;
      return done === 0;
    } catch (error) {
      this.groUnavailable = (error as Error).message;
      return false;
    }
  }

  /**
   * A socket bound to one IPv6 address (say fe80::1%eth0) never sees the group's datagrams:
   * the kernel matches their destination, the group, against the bound address. One bound to
   * "::" sees the group arriving on every interface of the machine, so two such links of a
   * router on two segments would each hear both. A second socket bound to the group with this
   * link's scope ("ff02::c0de%eth0") gets the segment's multicast, and only this segment's.
   */
  private async startGroupSocket(group: string, port: number): Promise<void> {
    const scope = this.options.bindAddress.split('%')[1] ?? this.options.multicastInterface?.split('%')[1];
    const socket = createSocket({ type: 'udp6', reuseAddr: true });
    this.groupSocket = socket;
    socket.on('message', this.onMessage);
    socket.on('error', () => undefined); // receive-only: nothing sent, nothing to count
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, scope ? `${group}%${scope}` : group, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.addMembership(group, this.options.multicastInterface);
  }

  private readonly onMessage = (message: Buffer, remote: RemoteInfo): void => {
    const receiver = this.receiver;
    if (!receiver) return;
    const from = formatSocketAddress(remote.address, remote.port);
    // The common case, one packet in the datagram: no split, no array (the forwarding hot path).
    if (!this.gro || xipPacketLengthAt(message) === message.length) return receiver(message, from);
    // One flow's run (a GSO sender's packets to one neighbour, alike but for the payload
    // length): to the node whole, which routes it once.
    const stride = this.runReceiver ? xipRunStride(message) : 0;
    if (stride > 0) {
      this.stats.groDatagrams++;
      this.stats.groPackets += Math.ceil(message.length / stride);
      this.stats.groRuns++;
      return this.runReceiver!(message, stride, from);
    }
    const packets = splitXipDatagram(message);
    if (packets.length > 1) {
      this.stats.groDatagrams++;
      this.stats.groPackets += packets.length;
    }
    for (const packet of packets) receiver(packet, from);
  };

  async stop(): Promise<void> {
    const sockets = [this.socket, this.groupSocket];
    this.socket = undefined;
    this.groupSocket = undefined;
    this.boundAddress = undefined;
    this.impairment?.stop();
    // What is queued goes out before the socket closes, as node:dgram's queue would.
    this.batcher?.flush();
    this.batcher = undefined;
    this.gro = false;
    for (const socket of sockets) if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  send(packet: Buffer, to: LinkAddress, tail?: Buffer): void {
    if (!this.socket) return;
    const peer = this.peerOf(to);
    const size = packet.length + (tail?.length ?? 0);
    if (size > this.mtu) {
      this.stats.tooBig++;
      return;
    }
    // A tail goes out with its header in one sendmsg (an iovec of two): no copy here.
    const data = tail ? [packet, tail] : packet;
    if (this.impairment) this.impairment.submit({ packet: data, port: peer.port, host: peer.host }, size);
    else if (!this.batcher?.enqueue(data, size, peer.port, peer.host)) {
      this.stats.dgramPackets++;
      this.socket.send(data, peer.port, peer.host, this.onSent);
    }
  }

  /**
   * A run (LinkRunReceiver) to `to` as it stands: one GSO message through the batcher;
   * packet by packet where the batcher is not there or an impairment decides per packet.
   */
  sendRun(run: Buffer, stride: number, to: LinkAddress): void {
    if (!this.socket) return;
    if (stride > this.mtu) {
      this.stats.tooBig += Math.ceil(run.length / stride);
      return;
    }
    if (this.batcher && !this.impairment) {
      const peer = this.peerOf(to);
      if (this.batcher.enqueueRun(run, stride, peer.port, peer.host)) {
        this.stats.runsSent++;
        return;
      }
    }
    for (let at = 0; at < run.length; at += stride) this.send(run.subarray(at, Math.min(run.length, at + stride)), to);
  }

  /** A neighbour's address parsed once (a link talks to few; the map is bounded). */
  private peerOf(to: LinkAddress): SocketAddress {
    let peer = this.resolved.get(to);
    if (!peer) {
      peer = parseSocketAddress(to);
      if (this.resolved.size >= 4096) this.resolved.clear();
      this.resolved.set(to, peer);
    }
    return peer;
  }

    broadcast(packet: Buffer): void {
    const socket = this.socket;
    if (!socket) return;
    if (packet.length > this.mtu) {
      this.stats.tooBig++;
      return;
    }
    for (const peer of this.peers) this.sendTo(packet, peer.port, peer.host);
    if (this.options.multicastGroup) this.sendTo(packet, this.options.port, this.options.multicastGroup);
  }

  private sendTo(packet: Buffer, port: number, host: string): void {
    if (this.impairment) this.impairment.submit({ packet, port, host }, packet.length);
    else if (this.socket) {
      this.stats.dgramPackets++;
      this.socket.send(packet, port, host, this.onSent);
    }
  }

  /** An impaired datagram's time has come: batched like any other (impairment first, then the batch). */
  private readonly transmit = (out: Outgoing): void => {
    const size = Array.isArray(out.packet) ? out.packet.reduce((n, b) => n + b.length, 0) : out.packet.length;
    if (this.batcher?.enqueue(out.packet, size, out.port, out.host)) return;
    if (!this.socket) return;
    this.stats.dgramPackets++;
    this.socket.send(out.packet, out.port, out.host, this.onSent);
  };

  private readonly onSent = (error: Error | null): void => {
    if (error) this.stats.sendErrors++;
  };

  /** Puts this interface on another segment: new neighbours, same socket. */
  setPeers(peers: string[]): void {
    this.peers = peers.map(parseSocketAddress);
    for (const listener of this.attachListeners) listener();
  }

  onReceive(receiver: LinkReceiver, runs?: LinkRunReceiver): void {
    this.receiver = receiver;
    this.runReceiver = runs;
  }

  onAttach(listener: () => void): void {
    this.attachListeners.push(listener);
  }
}

function isWildcard(address: string): boolean {
  const host = address.split('%')[0]!;
  return host === '::' || host === '0.0.0.0';
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
