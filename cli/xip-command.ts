import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { integerOption } from './option-parsers.js';
import { Dag } from '../shared/dag.js';
import { XmigError } from '../shared/errors.js';
import { parsePortRanges, readPcap, xipFramesOf, type XipFrame } from '../shared/pcap.js';
import { decodeXip, encodeXip, NextHeader, XIP_DEFAULT_HOP_LIMIT } from '../shared/xip-header.js';
import { describeXip, summarizeXip } from '../shared/xip-describe.js';

const integer = (_name: string, min: number, max: number): ((text: string) => number) => integerOption(min, max);

export function encodeCommandOutput(options: {
  dst: string;
  src: string;
  payload?: string;
  nextHeader: number;
  hopLimit: number;
  last: number;
}): string {
  const packet = encodeXip({
    dst: Dag.parse(options.dst),
    src: Dag.parse(options.src),
    nextHeader: options.nextHeader,
    hopLimit: options.hopLimit,
    last: options.last,
    payload: options.payload === undefined ? undefined : Buffer.from(options.payload, 'utf8'),
  });
  return packet.toString('hex');
}

/** "2026-12-01T21:52:44.123456Z": the capture time to the microsecond, in UTC. */
export function captureTime(timeMicros: number): string {
  const iso = new Date(Math.floor(timeMicros / 1000)).toISOString();
  return `${iso.slice(0, 19)}.${String(Math.floor(timeMicros % 1e6)).padStart(6, '0')}Z`;
}

function frameLine(frame: XipFrame): string {
  const how = frame.udp
    ? `udp ${frame.udp.srcAddress}:${frame.udp.srcPort} -> ${frame.udp.dstAddress}:${frame.udp.dstPort}`
    : 'ethernet (ethertype 0xc0de)';
  return `frame ${frame.frame}  ${captureTime(frame.timeMicros)}  ${how}`;
}

function frameFields(frame: XipFrame): Record<string, unknown> {
  return { frame: frame.frame, time: captureTime(frame.timeMicros), carrier: frame.carrier, ...(frame.udp ?? {}) };
}

/** Decodes one hex packet, or every XIP packet of a capture (pcap or pcapng), as text or JSON lines. */
export function decodeCommandOutput(input: { hex?: string; pcap?: string; udpPorts: string[]; json: boolean }): string {
  if (input.pcap) {
    const frames = xipFramesOf(readPcap(readFileSync(input.pcap)), parsePortRanges(input.udpPorts));
    const out = frames.map((frame) => {
      let packet;
      try {
        packet = decodeXip(frame.packet);
      } catch (error) {
        const message = (error as Error).message;
        return input.json ? JSON.stringify({ ...frameFields(frame), malformed: message }) : `${frameLine(frame)}\nmalformed: ${message}`;
      }
      return input.json
        ? JSON.stringify({ ...frameFields(frame), ...summarizeXip(packet) })
        : `${frameLine(frame)}\n${describeXip(packet)}`;
    });
    return out.join(input.json ? '\n' : '\n\n');
  }
  if (input.hex === undefined) throw new XmigError('ERR_USAGE', 'give a packet as HEX or a capture with --pcap FILE');
  const hex = input.hex.replace(/[\s:]/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new XmigError('ERR_XIP_MALFORMED', 'packet must be given as hex digits');
  const packet = decodeXip(Buffer.from(hex, 'hex'));
  return input.json ? JSON.stringify(summarizeXip(packet)) : describeXip(packet);
}

export function xipCommand(): Command {
  const xip = new Command('xip').description('encode and decode XIP packets (for debugging and captures)');
  xip
    .command('encode')
    .description('build an XIP packet and print it as hex')
    .requiredOption('--dst <dag>', 'destination DAG')
    .requiredOption('--src <dag>', 'source DAG')
    .option('--payload <text>', 'payload (UTF-8 text)')
    .addOption(
      new Option('--next-header <n>', 'next header: 59 none, 60 transport, 61 XCMP')
        .argParser(integer('next header', 0, 255))
        .default(NextHeader.NONE),
    )
    .addOption(
      new Option('--hop-limit <n>', 'hop limit').argParser(integer('hop limit', 0, 255)).default(XIP_DEFAULT_HOP_LIMIT),
    )
    .addOption(new Option('--last <n>', 'last visited node, -1 = entry').argParser(integer('last', -1, 19)).default(-1))
    .action((options: Parameters<typeof encodeCommandOutput>[0]) => {
      process.stdout.write(`${encodeCommandOutput(options)}\n`);
    });
  xip
    .command('decode')
    .description('print the header fields and both DAGs of an XIP packet')
    .argument('[hex]', 'the packet as hex')
    .option('--pcap <file>', 'read every XIP packet of a capture (pcap or pcapng) instead: frames of ethertype 0xC0DE')
    .option('--udp-port <ports...>', 'with --pcap: also XIP in UDP datagrams to or from these ports (N or LOW-HIGH; xianet links)')
    .option('--json', 'one JSON object per packet')
    .action((hex: string | undefined, options: { pcap?: string; udpPort?: string[]; json?: boolean }) => {
      process.stdout.write(
        `${decodeCommandOutput({ hex, pcap: options.pcap, udpPorts: options.udpPort ?? [], json: options.json ?? false })}\n`,
      );
    });
  return xip;
}
