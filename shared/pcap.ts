/**
 * Classic libpcap files: enough to write XIP frames that Wireshark's `xip`
 * dissector reads (Ethernet, ethertype 0xC0DE) and to read XIP back out of a
 * capture, either from such frames or from UDP datagrams of an xianet link.
 */
import { XmigError } from './errors.js';

export const ETHERTYPE_XIP = 0xc0de;
export const LinkType = {
  NULL: 0,
  ETHERNET: 1,
  RAW: 101,
  LINUX_SLL: 113,
  IPV4: 228,
  IPV6: 229,
} as const;

const MAGIC_MICRO = 0xa1b2c3d4;
const MAGIC_NANO = 0xa1b23c4d;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;

export interface PcapRecord {
  /** Capture time in microseconds since the epoch. */
  timeMicros: number;
  data: Buffer;
}

export class PcapWriter {
  private readonly parts: Buffer[] = [];

  constructor(readonly linkType: number = LinkType.ETHERNET, snapLength = 262144) {
    const header = Buffer.alloc(GLOBAL_HEADER);
    header.writeUInt32LE(MAGIC_MICRO, 0);
    header.writeUInt16LE(2, 4);
    header.writeUInt16LE(4, 6);
    header.writeInt32LE(0, 8);
    header.writeUInt32LE(0, 12);
    header.writeUInt32LE(snapLength, 16);
    header.writeUInt32LE(linkType, 20);
    this.parts.push(header);
  }

  add(data: Buffer, timeMicros = Date.now() * 1000): void {
    const record = Buffer.alloc(RECORD_HEADER);
    record.writeUInt32LE(Math.floor(timeMicros / 1e6), 0);
    record.writeUInt32LE(Math.floor(timeMicros % 1e6), 4);
    record.writeUInt32LE(data.length, 8);
    record.writeUInt32LE(data.length, 12);
    this.parts.push(record, data);
  }

  /** Wraps an XIP packet in an Ethernet frame with ethertype 0xC0DE. */
  addXip(packet: Buffer, timeMicros?: number): void {
    const ethernet = Buffer.alloc(14);
    Buffer.from('020000000002', 'hex').copy(ethernet, 0);
    Buffer.from('020000000001', 'hex').copy(ethernet, 6);
    ethernet.writeUInt16BE(ETHERTYPE_XIP, 12);
    this.add(Buffer.concat([ethernet, packet]), timeMicros);
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export interface PcapFile {
  linkType: number;
  records: PcapRecord[];
}

export function readPcap(file: Buffer): PcapFile {
  if (file.length < GLOBAL_HEADER) throw new XmigError('ERR_PCAP', `capture of ${file.length} bytes has no pcap header`);
  let little: boolean;
  let nano: boolean;
  const magicLE = file.readUInt32LE(0);
  const magicBE = file.readUInt32BE(0);
  if (magicLE === MAGIC_MICRO || magicLE === MAGIC_NANO) {
    little = true;
    nano = magicLE === MAGIC_NANO;
  } else if (magicBE === MAGIC_MICRO || magicBE === MAGIC_NANO) {
    little = false;
    nano = magicBE === MAGIC_NANO;
  } else if (magicLE === 0x0a0d0d0a) {
    throw new XmigError('ERR_PCAP', 'pcapng captures are not read; save as pcap (tshark -F pcap)');
  } else {
    throw new XmigError('ERR_PCAP', `not a pcap capture (magic 0x${magicBE.toString(16)})`);
  }
  const u32 = (offset: number): number => (little ? file.readUInt32LE(offset) : file.readUInt32BE(offset));
  const linkType = u32(20) & 0xffff;
  const records: PcapRecord[] = [];
  let offset = GLOBAL_HEADER;
  while (offset + RECORD_HEADER <= file.length) {
    const seconds = u32(offset);
    const fraction = u32(offset + 4);
    const captured = u32(offset + 8);
    const start = offset + RECORD_HEADER;
    if (start + captured > file.length) {
      throw new XmigError('ERR_PCAP', `record at byte ${offset} claims ${captured} bytes past the end of the capture`);
    }
    records.push({
      timeMicros: seconds * 1e6 + (nano ? Math.floor(fraction / 1000) : fraction),
      data: file.subarray(start, start + captured),
    });
    offset = start + captured;
  }
  return { linkType, records };
}

/** What a frame carries, for the frames that carry XIP. */
export interface XipFrame {
  timeMicros: number;
  packet: Buffer;
  /** How the XIP packet travelled: an Ethernet frame, or a UDP datagram of an xianet link. */
  carrier: 'ethernet' | 'udp';
}

function ipPayloadUdp(ip: Buffer, udpPorts: ReadonlySet<number>): Buffer | undefined {
  if (ip.length < 1) return undefined;
  const version = ip[0]! >> 4;
  let protocol: number;
  let offset: number;
  if (version === 4) {
    if (ip.length < 20) return undefined;
    protocol = ip[9]!;
    offset = (ip[0]! & 0x0f) * 4;
  } else if (version === 6) {
    if (ip.length < 40) return undefined;
    protocol = ip[6]!;
    offset = 40;
  } else {
    return undefined;
  }
  if (protocol !== 17 || ip.length < offset + 8) return undefined;
  const source = ip.readUInt16BE(offset);
  const destination = ip.readUInt16BE(offset + 2);
  if (!udpPorts.has(source) && !udpPorts.has(destination)) return undefined;
  const length = ip.readUInt16BE(offset + 4);
  return ip.subarray(offset + 8, Math.min(ip.length, offset + length));
}

/**
 * The XIP packets of a capture: Ethernet/SLL frames of ethertype 0xC0DE, and UDP
 * datagrams to or from one of `udpPorts` (xianet's UDP links).
 */
export function xipFramesOf(capture: PcapFile, udpPorts: ReadonlySet<number> = new Set()): XipFrame[] {
  const frames: XipFrame[] = [];
  for (const record of capture.records) {
    const data = record.data;
    let ethertype: number | undefined;
    let payload: Buffer | undefined;
    switch (capture.linkType) {
      case LinkType.ETHERNET:
        if (data.length >= 14) {
          ethertype = data.readUInt16BE(12);
          payload = data.subarray(14);
          if (ethertype === 0x8100 && data.length >= 18) {
            ethertype = data.readUInt16BE(16);
            payload = data.subarray(18);
          }
        }
        break;
      case LinkType.LINUX_SLL:
        if (data.length >= 16) {
          ethertype = data.readUInt16BE(14);
          payload = data.subarray(16);
        }
        break;
      case LinkType.RAW:
      case LinkType.IPV4:
      case LinkType.IPV6:
        payload = data;
        ethertype = (data[0]! >> 4) === 6 ? 0x86dd : 0x0800;
        break;
      case LinkType.NULL:
        if (data.length >= 4) {
          payload = data.subarray(4);
          ethertype = (payload[0]! >> 4) === 6 ? 0x86dd : 0x0800;
        }
        break;
      default:
        throw new XmigError('ERR_PCAP', `link type ${capture.linkType} is not read (Ethernet, SLL, raw IP are)`);
    }
    if (ethertype === undefined || payload === undefined) continue;
    if (ethertype === ETHERTYPE_XIP) {
      frames.push({ timeMicros: record.timeMicros, packet: payload, carrier: 'ethernet' });
    } else if ((ethertype === 0x0800 || ethertype === 0x86dd) && udpPorts.size > 0) {
      const udp = ipPayloadUdp(payload, udpPorts);
      if (udp) frames.push({ timeMicros: record.timeMicros, packet: udp, carrier: 'udp' });
    }
  }
  return frames;
}
