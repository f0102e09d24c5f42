/**
 * Captures: classic libpcap files and pcapng (tshark's and dumpcap's default). Enough to
 * write XIP frames that Wireshark's `xip` dissector reads (Ethernet, ethertype 0xC0DE) and
 * to read XIP back out of a capture, either from such frames or from the UDP datagrams of
 * an xianet link, with the capture time and, for UDP, both addresses and ports.
 *
 * Everything here reads outside input: a truncated or lying capture ends in an
 * `ERR_PCAP` XmigError, never another exception.
 */
import { XmigError } from './errors.js';
import { splitXipDatagram } from './xip-header.js';

export const ETHERTYPE_XIP = 0xc0de;
export const LinkType = {
  NULL: 0,
  ETHERNET: 1,
  RAW: 101,
  LINUX_SLL: 113,
  IPV4: 228,
  IPV6: 229,
  LINUX_SLL2: 276,
} as const;

const MAGIC_MICRO = 0xa1b2c3d4;
const MAGIC_NANO = 0xa1b23c4d;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;

/** pcapng block types (draft-ietf-opsawg-pcapng). */
const Block = {
  SECTION_HEADER: 0x0a0d0d0a,
  INTERFACE_DESCRIPTION: 0x00000001,
  OBSOLETE_PACKET: 0x00000002,
  SIMPLE_PACKET: 0x00000003,
  ENHANCED_PACKET: 0x00000006,
} as const;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const OPTION_END = 0;
const OPTION_IF_TSRESOL = 9;

export interface PcapRecord {
  /** Capture time in microseconds since the epoch. */
  timeMicros: number;
  data: Buffer;
  /** The link type of the interface it was captured on (pcapng may mix them). */
  linkType: number;
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
  format: 'pcap' | 'pcapng';
  /** The first interface's link type (classic pcap has only one). */
  linkType: number;
  records: PcapRecord[];
}

function pcapError(message: string): XmigError {
  return new XmigError('ERR_PCAP', message);
}

/** Reads a classic pcap or a pcapng capture, whichever `file` is. */
export function readPcap(file: Buffer): PcapFile {
  if (file.length >= 4 && file.readUInt32LE(0) === Block.SECTION_HEADER) return readPcapng(file);
  if (file.length < GLOBAL_HEADER) throw pcapError(`capture of ${file.length} bytes has no pcap header`);
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
  } else {
    throw pcapError(`not a pcap or pcapng capture (magic 0x${magicBE.toString(16)})`);
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
      throw pcapError(`record at byte ${offset} claims ${captured} bytes past the end of the capture`);
    }
    records.push({
      timeMicros: seconds * 1e6 + (nano ? Math.floor(fraction / 1000) : fraction),
      data: file.subarray(start, start + captured),
      linkType,
    });
    offset = start + captured;
  }
  return { format: 'pcap', linkType, records };
}

interface PcapngInterface {
  linkType: number;
  snapLength: number;
  /** Timestamp units per second (if_tsresol; 10^6 unless said otherwise). */
  unitsPerSecond: number;
}

/** if_tsresol: high bit clear = 10^-n s, set = 2^-n s. */
function unitsPerSecond(tsresol: number): number {
  const exponent = tsresol & 0x7f;
  return tsresol & 0x80 ? 2 ** exponent : 10 ** exponent;
}

function toMicros(high: number, low: number, units: number): number {
  const ticks = high * 2 ** 32 + low;
  return units === 1e6 ? ticks : Math.round((ticks / units) * 1e6);
}

