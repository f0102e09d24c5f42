/**
 * XIDs: a 4-byte principal type and a 20-byte identifier (xia-core `click_xia_xid`),
 * written `TYPE:40-hex` in text. An Xid is immutable and compared by value.
 */
import { createHash } from 'node:crypto';
import { AddressError } from './errors.js';

/** Principal type codes of xia-core's clicknet/xia.h (the type field is big-endian on the wire). */
export const XidType = {
  AD: 0x10,
  HID: 0x11,
  CID: 0x12,
  SID: 0x13,
  IP: 0x14,
} as const;
export type XidTypeName = keyof typeof XidType;
export type XidTypeCode = (typeof XidType)[XidTypeName];

export const XID_ID_LENGTH = 20;
export const XID_WIRE_LENGTH = 24;

const NAME_BY_CODE = new Map<number, XidTypeName>(
  (Object.entries(XidType) as Array<[XidTypeName, XidTypeCode]>).map(([name, code]) => [code, name]),
);

/** xia-core writes the IPv4 principal as `IP:` and sometimes `4ID:`; both are read. */
const TYPE_ALIASES: Record<string, XidTypeName> = { '4ID': 'IP' };

export function xidTypeName(code: number): XidTypeName | undefined {
  return NAME_BY_CODE.get(code);
}

export function parseXidTypeName(text: string): XidTypeCode | undefined {
  const upper = text.toUpperCase();
  const name = (TYPE_ALIASES[upper] ?? upper) as XidTypeName;
  return Object.hasOwn(XidType, name) ? XidType[name] : undefined;
}

const HEX_40 = /^[0-9a-fA-F]{40}$/;
const IPV4_DOTTED = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/**
 * xia-core lets a 4ID be written as a dotted IPv4 address (`IP:192.168.0.1`); the id
 * is then an IPv4-header-shaped pattern with the address in its last four bytes.
 */
function fourIdOf(dotted: string, text: string): Buffer {
  const octets = dotted.split('.').map(Number);
  if (octets.some((o) => o > 255)) throw new AddressError('ERR_XID_PARSE', `XID "${text}" has an invalid IPv4 address`);
  const id = Buffer.alloc(XID_ID_LENGTH);
  id[0] = 0x45;
  id[5] = 0x01;
  id[8] = 0xfa;
  id[9] = 0xfa;
  id.set(octets, 16);
  return id;
}

export class Xid {
  /** Principal type code (0x10 AD, 0x11 HID, ...). */
  readonly type: number;
  /** The 20-byte identifier; never mutated (copied in on construction). */
  readonly id: Buffer;
  private text: string | undefined;

  private constructor(type: number, id: Buffer) {
    this.type = type;
    this.id = id;
  }

  /** Builds an XID from a type code and 20 bytes (copied). */
  static of(type: number, id: Uint8Array): Xid {
    if (!Number.isInteger(type) || type < 0 || type > 0xffffffff) {
      throw new AddressError('ERR_XID_PARSE', `XID type ${type} is not a 32-bit unsigned integer`);
    }
    if (id.length !== XID_ID_LENGTH) {
      throw new AddressError('ERR_XID_PARSE', `XID id must be ${XID_ID_LENGTH} bytes, got ${id.length}`);
    }
    return new Xid(type, Buffer.from(id));
  }

  /** Parses `TYPE:40-hex` (type names of xia-core, case-insensitive). */
  static parse(text: string): Xid {
    const colon = text.indexOf(':');
    if (colon <= 0) throw new AddressError('ERR_XID_PARSE', `XID "${text}" is not of the form TYPE:40-hex`);
    const typeText = text.slice(0, colon);
    const hex = text.slice(colon + 1);
    const type = parseXidTypeName(typeText);
    if (type === undefined) {
      throw new AddressError('ERR_XID_PARSE', `XID "${text}" has unknown principal type "${typeText}"`);
    }
    if (type === XidType.IP && IPV4_DOTTED.test(hex)) return new Xid(type, fourIdOf(hex, text));
    if (!HEX_40.test(hex)) {
      throw new AddressError(
        'ERR_XID_PARSE',
        `XID "${text}" must have exactly 40 hex digits after "${typeText}:", got ${hex.length} characters`,
      );
    }
    return new Xid(type, Buffer.from(hex, 'hex'));
  }

