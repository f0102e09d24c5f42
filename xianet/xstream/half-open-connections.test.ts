import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { Dag } from '../../shared/dag.js';
import { Xid, XidType } from '../../shared/xid.js';
import { encodeXip, NextHeader } from '../../shared/xip-header.js';
import { waitFor } from '../../test/support/wait.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { TransportType } from '../transport-header.js';
import type { HalfOpenLimits } from './half-open-connections.js';
import type { StreamConnection } from './stream-connection.js';
import { StreamTransport } from './stream-transport.js';

let network: InProcessNetwork | undefined;
const transports: StreamTransport[] = [];
afterEach(async () => {
  for (const t of transports.splice(0)) t.close();
  await network?.stop();
  network = undefined;
});

/** B listening on a SID with its own transport and half-open limits; C to connect from. */
async function setup(limits: Partial<HalfOpenLimits>) {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  const net = network;
  const b = net.stack('B').node;
  const server = new StreamTransport(b, {}, limits);
  const client = new StreamTransport(net.stack('C').node);
  transports.push(server, client);
  const sid = Xid.random(XidType.SID);
  const accepted: StreamConnection[] = [];
  server.listen(sid, (connection) => {
    accepted.push(connection);
    connection.on('data', (d: Buffer) => connection.write(d));
    connection.on('end', () => connection.end());
  });
  const from = net.link('R2').address!;
  /** A STREAM segment to the listener "from" `src`: the header, then `frames`. */
  const inject = (src: Dag, frames: Buffer, connectionId = randomBytes(8), pn = 0): void => {
    const segment = Buffer.alloc(15);
    segment[0] = 1;
    connectionId.copy(segment, 1);
    segment.writeUIntBE(pn, 9, 6);
    const payload = Buffer.concat([Buffer.from([TransportType.STREAM]), segment, frames]);
    b.receive(encodeXip({ dst: b.serviceAddress(sid), src, nextHeader: NextHeader.TRANSPORT, payload }), 0, from);
  };
  const init = Buffer.from([0x20, 0, 0, 0, 0, 1, 0, 0]); // HANDSHAKE init, maxData 65536
  const forgedSource = (hid = Xid.random(XidType.HID)): Dag => Dag.hostAddress(net.stack('C').node.ad!, hid, Xid.random(XidType.SID));
  /** A genuine client's round trip through the listener: what it gets back is what it sent. */
  const echo = async (): Promise<void> => {
    const connection = await client.connect(b.serviceAddress(sid), { connectTimeoutMs: 30_000 });
    const data = randomBytes(50_000);
    const back: Buffer[] = [];
    connection.on('data', (d: Buffer) => back.push(d));
    const ended = new Promise((r) => connection.once('end', r));
    connection.end(data);
    await ended;
    expect(Buffer.concat(back).equals(data)).toBe(true);
  };
  return { net, b, server, accepted, inject, init, forgedSource, echo };
}

describe('STREAM half-open connections', () => {
  it('holds at most `total` under a flood of forged inits, hands none to the listener, and a genuine client still connects', async () => {
    const { b, server, accepted, inject, init, forgedSource, echo } = await setup({ total: 64, perSource: 8, idleMs: 600_000 });
    for (let i = 0; i < 2000; i++) inject(forgedSource(), init);
    expect(accepted).toHaveLength(0);
    expect(server.connectionCount).toBe(64);
    expect(server.halfOpenCount).toBe(64);
    expect(b.refusals.count('stream-handshake', 'cap')).toBe(2000 - 64);
    await echo();
    expect(accepted).toHaveLength(1);
    expect(server.stats.accepted).toBe(1);
  });

  it('answers at most `perSource` inits from one host, and counts the rest', async () => {
    const { b, server, accepted, inject, init, forgedSource } = await setup({ total: 1000, perSource: 8, idleMs: 600_000 });
    const hid = Xid.random(XidType.HID);
    for (let i = 0; i < 100; i++) inject(forgedSource(hid), init);
    expect(server.connectionCount).toBe(8);
    expect(server.halfOpenCount).toBe(8);
    expect(b.refusals.count('stream-handshake-source', 'cap')).toBe(92);
    // Other hosts are not held back by that one.
    for (let i = 0; i < 10; i++) inject(forgedSource(), init);
    expect(server.halfOpenCount).toBe(18);
    expect(accepted).toHaveLength(0);
  });

  it('drops half-open connections idle past `idleMs` without a tombstone, and counts them', async () => {
    const { b, server, accepted, inject, init, forgedSource } = await setup({ total: 1000, perSource: 100, idleMs: 300 });
    const src = forgedSource();
    const id = randomBytes(8);
    inject(src, init, id);
    for (let i = 0; i < 49; i++) inject(forgedSource(), init);
    expect(accepted).toHaveLength(0);
    expect(server.halfOpenCount).toBe(50);
    await waitFor(() => b.refusals.count('stream-handshake', 'timeout') === 50, 30_000, 'the 50 half-open connections to time out', 20);
    expect(server.halfOpenCount).toBe(0);
    expect(server.connectionCount).toBe(0);
    expect(accepted).toHaveLength(0);
    // No tombstone lingers for them: a later packet of one is answered with a RESET, not an ACK.
    const resets = server.stats.resetsSent;
    inject(src, Buffer.from([0x01]), id, 1);
    expect(server.stats.resetsSent).toBe(resets + 1);
  });

  it('takes no blind ACK for a confirmation: the server\'s packet numbers start at random', async () => {
    const { server, accepted, inject, init, forgedSource } = await setup({ total: 1000, perSource: 100, idleMs: 600_000 });
    for (let i = 0; i < 20; i++) {
      const src = forgedSource();
      const id = randomBytes(8);
      inject(src, init, id, 0);
      // What a forger can send without hearing the accept: ACKs of the small numbers, and
      // of everything (which names packets never sent).
      const ack = (start: number, end: number): Buffer => {
        const frame = Buffer.alloc(14);
        frame[0] = 0x02;
        frame[1] = 1;
        frame.writeUIntBE(start, 2, 6);
        frame.writeUIntBE(end, 8, 6);
        return frame;
      };
      inject(src, ack(0, 1), id, 1);
      inject(src, ack(0, 2 ** 40), id, 2);
    }
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(accepted).toHaveLength(0);
    expect(server.halfOpenCount).toBe(20);
  });
  it('takes no stream data before the client is confirmed (a forged source cannot fill buffers nobody reads), and counts it', async () => {
    const { b, server, accepted, inject, init, forgedSource, echo } = await setup({ total: 1000, perSource: 100, idleMs: 600_000 });
    const piece = 1000;
    for (let i = 0; i < 50; i++) {
      const src = forgedSource();
      const id = randomBytes(8);
      inject(src, init, id, 0);
      // As much as the init's window lets through, sent blind, never acknowledging the accept.
      for (let pn = 1; pn <= 11; pn++) {
        const frame = Buffer.alloc(11 + piece);
        frame[0] = 0x08;
        frame.writeUIntBE((pn - 1) * piece, 1, 6);
        frame.writeUInt32BE(piece, 7);
        inject(src, frame, id, pn);
      }
    }
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(accepted).toHaveLength(0);
    expect(server.halfOpenCount).toBe(50);
    const held = [...server['connections'].values()].reduce((sum, c) => sum + c.readableLength, 0);
    expect(held).toBe(0);
    expect(b.refusals.count('stream-handshake-data', 'forbidden')).toBe(50 * 11);
    // A genuine client's data, sent once it is accepted, still arrives whole.
    await echo();
    expect(accepted).toHaveLength(1);
  });
});
