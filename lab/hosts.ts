/**
 * What runs on the lab's hosts for one topology: an `xmig node` daemon in every host's
 * namespace (routers with the mobility plugin in-process), and the name server on host
 * A, as in the paper's Fig. 1. Keys are made by the lab before anything starts, so it
 * knows every HID and AD (and the name server's DAG, which routers announce) up front.
 *
 * Nodes speak xianet on the lab's segments: each interface binds its link-local address
 * on its device, port XIANET_PORT, and hears the segment on XIANET_GROUP. Control ports
 * and API sockets are Unix sockets in the run directory: the lab reaches them from its
 * own namespace, where a TCP port inside a host's namespace would be out of reach.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Dag } from '../shared/dag.js';
import { Identity } from '../shared/identity.js';
import type { LogLevel } from '../shared/logger.js';
import { startAll, stopAll, type Startable } from '../shared/startable.js';
import { WellKnownSid, XidType, type Xid } from '../shared/xid.js';
import type { ImpairmentConfig } from '../xianet/link-impairment.js';
import type { NodeConfig } from '../xianet/node-config.js';
import { XIANET_GROUP, XIANET_PORT } from './lab-constants.js';
import { LabProcess } from './lab-process.js';
import { LAB_HOSTS, NAME_SERVER_HOST, type LabHost, type WiringPlan } from './topology.js';
import type { LabWorld } from './world.js';

/** The lab's identities: one per machine, one per AD, the VM's, its Goldbach service's and its tunnel's (iperf3). */
export class LabKeys {
  readonly hosts = new Map<LabHost, Identity>();
  readonly ads = new Map<string, Identity>();
  readonly vm = Identity.generate();
  readonly goldbach = Identity.generate();
  /** The VM's `xmig tunnel serve` in front of its iperf3 server (the network workload over XIA). */
  readonly tunnel = Identity.generate();

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    for (const host of LAB_HOSTS) this.hosts.set(host, Identity.generate());
    for (const ad of ['AD1', 'AD2']) this.ads.set(ad, Identity.generate());
    for (const [name, key] of [...this.hosts, ...this.ads]) key.save(this.file(name));
  }

  file(name: string): string {
    return join(this.dir, `${name}.key`);
  }

  hid(host: LabHost): Xid {
    return this.hosts.get(host)!.xid(XidType.HID);
  }

  ad(name: string): Xid {
    return this.ads.get(name)!.xid(XidType.AD);
  }

  get vmHid(): Xid {
    return this.vm.xid(XidType.HID);
  }

  get goldbachSid(): Xid {
    return this.goldbach.xid(XidType.SID);
  }

  get tunnelSid(): Xid {
    return this.tunnel.xid(XidType.SID);
  }

  /** The name server's DAG: host A, in AD1, whatever the topology. */
  get nameServer(): Dag {
    return Dag.hostAddress(this.ad('AD1'), this.hid(NAME_SERVER_HOST), WellKnownSid.NAME_SERVER);
  }
}

export interface LabHostsOptions {
  world: LabWorld;
  wiring: WiringPlan;
  keys: LabKeys;
  /** Where configs, sockets, logs and the name server's records go. */
  dir: string;
  logLevel?: LogLevel;
  beaconIntervalMs?: number;
  /** On the R1–R2 cable (inter-ad), at both of its ends. */
  interAdImpairment?: ImpairmentConfig;
  /** How long a daemon may take to come up (TCG guests share the CPU). */
  deadlineMs?: number;
  signal?: AbortSignal;
}

export class LabHosts implements Startable {
  readonly nodes = new Map<LabHost, LabProcess>();
  nameServer: LabProcess | undefined;
  private started: Startable[] = [];

  constructor(readonly options: LabHostsOptions) {
    mkdirSync(options.dir, { recursive: true });
  }

  get hosts(): LabHost[] {
    return [...new Set(this.options.wiring.interfaces.map((i) => i.host))];
  }

