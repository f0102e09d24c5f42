import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from '../shared/startable.js';
import { waitFor } from '../test/support/wait.js';
import { SocketRelay } from './relay.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-relay-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function roundTrip(path: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString()));
    socket.on('end', () => resolve(got));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    socket.end(text);
  });
}

describe('SocketRelay', () => {
  it('joins each Unix connection to a TCP one, both ways, and leaves nothing behind', async () => {
    const before = activeResources();
    const echo = createServer((s) => s.on('data', (c: Buffer) => s.end(`echo:${c.toString()}`)));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const port = (echo.address() as AddressInfo).port;
    const relay = new SocketRelay({ listen: join(dir, 'relay.sock'), target: `127.0.0.1:${port}` });
    await relay.start();
    expect(await roundTrip(join(dir, 'relay.sock'), 'one')).toBe('echo:one');
    expect(await roundTrip(join(dir, 'relay.sock'), 'two')).toBe('echo:two');
    expect(relay.stats.accepted).toBe(2);
    await relay.stop();
    await relay.stop();
    await new Promise<void>((r) => echo.close(() => r()));
    // Closed handles leave the loop's list a turn later: wait for that, not for time.
    await waitFor(() => Object.keys(leftBehind(before, activeResources())).length === 0, 10_000, 'the relay to close everything').catch(() => undefined);
    expect(leftBehind(before, activeResources())).toEqual({});
  });

  it('closes the client when the target refuses, and counts it', async () => {
    const relay = new SocketRelay({ listen: join(dir, 'refused.sock'), target: '127.0.0.1:1' });
    await relay.start();
    expect(await roundTrip(join(dir, 'refused.sock'), 'x')).toBe('');
    await waitFor(() => relay.stats.failed === 1, 10_000, 'the refused upstream to be counted');
    expect(relay.stats.failed).toBe(1);
    await relay.stop();
  });

  it('refuses a target that is not host:port', () => {
    expect(() => new SocketRelay({ listen: join(dir, 'x.sock'), target: 'nowhere' })).toThrow(/not a socket address/);
  });
});
