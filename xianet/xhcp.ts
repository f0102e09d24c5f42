/**
 * XHCP beacons (xia-core daemons/xhcp): how a router tells the hosts on a link
 * which AD they are in, who their gateway is and where the name server is.
 *
 *   seq_num      u32 (little-endian: xia-core copies its x86 struct as is)
 *   num_entries  u16 (little-endian)
 *   entries      type i16 (little-endian), then NUL-terminated text
 *
 * xia-core's entry types are 1 AD, 2 gateway HID, 3 gateway 4ID, 4 name-server DAG.
 * xmig adds types an xia-core client skips: the AD's public key, a timestamp, the
 * router interface the beacon left by (so a host can tell that it changed links
 * without changing router), and last a signature by the AD key over every byte
 * before the signature entry. A solicitation is an XHCP packet with a SOLICIT entry.
 */
import { Dag } from '../shared/dag.js';
import { MalformedPacketError } from '../shared/errors.js';
import { type Identity, verifySignature, xidOfKey } from '../shared/identity.js';
import { Xid, XidType } from '../shared/xid.js';

export const XhcpEntry = {
  AD: 1,
  GATEWAY_HID: 2,
  GATEWAY_4ID: 3,
  NAME_SERVER_DAG: 4,
  AD_KEY: 100,
  TIMESTAMP: 101,
  LINK_ID: 102,
  SOLICIT: 103,
  SIGNATURE: 110,
} as const;

export interface Beacon {
  seq: number;
  ad: Xid;
  gatewayHid: Xid;
  gateway4id?: Xid;
  nameServer?: Dag;
  /** Wall-clock ms when sent (xmig). */
  timestamp?: number;
  /** Identifies the router interface it was sent on (xmig). */
  linkId?: string;
}

export interface ReceivedBeacon extends Beacon {
  /** True if it carried the AD key and a signature that verifies and the key hashes to the AD. */
  authenticated: boolean;
  /** It carried a signature that was not checked (the receiver's verification budget said no). */
  unverified?: boolean;
}

export interface XhcpDecodeOptions {
  /** Asked before a signature is checked (a per-interface budget); false leaves the beacon unverified. */
  mayVerify?: () => boolean;
}

export interface Solicit {
  hid: Xid;
}

const HEADER = 6;

function entry(type: number, text: string): Buffer {
  const data = Buffer.from(text, 'utf8');
  const buffer = Buffer.alloc(2 + data.length + 1);
  buffer.writeInt16LE(type, 0);
  data.copy(buffer, 2);
  return buffer;
}

function packet(seq: number, entries: Buffer[]): Buffer {
  const header = Buffer.alloc(HEADER);
  header.writeUInt32LE(seq >>> 0, 0);
  header.writeUInt16LE(entries.length, 4);
  return Buffer.concat([header, ...entries]);
}

/** Encodes a beacon; with the AD's identity it is signed (and carries the AD key). */
export function encodeBeacon(beacon: Beacon, adIdentity?: Identity): Buffer {
  const entries = [entry(XhcpEntry.AD, beacon.ad.toString()), entry(XhcpEntry.GATEWAY_HID, beacon.gatewayHid.toString())];
  if (beacon.gateway4id) entries.push(entry(XhcpEntry.GATEWAY_4ID, beacon.gateway4id.toString()));
  if (beacon.nameServer) entries.push(entry(XhcpEntry.NAME_SERVER_DAG, beacon.nameServer.toDagString()));
  if (beacon.timestamp !== undefined) entries.push(entry(XhcpEntry.TIMESTAMP, String(beacon.timestamp)));
  if (beacon.linkId !== undefined) entries.push(entry(XhcpEntry.LINK_ID, beacon.linkId));
  if (!adIdentity) return packet(beacon.seq, entries);
  entries.push(entry(XhcpEntry.AD_KEY, adIdentity.publicKey.toString('hex')));
  // The signed bytes are the packet as it will be, up to the signature entry, with
  // num_entries already counting that entry.
  const unsigned = packet(beacon.seq, [...entries, Buffer.alloc(0)]);
  const signature = adIdentity.sign(unsigned);
  return Buffer.concat([unsigned, entry(XhcpEntry.SIGNATURE, signature.toString('hex'))]);
}

