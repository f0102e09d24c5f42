/**
 * Every request a real xia-core Click 2.0.1 router was sent (test/fixtures/xia-core-click/),
 * replayed against an `xmig node` control port set up like that router (router0, four
 * ports, HID:0…10 and AD:1000…01 local, default routes -7): each reply must be the
 * recorded bytes exactly, or — where xmig answers otherwise on purpose — exactly the
 * reply listed below with its reason (the README's control-port table says the same).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ClickReplyParser, replyCarriesData } from '../shared/click-control-reply.js';
import { Identity } from '../shared/identity.js';
import { Xid, XidType } from '../shared/xid.js';
import { loadTranscripts, type Exchange, type Transcript } from '../test/support/click-fixtures.js';
import { ClickControlPort } from './click-control-port.js';
import { MemoryLink, MemorySegment } from './memory-link.js';
import { XiaNode } from './node.js';
import { Port } from './route-table.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-replay-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const RECORDED_HID = Xid.parse('HID:0000000000000000000000000000000000000010');
const RECORDED_AD = Xid.parse('AD:1000000000000000000000000000000000000001');
const T = 'router0/xrc/n/proc/rt_HID';

/** router0 as recorded: XIARouter4Port, its HID and AD local, default routes -7. */
function recordedRouter(): XiaNode {
  const node = new XiaNode({ name: 'router0', role: 'router', identity: Identity.generate(), ad: RECORDED_AD });
  for (let i = 0; i < 4; i++) node.addInterface(new MemoryLink(`router0/${i}`, { segment: new MemorySegment(`s${i}`) }));
  node.routes.remove(XidType.HID, node.hid);
  node.routes.set(XidType.HID, { xid: RECORDED_HID, port: Port.LOCAL, nextHop: undefined, flags: 0, origin: 'static' });
  for (const type of [XidType.AD, XidType.HID]) node.routes.set(type, { xid: undefined, port: Port.FALLBACK, nextHop: undefined, flags: 0, origin: 'static' });
  return node;
}

interface Difference {
  /** xmig's reply, exactly. */
  ours: (node: XiaNode) => string;
  why: string;
}

const data = (header: string, body: string): string => `${header}\r\nDATA ${body.length}\r\n${body}`;
const writeError = (handler: string, message: string): string => `520-Write handler '${handler}' error:\r\n520 ${message}\r\n`;
const ELEMENTS = ['rt_AD', 'rt_HID', 'rt_SID', 'rt_CID', 'rt_IP'].map((t) => `router0/xrc/n/proc/${t}\n`).join('') + 'router0/xrc\n';
const H = (digits: string): string => `HID:${digits.repeat(40 / digits.length)}`;

/** Where xmig answers otherwise, by file and exchange title, and why (mirrored in the README). */
const DIFFERENCES: Record<string, Record<string, Difference>> = {
  'real-click.txt': {
    'READ list (root: element names)': {
      ours: () => data("200 Read handler 'list' OK", `6\n${ELEMENTS}`),
      why: 'same format (count, then one element a line); xmig has its own six elements, not a Click configuration',
    },
    'WRITE rt_HID.set4 AD9,0 (AD into HID table)': {
      ours: () => writeError(`${T}.set4`, `invalid XID: AD:${'9'.repeat(40)} is not an HID (xmig keeps each table to its own type)`),
      why: "xmig's tables are keyed by the 20-byte id, so an AD in rt_HID would answer for the HID with the same id",
    },
    'WRITE rt_HID.set4 H2,9 (port beyond 4 ports)': {
      ours: () => writeError(`${T}.set4`, 'invalid port: router0 has no interface 9'),
      why: 'a route to a port the node does not have would drop its traffic silently',
    },
    'READ rt_HID.list (after odd writes)': {
      ours: () => data(`200 Read handler '${T}.list' OK`, `-,-7,,0\n${RECORDED_HID},-2,,0\n`),
      why: 'follows from the two refusals above: neither route is in the table',
    },
    'WRITE rt_HID.remove AD9': {
      ours: () => writeError(`${T}.remove`, `invalid XID: AD:${'9'.repeat(40)} is not an HID (xmig keeps each table to its own type)`),
      why: 'an AD in the HID table is refused for remove as for set',
    },
    'WRITE rt_HID.remove H2': {
      ours: () => writeError(`${T}.remove`, 'nonexistent XID: '),
      why: 'follows from the refusal of H2 on port 9: there is no such route',
    },
    'READ rt_HID.drops': {
      ours: () => `511 No handler named '${T}.drops'\r\n`,
      why: 'xmig counts drops per node and reason (xianet_packets_dropped_total), not per table',
    },
    'READ router0/xrc.hid (xmig-only handler)': {
      ours: (node) => data("200 Read handler 'router0/xrc.hid' OK", `${node.hid}\n`),
      why: "N/xrc is xmig's own element (hid, ad, address, counters, neighbors); Click has no such element",
    },
    'WRITEDATA h notanumber': {
      ours: () => "500 Syntax error in 'WRITEDATA'\r\n",
      why: "Click sends \"500-Syntax error in '%s'\" as a continuation line no final line follows (a client waits for ever); xmig ends the reply and names the command",
    },
  },
  'real-click-more.txt': {
    'READ rt_HID.handlers': {
      ours: () => data(`200 Read handler '${T}.handlers' OK`, 'enabled\tr\nlist\tr\nremove\tw\nset4\tw\nadd4\tw\nset\tw\nadd\tw\nhandlers\tr.\nclass\tr.\nname\tr.\n'),
      why: "xmig's tables have no drops, load, generate, config or ports handlers, and enabled is read-only",
    },
    'READ classes (root)': {
      ours: () => "511 No handler named 'classes'\r\n",
      why: 'xmig is not a Click with element classes (and the recording keeps only the start of this reply)',
    },
    'READ config (root) head': {
      ours: () => "511 No handler named 'flatconfig'\r\n",
      why: 'xmig has no Click configuration to show (and the recording keeps only the start of this reply)',
    },
  },
};

