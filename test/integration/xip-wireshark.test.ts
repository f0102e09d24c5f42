/**
 * Our XIP encoder against an independent decoder: Wireshark's `xip` dissector must
 * read every field of packets we build as we meant them.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Dag } from '../../shared/dag.js';
import { PcapWriter } from '../../shared/pcap.js';
import { encodeXip, NextHeader, type XipFields } from '../../shared/xip-header.js';
import { Xid } from '../../shared/xid.js';
import { commandExists, requirement } from '../support/requirements.js';

const hasTshark = requirement(commandExists('tshark'), 'tshark', 'install it: apt-get install tshark (.ci/run does)');

/** How packet-xip.c prints a DAG: one `type-id-edges` entry per node, the sink's edges being the entry's. */
function wiresharkDag(dag: Dag): string {
  return dag.nodes
    .map((xid, i) => {
      const edges = i === dag.length - 1 ? dag.entry : dag.edges[i]!;
      return `${xid.typeName.toLowerCase()}-${xid.id.toString('hex')}-${edges.join('')}`;
    })
    .join(':\\n');
}

const ad1 = Xid.parse('AD:1000000000000000000000000000000000000001');
const ad2 = Xid.parse('AD:1000000000000000000000000000000000000002');
const hidA = Xid.parse('HID:a000000000000000000000000000000000000001');
const hidVm = Xid.parse('HID:b0000000000000000000000000000000000000ff');
const sid = Xid.parse('SID:c000000000000000000000000000000000000123');

const cases: Array<{ name: string; fields: XipFields }> = [
  { name: 'chain AD-HID to AD-HID, at the entry', fields: { dst: Dag.chain(ad1, hidA), src: Dag.chain(ad2, hidVm) } },
  {
    name: 'host address with HID fallback, last = 1, XCMP',
    fields: {
      dst: Dag.hostAddress(ad2, hidVm, sid),
      src: Dag.chain(ad1, hidA),
      last: 1,
      hopLimit: 9,
      nextHeader: NextHeader.XCMP,
      payload: Buffer.from('0800abcd', 'hex'),
    },
  },
  {
    name: 'xia-core fallback route expression',
    fields: {
      dst: Dag.parse(`RE ( ${ad1} ${hidA} ) ${sid}`),
      src: Dag.chain(hidVm),
      nextHeader: NextHeader.TRANSPORT,
      payload: Buffer.alloc(1000, 7),
    },
  },
];

describe.skipIf(!hasTshark)('Wireshark reads our XIP packets', () => {
  it('decodes version, counts, last node and both DAGs as intended', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xmig-pcap-'));
    const file = join(dir, 'xip.pcap');
    const writer = new PcapWriter();
    for (const c of cases) writer.addXip(encodeXip(c.fields));
    writeFileSync(file, writer.toBuffer());

    const fields = [
      'xip.version',
      'xip.next_hdr',
      'xip.payload_len',
      'xip.hop_limit',
      'xip.num_dst',
      'xip.num_src',
      'xip.last_node',
      'xip.dst_dag_entry',
      'xip.src_dag_entry',
    ];
    const result = spawnSync('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])], {
      encoding: 'utf8',
    });
    expect(result.status, result.stderr).toBe(0);
    const rows = result.stdout.trim().split('\n').map((line) => line.split('\t'));
    expect(rows).toHaveLength(cases.length);
    rows.forEach((row, i) => {
      const f = cases[i]!.fields;
      expect(row, cases[i]!.name).toEqual([
        '1',
        String(f.nextHeader ?? NextHeader.NONE),
        String(f.payload?.length ?? 0),
        String(f.hopLimit ?? 250),
        String(f.dst.length),
        String(f.src.length),
        String(f.last === undefined || f.last < 0 ? 0x7e : f.last),
        wiresharkDag(f.dst),
        wiresharkDag(f.src),
      ]);
    });

    // And nothing in them is flagged malformed apart from the next header, which
    // Wireshark 4.0 only knows for Serval.
    const expert = spawnSync('tshark', ['-r', file, '-T', 'fields', '-e', '_ws.expert.message'], { encoding: 'utf8' });
    const complaints = expert.stdout
      .split(/[\n,]/)
      .map((m) => m.trim())
      .filter((m) => m !== '' && !/^Unrecognized next header type/.test(m));
    expect(complaints).toEqual([]);
  });
});