  /** Reads the 24-byte wire form (type big-endian, then id) at `offset`; the id is copied. */
  static read(buffer: Buffer, offset = 0): Xid {
    if (offset < 0 || offset + XID_WIRE_LENGTH > buffer.length) {
      throw new AddressError('ERR_XID_PARSE', `XID at offset ${offset} runs past the ${buffer.length}-byte buffer`);
    }
    return new Xid(buffer.readUInt32BE(offset), Buffer.from(buffer.subarray(offset + 4, offset + XID_WIRE_LENGTH)));
  }

  /** SHA-1 of `data` as an XID of the given type: how HIDs, ADs, SIDs (of keys) and CIDs (of content) are made. */
  static hashOf(type: number, data: Uint8Array): Xid {
    return new Xid(type, createHash('sha1').update(data).digest());
  }

  static random(type: number): Xid {
    const id = Buffer.alloc(XID_ID_LENGTH);
    for (let i = 0; i < XID_ID_LENGTH; i++) id[i] = Math.floor(Math.random() * 256);
    return new Xid(type, id);
  }

  get typeName(): string {
    return xidTypeName(this.type) ?? `0x${this.type.toString(16)}`;
  }

  write(buffer: Buffer, offset = 0): void {
    buffer.writeUInt32BE(this.type, offset);
    this.id.copy(buffer, offset + 4);
  }

  toWire(): Buffer {
    const buffer = Buffer.allocUnsafe(XID_WIRE_LENGTH);
    this.write(buffer, 0);
    return buffer;
  }

  equals(other: Xid): boolean {
    return this.type === other.type && this.id.equals(other.id);
  }

  /** True if the 24 bytes at `offset` of `buffer` are this XID (no allocation). */
  matches(buffer: Buffer, offset: number): boolean {
    return buffer.readUInt32BE(offset) === this.type && this.id.compare(buffer, offset + 4, offset + XID_WIRE_LENGTH) === 0;
  }

  /** Text form as xia-core prints it: type name, colon, 40 lowercase hex digits. */
  toString(): string {
    this.text ??= `${this.typeName}:${this.id.toString('hex')}`;
    return this.text;
  }

  /** A compact key for maps: unique per (type, id). */
  get key(): string {
    return this.toString();
  }

  /** First 8 hex digits, for logs. */
  get short(): string {
    return `${this.typeName}:${this.id.toString('hex', 0, 4)}`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/** The broadcast HID (all F), the destination of beacons. */
export const BROADCAST_HID = Xid.of(XidType.HID, Buffer.alloc(XID_ID_LENGTH, 0xff));

function wellKnownSid(hex: string): Xid {
  return Xid.parse(`SID:${hex}`);
}

/** xia-core's well-known service IDs. */
export const WellKnownSid = {
  XHCP: wellKnownSid('1110000000000000000000000000000000001111'),
  XROUTE: wellKnownSid('1110000000000000000000000000000000001112'),
  NAME_SERVER: wellKnownSid('1110000000000000000000000000000000001113'),
  /** xmig's own: HID-move notices to the router plugin (not an xia-core value). */
  MOBILITY: wellKnownSid('1110000000000000000000000000000000001114'),
  /** xmig's own: where `xmig recv` listens for a migration by default. */
  MIGRATION: wellKnownSid('1110000000000000000000000000000000001115'),
  /** xmig's own: where `xmig disk-target` takes a disk migration's control and NBD streams. */
  DISK: wellKnownSid('1110000000000000000000000000000000001116'),
  /** xmig's own: where `xmig libvirt-proxy target` takes libvirt's proxied connections. */
  LIBVIRT: wellKnownSid('1110000000000000000000000000000000001117'),
} as const;
