/** The `xmig` executable as a user runs it: real process, real exit codes. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Dag } from '../../shared/dag.js';
import { PcapWriter } from '../../shared/pcap.js';
import { encodeXip } from '../../shared/xip-header.js';

const XMIG = new URL('../../bin/xmig.js', import.meta.url).pathname;

function xmig(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [XMIG, ...args], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const AD = 'AD:1000000000000000000000000000000000000000';
const HID = 'HID:0000000000000000000000000000000000000000';
const SID = 'SID:1110000000000000000000000000000000001113';

describe('xmig CLI', () => {
  it('prints xia-core multi-line form for xmig dag --format dag', () => {
    const r = xmig('dag', `RE ${AD} ${HID} ${SID}`, '--format', 'dag');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`DAG 0 - \n${AD} 1 - \n${HID} 2 - \n${SID}\n`);
  });

  it('exits 65 with a clear message on a bad DAG, 2 on bad usage', () => {
    const bad = xmig('dag', 'RE QD:1000000000000000000000000000000000000000');
    expect(bad.status).toBe(65);
    expect(bad.stderr).toMatch(/unknown principal type "QD"/);
    expect(xmig('dag').status).toBe(2);
    expect(xmig('no-such-command').status).toBe(2);
  });

  it('has --help on every command', () => {
    for (const args of [[], ['dag'], ['xip'], ['xip', 'encode'], ['xip', 'decode']]) {
      const r = xmig(...args, '--help');
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/^Usage: xmig/);
    }
  });

  it('encodes a packet to hex and decodes it back', () => {
    const encoded = xmig('xip', 'encode', '--dst', `RE ${AD} ${HID}`, '--src', `RE ${HID}`, '--payload', 'hi', '--next-header', '61');
    expect(encoded.status).toBe(0);
    const hex = encoded.stdout.trim();
    expect(hex.slice(0, 16)).toBe('013d0002fa02017e'); // ver nxt plen hlim dnode snode last
    const decoded = xmig('xip', 'decode', hex, '--json');
    expect(decoded.status).toBe(0);
    const summary = JSON.parse(decoded.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ nextHeader: 61, payloadLength: 2, dstNodes: 2, srcNodes: 1, last: -1, dst: `RE ${AD} ${HID}` });
    const truncated = xmig('xip', 'decode', hex.slice(0, 30));
    expect(truncated.status).toBe(65);
    expect(truncated.stderr).toMatch(/needs \d+ bytes/);
  });

  it('decodes every XIP frame of a pcap capture and reports malformed ones', () => {
    const writer = new PcapWriter();
    writer.addXip(encodeXip({ dst: Dag.parse(`RE ${AD} ${HID}`), src: Dag.parse(`RE ${HID}`), payload: Buffer.from('one') }), 1_000_002);
    writer.addXip(Buffer.from('0100', 'hex'), 2_000_000);
    const file = join(mkdtempSync(join(tmpdir(), 'xmig-cli-')), 'c.pcap');
    writeFileSync(file, writer.toBuffer());
    const r = xmig('xip', 'decode', '--pcap', file, '--json');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ payloadHex: Buffer.from('one').toString('hex'), dstNodes: 2 });
    expect(lines[1]!['malformed']).toMatch(/shorter than/);
    expect(lines[0]).toMatchObject({ frame: 1, carrier: 'ethernet', time: '1970-01-01T00:00:01.000002Z' });
    const text = xmig('xip', 'decode', '--pcap', file);
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/^frame 1 {2}1970-01-01T00:00:01\.000002Z {2}ethernet/);
    expect(text.stdout).toContain(`dst          2 nodes: RE ${AD} ${HID}`);
    expect(text.stdout).toMatch(/\n\nframe 2 .*\nmalformed: /);
    expect(xmig('xip', 'decode', '--pcap', file, '--udp-port', '99999').status).toBe(2);
  });
});
