/** A disk control stream: messages in order to whoever waits, bounded, and an end that says why. */
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DiskChannel } from './disk-channel.js';
import { DiskMessageType, encodeDiskMessage } from './disk-messages.js';

function pair(): { near: Duplex; written: Buffer[] } {
  const written: Buffer[] = [];
  const near = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk);
      callback();
    },
  });
  return { near, written };
}

describe('DiskChannel', () => {
  it('hands messages to next() in order, including those behind the opening frame', async () => {
    const { near, written } = pair();
    const channel = new DiskChannel(near, encodeDiskMessage({ type: DiskMessageType.MIRRORED }));
    near.push(encodeDiskMessage({ type: DiskMessageType.ABORT, reason: 'why' }));
    expect(await channel.next(1000, 'a message')).toEqual({ type: DiskMessageType.MIRRORED });
    expect(await channel.next(1000, 'a message')).toEqual({ type: DiskMessageType.ABORT, reason: 'why' });
    await channel.send({ type: DiskMessageType.DONE });
    expect(Buffer.concat(written)).toEqual(encodeDiskMessage({ type: DiskMessageType.DONE }));
    channel.close('done');
  });

  it('gives up waiting at its deadline, and rejects a waiter when the connection goes', async () => {
    const { near } = pair();
    const channel = new DiskChannel(near);
    await expect(channel.next(20, 'TARGET')).rejects.toThrow('no TARGET from the disk target within 20 ms');
    const waiting = channel.next(10_000, 'RELEASED');
    near.destroy();
    await expect(waiting).rejects.toThrow(/closed/);
    expect(channel.closed).toBe(true);
    await expect(channel.send({ type: DiskMessageType.DONE })).rejects.toThrow(/cannot send DONE/);
  });

  it('closes on garbage, and on a peer that floods it with messages nobody reads', async () => {
    const garbage = pair();
    const a = new DiskChannel(garbage.near);
    garbage.near.push(Buffer.from([0, 0, 0, 1, 99]));
    await expect.poll(() => a.closeReason).toMatch(/^protocol error: disk message type 99/);
    const flood = pair();
    const b = new DiskChannel(flood.near);
    flood.near.push(Buffer.concat(Array.from({ length: 17 }, () => encodeDiskMessage({ type: DiskMessageType.DONE }))));
    await expect.poll(() => b.closeReason).toBe('more than 16 disk messages unread');
  });
});
