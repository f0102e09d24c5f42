/**
 * The batch addon reads the socket's fd out of node:dgram's internals. A Node.js that
 * hides it must leave the link on node:dgram, not fail the daemon's start.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type * as UdpBatch from './udp-batch.js';
import { UdpLink } from './udp-link.js';

vi.mock('./udp-batch.js', async (importOriginal) => {
  const real = await importOriginal<typeof UdpBatch>();
  return {
    ...real,
    // The addon "loaded", but this Node.js gives no fd: what socketFd throws then.
    udpBatchAddon: () => ({ addon: {} as never, reason: 'test' }),
    UdpBatcher: class {
      constructor() {
        throw new Error('udp-batch: no file descriptor on this socket');
      }
    },
  };
});

const links: UdpLink[] = [];
afterEach(async () => {
  for (const l of links.splice(0)) await l.stop();
});

describe('UdpLink without an fd for the batch addon', () => {
  it('starts, says why it does not batch, and sends with node:dgram', async () => {
    const a = new UdpLink({ name: 'a', bindAddress: '127.0.0.1', port: 0 });
    const b = new UdpLink({ name: 'b', bindAddress: '127.0.0.1', port: 0 });
    links.push(a, b);
    await a.start();
    await b.start();
    expect(a.batchUnavailable).toBe('udp-batch: no file descriptor on this socket');
    const got: string[] = [];
    const arrived = new Promise<void>((resolve) =>
      b.onReceive((packet) => {
        got.push(packet.toString());
        if (got.length === 3) resolve();
      }),
    );
    for (const text of ['one', 'two', 'three']) a.send(Buffer.from(text), b.address!);
    await arrived;
    expect(got).toEqual(['one', 'two', 'three']);
    expect(a.stats.batchedDatagrams).toBe(0);
  });
});