/** Sends one request and collects its reply: a complete reply as a client frames it, nothing for a blank line, everything to the close for QUIT/CLOSE. */
async function exchange(socket: Socket, inbox: { bytes: Buffer; closed: boolean; wake?: () => void }, banner: Buffer, step: Exchange): Promise<{ reply: Buffer; closed: boolean }> {
  inbox.bytes = Buffer.alloc(0);
  socket.write(step.request);
  const line = step.request.toString('latin1');
  const quits = /^\s*(QUIT|CLOSE)\b/i.test(line);
  if (line.trim() === '') return { reply: Buffer.alloc(0), closed: false };
  const complete = (): boolean => {
    if (quits) return inbox.closed;
    const parser = new ClickReplyParser();
    parser.push(banner);
    parser.push(inbox.bytes);
    return parser.takeReply(replyCarriesData(line)) !== undefined;
  };
  const deadline = Date.now() + 10_000;
  while (!complete()) {
    if (inbox.closed || Date.now() > deadline) break;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      inbox.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  return { reply: inbox.bytes, closed: inbox.closed };
}

async function replay(transcript: Transcript): Promise<Array<{ step: Exchange; reply: Buffer; closed: boolean; node: XiaNode }>> {
  const node = recordedRouter();
  const path = join(dir, `${transcript.file}.sock`);
  const port = new ClickControlPort(node, { path });
  await port.start();
  const socket = connect(path);
  const inbox: { bytes: Buffer; closed: boolean; wake?: () => void } = { bytes: Buffer.alloc(0), closed: false };
  socket.on('data', (chunk: Buffer) => {
    inbox.bytes = Buffer.concat([inbox.bytes, chunk]);
    inbox.wake?.();
  });
  socket.on('close', () => {
    inbox.closed = true;
    inbox.wake?.();
  });
  await new Promise((resolve) => socket.once('connect', resolve));
  while (!inbox.bytes.includes(0x0a)) await new Promise<void>((resolve) => (inbox.wake = resolve));
  const greeting = inbox.bytes;
  const results = [];
  try {
    expect(greeting.toString('latin1')).toBe(transcript.banner.toString('latin1'));
    for (const step of transcript.exchanges) results.push({ step, ...(await exchange(socket, inbox, transcript.banner, step)), node });
  } finally {
    socket.destroy();
    await port.stop();
  }
  return results;
}

describe('replies of the control port against the recorded xia-core Click router', () => {
  const transcripts = loadTranscripts();

  it.each(transcripts.map((t) => [t.file, t] as const))('%s: byte for byte, except the differences the README lists', async (file, transcript) => {
    const results = await replay(transcript);
    const differences = DIFFERENCES[file] ?? {};
    const mismatches: string[] = [];
    let same = 0;
    for (const { step, reply, closed, node } of results) {
      const difference = differences[step.title];
      const got = reply.toString('latin1');
      const want = difference ? difference.ours(node) : step.reply.toString('latin1');
      if (step.truncatedTo !== undefined && !difference) mismatches.push(`${step.title}: recorded reply is cut; list the difference`);
      if (got !== want) mismatches.push(`${step.title}:\n  want ${JSON.stringify(want)}\n  got  ${JSON.stringify(got)}`);
      else if (!difference) same++;
      if (closed !== step.closed && !(difference && step.closed)) mismatches.push(`${step.title}: closed ${closed}, recorded ${step.closed}`);
    }
    for (const title of Object.keys(differences)) {
      if (!transcript.exchanges.some((e) => e.title === title)) mismatches.push(`difference listed for an exchange not recorded: ${title}`);
    }
    expect(mismatches).toEqual([]);
    expect(same + Object.keys(differences).length).toBe(transcript.exchanges.length);
    process.stdout.write(`${file}: ${same} of ${transcript.exchanges.length} replies byte for byte, ${Object.keys(differences).length} differ on purpose\n`);
  });

  it('lists routes in the order the recorded router did (its hash table order)', async () => {
    const node = recordedRouter();
    const port = new ClickControlPort(node, { path: join(dir, 'order.sock') });
    await port.start();
    const socket = connect(join(dir, 'order.sock'));
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    // Added in the order the recording added them; Click listed 1212, efef, abab.
    socket.write(`WRITE ${T}.set4 ${H('ab')},0,,0\r\nWRITE ${T}.set4 ${H('ef')},1,,0\r\nWRITE ${T}.set4 ${H('12')},2,,0\r\nREAD ${T}.list\r\nQUIT\r\n`);
    await new Promise((resolve) => socket.once('close', resolve));
    await port.stop();
    const header = /DATA (\d+)\r\n/.exec(text)!;
    const listed = text.slice(header.index + header[0].length, header.index + header[0].length + Number(header[1])).split('\n').filter(Boolean);
    expect(listed.map((l) => l.split(',')[0])).toEqual(['-', RECORDED_HID.toString(), H('12'), H('ef'), H('ab')]);
  });
});
