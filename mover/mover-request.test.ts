/**
 * The mover socket's request line (mover-request.ts): a send or a recv request is
 * taken, with a pipe or a QEMU socket but not both; anything else, whatever it is,
 * gets a BadRequestError, never a RangeError or a crash.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BadRequestError } from '../shared/errors.js';
import { WellKnownSid } from '../shared/xid.js';
import { parseMoverRequest } from './mover-request.js';
import { MAX_REQUEST_BYTES } from './mover-socket-protocol.js';

describe('mover request line', () => {
  const dag = 'DAG 0 - HID:4dd58dcbc1ff7f2e0795a39a4b2628280e262d1a';

  it('takes a send or a recv request', () => {
    expect(parseMoverRequest(Buffer.from(JSON.stringify({ op: 'send', to: dag, chunkBytes: 1 << 20 })))).toMatchObject({ op: 'send', chunkBytes: 1 << 20 });
    expect(parseMoverRequest(Buffer.from(JSON.stringify({ op: 'recv', sid: WellKnownSid.MIGRATION.toString() })))).toMatchObject({ op: 'recv' });
    const stdio = { pid: 4242, dev: '14', ino: '18446744073709551615' };
    expect(parseMoverRequest(Buffer.from(JSON.stringify({ op: 'send', to: dag, stdio })))).toMatchObject({ stdio });
    expect(parseMoverRequest(Buffer.from(JSON.stringify({ op: 'recv', sid: WellKnownSid.MIGRATION.toString(), stdio })))).toMatchObject({ stdio });
  });

  it('takes a pipe (stdio) or a QEMU socket, never both, and only a pipe named as one', () => {
    const stdio = { pid: 4242, dev: '14', ino: '99' };
    expect(() => parseMoverRequest(Buffer.from(JSON.stringify({ op: 'send', to: dag, stdio, qemuSocket: '/run/q.sock' })))).toThrow(/at most one/);
    for (const bad of [{ ...stdio, pid: 0 }, { ...stdio, pid: 1.5 }, { ...stdio, dev: '-1' }, { ...stdio, ino: 99 }, { ...stdio, ino: '1'.repeat(21) }, { ...stdio, fd: 3 }, { pid: 1 }]) {
      expect(() => parseMoverRequest(Buffer.from(JSON.stringify({ op: 'send', to: dag, stdio: bad }))), JSON.stringify(bad)).toThrow(BadRequestError);
    }
  });

  it('refuses anything else with BadRequestError, whatever it is', () => {
    const json = fc.oneof(
      fc.json().map((text) => Buffer.from(text)),
      fc
        .record(
          { op: fc.constantFrom('send', 'recv', 'other'), to: fc.string(), sid: fc.string(), chunkBytes: fc.oneof(fc.integer(), fc.double()), from: fc.array(fc.string()), qemuSocket: fc.oneof(fc.string(), fc.integer()), stdio: fc.oneof(fc.object(), fc.record({ pid: fc.integer(), dev: fc.string(), ino: fc.string() }, { requiredKeys: [] })) },
          { requiredKeys: [] },
        )
        .map((o) => Buffer.from(JSON.stringify(o))),
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    );
    fc.assert(
      fc.property(json, (line) => {
        try {
          parseMoverRequest(line);
        } catch (error) {
          expect(error).toBeInstanceOf(BadRequestError);
        }
      }),
    );
    expect(() => parseMoverRequest(Buffer.from(JSON.stringify({ op: 'recv', sid: 'HID:4dd58dcbc1ff7f2e0795a39a4b2628280e262d1a' })))).toThrow(/right type/);
    expect(() => parseMoverRequest(Buffer.from(JSON.stringify({ op: 'send', to: dag, extra: 1 })))).toThrow(BadRequestError);
    expect(() => parseMoverRequest(Buffer.alloc(MAX_REQUEST_BYTES + 1, 0x20))).toThrow(/longer than/);
  });

  it("takes QEMU's socket only as an absolute path a socket address holds", () => {
    const sid = WellKnownSid.MIGRATION.toString();
    expect(parseMoverRequest(Buffer.from(JSON.stringify({ op: 'recv', sid, qemuSocket: '/run/xmig/vm1.sock' })))).toMatchObject({ qemuSocket: '/run/xmig/vm1.sock' });
    expect(parseMoverRequest(Buffer.from(JSON.stringify({ op: 'send', to: dag, qemuSocket: `/${'a'.repeat(106)}` })))).toMatchObject({ op: 'send' });
    for (const bad of ['vm1.sock', '', `/${'a'.repeat(107)}`, '/run/\0x', `/${'é'.repeat(60)}`]) {
      expect(() => parseMoverRequest(Buffer.from(JSON.stringify({ op: 'send', to: dag, qemuSocket: bad })))).toThrow(/absolute socket path/);
    }
  });
});
