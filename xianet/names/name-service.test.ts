import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Identity } from '../../shared/identity.js';
import { MemoryLogger } from '../../shared/logger.js';
import { activeResources, leftBehind } from '../../shared/startable.js';
import { WellKnownSid, XidType } from '../../shared/xid.js';
import { LocalNodeApi } from '../api/local-api.js';
import { InProcessNetwork, INTER_AD } from '../topology.js';
import { NameClient } from './name-client.js';
import { NameLog, type NameStorage } from './name-log.js';
import { sealNameRecord } from './name-record.js';
import { NameServer, type NameServerOptions } from './name-server.js';
import { decodeNsMessage, encodeNsMessage, NS_FLAGS_MIGRATE, NsType, type NsMessage } from './xns-message.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-ns-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let network: InProcessNetwork | undefined;
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await network?.stop();
  network = undefined;
});

async function setup(dbName: string, serverOptions: Omit<NameServerOptions, 'databaseFile'> = {}) {
  network = new InProcessNetwork(INTER_AD, { beaconIntervalMs: 50, helloIntervalMs: 200 });
  await network.start();
  await network.ready();
  const net = network;
  const file = join(dir, dbName);
  const startServer = async (options: Omit<NameServerOptions, 'databaseFile'> = serverOptions): Promise<NameServer> => {
    const server = new NameServer(new LocalNodeApi(net.stack('A')), { databaseFile: file, ...options });
    await server.start();
    const address = await server.address();
    for (const router of ['R1', 'R2']) net.stack(router).beacons!.nameServer = address;
    closers.push(() => server.stop());
    return server;
  };
  const client = (name: string, options: { timeoutMs?: number; retryMs?: number } = {}): NameClient => {
    const c = new NameClient(new LocalNodeApi(net.stack(name)), { nameServer: net.stack('A').node.serviceAddress(WELL_KNOWN_NS), timeoutMs: 1000, ...options });
    closers.push(() => c.close());
    return c;
  };
  return { net, file, startServer, client };
}

const WELL_KNOWN_NS = WellKnownSid.NAME_SERVER;

