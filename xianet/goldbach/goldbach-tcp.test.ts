import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { activeResources, leftBehind } from '../../shared/startable.js';
import { askGoldbachTcp, GoldbachTcpServer } from './goldbach-tcp.js';

function port(server: GoldbachTcpServer): number {
  return Number(/:(\d+)$/.exec(server.address!)![1]);
}

describe('Goldbach over plain TCP', () => {
  it('answers the same protocol, and stopping leaves no socket or listener behind', async () => {
    const before = activeResources();
    const server = new GoldbachTcpServer({ host: '127.0.0.1', port: 0 });
    await server.start();
    await server.start();
    const report = await askGoldbachTcp('127.0.0.1', port(server), { count: 300, start: 1_000_000 });
    expect(report).toMatchObject({ answers: 300, wrong: 0, ended: 'count' });
    await server.stop();
    await server.stop();
    // The client half-closed its end after the last answer; the server's reset ends it.
    for (let i = 0; i < 200 && Object.keys(leftBehind(before, activeResources())).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(leftBehind(before, activeResources())).toEqual({});
    expect(server.stats.connections).toBe(1);
  });

  it("reports the client's connection broken when the server goes away mid-conversation", async () => {
    const server = new GoldbachTcpServer({ host: '127.0.0.1', port: 0 });
    await server.start();
    let answers = 0;
    const asking = askGoldbachTcp('127.0.0.1', port(server), { onAnswer: () => void answers++ });
    while (answers < 20) await new Promise((r) => setTimeout(r, 5));
    await server.stop();
    const report = await asking;
    expect(report.ended).toBe('broken');
    expect(report.answers).toBeGreaterThanOrEqual(20);
  });

  it('refuses connections beyond its limit and survives garbage and resets', async () => {
    const server = new GoldbachTcpServer({ host: '127.0.0.1', port: 0, maxConnections: 1 });
    await server.start();
    const first = connect(port(server), '127.0.0.1');
    await new Promise((r) => first.once('connect', r));
    first.write('not a number\n\u0000\u00ff\n7\n');
    const reply = await new Promise<string>((r) => first.once('data', (d: Buffer) => r(d.toString())));
    expect(reply).toMatch(/error/);
    const second = connect(port(server), '127.0.0.1');
    await new Promise((r) => second.once('close', r));
    expect(server.stats.refused).toBe(1);
    first.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 20));
    const report = await askGoldbachTcp('127.0.0.1', port(server), { count: 10 });
    expect(report).toMatchObject({ answers: 10, wrong: 0 });
    await server.stop();
  });

  it('says what it could not listen on or connect to', async () => {
    const server = new GoldbachTcpServer({ host: '127.0.0.1', port: 0 });
    await server.start();
    const taken = new GoldbachTcpServer({ host: '127.0.0.1', port: port(server) });
    await expect(taken.start()).rejects.toMatchObject({ code: 'ERR_CONFIG', message: expect.stringMatching(/cannot listen on 127\.0\.0\.1:\d+/) });
    const closed = port(server);
    await server.stop();
    await expect(askGoldbachTcp('127.0.0.1', closed, { count: 1 })).rejects.toMatchObject({ code: 'ERR_UNREACHABLE' });
  });
});