function readPcapng(file: Buffer): PcapFile {
  const records: PcapRecord[] = [];
  let interfaces: PcapngInterface[] = [];
  let little = true;
  let firstLinkType: number | undefined;
  let offset = 0;
  while (offset < file.length) {
    if (offset + 12 > file.length) throw pcapError(`pcapng block at byte ${offset} is cut short`);
    const typeLE = file.readUInt32LE(offset);
    if (typeLE === Block.SECTION_HEADER) {
      // Every section states its own byte order, and starts its own interface list.
      const magic = file.readUInt32LE(offset + 8);
      if (magic === BYTE_ORDER_MAGIC) little = true;
      else if (file.readUInt32BE(offset + 8) === BYTE_ORDER_MAGIC) little = false;
      else throw pcapError(`pcapng section at byte ${offset} has no byte-order magic`);
      interfaces = [];
    }
    const u32 = (at: number): number => (little ? file.readUInt32LE(at) : file.readUInt32BE(at));
    const u16 = (at: number): number => (little ? file.readUInt16LE(at) : file.readUInt16BE(at));
    const type = u32(offset);
    const length = u32(offset + 4);
    if (length < 12 || length % 4 !== 0 || offset + length > file.length) {
      throw pcapError(`pcapng block at byte ${offset} has a bad length ${length}`);
    }
    const body = offset + 8;
    const end = offset + length - 4;
    const need = (bytes: number): void => {
      if (body + bytes > end) throw pcapError(`pcapng block at byte ${offset} (type ${type}) is too short`);
    };
    const packet = (interfaceId: number, high: number, low: number, captured: number, dataAt: number): void => {
      const iface = interfaces[interfaceId];
      if (!iface) throw pcapError(`pcapng packet at byte ${offset} names interface ${interfaceId}, which no block described`);
      if (dataAt + captured > end) throw pcapError(`pcapng packet at byte ${offset} claims ${captured} bytes past its block`);
      records.push({ timeMicros: toMicros(high, low, iface.unitsPerSecond), data: file.subarray(dataAt, dataAt + captured), linkType: iface.linkType });
    };
    switch (type) {
      case Block.INTERFACE_DESCRIPTION: {
        need(8);
        const iface: PcapngInterface = { linkType: u16(body), snapLength: u32(body + 4), unitsPerSecond: 1e6 };
        let at = body + 8;
        while (at + 4 <= end) {
          const code = u16(at);
          const optionLength = u16(at + 2);
          if (code === OPTION_END) break;
          if (at + 4 + optionLength > end) throw pcapError(`pcapng interface at byte ${offset} has an option past its block`);
          if (code === OPTION_IF_TSRESOL && optionLength >= 1) iface.unitsPerSecond = unitsPerSecond(file[at + 4]!);
          at += 4 + Math.ceil(optionLength / 4) * 4;
        }
        interfaces.push(iface);
        firstLinkType ??= iface.linkType;
        break;
      }
      case Block.ENHANCED_PACKET:
        need(20);
        packet(u32(body), u32(body + 4), u32(body + 8), u32(body + 12), body + 20);
        break;
      case Block.OBSOLETE_PACKET:
        need(20);
        packet(u16(body), u32(body + 4), u32(body + 8), u32(body + 12), body + 20);
        break;
      case Block.SIMPLE_PACKET: {
        need(4);
        const iface = interfaces[0];
        if (!iface) throw pcapError(`pcapng simple packet at byte ${offset} comes before any interface`);
        const original = u32(body);
        const captured = Math.min(original, iface.snapLength || original, end - (body + 4));
        records.push({ timeMicros: 0, data: file.subarray(body + 4, body + 4 + captured), linkType: iface.linkType });
        break;
      }
      default:
        break; // name resolution, statistics, custom blocks: nothing we read
    }
    offset += length;
  }
  return { format: 'pcapng', linkType: firstLinkType ?? LinkType.ETHERNET, records };
}

/** Where a UDP datagram went: both ends, as the capture shows them. */
export interface UdpEnds {
  srcAddress: string;
  srcPort: number;
  dstAddress: string;
  dstPort: number;
}

/** What a frame carries, for the frames that carry XIP. */
export interface XipFrame {
  /** 1-based number of the frame in the capture (as Wireshark counts). */
  frame: number;
  timeMicros: number;
  packet: Buffer;
  /** How the XIP packet travelled: an Ethernet frame, or a UDP datagram of an xianet link. */
  carrier: 'ethernet' | 'udp';
  /** For UDP, the addresses and ports. */
  udp?: UdpEnds;
}

function ipv6Text(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // The longest run of zero groups becomes "::" (RFC 5952).
  let best = { start: -1, length: 0 };
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best.length && j - i > 1) best = { start: i, length: j - i };
    i = j;
  }
  if (best.start < 0) return groups.join(':');
  const head = groups.slice(0, best.start).join(':');
  const tail = groups.slice(best.start + best.length).join(':');
  return `${head}::${tail}`;
}

