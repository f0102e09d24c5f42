/** A small XIA network of `xmig node` processes on UDP over loopback, for integration tests. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dag } from '../../shared/dag.js';
import { Identity } from '../../shared/identity.js';
import { XidType, type Xid } from '../../shared/xid.js';
import { parseConfig } from '../../shared/config.js';
import { topologySchema, type Topology } from '../../xianet/topology.js';
import { udpLayout, type UdpLayout, type UdpLayoutOptions } from '../../xianet/udp-topology.js';
import { reservePortBlock } from './ports.js';
import { reapAll, startXmig, type XmigProcess } from './processes.js';

/** The mover's network: one AD, router R1, the source host A and the destination host B on segments of their own. */
export const MIGRATION_HOSTS: Topology = parseConfig(topologySchema, {
  name: 'migration-hosts',
  ads: ['AD1'],
  segments: ['seg-A', 'seg-B'],
  nodes: [
    { name: 'R1', role: 'router', ad: 'AD1', interfaces: [{ segment: 'seg-A', hostFacing: true }, { segment: 'seg-B', hostFacing: true }] },
    { name: 'A', role: 'host', interfaces: [{ segment: 'seg-A' }] },
    { name: 'B', role: 'host', interfaces: [{ segment: 'seg-B' }] },
  ],
});

export class UdpNetwork {
  readonly dir = mkdtempSync(join(tmpdir(), 'xmig-net-'));
  readonly layout: UdpLayout;
  readonly processes = new Map<string, XmigProcess>();
  /** Its ports (test/support/ports.ts), given back by stop(). */
  private readonly ports = reservePortBlock();

  /** `options`: the links' MTU and impairments per segment (see link-impairment.ts), log level. */
  constructor(
    readonly topology: Topology,
    options: Pick<UdpLayoutOptions, 'mtu' | 'impairments' | 'logLevel'> & { metrics?: boolean } = {},
  ) {
    const basePort = this.ports.base;
    const { metrics, ...layout } = options;
    this.layout = udpLayout(topology, { dir: this.dir, basePort, beaconIntervalMs: 100, helloIntervalMs: 300, metricsBasePort: metrics ? basePort + 700 : undefined, ...layout });
    for (const config of this.layout.configs.values()) {
      Identity.loadOrCreate(config.keyFile);
      if (config.adKeyFile) Identity.loadOrCreate(config.adKeyFile);
    }
  }

  async start(): Promise<void> {
    for (const [name, config] of this.layout.configs) {
      const file = join(this.dir, `${name}.json`);
      writeFileSync(file, JSON.stringify(config));
      this.processes.set(name, startXmig(['node', '--config', file]));
    }
    // As restart() does: a loaded machine (a suite beside QEMU guests) starts a daemon through tsx in well over 15 s.
    await Promise.all([...this.processes.values()].map((p) => p.waitForLog('node.ready', 60_000)));
  }

  /** Kills a node's daemon outright (SIGKILL: no goodbye to anyone). */
  async kill(name: string): Promise<void> {
    await this.processes.get(name)!.stop('SIGKILL');
  }

  /** Starts a node's daemon again from its config (same keys, same ports), once it is ready. */
  async restart(name: string): Promise<void> {
    const process = startXmig(['node', '--config', join(this.dir, `${name}.json`)]);
    this.processes.set(name, process);
    await process.waitForLog('node.ready', 60_000);
  }

  /** Freezes a node's daemon (SIGSTOP) or lets it go on (SIGCONT): a host that stalls. */
  signal(name: string, signal: 'SIGSTOP' | 'SIGCONT'): void {
    this.processes.get(name)!.child.kill(signal);
  }

  /** A node's /metrics text (the network was made with `metrics: true`). */
  async metrics(name: string): Promise<string> {
    const port = this.layout.configs.get(name)!.metrics?.port;
    if (port === undefined) throw new Error('this network has no /metrics');
    return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  }

  /** Sums a metric family's samples on a node's /metrics (those whose labels include `match`). */
  async metric(name: string, family: string, match: Record<string, string> = {}): Promise<number> {
    let total = 0;
    for (const line of (await this.metrics(name)).split('\n')) {
      const m = /^([a-z_]+)(\{[^}]*\})? ([-\d.e+]+)$/.exec(line);
      if (!m || m[1] !== family) continue;
      if (Object.entries(match).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) total += Number(m[3]);
    }
    return total;
  }

  api(name: string): string {
    return this.layout.configs.get(name)!.apiSocket!;
  }

  hid(name: string): Xid {
    return Identity.load(this.layout.configs.get(name)!.keyFile).xid(XidType.HID);
  }

  ad(name: string): Xid {
    return Identity.load(this.layout.adKeyFiles.get(name)!).xid(XidType.AD);
  }

  /** A host's service DAG, given the AD it is in. */
  serviceDag(host: string, adName: string, sid: Xid): Dag {
    return Dag.hostAddress(this.ad(adName), this.hid(host), sid);
  }

  async stop(): Promise<void> {
    // A frozen daemon would never see its SIGTERM.
    for (const p of this.processes.values()) if (p.child.exitCode === null) p.child.kill('SIGCONT');
    await Promise.all([...this.processes.values()].map((p) => p.stop()));
    await reapAll();
    rmSync(this.dir, { recursive: true, force: true });
    this.ports.release();
  }
}
