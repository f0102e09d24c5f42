/**
 * 10,000 generated and mutated inputs (test/support/click-arbitraries.ts: recorded
 * requests of a real xia-core router, mutated, split at random points, huge lengths,
 * missing line ends, binary) against a running control port, 50 to a connection: the
 * port never dies, holds nothing once each connection is gone, never holds more than
 * its limits, and still answers a genuine write and read afterwards.
 */
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ControlClient, RouteControl } from '../shared/click-control-client.js';
import { Identity } from '../shared/identity.js';
import { Xid, XidType } from '../shared/xid.js';
import { controlInput, splitAt } from '../test/support/click-arbitraries.js';
import { ClickControlPort } from './click-control-port.js';
import { MemoryLink, MemorySegment } from './memory-link.js';
import { XiaNode } from './node.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-fuzz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CONNECTIONS = 200;
const PER_CONNECTION = 50;

describe('control port under fuzzed input', () => {
  it(`survives ${CONNECTIONS * PER_CONNECTION} generated and mutated inputs and still answers a genuine write and read`, async () => {
    const node = new XiaNode({ name: 'router0', role: 'router', identity: Identity.generate(), ad: Identity.generate().xid(XidType.AD) });
    for (let i = 0; i < 4; i++) node.addInterface(new MemoryLink(`router0/${i}`, { segment: new MemorySegment(`s${i}`) }));
    const path = join(dir, 'fuzz.sock');
    const limits = { maxLineBytes: 8192, maxDataBytes: 4096, commandTimeoutMs: 20_000 };
    const port = new ClickControlPort(node, { path }, { limits });
    await port.start();
    let inputs = 0;
    let peakBuffered = 0;
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(controlInput, { minLength: PER_CONNECTION, maxLength: PER_CONNECTION }), fc.array(fc.nat(), { maxLength: 20 }), async (batch, points) => {
          inputs += batch.length;
          const socket = connect(path);
          socket.on('error', () => undefined);
          socket.resume();
          const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
          await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
          for (const piece of splitAt(Buffer.concat(batch), points)) {
            socket.write(piece);
            peakBuffered = Math.max(peakBuffered, port.bufferedBytes);
          }
          socket.end();
          // The port runs what it was sent, then closes the connection it was sent on.
          await closed;
          while (port.connectionCount > 0) await new Promise((resolve) => setTimeout(resolve, 1));
          expect(port.bufferedBytes).toBe(0);
        }),
        { numRuns: CONNECTIONS },
      );
      expect(inputs).toBe(CONNECTIONS * PER_CONNECTION);
      expect(peakBuffered).toBeLessThanOrEqual(limits.maxLineBytes + limits.maxDataBytes + 64 * 1024);
      expect(port.connectionCount).toBe(0);
      const client = new ControlClient({ path });
      const routes = new RouteControl(client, 'router0');
      const hid = `HID:${'c0'.repeat(20)}`;
      await routes.setRoute(hid, 3, '', 7);
      expect(await routes.route(hid)).toEqual({ xid: hid, port: 3, nextHop: '', flags: 7 });
      expect(node.routes.route(Xid.parse(hid))?.port).toBe(3);
      await client.stop();
    } finally {
      await port.stop();
    }
  }, 120_000);
});
