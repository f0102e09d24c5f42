import { closeSync, mkdtempSync, openSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, isJournalStream, type LoggerOptions } from './logger.js';

async function linesOf(options: Omit<LoggerOptions, 'destination' | 'component'>, write: (logger: ReturnType<typeof createLogger>) => void): Promise<string[]> {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c.toString()));
  write(createLogger({ component: 'agent', destination: stream, level: 'debug', ...options }));
  await new Promise((r) => setImmediate(r));
  return chunks.join('').trim().split('\n');
}
import { createRegistry, Counter, startMetricsServer } from './metrics.js';

describe('logger', () => {
  it('writes one JSON object per line with event, component and fields', async () => {
    const stream = new PassThrough();
    const chunks: string[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c.toString()));
    const logger = createLogger({ component: 'agent', destination: stream, pretty: false }).child({ vm: 'vm1' });
    logger.info('move.perceived', { kind: 'inter-ad', ms: 12 });
    await new Promise((r) => setImmediate(r));
    const lines = chunks.join('').trim().split('\n');
    expect(lines).toHaveLength(1);
    const record = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(record).toMatchObject({ level: 'info', event: 'move.perceived', component: 'agent', vm: 'vm1', kind: 'inter-ad', ms: 12 });
    expect(typeof record['ts']).toBe('string');
    expect(record['message']).toBeUndefined();
  });

  it('leaves out fields whose value is undefined, on a terminal and in JSON', async () => {
    const write = (logger: ReturnType<typeof createLogger>): void =>
      logger.child({ vm: undefined }).info('host.registered', { ad: undefined, ms: 3 });
    const [pretty] = await linesOf({ pretty: true }, write);
    expect(pretty).toMatch(/ agent host\.registered ms=3$/);
    expect(pretty).not.toContain('undefined');
    const [json] = await linesOf({ pretty: false }, write);
    expect(Object.keys(JSON.parse(json!) as object).sort()).toEqual(['component', 'event', 'level', 'ms', 'ts']);
  });

  it('starts each line with its syslog priority for the journal', async () => {
    const lines = await linesOf({ pretty: false, journal: true }, (logger) => {
      logger.error('a');
      logger.warn('b');
      logger.info('c');
      logger.debug('d');
    });
    expect(lines.map((line) => line.slice(0, 4))).toEqual(['<3>{', '<4>{', '<6>{', '<7>{']);
    expect((JSON.parse(lines[1]!.slice(3)) as { event: string }).event).toBe('b');
    const [plain] = await linesOf({ pretty: false, journal: false }, (logger) => logger.info('c'));
    expect(plain!.startsWith('{')).toBe(true);
  });

  it('knows the journal by the device and inode in JOURNAL_STREAM', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'xmig-log-')), 'stream');
    const fd = openSync(file, 'w');
    try {
      const { dev, ino } = statSync(file, { bigint: true });
      expect(isJournalStream(fd, { JOURNAL_STREAM: `${dev}:${ino}` })).toBe(true);
      expect(isJournalStream(fd, { JOURNAL_STREAM: `${dev}:${ino + 1n}` })).toBe(false);
      expect(isJournalStream(fd, { JOURNAL_STREAM: 'junk' })).toBe(false);
      expect(isJournalStream(fd, {})).toBe(false);
    } finally {
      closeSync(fd);
    }
  });
});

describe('metrics server', () => {
  it('serves the registry on /metrics and stops cleanly', async () => {
    const registry = createRegistry();
    const counter = new Counter({ name: 'xmig_test_total', help: 'test', registers: [registry] });
    counter.inc(3);
    const server = await startMetricsServer(registry, { port: 0 });
    const text = await (await fetch(server.url)).text();
    expect(text).toContain('xmig_test_total 3');
    expect((await fetch(server.url.replace('/metrics', '/nope'))).status).toBe(404);
    await server.close();
    await expect(fetch(server.url)).rejects.toThrow();
  });
});