  api(host: LabHost): string {
    return join(this.options.dir, `${host}.sock`);
  }

  control(host: LabHost): string {
    return join(this.options.dir, `${host}.control.sock`);
  }

  /** Where a host is, as a DAG (AD → HID), in this topology. */
  address(host: LabHost): Dag {
    return Dag.hostAddress(this.options.keys.ad(this.options.wiring.adOf[host]), this.options.keys.hid(host));
  }

  /** The migration receiver's DAG on hypervisor `host`. */
  migrationDag(host: LabHost): Dag {
    return this.address(host).append(WellKnownSid.MIGRATION);
  }

  config(host: LabHost): NodeConfig {
    const { wiring, keys } = this.options;
    const router = wiring.routers.includes(host);
    const ad = wiring.routerAds[host];
    return {
      name: host,
      role: router ? 'router' : 'host',
      keyFile: keys.file(host),
      ...(ad ? { adKeyFile: keys.file(ad), nameServer: keys.nameServer.toString() } : {}),
      trustedAds: [],
      acceptUnsignedBeacons: false,
      beaconIntervalMs: this.options.beaconIntervalMs ?? 100,
      helloIntervalMs: 1000,
      interfaces: wiring.interfaces
        .filter((i) => i.host === host)
        .map((i) => ({
          name: i.dev,
          bind: `${i.linkLocal}%${i.dev}`,
          port: XIANET_PORT,
          peers: [],
          multicastGroup: XIANET_GROUP,
          multicastInterface: `::%${i.dev}`,
          hostFacing: i.hostFacing,
          mtu: this.options.world.options.mtu,
          ...(i.segment === 'r1-r2' && this.options.interAdImpairment ? { impairment: this.options.interAdImpairment } : {}),
        })) as NodeConfig['interfaces'],
      routes: [],
      controlPort: { path: this.control(host) },
      apiSocket: this.api(host),
      plugins: router ? ['mobility'] : [],
      logLevel: this.options.logLevel ?? 'info',
    };
  }

  private process(host: LabHost, name: string, args: string[]): LabProcess {
    return new LabProcess({
      net: this.options.world.net,
      ns: this.options.world.ns(host),
      name,
      args,
      stderrFile: join(this.options.dir, `${name.replace(/\s+/g, '-')}.stderr`),
    });
  }

  async start(): Promise<void> {
    const deadlineMs = this.options.deadlineMs ?? 60_000;
    const wait = { deadlineMs, signal: this.options.signal };
    // Routers first, so the hosts hear a beacon as soon as they listen.
    const order = [...this.hosts].sort((a, b) => Number(this.options.wiring.routers.includes(b)) - Number(this.options.wiring.routers.includes(a)));
    for (const host of order) {
      const file = join(this.options.dir, `${host}.json`);
      writeFileSync(file, JSON.stringify(this.config(host), null, 2));
      this.nodes.set(host, this.process(host, `node ${host}`, ['node', '--config', file]));
    }
    const nodes = order.map((h) => this.nodes.get(h)!);
    await startAll(nodes);
    this.started = [...nodes];
    await Promise.all(nodes.map((n) => n.waitForEvent('node.ready', wait)));
    await Promise.all(order.filter((h) => !this.options.wiring.routers.includes(h)).map((h) => this.nodes.get(h)!.waitForEvent('gateway.adopted', wait)));
    const ns = this.process(NAME_SERVER_HOST, 'name server', ['nameserver', '--api', this.api(NAME_SERVER_HOST), '--db', join(this.options.dir, '..', 'names.db')]);
    await ns.start();
    this.started.push(ns);
    this.nameServer = ns;
    await ns.waitForEvent('nameserver.started', wait);
  }

  async stop(): Promise<void> {
    const started = this.started;
    this.started = [];
    this.nameServer = undefined;
    await stopAll(started);
  }
}
