/**
 * The libvirt proxy's own protocol, between `xmig libvirt-proxy source` on the source
 * host and `xmig libvirt-proxy target` on the destination, on STREAMs to the libvirt SID.
 * Each stream carries one Unix-socket connection that libvirt (or QEMU) made on the
 * source host, and opens with one exchange that says where it goes:
 *
 *   1 OPEN      version(u8) channel(u8) domain(str)   source -> target
 *   2 ACCEPTED                                         target -> source: joined, bytes follow
 *   3 REFUSED   reason(str)                            target -> source: closed, with why
 *
 * Channels: 1 the destination's libvirtd (its RPC socket), 2 the destination QEMU's
 * incoming migration socket, 3 its NBD server (storage migration). After ACCEPTED the
 * stream carries that socket's bytes, untouched, both ways.
 *
 * Frames are `u32 length, u8 type, body` (big-endian; length counts type + body), as the
 * mover's and the disk protocol's are; `str` is u16 length + UTF-8. The domain names a
 * directory on the destination host, so it is held to a file name's safe characters.
 * Every field is read through shared/wire.ts: whatever a peer sends, decoding yields a
 * message or throws MalformedPacketError.
 */
import { MalformedPacketError } from '../shared/errors.js';
import { WireReader, WireWriter } from '../shared/wire.js';

export const ProxyMessageType = {
  OPEN: 1,
  ACCEPTED: 2,
  REFUSED: 3,
} as const;

export const ProxyChannel = {
  /** The destination libvirtd's RPC socket (`qemu+unix:///system?socket=...`). */
  LIBVIRTD: 1,
  /** The destination QEMU's incoming migration socket (`--migrateuri unix://...`). */
  MIGRATION: 2,
  /** The destination QEMU's NBD server (`--copy-storage-all --disks-uri unix://...`). */
  NBD: 3,
} as const;

export type ProxyChannelCode = (typeof ProxyChannel)[keyof typeof ProxyChannel];
export type ProxyChannelName = 'libvirtd' | 'migration' | 'nbd';

export const CHANNEL_NAMES: Record<ProxyChannelCode, ProxyChannelName> = { 1: 'libvirtd', 2: 'migration', 3: 'nbd' };

export const PROXY_PROTOCOL_VERSION = 1;
/** The frame layout: u32 length (of type + body), u8 type. */
export const ProxyFrameLayout = { LENGTH: 0, TYPE: 4, HEADER: 5 } as const;
export const MAX_DOMAIN_BYTES = 64;
export const MAX_REASON_BYTES = 1024;
/** The largest frame there is: a REFUSED with its reason at its longest. */
export const MAX_PROXY_FRAME = 1 + 2 + MAX_REASON_BYTES;

/**
 * A domain name the proxy carries: it becomes a directory name on both hosts
 * (/run/xmig-libvirt/<domain>/), so only letters, digits and `_ . + -`, not starting with
 * `.` or `-`, at most MAX_DOMAIN_BYTES.
 */
const DOMAIN = new RegExp(`^[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,${MAX_DOMAIN_BYTES - 1}}$`);

/** Why `name` cannot be a proxied domain's name, or undefined if it can. */
export function domainNameProblem(name: string): string | undefined {
  return DOMAIN.test(name)
    ? undefined
    : `domain name "${name.slice(0, 80)}" cannot name a socket directory: use 1-${MAX_DOMAIN_BYTES} letters, digits, "_", ".", "+" or "-", not starting with "." or "-"`;
}

export type ProxyMessage =
  | { type: typeof ProxyMessageType.OPEN; channel: ProxyChannelCode; domain: string }
  | { type: typeof ProxyMessageType.ACCEPTED }
  | { type: typeof ProxyMessageType.REFUSED; reason: string };

/** Cut to MAX_REASON_BYTES on a character boundary (an over-long reason must not fail the send). */
function clip(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= MAX_REASON_BYTES) return text;
  return bytes.subarray(0, MAX_REASON_BYTES).toString('utf8').replace(/\uFFFD+$/, '');
}

