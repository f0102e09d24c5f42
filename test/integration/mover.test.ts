/**
 * `xmig send` and `xmig recv` as QEMU runs them (stdin → chunks over XIA → stdout),
 * between two host daemons behind a router, as separate processes.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WellKnownSid } from '../../shared/xid.js';
import { XMIG_ARGV } from '../support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { waitFor } from '../support/wait.js';

const network = new UdpNetwork(MIGRATION_HOSTS);

beforeAll(() => network.start(), 60_000);
afterAll(() => network.stop());

function run(args: string[], io: { stdin?: string; stdout?: string } = {}) {
  const child = spawn(process.execPath, [...XMIG_ARGV, ...args], { stdio: ['pipe', io.stdout ? 'pipe' : 'ignore', 'pipe'] });
  if (io.stdout) child.stdout!.pipe(createWriteStream(io.stdout));
  // A child that exits early (as a failing send must) breaks this pipe: that is not the test's error.
  child.stdin?.on('error', () => undefined);
  if (io.stdin) createReadStream(io.stdin).pipe(child.stdin!);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, stderr: () => stderr };
}

const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/** recv has bound the migration SID on its node (it logs recv.listening at info). */
async function listening(recv: ReturnType<typeof run>): Promise<void> {
  await waitFor(() => recv.stderr().includes('"recv.listening"') || recv.child.exitCode !== null, 30_000, 'xmig recv to listen');
  expect(recv.child.exitCode, recv.stderr()).toBeNull();
}

describe('xmig send | recv over XIA', () => {
  it('moves a stream of data and zeros intact through the chunk store, chunks verified', async () => {
    const input = join(network.dir, 'in.bin');
    writeFileSync(input, Buffer.concat([randomBytes(24 << 20), Buffer.alloc(8 << 20), randomBytes(4 << 20)]));
    const output = join(network.dir, 'out.bin');
    // Only host A may migrate to B: its STREAM comes from A's HID.
    const recv = run(['recv', '--api', network.api('B'), '--log-level', 'info', '--from', network.hid('A').toString(), '--stats', join(network.dir, 'recv.json')], { stdout: output });
    await listening(recv);
    const dst = network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString();
    const send = run(['send', '--api', network.api('A'), '--to', dst, '--stats', join(network.dir, 'send.json')], { stdin: input });
    expect(await send.exited, send.stderr()).toBe(0);
    expect(await recv.exited, recv.stderr()).toBe(0);
    expect(sha(output)).toBe(sha(input));
    const stats = JSON.parse(readFileSync(join(network.dir, 'send.json'), 'utf8')) as { zeroChunks: number; bytes: number };
    expect(stats.bytes).toBe(36 << 20);
    // 8 MiB of zeros: 8 chunks of 1 MiB, less those that straddle its edges or that an input pause cut short.
    expect(stats.zeroChunks).toBeGreaterThanOrEqual(6);
  }, 60_000);

  // QEMU may start `xmig send` before the destination's `xmig recv` has bound its SID.
  it('moves the stream when send starts before recv listens', async () => {
    const input = join(network.dir, 'early.bin');
    writeFileSync(input, randomBytes(4 << 20));
    const output = join(network.dir, 'early-out.bin');
    const dst = network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString();
    const send = run(['send', '--api', network.api('A'), '--to', dst, '--log-level', 'debug', '--resume-deadline-ms', '30000'], { stdin: input });
    // Its first attempts find no one: wait until it has been turned away at least once.
    await waitFor(() => send.stderr().includes('"send.connect-retry"') || send.child.exitCode !== null, 30_000, 'send to be turned away');
    const recv = run(['recv', '--api', network.api('B')], { stdout: output });
    expect(await send.exited, send.stderr()).toBe(0);
    expect(await recv.exited, recv.stderr()).toBe(0);
    expect(sha(output)).toBe(sha(input));
  }, 90_000);

  // QEMU learns of the failure only from its pipe: send must exit, and break the pipe.
  it('send fails (so QEMU fails the migration) when recv dies mid-transfer', async () => {
    const recv = run(['recv', '--api', network.api('B'), '--log-level', 'info', '--resume-deadline-ms', '1000'], { stdout: join(network.dir, 'partial.bin') });
    // Killed only once it has the session: a kill before then would test something else.
    await listening(recv);
    const dst = network.serviceDag('B', 'AD1', WellKnownSid.MIGRATION).toString();
    const send = run(['send', '--api', network.api('A'), '--to', dst, '--resume-deadline-ms', '1500']);
    send.child.stdin!.on('error', () => undefined);
    send.child.stdin!.write(randomBytes(8 << 20));
    await waitFor(() => recv.stderr().includes('"recv.hello"'), 30_000, 'the sender to reach recv');
    recv.child.kill('SIGKILL');
    const started = Date.now();
    send.child.stdin!.write(randomBytes(1 << 20));
    const code = await send.exited;
    expect(code).not.toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(send.stderr()).toMatch(/gave up resuming|receiver|connection/);
  }, 30_000);
});
