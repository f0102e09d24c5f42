import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Identity } from '../../shared/identity.js';
import { XidType } from '../../shared/xid.js';
import { LocalNodeApi } from '../api/local-api.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { NameClient } from './name-client.js';
import { NameServer } from './name-server.js';
import { decodeNsMessage, encodeNsMessage, NsType } from './xns-message.js';
import fc from 'fast-check';

const dir = mkdtempSync(join(tmpdir(), 'xmig-ns-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let network: InProcessNetwork | undefined;
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await network?.stop();
  network = undefined;
});

async function setup(dbName: string) {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  const net = network;
  const file = join(dir, dbName);
  const startServer = async (): Promise<NameServer> => {
    const server = new NameServer(new LocalNodeApi(net.stack('A')), { databaseFile: file });
    const address = await server.start();
    for (const router of ['R1', 'R2']) net.stack(router).beacons!.nameServer = address;
    closers.push(() => server.stop());
    return server;
  };
  const client = (name: string): NameClient => {
    const c = new NameClient(new LocalNodeApi(net.stack(name)), { timeoutMs: 1000 });
    closers.push(() => c.close());
    return c;
  };
  return { net, file, startServer, client };
}

describe('name service', () => {
  it('registers, resolves, reverse-resolves, and keeps records across a restart', async () => {
    const { net, startServer, client } = await setup('restart.json');
    const server = await startServer();
    await new Promise((r) => setTimeout(r, 120)); // beacons now announce the server
    const vm = net.stack('VM').node;
    const dag = vm.serviceAddress(Identity.generate().xid(XidType.SID));
    await client('VM').register('vm.example', dag, vm.identity);
    const fromB = await client('B').resolve('vm.example');
    expect(fromB.dag.equals(dag)).toBe(true);
    expect(fromB.record?.publicKey.equals(vm.identity.publicKey)).toBe(true);
    expect(await client('C').reverse(dag)).toBe('vm.example');

    await server.stop();
    const restarted = await startServer();
    expect(restarted.store.size).toBe(1);
    expect((await client('C').resolve('vm.example')).dag.equals(dag)).toBe(true);
  });

  it('rejects an update signed by another key, and one with an old sequence number', async () => {
    const { net, startServer, client } = await setup('forged.json');
    const server = await startServer();
    await new Promise((r) => setTimeout(r, 120));
    const vm = net.stack('VM').node;
    const c = client('C');
    await c.register('owned', vm.address(), vm.identity, { seq: 10 });
    const thief = Identity.generate();
    await expect(c.register('owned', net.stack('C').node.address(), thief, { seq: 11 })).rejects.toThrow(/owned by another key/);
    await expect(c.register('owned', net.stack('B').node.address(), vm.identity, { seq: 10 })).rejects.toThrow(/not newer/);
    await expect(c.register('owned', net.stack('B').node.address(), vm.identity, { seq: 9 })).rejects.toThrow(/not newer/);
    expect((await c.resolve('owned')).dag.equals(vm.address())).toBe(true);
    await c.register('owned', net.stack('B').node.address(), vm.identity, { seq: 12, migrate: true });
    expect((await c.resolve('owned')).dag.equals(net.stack('B').node.address())).toBe(true);
    expect(server.stats.rejected).toBe(3);
  });

  it('a registration without a signed record, or with a record for another DAG, is refused', async () => {
    const { net, startServer, client } = await setup('unsigned.json');
    await startServer();
    await new Promise((r) => setTimeout(r, 120));
    const api = new LocalNodeApi(net.stack('C'));
    const socket = await api.bindDatagram();
    closers.push(() => socket.close());
    const answers: number[] = [];
    socket.onMessage(({ data }) => answers.push(decodeNsMessage(data).type));
    const info = await api.info();
    await socket.send(info.nameServer!, encodeNsMessage({ type: NsType.REGISTER, flags: 0, name: 'x', dag: info.address.toDagString(), requestId: 1 }));
    await new Promise((r) => setTimeout(r, 50));
    expect(answers).toEqual([NsType.RESPONSE_ERROR]);
    await expect(client('C').resolve('x')).rejects.toThrow(/no such name/);
  });
});

describe('xns messages', () => {
  it('round-trip and never throw anything but typed errors on junk', () => {
    const m = { type: NsType.REGISTER, flags: 1, name: 'n', dag: 'RE HID:0000000000000000000000000000000000000000', requestId: 7, record: Buffer.from('abc') };
    expect(decodeNsMessage(encodeNsMessage(m))).toMatchObject({ ...m });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          decodeNsMessage(Buffer.from(bytes));
        } catch (error) {
          if ((error as { code?: string }).code !== 'ERR_XIP_MALFORMED') throw error;
        }
      }),
      { numRuns: 3000 },
    );
  });
});
