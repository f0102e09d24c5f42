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

  /** `options`: the links' MTU and impairments per segment (see link-impairment.ts), log level. */
  constructor(
    readonly topology: Topology,
    options: Pick<UdpLayoutOptions, 'mtu' | 'impairments' | 'logLevel'> = {},
  ) {
    this.layout = udpLayout(topology, { dir: this.dir, basePort: 20000 + Math.floor(Math.random() * 30000), beaconIntervalMs: 100, helloIntervalMs: 300, ...options });
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
    await Promise.all([...this.processes.values()].map((p) => p.waitForLog('node.ready')));
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
    await Promise.all([...this.processes.values()].map((p) => p.stop()));
    await reapAll();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
