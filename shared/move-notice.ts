/**
 * The HID-move notice: a VM's signed statement that its HID now lives behind
 * another gateway. Routers rewrite routes on its word alone, so it proves itself:
 * the enclosed key must hash to the HID, the signature must verify, the timestamp
 * must be fresh and the sequence number higher than any accepted before for that
 * HID (a replayed or reordered notice loses, as in EVPN MAC mobility).
 *
 * Body (big-endian):
 *   hid(24) newAd(24) newRouterHid(24) newLinkId(str) oldAd(24) oldRouterHid(24)
 *   oldLinkId(str) seq(u64) timestamp(u64, ms)
 *
 * The acknowledgement is signed by the router that accepted it.
 */
import { MalformedPacketError, SignatureError } from './errors.js';
import type { Identity } from './identity.js';
import { openMessage, peekMessage, sealMessage, SignedKind, type OpenedMessage } from './signed-message.js';
import { WireReader, WireWriter } from './wire.js';
import { XidType, type Xid } from './xid.js';

export interface MoveNotice {
  hid: Xid;
  newAd: Xid;
  newRouterHid: Xid;
  /** The beacon link id the VM now hears (which interface of the new gateway). */
  newLinkId: string;
  oldAd: Xid;
  oldRouterHid: Xid;
  oldLinkId: string;
  seq: number;
  timestamp: number;
}

export interface MoveAck {
  hid: Xid;
  seq: number;
  routerHid: Xid;
}

export function sealMoveNotice(notice: MoveNotice, vm: Identity): Buffer {
  const body = new WireWriter(256)
    .xid(notice.hid)
    .xid(notice.newAd)
    .xid(notice.newRouterHid)
    .string(notice.newLinkId)
    .xid(notice.oldAd)
    .xid(notice.oldRouterHid)
    .string(notice.oldLinkId)
    .u64(notice.seq)
    .u64(notice.timestamp)
    .finish();
  return sealMessage(vm, SignedKind.MOVE_NOTICE, body);
}

function expectType(xid: Xid, type: number, field: string): Xid {
  if (xid.type !== type) throw new MalformedPacketError(`move notice: ${field} ${xid} has the wrong principal type`);
  return xid;
}

function readNotice(body: Buffer): MoveNotice {
  const reader = new WireReader(body, 'move notice');
  const notice: MoveNotice = {
    hid: expectType(reader.xid('hid'), XidType.HID, 'hid'),
    newAd: expectType(reader.xid('new AD'), XidType.AD, 'new AD'),
    newRouterHid: expectType(reader.xid('new router'), XidType.HID, 'new router'),
    newLinkId: reader.string('new link id'),
    oldAd: expectType(reader.xid('old AD'), XidType.AD, 'old AD'),
    oldRouterHid: expectType(reader.xid('old router'), XidType.HID, 'old router'),
    oldLinkId: reader.string('old link id'),
    seq: reader.u64('seq'),
    timestamp: reader.u64('timestamp'),
  };
  reader.end();
  return notice;
}

/**
 * Reads a notice WITHOUT checking its signature: only for cheap screening (is it
 * fresh, is its sequence new?) before the expensive verification. Never act on it.
 */
export function peekMoveNotice(sealed: Buffer): MoveNotice {
  let body: Buffer;
  try {
    body = peekMessage(sealed, SignedKind.MOVE_NOTICE).body;
  } catch (error) {
    throw new MalformedPacketError(`move notice: ${(error as Error).message}`);
  }
  return readNotice(body);
}

/** Decodes and checks key and signature (not freshness or sequence: that is the receiver's state). */
export function openMoveNotice(sealed: Buffer): { notice: MoveNotice; opened: OpenedMessage } {
  const opened = openMessage(sealed, { kind: SignedKind.MOVE_NOTICE });
  const notice = readNotice(opened.body);
  // The claim that matters: the key that signed is the key the HID is the hash of.
  if (!opened.signer(XidType.HID).equals(notice.hid)) {
    throw new SignatureError('key-mismatch', `the notice's key does not hash to ${notice.hid}`);
  }
  return { notice, opened };
}

export function sealMoveAck(ack: MoveAck, router: Identity): Buffer {
  return sealMessage(router, SignedKind.MOVE_ACK, new WireWriter(64).xid(ack.hid).u64(ack.seq).xid(ack.routerHid).finish());
}

function readAck(body: Buffer): MoveAck {
  const reader = new WireReader(body, 'move ack');
  const ack: MoveAck = { hid: reader.xid('hid'), seq: reader.u64('seq'), routerHid: reader.xid('router') };
  reader.end();
  return ack;
}

/** Reads an ack WITHOUT checking its signature: to see whether anyone waits for it before verifying. */
export function peekMoveAck(sealed: Buffer): MoveAck {
  let body: Buffer;
  try {
    body = peekMessage(sealed, SignedKind.MOVE_ACK).body;
  } catch (error) {
    throw new MalformedPacketError(`move ack: ${(error as Error).message}`);
  }
  return readAck(body);
}

export function openMoveAck(sealed: Buffer): MoveAck {
  const opened = openMessage(sealed, { kind: SignedKind.MOVE_ACK });
  const ack = readAck(opened.body);
  if (!opened.signer(XidType.HID).equals(ack.routerHid)) {
    throw new SignatureError('key-mismatch', `the ack's key does not hash to ${ack.routerHid}`);
  }
  return ack;
}
