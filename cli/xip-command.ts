import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { Dag } from '../shared/dag.js';
import { XmigError } from '../shared/errors.js';
import { readPcap, xipFramesOf } from '../shared/pcap.js';
import { decodeXip, encodeXip, NextHeader, XIP_DEFAULT_HOP_LIMIT } from '../shared/xip-header.js';
import { describeXip, summarizeXip } from '../shared/xip-describe.js';

function integer(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new XmigError('ERR_XIP_MALFORMED', `${name} must be an integer in ${min}..${max}, got "${value}"`);
    }
    return n;
  };
}

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

/** Decodes one hex packet, or every XIP packet of a capture, as text or JSON lines. */
export function decodeCommandOutput(input: { hex?: string; pcap?: string; udpPorts: number[]; json: boolean }): string {
  const packets: Buffer[] = [];
  if (input.pcap) {
    const frames = xipFramesOf(readPcap(readFileSync(input.pcap)), new Set(input.udpPorts));
    packets.push(...frames.map((f) => f.packet));
  } else if (input.hex !== undefined) {
    const hex = input.hex.replace(/[\s:]/g, '');
    if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new XmigError('ERR_XIP_MALFORMED', 'packet must be given as hex digits');
    packets.push(Buffer.from(hex, 'hex'));
  } else {
    throw new XmigError('ERR_XIP_MALFORMED', 'give a packet as HEX or a capture with --pcap FILE');
  }
  const out: string[] = [];
  packets.forEach((bytes, i) => {
    let text: string;
    try {
      const packet = decodeXip(bytes);
      text = input.json ? JSON.stringify(summarizeXip(packet)) : describeXip(packet);
    } catch (error) {
      if (!input.pcap) throw error;
      const message = (error as Error).message;
      text = input.json ? JSON.stringify({ malformed: message }) : `malformed: ${message}`;
    }
    out.push(input.pcap && !input.json ? `packet ${i + 1}\n${text}` : text);
  });
  return out.join(input.json ? '\n' : '\n\n');
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
    .option('--pcap <file>', 'read XIP frames (ethertype 0xC0DE) from a pcap capture instead')
    .option('--udp-port <port...>', 'also read XIP carried in UDP datagrams on these ports (xianet links)')
    .option('--json', 'one JSON object per packet')
    .action((hex: string | undefined, options: { pcap?: string; udpPort?: string[]; json?: boolean }) => {
      const udpPorts = (options.udpPort ?? []).map(integer('UDP port', 1, 65535));
      process.stdout.write(
        `${decodeCommandOutput({ hex, pcap: options.pcap, udpPorts, json: options.json ?? false })}\n`,
      );
    });
  return xip;
}