/** A log whose appends wait for `gate` (a slow fsync), or fail while `failing` says so. */
class ControlledStorage implements NameStorage {
  delayMs = 0;
  failing = 0;
  appends = 0;
  constructor(private readonly inner: NameStorage) {}
  get stored(): number {
    return this.inner.stored;
  }
  load(): Promise<Buffer[]> {
    return this.inner.load();
  }
  async append(sealed: Buffer): Promise<void> {
    this.appends++;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failing > 0) {
      this.failing--;
      throw new Error('EIO: the disk said no');
    }
    return this.inner.append(sealed);
  }
  compact(live: () => Buffer[]): Promise<void> {
    return this.inner.compact(live);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('name service', () => {
  it('registers, resolves, reverse-resolves, and keeps records across a restart', async () => {
    const { net, startServer, client } = await setup('restart.log');
    const server = await startServer();
    const vm = net.stack('VM').node;
    const dag = vm.serviceAddress(Identity.generate().xid(XidType.SID));
    await client('VM').register('vm.example', dag, vm.identity);
    const fromB = await client('B').resolve('vm.example');
    expect(fromB.dag.equals(dag)).toBe(true);
    expect(fromB.record?.publicKey.equals(vm.identity.publicKey)).toBe(true);
    expect(await client('C').reverse(dag)).toBe('vm.example');
    // A DAG with the same sink (the VM elsewhere) reverse-resolves to the name too.
    expect(await client('C').reverse(dag.sink && net.stack('B').node.serviceAddress(dag.sink))).toBe('vm.example');

    await server.stop();
    const restarted = await startServer();
    expect(restarted.store.size).toBe(1);
    expect((await client('C').resolve('vm.example')).dag.equals(dag)).toBe(true);
  });

  it('rejects an update signed by another key, and one with an old sequence number', async () => {
    const { net, startServer, client } = await setup('forged.log');
    const server = await startServer();
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
    expect(server.refusals.count('registration', 'forbidden')).toBe(1);
    expect(server.refusals.count('registration', 'stale')).toBe(2);
  });

  it('a registration without a signed record, or with a record for another DAG, is refused', async () => {
    const { net, startServer, client } = await setup('unsigned.log');
    await startServer();
    const api = new LocalNodeApi(net.stack('C'));
    const socket = await api.bindDatagram();
    closers.push(() => socket.close());
    const answers: number[] = [];
    socket.onMessage(({ data }) => answers.push(decodeNsMessage(data).type));
    const ns = net.stack('A').node.serviceAddress(WELL_KNOWN_NS);
    await socket.send(ns, encodeNsMessage({ type: NsType.REGISTER, flags: 0, name: 'x', dag: net.stack('C').node.address().toDagString(), requestId: 1 }));
    await expect.poll(() => answers).toEqual([NsType.RESPONSE_ERROR]);
    await expect(client('C').resolve('x')).rejects.toThrow(/no such name/);
  });

  // Issue 14: a retransmitted REGISTER got "sequence number is not newer" while the
  // original was being fsynced, 5 of 5 times with a 600 ms write.
  it('answers a retransmission that arrives while the first copy is being written with the same answer', async () => {
    const { net, file, startServer, client } = await setup('slow.log');
    const storage = new ControlledStorage(new NameLog(file));
    storage.delayMs = 600;
    const server = await startServer({ storage });
    const vm = net.stack('VM').node;
    const c = client('VM', { timeoutMs: 5000, retryMs: 100 });
    for (let i = 0; i < 5; i++) await c.register('vm.slow', net.stack(i % 2 ? 'A' : 'B').node.address(), vm.identity, { seq: 100 + i, migrate: true });
    expect(server.stats.rejected).toBe(0);
    expect(server.stats.registrations).toBe(5);
    // Retransmissions did arrive during the writes, and none became a second write.
    expect(server.stats.repeats).toBeGreaterThanOrEqual(5);
    expect(storage.appends).toBe(5);
    expect((await client('C').resolve('vm.slow')).dag.equals(net.stack('B').node.address())).toBe(true);
  });

  // Issue 14: after one failed write every later registration failed.
  it('a failed write is answered with an error, leaves no record, and never blocks the writes after it', async () => {
    const { net, file, startServer, client } = await setup('flaky.log');
    const storage = new ControlledStorage(new NameLog(file));
    const server = await startServer({ storage });
    const vm = net.stack('VM').node;
    const c = client('VM');
    storage.failing = 1;
    await expect(c.register('vm.flaky', vm.address(), vm.identity, { seq: 1 })).rejects.toThrow(/could not be stored/);
    await expect(c.resolve('vm.flaky')).rejects.toThrow(/no such name/);
    // The same record again is judged afresh (not "not newer"), and so are later ones.
    await c.register('vm.flaky', vm.address(), vm.identity, { seq: 1 });
    await c.register('vm.other', vm.address(), vm.identity, { seq: 2 });
    expect(server.stats.writeFailures).toBe(1);
    expect(server.store.size).toBe(2);
    await server.stop();
    expect(readFileSync(file, 'latin1').trim().split('\n')).toHaveLength(2);
  });

  it('bounds names per owner key and in all; every refusal is counted, the series exist from the start', async () => {
    const registry = new Registry();
    const { net, startServer, client } = await setup('bounds.log');
    const server = await startServer({ registry, limits: { maxNames: 6, maxNamesPerOwner: 3 } });
    const metrics = await registry.getMetricsAsJSON();
    const family = metrics.find((m) => m.name === 'xmig_nameserver_refusals_total');
    expect(family?.values.map((v) => `${v.labels['resource']}/${v.labels['reason']}=${v.value}`)).toContain('names-per-owner/cap=0');
    const c = client('C');
    const dag = net.stack('C').node.address();
    const squatter = Identity.generate();
    for (let i = 0; i < 3; i++) await c.register(`squat-${i}`, dag, squatter, { seq: 1 });
    await expect(c.register('squat-3', dag, squatter, { seq: 1 })).rejects.toThrow(/limit of 3 names/);
    // Updating a name it holds is still fine.
    await c.register('squat-0', net.stack('B').node.address(), squatter, { seq: 2 });
    const other = Identity.generate();
    for (let i = 0; i < 3; i++) await c.register(`other-${i}`, dag, other, { seq: 1 });
    await expect(c.register('one-too-many', dag, Identity.generate(), { seq: 1 })).rejects.toThrow(/limit of 6 names/);
    expect(server.refusals.count('names-per-owner', 'cap')).toBe(1);
    expect(server.refusals.count('names', 'cap')).toBe(1);
    const text = await registry.metrics();
    expect(text).toMatch(/xmig_nameserver_refusals_total\{resource="names",reason="cap"\} 1/);
  });

  it('persists by appending (one line per accepted record, no rewrite), compacts, and converts the old JSON file', async () => {
    const file = join(dir, 'append.log');
    const log = new NameLog(file);
    expect(await log.load()).toEqual([]);
    const owner = Identity.generate();
    const dag = Identity.generate().xid(XidType.HID);
    const { Dag } = await import('../../shared/dag.js');
    const records = [1, 2, 3].map((seq) => sealNameRecord({ name: 'n', dag: Dag.chain(dag), seq, timestamp: 1, migrated: false }, owner));
    await Promise.all(records.map((r) => log.append(r)));
    expect(log.stats.syncs).toBeLessThanOrEqual(2); // appends that arrive together share a sync
    expect(readFileSync(file, 'latin1').split('\n')).toHaveLength(4);
    await log.compact(() => [records[2]!]);
    expect(readFileSync(file, 'latin1')).toBe(`${records[2]!.toString('base64')}\n`);
    await log.close();

    // A torn last line (a crash inside an append) is dropped, and cut before the next append.
    const { appendFileSync, writeFileSync } = await import('node:fs');
    appendFileSync(file, records[0]!.toString('base64').slice(0, 20));
    const reopened = new NameLog(file);
    expect(await reopened.load()).toHaveLength(1);
    expect(reopened.stats.tornLines).toBe(1);
    await reopened.append(records[1]!);
    await reopened.close();
    expect(readFileSync(file, 'latin1')).toBe(`${records[2]!.toString('base64')}\n${records[1]!.toString('base64')}\n`);

    // The earlier format: one JSON document, rewritten as a log on load.
    const legacy = join(dir, 'legacy.json');
    writeFileSync(legacy, JSON.stringify({ version: 1, records: [records[0]!.toString('base64')] }));
    const converted = new NameLog(legacy);
    expect(await converted.load()).toHaveLength(1);
    await converted.close();
    expect(readFileSync(legacy, 'latin1')).toBe(`${records[0]!.toString('base64')}\n`);
    // Junk is an error naming the file, never silently an empty database.
    writeFileSync(legacy, 'not a log line!\n');
    await expect(new NameLog(legacy).load()).rejects.toThrow(/corrupt at line 1/);
  });

  it('stop() leaves no socket, timer or file handle behind', async () => {
    const { net, startServer, client } = await setup('leak.log');
    const before = activeResources();
    const server = await startServer();
    const vm = net.stack('VM').node;
    const c = client('VM');
    await c.register('leak', vm.address(), vm.identity);
    await c.close();
    await server.stop();
    await server.stop();
    // A FileHandle's close request is listed until the tick after its promise resolved.
    await new Promise((r) => setImmediate(r));
    expect(leftBehind(before, activeResources())).toEqual({});
  });
});

/** Mutations of a genuine message: truncation, bit flips, splices, random bytes. */
function mutated(genuine: Buffer[]): fc.Arbitrary<Buffer> {
  const pick = fc.integer({ min: 0, max: genuine.length - 1 }).map((i) => genuine[i]!);
  return fc.oneof(
    fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
    fc.tuple(pick, fc.nat()).map(([g, n]) => g.subarray(0, n % (g.length + 1))),
    fc.tuple(pick, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 8 })).map(([g, flips]) => {
      const b = Buffer.from(g);
      for (const [at, bit] of flips) b[at % b.length]! ^= 1 << bit;
      return b;
    }),
    fc.tuple(pick, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 40 })).map(([g, at, bytes]) => {
      const cut = at % (g.length + 1);
      return Buffer.concat([g.subarray(0, cut), Buffer.from(bytes), g.subarray(cut)]);
    }),
  );
}

