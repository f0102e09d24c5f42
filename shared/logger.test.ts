import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';
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
