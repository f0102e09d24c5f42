/**
 * Every daemon's lifecycle, in this process: each is put together from its parts as its
 * command does (cli/*-command.ts), started on real sockets (UDP links on loopback, Unix
 * API and control sockets, /metrics on TCP), made to do its job once, and stopped in the
 * command's order. Then `process.getActiveResourcesInfo()` must hold nothing the daemon
 * made: no timer, socket, server, file handle or child left behind (shared/startable.ts
 * `leftBehind`). A leak here is a leak in a daemon that is restarted, or a test's or a
 * library user's process that never exits.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../agent/agent.js';
import { XiaPublisher, XiaRetriever } from '../../mover/chunk-exchange.js';
import { admitXiaFrom, connectXia, listenXia } from '../../mover/connections.js';
import { MigrationReceiver } from '../../mover/receiver.js';
import { MigrationSender } from '../../mover/sender.js';
import { MobilityPlugin } from '../../router-plugin/mobility-plugin.js';
import { parseConfig } from '../../shared/config.js';
import { Dag } from '../../shared/dag.js';
import { Identity } from '../../shared/identity.js';
import { createLogger } from '../../shared/logger.js';
import { createRegistry, startMetricsServer } from '../../shared/metrics.js';
import { ControlPortRoutes } from '../../shared/route-backend.js';
import { activeResources, leftBehind } from '../../shared/startable.js';
import { WellKnownSid, XidType } from '../../shared/xid.js';
import { NodeClient } from '../../xianet/api/api-client.js';
import { LocalRoutes } from '../../xianet/local-routes.js';
import { NameClient } from '../../xianet/names/name-client.js';
import { NameServer } from '../../xianet/names/name-server.js';
import type { NodeConfig } from '../../xianet/node-config.js';
import { NodeDaemon } from '../../xianet/node-daemon.js';
import { topologySchema } from '../../xianet/topology.js';
import { udpLayout } from '../../xianet/udp-topology.js';
import { reservePortBlock } from '../support/ports.js';
import { waitFor } from '../support/wait.js';

/** This file's UDP ports (test/support/ports.ts). */
const ports = reservePortBlock();

const dir = mkdtempSync(join(tmpdir(), 'xmig-lifecycle-'));
const topology = parseConfig(topologySchema, {
  name: 'lifecycle',
  ads: ['AD1'],
  segments: ['seg-A', 'seg-B'],
  nodes: [
    { name: 'R1', role: 'router', ad: 'AD1', interfaces: [{ segment: 'seg-A', hostFacing: true }, { segment: 'seg-B', hostFacing: true }] },
    { name: 'A', role: 'host', interfaces: [{ segment: 'seg-A' }] },
    { name: 'B', role: 'host', interfaces: [{ segment: 'seg-B' }] },
  ],
});
const layout = udpLayout(topology, { dir, basePort: ports.base, beaconIntervalMs: 100, helloIntervalMs: 300, logLevel: 'warn' });
const configs = new Map<string, NodeConfig>();
for (const [name, config] of layout.configs) {
  Identity.loadOrCreate(config.keyFile);
  if (config.adKeyFile) Identity.loadOrCreate(config.adKeyFile);
  configs.set(name, { ...config, metrics: { host: '127.0.0.1', port: 0 } });
}
const config = (name: string): NodeConfig => configs.get(name)!;
const controlPath = (name: string): string => (config(name).controlPort as { path: string }).path;
const logger = (component: string) => createLogger({ component, level: 'warn' });

/** What the process holds before any daemon of this file ran. */
let initial: Record<string, number>;
let nodes: NodeDaemon[] = [];

/** The three node daemons, started and joined (R1 with the mobility plugin in its own process, as `xmig node --plugin mobility`). */
async function startNodes(withPlugin: boolean): Promise<{ stop(): Promise<void> }> {
  nodes = ['R1', 'A', 'B'].map((name) => new NodeDaemon(config(name), { logger: logger('node') }));
  for (const daemon of nodes) await daemon.start();
  const r1 = nodes[0]!;
  const plugin = withPlugin
    ? new MobilityPlugin({ api: r1.api, routes: new LocalRoutes(r1.node), identity: r1.node.identity, logger: r1.logger, registry: r1.registry })
    : undefined;
  await plugin?.start();
  // Joined: both hosts in R1's AD, and R1 routing to each.
  await waitFor(
    () => nodes.slice(1).every((d) => d.node.ad !== undefined && r1.node.routes.table(XidType.HID).list().some((r) => r.xid?.equals(d.node.hid))),
    60_000,
    'A and B to join R1',
    20,
  );
  return {
    stop: async () => {
      await plugin?.stop();
      for (const daemon of [...nodes].reverse()) await daemon.stop();
      nodes = [];
    },
  };
}

function expectNothingLeft(before: Record<string, number>, what: string): void {
  expect(leftBehind(before, activeResources()), what).toEqual({});
}

/** Waits for resources being torn down (a closed socket's handle goes on the next turns of the loop). */
async function settled(before: Record<string, number>): Promise<void> {
  await waitFor(() => Object.keys(leftBehind(before, activeResources())).length === 0, 5000, 'handles to close', 10).catch(() => undefined);
}

beforeAll(() => {
  // The logger's first line opens stdout's handle for good: open it before the baseline.
  logger('warmup').warn('lifecycle.baseline');
  initial = activeResources();
});