export function encodeProxyMessage(message: ProxyMessage): Buffer {
  const w = new WireWriter(64);
  w.u32(0).u8(message.type);
  switch (message.type) {
    case ProxyMessageType.OPEN: {
      const problem = domainNameProblem(message.domain);
      if (problem) throw new RangeError(problem);
      w.u8(PROXY_PROTOCOL_VERSION).u8(message.channel).string(message.domain);
      break;
    }
    case ProxyMessageType.REFUSED:
      w.string(clip(message.reason));
      break;
    case ProxyMessageType.ACCEPTED:
      break;
  }
  const frame = w.finish();
  frame.writeUInt32BE(frame.length - ProxyFrameLayout.TYPE, ProxyFrameLayout.LENGTH);
  return frame;
}

export function proxyMessageName(type: number): string {
  return Object.entries(ProxyMessageType).find(([, code]) => code === type)?.[0] ?? `type ${type}`;
}

/** Decodes a frame's body (after the header). Throws MalformedPacketError on anything but a well-formed message. */
export function decodeProxyMessage(type: number, body: Buffer): ProxyMessage {
  const r = new WireReader(body, `libvirt proxy ${proxyMessageName(type)}`);
  let message: ProxyMessage;
  switch (type) {
    case ProxyMessageType.OPEN: {
      const version = r.u8('version');
      if (version !== PROXY_PROTOCOL_VERSION) throw new MalformedPacketError(`libvirt proxy protocol version ${version} is not ${PROXY_PROTOCOL_VERSION}`);
      const channel = r.u8('channel');
      if (!Object.hasOwn(CHANNEL_NAMES, channel)) throw new MalformedPacketError(`libvirt proxy channel ${channel} is none of ${Object.keys(CHANNEL_NAMES).join(', ')}`);
      const domain = r.string('domain');
      const problem = domainNameProblem(domain);
      if (problem) throw new MalformedPacketError(`libvirt proxy OPEN: ${problem}`);
      message = { type, channel: channel as ProxyChannelCode, domain };
      break;
    }
    case ProxyMessageType.ACCEPTED:
      message = { type };
      break;
    case ProxyMessageType.REFUSED: {
      const reason = r.bytes('reason');
      if (reason.length > MAX_REASON_BYTES) throw new MalformedPacketError(`libvirt proxy reason of ${reason.length} bytes is longer than ${MAX_REASON_BYTES}`);
      message = { type, reason: reason.toString('utf8') };
      break;
    }
    default:
      throw new MalformedPacketError(`libvirt proxy message type ${type}`);
  }
  r.end();
  return message;
}

/**
 * Splits a byte stream into proxy messages. `rest()` hands back what came after the
 * frames read so far: behind OPEN or ACCEPTED, the bytes belong to the proxied socket.
 */
export class ProxyMessageReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer, limit = Infinity): ProxyMessage[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const messages: ProxyMessage[] = [];
    while (messages.length < limit && this.pending.length >= ProxyFrameLayout.HEADER) {
      const length = this.pending.readUInt32BE(ProxyFrameLayout.LENGTH);
      const type = this.pending[ProxyFrameLayout.TYPE]!;
      // Judged on the header alone: a huge announced frame is refused before it is buffered.
      if (length < 1 || length > MAX_PROXY_FRAME) throw new MalformedPacketError(`libvirt proxy ${proxyMessageName(type)} frame of ${length} bytes (at most ${MAX_PROXY_FRAME})`);
      if (this.pending.length < ProxyFrameLayout.TYPE + length) break;
      messages.push(decodeProxyMessage(type, this.pending.subarray(ProxyFrameLayout.HEADER, ProxyFrameLayout.TYPE + length)));
      this.pending = this.pending.subarray(ProxyFrameLayout.TYPE + length);
    }
    return messages;
  }

  /** The bytes not yet taken as frames. */
  rest(): Buffer {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest;
  }
}
