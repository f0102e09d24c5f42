/** Human-readable and JSON views of a decoded XIP packet, for tools and logs. */
import { NextHeader, type XipPacket } from './xip-header.js';

const NEXT_HEADER_NAMES: Record<number, string> = {
  [NextHeader.NONE]: 'none',
  [NextHeader.TRANSPORT]: 'transport',
  [NextHeader.XCMP]: 'XCMP',
};

export function nextHeaderName(code: number): string {
  return NEXT_HEADER_NAMES[code] ?? (code < NextHeader.NONE ? 'extension header' : 'unknown');
}

export interface XipSummary {
  version: number;
  nextHeader: number;
  nextHeaderName: string;
  payloadLength: number;
  hopLimit: number;
  last: number;
  dstNodes: number;
  srcNodes: number;
  dst: string;
  src: string;
  dstDag: string;
  srcDag: string;
  payloadHex: string;
}

export function summarizeXip(packet: XipPacket): XipSummary {
  return {
    version: 1,
    nextHeader: packet.nextHeader,
    nextHeaderName: nextHeaderName(packet.nextHeader),
    payloadLength: packet.payload.length,
    hopLimit: packet.hopLimit,
    last: packet.last,
    dstNodes: packet.dst.length,
    srcNodes: packet.src.length,
    dst: packet.dst.toString(),
    src: packet.src.toString(),
    dstDag: packet.dst.toDagString(),
    srcDag: packet.src.toDagString(),
    payloadHex: packet.payload.toString('hex'),
  };
}

export function describeXip(packet: XipPacket): string {
  const s = summarizeXip(packet);
  const indent = (text: string): string => text.replace(/^/gm, '    ');
  const printable = /^[\x20-\x7e]*$/.test(packet.payload.toString('latin1'));
  return [
    `version      ${s.version}`,
    `next header  ${s.nextHeader} (${s.nextHeaderName})`,
    `payload      ${s.payloadLength} bytes`,
    `hop limit    ${s.hopLimit}`,
    `last node    ${s.last}${s.last < 0 ? ' (entry)' : ''}`,
    `dst          ${s.dstNodes} nodes: ${s.dst}`,
    indent(s.dstDag),
    `src          ${s.srcNodes} nodes: ${s.src}`,
    indent(s.srcDag),
    ...(s.payloadLength > 0
      ? [`payload      ${printable ? JSON.stringify(packet.payload.toString('latin1')) : s.payloadHex}`]
      : []),
  ].join('\n');
}