describe('name service under fuzzed input', () => {
  it('xns messages: 10,000 generated and mutated inputs decode or fail with a typed error', () => {
    const m = { type: NsType.REGISTER, flags: 1, name: 'n', dag: 'RE HID:0000000000000000000000000000000000000000', requestId: 7, record: Buffer.from('abc') };
    expect(decodeNsMessage(encodeNsMessage(m))).toMatchObject({ ...m });
    const genuine = [
      encodeNsMessage(m),
      encodeNsMessage({ type: NsType.QUERY, flags: 0, name: 'vm.example', requestId: 9 }),
      encodeNsMessage({ type: NsType.RESPONSE_ERROR, flags: 0, requestId: 9, error: 'no' }),
    ];
    let decoded = 0;
    fc.assert(
      fc.property(mutated(genuine), (bytes) => {
        try {
          const message = decodeNsMessage(bytes);
          decoded++;
          // What decodes encodes again without throwing anything untyped.
          try {
            encodeNsMessage(message);
          } catch (error) {
            if ((error as { code?: string }).code !== 'ERR_XIP_MALFORMED') throw error;
          }
        } catch (error) {
          if ((error as { code?: string }).code !== 'ERR_XIP_MALFORMED') throw error;
        }
      }),
      { numRuns: 10_000 },
    );
    expect(decoded).toBeGreaterThan(100);
  });

  it('the server handler: 10,000 mutated requests, no throw, no junk stored, then genuine requests still answered', async () => {
    const { net, startServer, client } = await setup('fuzz.log');
    const logger = new MemoryLogger();
    const server = await startServer({ logger, limits: { registrationsPerKeyPerSecond: 1e6, registrationsPerKeyBurst: 1e6, newNamesPerSecond: 1e6, newNamesBurst: 1e6 } });
    const vm = net.stack('VM').node;
    const c = client('VM');
    await c.register('genuine', vm.address(), vm.identity, { seq: 5 });
    const owner = Identity.generate();
    const dag = net.stack('B').node.address();
    const record = sealNameRecord({ name: 'fuzzed', dag, seq: 1, timestamp: Date.now(), migrated: false }, owner);
    const genuine: NsMessage[] = [
      { type: NsType.REGISTER, flags: NS_FLAGS_MIGRATE, name: 'fuzzed', dag: dag.toDagString(), record, requestId: 1 },
      { type: NsType.QUERY, flags: 0, name: 'genuine', requestId: 2 },
      { type: NsType.RQUERY, flags: 0, dag: vm.address().toDagString(), requestId: 3 },
    ];
    const inputs = fc.sample(mutated(genuine.map(encodeNsMessage)), { numRuns: 10_000, seed: 14 });
    let answered = 0;
    for (const bytes of inputs) if (await server.handle(bytes)) answered++;
    expect(answered).toBeGreaterThan(1000);
    // Only records whose owner signature holds were stored: a bit flip never makes a new name.
    expect(server.store.size).toBeLessThanOrEqual(2);
    if (server.store.get('fuzzed')) expect(server.store.get('fuzzed')!.sealed.equals(record)).toBe(true);
    expect(server.store.get('genuine')?.publicKey.equals(vm.identity.publicKey)).toBe(true);
    expect(logger.records.filter((r) => r.level === 'error')).toEqual([]);
    // And over the network, the server still answers.
    await c.register('genuine', net.stack('B').node.address(), vm.identity, { seq: 6, migrate: true });
    expect((await client('C').resolve('genuine')).dag.equals(net.stack('B').node.address())).toBe(true);
    expect(server.refusals.count('request', 'malformed') + server.refusals.count('registration')).toBeGreaterThan(100);
  });
});
