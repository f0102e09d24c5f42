/**
 * The API server stops whatever its clients do: one that connected and left without a
 * word (its half-open socket used to keep server.close() waiting for ever, and with it
 * the daemon's shutdown), or one that connected and says nothing at all.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { ApiServer } from './api-server.js';
import { LocalNodeApi } from './local-api.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-api-stop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function server(): Promise<{ server: ApiServer; network: InProcessNetwork }> {
  const network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  const server = new ApiServer(new LocalNodeApi(network.stack('C')), join(dir, `${Math.random()}.sock`));
  await server.start();
  return { server, network };
}

/** A client that connects, optionally sends nothing and ends, and is gone (or is kept idle). */
async function silentClient(path: string, end: boolean): Promise<void> {
  const socket = connect(path);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  if (end) await new Promise<void>((resolve) => socket.end(() => resolve()));
  socket.on('error', () => undefined);
  socket.unref();
}

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'hung'> => Promise.race([promise, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), ms).unref())]);

describe('ApiServer.stop', () => {
  it('stops after a client connected and left without sending a frame', async () => {
    const { server: api, network } = await server();
    await silentClient(api.path, true);
    await new Promise((r) => setTimeout(r, 100));
    expect(await within(api.stop(), 5000)).toBe(undefined);
    await network.stop();
  });

  it('stops with a client connected that never says anything', async () => {
    const { server: api, network } = await server();
    await silentClient(api.path, false);
    expect(await within(api.stop(), 5000)).toBe(undefined);
    await network.stop();
  });
});
