/**
 * In-memory segments: a shared medium that any number of links attach to, with
 * optional impairments (loss, reordering, duplication, delay, a rate with a drop-tail
 * queue, outage) for tests.
 * Delivery is asynchronous and batched per event-loop turn, like a real network:
 * a send never re-enters the receiver.
 */
import type { Link, LinkAddress, LinkReceiver } from './link.js';
import { seededRandom } from './link-impairment.js';

export interface Impairments {
  /** Probability that a packet is lost. */
  lossRate?: number;
  /** Probability that a packet is held back and delivered after later ones. */
  reorderRate?: number;
  /** Probability that a packet is delivered twice. */
  duplicateRate?: number;
  /** Probability that a packet's last byte is flipped (corruption past any checksum). */
  corruptRate?: number;
  /** Sees (and may alter) every packet that crosses the segment: tests' man in the middle. */
  tamper?: (packet: Buffer) => void;
  /** Fixed one-way delay in ms (0: next turn of the event loop). */
  delayMs?: number;
  /** A bottleneck: packets leave one after another at this rate (Mbit/s), in order (no reordering or duplication then)... */
  rateMbps?: number;
  /** ... from a drop-tail queue this long at that rate (default 100 ms). */
  queueMs?: number;
  /** While true, every packet is lost. */
  down?: boolean;
  /** A packet this says yes to is lost: an outage of some traffic only. */
  drop?: (packet: Buffer) => boolean;
  /** Extra ms this packet is held back (0 or undefined: none), on top of `delayMs`: a scripted reordering. */
  holdMs?: (packet: Buffer) => number | undefined;
  /** A packet this says yes to is delivered twice: a scripted duplicate. */
  duplicate?: (packet: Buffer) => boolean;
}

export { seededRandom };

interface Delivery {
  to: MemoryLink;
  packet: Buffer;
  from: LinkAddress;
}

export class MemorySegment {
  readonly name: string;
  impairments: Impairments;
  private readonly members = new Map<LinkAddress, MemoryLink>();
  private queue: Delivery[] = [];
  private held: Delivery[] = [];
  private scheduled = false;
  private nextAddress = 1;
  private readonly random: () => number;
  /** When the rate-limited transmitter is free again (ms, performance.now()). */
  private transmitterFree = 0;
  /** Packets handed to the segment, and how many the impairments dropped. */
  readonly stats = { sent: 0, dropped: 0, corrupted: 0 };

  constructor(name: string, options: { impairments?: Impairments; seed?: number } = {}) {
    this.name = name;
    this.impairments = options.impairments ?? {};
    this.random = seededRandom(options.seed ?? 1);
  }

  /** Attaches a link and gives it an address unique on this segment. */
  join(link: MemoryLink): LinkAddress {
    const address = `${this.name}#${this.nextAddress++}`;
    this.members.set(address, link);
    return address;
  }

  leave(address: LinkAddress): void {
    this.members.delete(address);
  }

  get size(): number {
    return this.members.size;
  }

  transmit(packet: Buffer, from: LinkAddress, to: LinkAddress | undefined): void {
    if (to === undefined) {
      for (const [address, member] of this.members) {
        // Every receiver may rewrite its packet in place (last, hop limit): each gets a copy.
        if (address !== from) this.enqueue({ to: member, packet: Buffer.from(packet), from });
      }
      return;
    }
    const member = this.members.get(to);
    if (member) this.enqueue({ to: member, packet, from });
  }

