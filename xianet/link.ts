/**
 * A link is one interface of a node onto a segment: the in-memory segment of the
 * tests and the one-process testbed, or a UDP socket of a real deployment. The node
 * sees only this interface, so the same forwarding code runs over either.
 */

/** A neighbour's address on the segment: opaque to the node (e.g. "10.0.0.2:7000"). */
export type LinkAddress = string;

export interface LinkReceiver {
  /** One XIP packet from `from`. The buffer is the receiver's to keep or modify. */
  (packet: Buffer, from: LinkAddress): void;
}

/**
 * A run: XIP packets back to back in one buffer (a UDP GRO datagram), each `stride` bytes
 * long but the last (which may be shorter), their headers alike but for the payload
 * length (the link checked: sameXipHeaders). The buffer is the receiver's, as above.
 */
export interface LinkRunReceiver {
  (run: Buffer, stride: number, from: LinkAddress): void;
}

export interface Link {
  /** Human name for logs and metrics ("eth0", "to-R2"). */
  readonly name: string;
  /** Largest XIP packet this link carries. */
  readonly mtu: number;
  /** This interface's own address on its segment (undefined while detached). */
  readonly address: LinkAddress | undefined;
  /**
   * Sends one packet to a neighbour; takes ownership of the buffers. With `tail`
   * the packet is `packet` then `tail` (a header built for a payload that stays
   * where it is, e.g. a slice of a stored chunk), sent without joining them first.
   */
  send(packet: Buffer, to: LinkAddress, tail?: Buffer): void;
  /** Sends one packet to every other interface on the segment. */
  broadcast(packet: Buffer): void;
  /**
   * Sets the function that receives packets (one receiver per link: its node), and the one
   * that takes a run of them whole; a link without `runs` (or that has none) hands every
   * packet to `receiver`.
   */
  onReceive(receiver: LinkReceiver, runs?: LinkRunReceiver): void;
  /**
   * Sends a run (see LinkRunReceiver) to one neighbour as it is: with UDP GSO one message
   * for all of it. Optional: without it, a node sends each packet.
   */
  sendRun?(run: Buffer, stride: number, to: LinkAddress): void;
  /** Called when the link is re-attached to another segment (what a migration does). */
  onAttach(listener: () => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}