afterAll(async () => {
  ports.release();
  for (const daemon of nodes) await daemon.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('daemons stopped leave nothing behind', () => {
  it('xmig node: a router with the mobility plugin and two hosts, joined, then stopped', async () => {
    const before = activeResources();
    const running = await startNodes(true);
    const r1 = nodes[0]!;
    const metrics = await fetch(`${r1.metricsUrl}`).then((r) => r.text());
    expect(metrics).toMatch(/^xianet_packets_total\{/m);
    await running.stop();
    await settled(before);
    expectNothingLeft(before, 'the node daemons');
  }, 120_000);

  describe('beside running nodes', () => {
    let running: { stop(): Promise<void> } | undefined;
    beforeAll(async () => {
      running = await startNodes(false);
    }, 120_000);
    afterAll(async () => {
      await running?.stop();
    });

    it('xmig router-plugin: on the router node through its API and control socket, with /metrics', async () => {
      const before = activeResources();
      const r1 = nodes[0]!;
      const registry = createRegistry({ processMetrics: true });
      const api = await NodeClient.connect(config('R1').apiSocket!);
      const plugin = new MobilityPlugin({
        api,
        routes: new ControlPortRoutes(controlPath('R1'), 'R1'),
        identity: Identity.load(config('R1').keyFile),
        logger: logger('router-plugin'),
        registry,
      });
      await plugin.start();
      const metrics = await startMetricsServer(registry, { port: 0 });
      expect(await fetch(metrics.url).then((r) => r.text())).toMatch(/^xmig_plugin_/m);
      // Its route backend talks to the control socket.
      expect(r1.controlAddress).toBe(controlPath('R1'));
      await metrics.close();
      await plugin.stop();
      await api.close();
      await settled(before);
      expectNothingLeft(before, 'the router plugin');
    }, 60_000);

    it('xmig nameserver: serves a registration and a lookup, then stops', async () => {
      const before = activeResources();
      const registry = createRegistry({ processMetrics: true });
      const api = await NodeClient.connect(config('R1').apiSocket!);
      const server = new NameServer(api, { databaseFile: join(dir, 'names.log'), logger: logger('nameserver'), registry });
      await server.start();
      const metrics = await startMetricsServer(registry, { port: 0 });
      // A host registers a name and looks it up, through its own node.
      const hostApi = await NodeClient.connect(config('A').apiSocket!);
      const client = new NameClient(hostApi, { nameServer: await server.address() });
      const owner = Identity.load(config('A').keyFile);
      const dag = (await hostApi.info()).address;
      await client.register('lifecycle.test', dag, owner);
      expect((await client.resolve('lifecycle.test')).dag.equals(dag)).toBe(true);
      await client.close();
      await hostApi.close();
      await metrics.close();
      await server.stop();
      await api.close();
      await settled(before);
      expectNothingLeft(before, 'the name server');
    }, 60_000);

    it('xmig agent: with its cron schedules, resume detection and /metrics, started and stopped', async () => {
      const before = activeResources();
      const registry = createRegistry({ processMetrics: true });
      const api = await NodeClient.connect(config('A').apiSocket!);
      const agent = new Agent({
        api,
        routes: new ControlPortRoutes(controlPath('A'), 'A'),
        identity: Identity.load(config('A').keyFile),
        names: [],
        stateFile: join(dir, 'agent-state.json'),
        vm: 'A',
        logger: logger('agent'),
        registry,
        resume: { tickMs: 50, stallMs: 300 },
      });
      await agent.start();
      const metrics = await startMetricsServer(registry, { port: 0 });
      expect(await fetch(metrics.url).then((r) => r.text())).toMatch(/^xmig_agent_/m);
      await metrics.close();
      await agent.stop();
      await api.close();
      await settled(before);
      expectNothingLeft(before, 'the agent');
    }, 60_000);

    it('xmig send | recv over XIA: 3 MiB moved intact, both ends stopped', async () => {
      const before = activeResources();
      const recvApi = await NodeClient.connect(config('B').apiSocket!);
      const sendApi = await NodeClient.connect(config('A').apiSocket!);
      const listening = await listenXia(recvApi, WellKnownSid.MIGRATION);
      const data = Buffer.concat([randomBytes(2 << 20), Buffer.alloc(1 << 20)]);
      const hash = createHash('sha256');
      const output = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          hash.update(chunk);
          callback();
        },
      });
      const receiver = new MigrationReceiver({
        output,
        accept: () => listening.accept(),
        admit: admitXiaFrom([nodes[1]!.node.hid]),
        retriever: (_mode, source) => new XiaRetriever(recvApi, Dag.parse(source)),
        resumeDeadlineMs: 30_000,
        logger: logger('mover'),
      });
      const received = receiver.run();
      const input = new PassThrough();
      input.end(data);
      const to = Dag.hostAddress(nodes[0]!.node.ad!, nodes[2]!.node.hid, WellKnownSid.MIGRATION);
      const sender = new MigrationSender({
        input,
        connect: connectXia(sendApi, to),
        publisher: new XiaPublisher(sendApi),
        mode: 'xia',
        source: (await sendApi.info()).address.toString(),
        chunkBytes: 256 * 1024,
        roundBytes: 1024 * 1024,
        resumeDeadlineMs: 30_000,
        logger: logger('mover'),
      });
      await Promise.all([sender.run(), received]);
      expect(hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
      await listening.close();
      await sendApi.close();
      await recvApi.close();
      await settled(before);
      expectNothingLeft(before, 'send and recv');
    }, 120_000);
  });

  it('all of them, nodes included: the process holds what it held before the first', async () => {
    await settled(initial);
    expectNothingLeft(initial, 'everything this file started');
  });
});