  private enqueue(delivery: Delivery): void {
    this.stats.sent++;
    const { lossRate = 0, reorderRate = 0, duplicateRate = 0, corruptRate = 0, delayMs = 0, down = false } = this.impairments;
    if (down || (lossRate > 0 && this.random() < lossRate) || this.impairments.drop?.(delivery.packet)) {
      this.stats.dropped++;
      return;
    }
    if (corruptRate > 0 && delivery.packet.length > 0 && this.random() < corruptRate) {
      delivery.packet[delivery.packet.length - 1]! ^= 0xff;
      this.stats.corrupted++;
    }
    this.impairments.tamper?.(delivery.packet);
    if (this.impairments.rateMbps !== undefined) {
      this.throughBottleneck(delivery, this.impairments.rateMbps, this.impairments.queueMs ?? 100, delayMs);
      return;
    }
    const copies = this.impairments.duplicate?.(delivery.packet) || (duplicateRate > 0 && this.random() < duplicateRate) ? 2 : 1;
    const holdMs = this.impairments.holdMs?.(delivery.packet) ?? 0;
    for (let i = 0; i < copies; i++) {
      const item = i === 0 ? delivery : { ...delivery, packet: Buffer.from(delivery.packet) };
      if (holdMs > 0) setTimeout(() => this.deliver([item]), delayMs + holdMs);
      else if (reorderRate > 0 && this.random() < reorderRate) this.held.push(item);
      else this.queue.push(item);
    }
    if (holdMs > 0) return;
    if (delayMs > 0) {
      const batch = this.takeBatch();
      setTimeout(() => this.deliver(batch), delayMs);
    } else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.deliver(this.takeBatch());
      });
    }
  }

  /** One packet through the rate-limited queue: dropped if the queue is past `queueMs`, else delivered once serialised (and delayed). */
  private throughBottleneck(delivery: Delivery, rateMbps: number, queueMs: number, delayMs: number): void {
    const t = performance.now();
    const start = Math.max(t, this.transmitterFree);
    if (start - t > queueMs) {
      this.stats.dropped++;
      return;
    }
    this.transmitterFree = start + (delivery.packet.length * 8) / (rateMbps * 1000);
    setTimeout(() => this.deliver([delivery]), this.transmitterFree + delayMs - t);
  }

  private takeBatch(): Delivery[] {
    const batch = this.queue;
    this.queue = [];
    // Held-back packets go out after the packets sent later than them: reordering.
    if (this.held.length > 0 && (batch.length > 0 || this.random() < 0.5)) {
      batch.push(...this.held);
      this.held = [];
    }
    return batch;
  }

  private deliver(batch: Delivery[]): void {
    for (const { to, packet, from } of batch) {
      if (to.address !== undefined && this.members.get(to.address) === to) to.receive(packet, from);
    }
    if (this.held.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.deliver(this.takeBatch());
      });
    }
  }
}

export class MemoryLink implements Link {
  readonly name: string;
  readonly mtu: number;
  private segment: MemorySegment | undefined;
  private ownAddress: LinkAddress | undefined;
  private receiver: LinkReceiver | undefined;
  private readonly attachListeners: Array<() => void> = [];

  constructor(name: string, options: { mtu?: number; segment?: MemorySegment } = {}) {
    this.name = name;
    this.mtu = options.mtu ?? 65535;
    if (options.segment) this.attach(options.segment);
  }

  get address(): LinkAddress | undefined {
    return this.ownAddress;
  }

  get attachedTo(): MemorySegment | undefined {
    return this.segment;
  }

  /** Moves this interface onto `segment` (leaving its current one): a VM landing on another host. */
  attach(segment: MemorySegment): void {
    this.detach();
    this.segment = segment;
    this.ownAddress = segment.join(this);
    for (const listener of this.attachListeners) listener();
  }

  detach(): void {
    if (this.segment && this.ownAddress !== undefined) this.segment.leave(this.ownAddress);
    this.segment = undefined;
    this.ownAddress = undefined;
  }

  send(packet: Buffer, to: LinkAddress, tail?: Buffer): void {
    // Receivers keep and rewrite what they get: a tail (a view of someone's data) is joined.
    if (this.segment && this.ownAddress !== undefined) this.segment.transmit(tail ? Buffer.concat([packet, tail]) : packet, this.ownAddress, to);
  }

  broadcast(packet: Buffer): void {
    if (this.segment && this.ownAddress !== undefined) this.segment.transmit(packet, this.ownAddress, undefined);
  }

  onReceive(receiver: LinkReceiver): void {
    this.receiver = receiver;
  }

  onAttach(listener: () => void): void {
    this.attachListeners.push(listener);
  }

  /** Called by the segment. */
  receive(packet: Buffer, from: LinkAddress): void {
    this.receiver?.(packet, from);
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    this.detach();
  }
}
