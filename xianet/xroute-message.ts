/**
 * Messages on SID_XROUTE between neighbours, in xia-core xrouted's text framing
 * (`type^field^field^`): HELLO (0) announces a node's AD and HID to its link,
 * HOST_REGISTER (2) asks the gateway to route a HID to the sender. xmig appends one
 * field, `xmig1:` + base64 of a signed message by the sender's HID key, and only
 * acts on messages whose signature holds; xia-core's xrouted reads the fields it
 * knows and ignores the rest. REGISTER_ACK (3) is xmig's own.
 */
import { MalformedPacketError, SignatureError } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import { xidOfKey } from '../shared/identity.js';
import { openMessage, peekMessage, sealMessage, SignedKind } from '../shared/signed-message.js';
import { WireReader, WireWriter } from '../shared/wire.js';
import type { Xid} from '../shared/xid.js';
import { XidType } from '../shared/xid.js';

export const XrouteType = {
  HELLO: 0,
  LSA: 1,
  HOST_REGISTER: 2,
  REGISTER_ACK: 3,
  /** xmig's own: a HID has moved away from this link (carries the VM's signed move notice). */
  HID_MOVED: 4,
} as const;

const EXTENSION = 'xmig1:';

export interface Hello {
  hid: Xid;
  ad: Xid | undefined;
  role: 'router' | 'host';
  /** The sender's interface number, so a neighbour can tell two links of one router apart. */
  port: number;
  timestamp: number;
}

export interface HostRegister {
  hid: Xid;
  /** The router this registration is for; others ignore it. */
  gatewayHid: Xid;
  ad: Xid;
  /** The beacon's link id the host heard (which router interface it is behind). */
  linkId: string;
  /** Increases with every registration of this HID; older ones lose. */
  seq: number;
  timestamp: number;
}

export interface RegisterAck {
  hid: Xid;
  gatewayHid: Xid;
  seq: number;
}

export type XrouteMessage =
  | { type: typeof XrouteType.HID_MOVED; notice: Buffer }
  | { type: typeof XrouteType.HELLO; hello: Hello }
  | { type: typeof XrouteType.HOST_REGISTER; register: HostRegister }
  | { type: typeof XrouteType.REGISTER_ACK; ack: RegisterAck };

function frame(fields: string[], signed: Buffer): Buffer {
  return Buffer.from(`${fields.join('^')}^${EXTENSION}${signed.toString('base64')}^`, 'latin1');
}

export function encodeHello(hello: Hello, identity: Identity): Buffer {
  const body = new WireWriter(80)
    .u8(XrouteType.HELLO)
    .xid(hello.hid)
    .optionalXid(hello.ad)
    .u8(hello.role === 'router' ? 1 : 0)
    .u8(hello.port)
    .u64(hello.timestamp)
    .finish();
  const adText = hello.ad?.toString() ?? '';
  return frame([String(XrouteType.HELLO), adText, hello.hid.toString()], sealMessage(identity, SignedKind.XROUTE, body));
}

export function encodeHostRegister(register: HostRegister, identity: Identity): Buffer {
  const body = new WireWriter(128)
    .u8(XrouteType.HOST_REGISTER)
    .xid(register.hid)
    .xid(register.gatewayHid)
    .xid(register.ad)
    .string(register.linkId)
    .u64(register.seq)
    .u64(register.timestamp)
    .finish();
  return frame([String(XrouteType.HOST_REGISTER), register.hid.toString()], sealMessage(identity, SignedKind.XROUTE, body));
}

export function encodeRegisterAck(ack: RegisterAck, identity: Identity): Buffer {
  const body = new WireWriter(64).u8(XrouteType.REGISTER_ACK).xid(ack.hid).xid(ack.gatewayHid).u64(ack.seq).finish();
  return frame([String(XrouteType.REGISTER_ACK), ack.hid.toString(), String(ack.seq)], sealMessage(identity, SignedKind.XROUTE, body));
}

const NOTICE = 'notice1:';

/** HID_MOVED: the old gateway passes the VM's own signed notice to the hosts of the VM's old link. */
export function encodeHidMoved(hid: Xid, sealedNotice: Buffer): Buffer {
  return Buffer.from(`${XrouteType.HID_MOVED}^${hid}^${NOTICE}${sealedNotice.toString('base64')}^`, 'latin1');
}