export function encodeSolicit(hid: Xid): Buffer {
  return packet(0, [entry(XhcpEntry.SOLICIT, hid.toString())]);
}

interface RawEntry {
  type: number;
  text: string;
  start: number;
}

function readEntries(buffer: Buffer): { seq: number; entries: RawEntry[] } {
  if (buffer.length < HEADER) throw new MalformedPacketError(`XHCP packet of ${buffer.length} bytes has no header`);
  const seq = buffer.readUInt32LE(0);
  const count = buffer.readUInt16LE(4);
  const entries: RawEntry[] = [];
  let offset = HEADER;
  for (let i = 0; i < count; i++) {
    if (offset + 2 > buffer.length) throw new MalformedPacketError(`XHCP entry ${i} of ${count} runs past the end`);
    const type = buffer.readInt16LE(offset);
    const end = buffer.indexOf(0, offset + 2);
    if (end < 0) throw new MalformedPacketError(`XHCP entry ${i} (type ${type}) is not NUL-terminated`);
    entries.push({ type, text: buffer.toString('utf8', offset + 2, end), start: offset });
    offset = end + 1;
  }
  return { seq, entries };
}

function parseXid(text: string, what: string, type: number): Xid {
  let xid: Xid;
  try {
    xid = Xid.parse(text);
  } catch (error) {
    throw new MalformedPacketError(`XHCP ${what}: ${(error as Error).message}`);
  }
  if (xid.type !== type) throw new MalformedPacketError(`XHCP ${what} "${text}" has the wrong principal type`);
  return xid;
}

export type XhcpMessage = { kind: 'beacon'; beacon: ReceivedBeacon } | { kind: 'solicit'; solicit: Solicit };

/** Decodes a beacon or a solicitation; verifies a beacon's signature when it has one. */
export function decodeXhcp(buffer: Buffer, options: XhcpDecodeOptions = {}): XhcpMessage {
  const { seq, entries } = readEntries(buffer);
  const first = (type: number): RawEntry | undefined => entries.find((e) => e.type === type);
  const solicit = first(XhcpEntry.SOLICIT);
  if (solicit) return { kind: 'solicit', solicit: { hid: parseXid(solicit.text, 'solicit HID', XidType.HID) } };

  const ad = first(XhcpEntry.AD);
  const gateway = first(XhcpEntry.GATEWAY_HID);
  if (!ad || !gateway) throw new MalformedPacketError('XHCP beacon lacks its AD or gateway HID entry');
  const beacon: ReceivedBeacon = {
    seq,
    ad: parseXid(ad.text, 'AD', XidType.AD),
    gatewayHid: parseXid(gateway.text, 'gateway HID', XidType.HID),
    authenticated: false,
  };
  const fourId = first(XhcpEntry.GATEWAY_4ID);
  if (fourId) beacon.gateway4id = parseXid(fourId.text, 'gateway 4ID', XidType.IP);
  const ns = first(XhcpEntry.NAME_SERVER_DAG);
  if (ns) {
    try {
      beacon.nameServer = Dag.parse(ns.text);
    } catch (error) {
      throw new MalformedPacketError(`XHCP name-server DAG: ${(error as Error).message}`);
    }
  }
  const timestamp = first(XhcpEntry.TIMESTAMP);
  if (timestamp) {
    const value = Number(timestamp.text);
    if (!Number.isSafeInteger(value)) throw new MalformedPacketError(`XHCP timestamp "${timestamp.text}" is not a number`);
    beacon.timestamp = value;
  }
  const linkId = first(XhcpEntry.LINK_ID);
  if (linkId) beacon.linkId = linkId.text;

  const key = first(XhcpEntry.AD_KEY);
  const signature = first(XhcpEntry.SIGNATURE);
  if (key && signature && signature === entries[entries.length - 1]) {
    if (options.mayVerify && !options.mayVerify()) {
      beacon.unverified = true;
      return { kind: 'beacon', beacon };
    }
    const publicKey = Buffer.from(key.text, 'hex');
    const signatureBytes = Buffer.from(signature.text, 'hex');
    const signed = buffer.subarray(0, signature.start);
    beacon.authenticated =
      xidOfKey(XidType.AD, publicKey).equals(beacon.ad) && verifySignature(publicKey, signed, signatureBytes);
  }
  return { kind: 'beacon', beacon };
}
