/**
 * The mover's metrics as the node exporter's textfile collector gets them: `xmig send` and
 * `xmig recv` over XIA with --metrics-textfile; once both are done, each file holds the
 * final figures (bytes, chunks, phase done), and promtool accepts both.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WellKnownSid } from '../../shared/xid.js';
import { XMIG_ARGV } from '../support/processes.js';
import { commandExists } from '../support/requirements.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { waitFor } from '../support/wait.js';

const network = new UdpNetwork(MIGRATION_HOSTS);
beforeAll(() => network.start(), 60_000);
afterAll(() => network.stop());

function run(args: string[], stdin?: string) {
  const child = spawn(process.execPath, [...XMIG_ARGV, ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
  child.stdin!.on('error', () => undefined);
  if (stdin) createReadStream(stdin).pipe(child.stdin!);
  else child.stdin!.end();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return { child, exited: new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code))), stderr: () => stderr };
}

function sample(text: string, name: string, labels: string): number {
  const match = new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, 'm').exec(text);
  if (!match) throw new Error(`no ${name}{${labels}} in:\n${text}`);
  return Number(match[1]);
}

describe('xmig send | recv --metrics-textfile', () => {
  it('leaves the final figures of the migration for the node exporter', async () => {
    const input = join(network.dir, 'in.bin');
    writeFileSync(input, Buffer.concat([randomBytes(3 << 20), Buffer.alloc(2 << 20)]));
    const sendFile = join(network.dir, 'xmig-send.prom');
    const recvFile = join(network.dir, 'xmig-recv.prom');
    const recv = run(['recv', '--api', network.api('B'), '--log-level', 'info', '--metrics-textfile', recvFile]);
    await waitFor(() => recv.stderr().includes('"recv.listening"') || recv.child.exitCode !== null, 30_000, 'xmig recv to listen');
    const send = run(['send', '--api', network.api('A'), '--to', network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString(), '--metrics-textfile', sendFile], input);
    expect(await send.exited, send.stderr()).toBe(0);
    expect(await recv.exited, recv.stderr()).toBe(0);

    const sent = readFileSync(sendFile, 'utf8');
    const received = readFileSync(recvFile, 'utf8');
    expect(sample(sent, 'xmig_mover_bytes_total', 'side="send"')).toBe(5 << 20);
    expect(sample(sent, 'xmig_mover_phase', 'side="send",phase="done"')).toBe(1);
    expect(sample(sent, 'xmig_mover_phase', 'side="send",phase="transfer"')).toBe(0);
    expect(sample(sent, 'xmig_mover_chunks_total', 'side="send",event="zero"')).toBeGreaterThanOrEqual(1);
    const published = sample(sent, 'xmig_mover_chunks_total', 'side="send",event="published"');
    expect(published).toBeGreaterThanOrEqual(3);
    expect(sample(sent, 'xmig_mover_rounds_total', 'side="send"')).toBeGreaterThanOrEqual(1);
    // Every published chunk was fetched and verified once: none refetched on loopback.
    expect(sample(received, 'xmig_mover_chunks_total', 'side="recv",event="verified"')).toBe(published);
    expect(sample(received, 'xmig_mover_chunks_total', 'side="recv",event="refetched"')).toBe(0);
    // What recv fetched: the published chunks' bytes (at least the 3 MiB of random data), never the zeros.
    const fetched = sample(received, 'xmig_mover_bytes_total', 'side="recv"');
    expect(fetched).toBeGreaterThanOrEqual(3 << 20);
    expect(fetched).toBeLessThan(5 << 20);
    expect(sample(received, 'xmig_mover_phase', 'side="recv",phase="done"')).toBe(1);
    expect(sample(received, 'xmig_mover_elapsed_seconds', 'side="recv"')).toBeGreaterThan(0);
    if (commandExists('promtool')) {
      for (const text of [sent, received]) {
        const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
        expect(`${check.stdout}${check.stderr}`).toBe('');
        expect(check.status).toBe(0);
      }
    }
  }, 120_000);
});
