/**
 * Forwarding benchmark: packets per second through one router, source → R → sink,
 * on memory links and on UDP links over loopback, in one run. The UDP case is run
 * twice, receiving with node:dgram directly (what UdpLink does) and through
 * dgram-as-promised's async iterator, to show what the wrapper would cost on the
 * hot path.
 */
import { DgramAsPromised } from 'dgram-as-promised';
import { Dag } from '../shared/dag.js';
import { encodeXip, NextHeader } from '../shared/xip-header.js';
import { Xid, XidType } from '../shared/xid.js';
import type { Link, LinkAddress, LinkReceiver } from '../xianet/link.js';
import { MemoryLink, MemorySegment } from '../xianet/memory-link.js';
import { TransportType } from '../xianet/transport-header.js';
import { formatSocketAddress, parseSocketAddress, UdpLink } from '../xianet/udp-link.js';
import { staticPath } from '../test/support/static-path.js';

export interface ForwardingResult {
  bench: 'forwarding';
  link: string;
  payloadBytes: number;
  packetBytes: number;
  sent: number;
  delivered: number;
  seconds: number;
  routerPps: number;
  mbitPerSecond: number;
}

/** A UDP link that receives through dgram-as-promised's async iterator (bench only). */
class PromisedUdpLink implements Link {
  readonly mtu = 65000;
  private socket = DgramAsPromised.createSocket('udp4');
  private receiver: LinkReceiver | undefined;
  private boundAddress: string | undefined;
  constructor(readonly name: string) {}
  get address(): LinkAddress | undefined {
    return this.boundAddress;
  }
  async start(): Promise<void> {
    const local = await this.socket.bind(0, '127.0.0.1');
    this.boundAddress = formatSocketAddress(local.address, local.port);
    void (async () => {
      for await (const packet of this.socket) this.receiver?.(packet.msg, formatSocketAddress(packet.rinfo.address, packet.rinfo.port));
    })();
  }
  async stop(): Promise<void> {
    await this.socket.close();
  }
  send(packet: Buffer, to: LinkAddress, tail?: Buffer): void {
    const { host, port } = parseSocketAddress(to);
    void this.socket.send(tail ? Buffer.concat([packet, tail]) : packet, port, host);
  }
  broadcast(): void {}
  onReceive(receiver: LinkReceiver): void {
    this.receiver = receiver;
  }
  onAttach(): void {}
}

type LinkFactory = (name: string) => Link;

async function measure(label: string, makeLink: LinkFactory, payloadBytes: number, seconds: number): Promise<ForwardingResult> {
  const links = {
    s: makeLink('s0'),
    r0: makeLink('r0'),
    r1: makeLink('r1'),
    d: makeLink('d0'),
  };
  if (links.s instanceof MemoryLink) {
    const left = new MemorySegment('left');
    const right = new MemorySegment('right');
    (links.s as MemoryLink).attach(left);
    (links.r0 as MemoryLink).attach(left);
    (links.r1 as MemoryLink).attach(right);
    (links.d as MemoryLink).attach(right);
  }
  const { source, router, sink } = await staticPath(links);

  const sid = Xid.random(XidType.SID);
  let delivered = 0;
  sink.bind(sid, () => delivered++);
  const dst = Dag.chain(sink.hid, sid);
  const payload = Buffer.alloc(payloadBytes + 1, 0x5a);
  payload[0] = TransportType.DGRAM;
  const template = encodeXip({ dst, src: source.address(), nextHeader: NextHeader.TRANSPORT, payload });

  // Keep a bounded number of packets in flight so UDP buffers are not simply overrun.
  const window = 256;
  let sent = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      if (performance.now() >= deadline) return resolve();
      const budget = window - (sent - delivered);
      for (let i = 0; i < Math.min(budget, 64); i++) {
        source.originate(Buffer.from(template));
        sent++;
      }
      setImmediate(pump);
    };
    pump();
  });
  await new Promise((r) => setTimeout(r, 100));
  const elapsed = (performance.now() - started) / 1000;
  for (const node of [source, router, sink]) await node.stop();
  return {
    bench: 'forwarding',
    link: label,
    payloadBytes,
    packetBytes: template.length,
    sent,
    delivered,
    seconds: Math.round(elapsed * 1000) / 1000,
    routerPps: Math.round(router.counters.forwarded / elapsed),
    mbitPerSecond: Math.round((delivered * template.length * 8) / elapsed / 1e6),
  };
}

export async function runForwardingBench(options: { seconds?: number; payloadBytes?: number } = {}): Promise<ForwardingResult[]> {
  const seconds = options.seconds ?? 3;
  const payloadBytes = options.payloadBytes ?? 1000;
  return [
    await measure('memory', (name) => new MemoryLink(name), payloadBytes, seconds),
    await measure('udp (node:dgram)', (name) => new UdpLink({ name, bindAddress: '127.0.0.1', port: 0, socketBufferBytes: 8 << 20 }), payloadBytes, seconds),
    await measure('udp (dgram-as-promised receive)', (name) => new PromisedUdpLink(name), payloadBytes, seconds),
  ];
}