function ipUdp(ip: Buffer, udpPorts: PortSet): { payload: Buffer; ends: UdpEnds } | undefined {
  if (ip.length < 1) return undefined;
  const version = ip[0]! >> 4;
  let protocol: number;
  let offset: number;
  let srcAddress: string;
  let dstAddress: string;
  if (version === 4) {
    if (ip.length < 20) return undefined;
    protocol = ip[9]!;
    offset = (ip[0]! & 0x0f) * 4;
    // A fragment past the first carries no UDP header.
    if ((ip.readUInt16BE(6) & 0x1fff) !== 0) return undefined;
    srcAddress = [...ip.subarray(12, 16)].join('.');
    dstAddress = [...ip.subarray(16, 20)].join('.');
  } else if (version === 6) {
    if (ip.length < 40) return undefined;
    protocol = ip[6]!;
    offset = 40;
    srcAddress = ipv6Text(ip.subarray(8, 24));
    dstAddress = ipv6Text(ip.subarray(24, 40));
  } else {
    return undefined;
  }
  if (protocol !== 17 || offset < 20 || ip.length < offset + 8) return undefined;
  const srcPort = ip.readUInt16BE(offset);
  const dstPort = ip.readUInt16BE(offset + 2);
  if (!udpPorts.has(srcPort) && !udpPorts.has(dstPort)) return undefined;
  const length = ip.readUInt16BE(offset + 4);
  if (length < 8) return undefined;
  return {
    payload: ip.subarray(offset + 8, Math.min(ip.length, offset + length)),
    ends: { srcAddress, srcPort, dstAddress, dstPort },
  };
}

/** A set of UDP ports (what `has` answers is all that is used). */
export interface PortSet {
  has(port: number): boolean;
  readonly size: number;
}

/** Ports from "7000", "17000-17100" or a mix of both, as `--udp-port` takes them. */
export function parsePortRanges(specs: readonly string[]): PortSet {
  const ranges: Array<[number, number]> = [];
  for (const spec of specs) {
    for (const part of spec.split(',')) {
      const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part.trim());
      const low = match ? Number(match[1]) : NaN;
      const high = match ? Number(match[2] ?? match[1]) : NaN;
      if (!(low >= 1 && high <= 65535 && low <= high)) {
        throw new XmigError('ERR_USAGE', `UDP port must be N or LOW-HIGH in 1..65535, got "${part}"`);
      }
      ranges.push([low, high]);
    }
  }
  return { has: (port) => ranges.some(([low, high]) => port >= low && port <= high), size: ranges.length };
}

/**
 * The XIP packets of a capture: Ethernet/SLL frames of ethertype 0xC0DE, and UDP
 * datagrams to or from one of `udpPorts` (xianet's UDP links).
 */
export function xipFramesOf(capture: PcapFile, udpPorts: PortSet = new Set<number>()): XipFrame[] {
  const frames: XipFrame[] = [];
  capture.records.forEach((record, index) => {
    const data = record.data;
    let ethertype: number | undefined;
    let payload: Buffer | undefined;
    switch (record.linkType) {
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
      case LinkType.LINUX_SLL2:
        if (data.length >= 20) {
          ethertype = data.readUInt16BE(0);
          payload = data.subarray(20);
        }
        break;
      case LinkType.RAW:
      case LinkType.IPV4:
      case LinkType.IPV6:
        if (data.length >= 1) {
          payload = data;
          ethertype = data[0]! >> 4 === 6 ? 0x86dd : 0x0800;
        }
        break;
      case LinkType.NULL:
        if (data.length >= 5) {
          payload = data.subarray(4);
          ethertype = payload[0]! >> 4 === 6 ? 0x86dd : 0x0800;
        }
        break;
      default:
        throw pcapError(`link type ${record.linkType} is not read (Ethernet, SLL, SLL2, raw IP are)`);
    }
    if (ethertype === undefined || payload === undefined) return;
    if (ethertype === ETHERTYPE_XIP) {
      frames.push({ frame: index + 1, timeMicros: record.timeMicros, packet: payload, carrier: 'ethernet' });
    } else if ((ethertype === 0x0800 || ethertype === 0x86dd) && udpPorts.size > 0) {
      const udp = ipUdp(payload, udpPorts);
      if (udp) {
        for (const packet of splitXipDatagram(udp.payload)) frames.push({ frame: index + 1, timeMicros: record.timeMicros, packet, carrier: 'udp', udp: udp.ends });
      }
    }
  });
  return frames;
}
