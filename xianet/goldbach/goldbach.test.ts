import { createServer, connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { checkPair, goldbachPair, isPrime } from './goldbach.js';
import { askGoldbach, serveGoldbachConnection } from './goldbach-protocol.js';

describe('Goldbach', () => {
  it('knows primes, including large ones', () => {
    const primes = [2, 3, 5, 7, 11, 13, 1009, 2147483647, 9007199254740881];
    for (const p of primes) expect(isPrime(p), String(p)).toBe(true);
    for (const c of [0, 1, 4, 9, 1369, 2147483649, 9007199254740991, 3215031751]) expect(isPrime(c), String(c)).toBe(false);
    let count = 0;
    for (let i = 0; i < 10_000; i++) if (isPrime(i)) count++;
    expect(count).toBe(1229);
  });

  it('finds and checks pairs', () => {
    expect(goldbachPair(4)).toEqual([2, 2]);
    expect(goldbachPair(28)).toEqual([5, 23]);
    for (let n = 6; n < 5000; n += 2) {
      const [p, q] = goldbachPair(n);
      expect(checkPair(n, p, q)).toBe(true);
    }
    expect(checkPair(28, 3, 25)).toBe(false);
    expect(() => goldbachPair(7)).toThrow(RangeError);
  });

  it('asks and answers over a byte stream, and reports a broken connection', async () => {
    const sockets: Socket[] = [];
    const server = createServer((socket) => {
      sockets.push(socket);
      void serveGoldbachConnection(socket);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const ok = await askGoldbach(connect(port, '127.0.0.1'), { count: 500, start: 1_000_000 });
    expect(ok).toMatchObject({ answers: 500, wrong: 0, ended: 'count' });

    const client = connect(port, '127.0.0.1');
    const pending = askGoldbach(client);
    // Broken once answers have come: the first data (askGoldbach reads it first, so it has counted them).
    await new Promise((r) => client.once('data', r));
    sockets[sockets.length - 1]!.destroy();
    const broken = await pending;
    expect(broken.ended).toBe('broken');
    expect(broken.answers).toBeGreaterThan(0);
    server.close();
  });
});