/** A message as it claims to be, before its signature is checked (see `peekXrouteMessage`). */
export interface PeekedXroute {
  message: XrouteMessage;
  /**
   * Checks the signature: the signed extension must verify with a key that hashes to the
   * HID it speaks for (the sender for HELLO and HOST_REGISTER, the gateway for
   * REGISTER_ACK). Throws SignatureError. HID_MOVED carries the VM's own signed notice,
   * checked by whoever acts on it: this does nothing for it.
   */
  verify(): void;
}

/**
 * Decodes a message WITHOUT checking its signature, so a receiver can screen it cheaply
 * (is it for us, fresh, new, within its rate?) and spend a verification only on what
 * passes. Throws MalformedPacketError or SignatureError (malformed) on what does not decode.
 */
export function peekXrouteMessage(data: Buffer): PeekedXroute {
  const text = data.toString('latin1');
  const fields = text.split('^');
  if (fields[0] === String(XrouteType.HID_MOVED)) {
    const notice = fields.find((f) => f.startsWith(NOTICE));
    if (!notice) throw new MalformedPacketError('HID_MOVED without a notice');
    return { message: { type: XrouteType.HID_MOVED, notice: Buffer.from(notice.slice(NOTICE.length), 'base64') }, verify: () => undefined };
  }
  const extension = fields.find((f) => f.startsWith(EXTENSION));
  if (!extension) throw new MalformedPacketError(`xroute message type "${fields[0]?.slice(0, 8)}" has no xmig signature field`);
  const sealed = Buffer.from(extension.slice(EXTENSION.length), 'base64');
  const { publicKey, body } = peekMessage(sealed, SignedKind.XROUTE);
  const reader = new WireReader(body, 'xroute message');
  const type = reader.u8('type');
  if (String(type) !== fields[0]) throw new MalformedPacketError(`xroute message says type ${fields[0]?.slice(0, 8)}, its signed body ${type}`);
  const claimed = (xid: Xid): void => {
    if (!xidOfKey(xid.type, publicKey).equals(xid)) throw new SignatureError('key-mismatch', `the signing key does not hash to ${xid}`);
  };
  const verifyAs = (xid: Xid) => (): void => {
    claimed(xid);
    openMessage(sealed, { kind: SignedKind.XROUTE });
  };
  switch (type) {
    case XrouteType.HELLO: {
      const hid = reader.xid('hid');
      const ad = reader.optionalXid('ad');
      const role = reader.u8('role') === 1 ? 'router' : 'host';
      const port = reader.u8('port');
      const timestamp = reader.u64('timestamp');
      reader.end();
      checkType(hid, XidType.HID, 'hello HID');
      if (ad) checkType(ad, XidType.AD, 'hello AD');
      return { message: { type, hello: { hid, ad, role, port, timestamp } }, verify: verifyAs(hid) };
    }
    case XrouteType.HOST_REGISTER: {
      const register: HostRegister = {
        hid: reader.xid('hid'),
        gatewayHid: reader.xid('gateway'),
        ad: reader.xid('ad'),
        linkId: reader.string('link id'),
        seq: reader.u64('seq'),
        timestamp: reader.u64('timestamp'),
      };
      reader.end();
      checkType(register.hid, XidType.HID, 'registering HID');
      return { message: { type, register }, verify: verifyAs(register.hid) };
    }
    case XrouteType.REGISTER_ACK: {
      const ack: RegisterAck = { hid: reader.xid('hid'), gatewayHid: reader.xid('gateway'), seq: reader.u64('seq') };
      reader.end();
      return { message: { type, ack }, verify: verifyAs(ack.gatewayHid) };
    }
    default:
      throw new MalformedPacketError(`xroute message type ${type} is not known`);
  }
}

/** Decodes and authenticates a message (peekXrouteMessage, then verify). */
export function decodeXrouteMessage(data: Buffer): XrouteMessage {
  const peeked = peekXrouteMessage(data);
  peeked.verify();
  return peeked.message;
}

function checkType(xid: Xid, type: number, what: string): void {
  if (xid.type !== type) throw new MalformedPacketError(`${what} ${xid} has the wrong principal type`);
}
