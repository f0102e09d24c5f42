/**
 * The route backend the agent and the router plugin use, against a server that answers
 * only with the bytes a real xia-core Click 2.0.1 router recorded (no xmig on the other
 * side): every recorded request is sent in the recorded order — through the backend's
 * own operations where it has one (list, set4, remove, the router's HID and AD), as a
 * raw request otherwise — and each reply is read as that router meant it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTranscripts, type Exchange } from '../test/support/click-fixtures.js';
import { ClickReplayServer } from '../test/support/click-replay-server.js';
import { ControlPortRoutes, type RouteBackend } from './route-backend.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-backend-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const H = (digits: string): string => `HID:${digits.repeat(40 / digits.length)}`;
const HID_0 = 'HID:0000000000000000000000000000000000000010';
const AD_1 = 'AD:1000000000000000000000000000000000000001';

/** The request as a client sends it: a command line ended by CR LF, then its data; undefined if a client does not send it so. */
function asRequest(exchange: Exchange): { line: string; data: string } | undefined {
  const text = exchange.request.toString('latin1');
  const end = text.indexOf('\r\n');
  if (end <= 0) return undefined; // a blank line, or LF-only: nothing a client sends
  return { line: text.slice(0, end), data: text.slice(end + 2) };
}

/** What the recorded reply says: the code of its first final status line ("QUIT now" gets two replies), and its DATA. */
function recorded(exchange: Exchange): { status: number; data: string | undefined } {
  const text = exchange.reply.toString('latin1');
  const lines = text.split('\r\n');
  const dataAt = lines.findIndex((l) => /^DATA \d+$/.test(l));
  const status = Number(lines.find((l) => /^\d{3} /.test(l))!.slice(0, 3));
  if (dataAt < 0) return { status, data: undefined };
  const header = /DATA (\d+)\r\n/.exec(text)!;
  const start = header.index + header[0].length;
  return { status, data: text.slice(start, start + Number(header[1])) };
}

/** Exchanges no request/reply client makes: no reply to wait for, a reply Click never ends, a reply the recording cut. */
const unsendable = (exchange: Exchange): boolean =>
  asRequest(exchange) === undefined || exchange.title === 'WRITEDATA h notanumber' || exchange.truncatedTo !== undefined;

type Op = (routes: RouteBackend) => Promise<void>;

/** The backend's operations, by the title of the exchange whose request each must send. */
const OPS: Record<string, Record<string, Op>> = {
  'real-click.txt': {
    'READ rt_HID.list (initial)': async (r) => {
      expect(await r.listRoutes('HID')).toEqual([
        { xid: '-', port: -7, nextHop: '', flags: 0 },
        { xid: HID_0, port: -2, nextHop: '', flags: 0 },
      ]);
    },
    'WRITEDATA rt_HID.set4 H1,1,H3,5': (r) => r.setRoute('HID', H('1'), 1, H('3'), 5),
    'READ rt_HID.list': async (r) => {
      expect((await r.listRoutes('HID')).find((route) => route.xid === H('1'))).toEqual({ xid: H('1'), port: 1, nextHop: H('3'), flags: 5 });
    },
    'WRITEDATA rt_HID.remove H1': async (r) => expect(await r.removeRoute('HID', H('1'))).toBe(true),
    'WRITEDATA rt_HID.remove H1 again (nonexistent)': async (r) => expect(await r.removeRoute('HID', H('1'))).toBe(false),
    // What Click has instead of xmig's N/xrc.hid and .ad: its own XIDs on port -2.
    'READ rt_HID.list (after remove -)': async (r) => expect(await r.ownXid!('HID')).toBe(HID_0),
    'READ rt_AD.list': async (r) => expect(await r.ownXid!('AD')).toBe(AD_1),
  },
  'real-click-more.txt': {
    'READ list': async (r) => {
      expect((await r.listRoutes('HID')).map((route) => route.xid)).toEqual(['-', HID_0, H('12'), H('ef'), H('ab')]);
    },
  },
};

describe('ControlPortRoutes against the recorded bytes of a real xia-core Click router', () => {
  it.each(loadTranscripts().flatMap((t) => [[t.file, 0, t] as const, [t.file, 5, t] as const]))(
    '%s (replies in pieces of up to %i bytes; 0: whole)',
    async (file, pieces, transcript) => {
      const script = ClickReplayServer.without(transcript, unsendable);
      const server = new ClickReplayServer(script, { pieces: pieces || undefined, seed: 7 });
      const path = join(dir, `${file}.${pieces}.sock`);
      await server.listen(path);
      const routes = new ControlPortRoutes(path, 'router0', { timeoutMs: 10_000 });
      const ops = OPS[file]!;
      let viaBackend = 0;
      try {
        for (const exchange of script.exchanges) {
          const op = ops[exchange.title];
          if (op) {
            await op(routes);
            viaBackend++;
            continue;
          }
          const { line, data } = asRequest(exchange)!;
          const reply = await routes.client.request(line, data || undefined);
          const want = recorded(exchange);
          expect({ title: exchange.title, status: reply.status, data: reply.data }).toEqual({ title: exchange.title, ...want });
          if (exchange.closed) break;
        }
      } finally {
        await routes.close();
        await server.close();
      }
      expect(server.mismatches).toEqual([]);
      expect(server.answered).toBe(script.exchanges.length);
      expect(viaBackend).toBe(Object.keys(ops).length);
    },
  );

  it('uses the HID and AD it is given where the tables cannot say, asking nothing', async () => {
    const routes = new ControlPortRoutes(join(dir, 'nobody-listens.sock'), 'router0', { hid: HID_0, ad: AD_1 });
    expect(await routes.ownXid('HID')).toBe(HID_0);
    expect(await routes.ownXid('AD')).toBe(AD_1);
    await routes.close();
    expect(() => new ControlPortRoutes('x.sock', 'r', { hid: AD_1 })).toThrow(/not an HID/);
  });
});
