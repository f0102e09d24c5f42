/**
 * A router's XHCP server: beacons on every host-facing interface (AD, gateway HID,
 * name-server DAG, sequence, timestamp, link id), signed with the AD's key, every
 * `beaconIntervalMs`; and an immediate unicast beacon in answer to a solicitation,
 * so a VM that just resumed need not wait for the next period.
 */
import { Dag } from '../shared/dag.js';
import type { Identity } from '../shared/identity.js';
import { KeyedRateLimiter, Refusals } from '../shared/limits.js';
import type { Startable } from '../shared/startable.js';
import { BROADCAST_HID, WellKnownSid } from '../shared/xid.js';
import { datagramData } from './datagram.js';
import type { LinkAddress } from './link.js';
import type { Arrival, XiaNode } from './node.js';
import { decodeXhcp, encodeBeacon } from './xhcp.js';
import { Counter, type Registry } from '../shared/metrics.js';

export const XHCP_BROADCAST_DAG = Dag.chain(BROADCAST_HID, WellKnownSid.XHCP);

export interface BeaconServiceOptions {
  /** The AD's key; AD = SHA-1 of its public key. Beacons are unsigned without it. */
  adIdentity?: Identity;
  beaconIntervalMs?: number;
  /** Where hosts find the name server. */
  nameServer?: Dag;
  /** Solicitations answered per second per interface, and the burst (default 50 / 20): each answer is a signing. */
  solicitsPerSecond?: number;
  solicitsBurst?: number;
}

export class BeaconService implements Startable {
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private unbind: (() => void) | undefined;
  private seq = 0;
  private readonly solicits: KeyedRateLimiter<number>;
  readonly refusals = new Refusals([
    ['solicit', 'malformed'],
    ['solicit', 'rate'],
  ]);
  readonly stats = { beaconsSent: 0, solicitsAnswered: 0 };

  constructor(
    private readonly node: XiaNode,
    private readonly options: BeaconServiceOptions = {},
  ) {
    this.intervalMs = options.beaconIntervalMs ?? 100;
    this.solicits = new KeyedRateLimiter(options.solicitsPerSecond ?? 50, options.solicitsBurst ?? 20, 256, node.clock);
    if (node.registry) this.refusals.register(node.registry, 'xianet_xhcp_refusals_total', 'XHCP solicitations a router refused, by resource and reason');
  }

  /** The link id a beacon carries: which interface of which router. */
  linkId(port: number): string {
    return `${this.node.hid.id.toString('hex', 0, 8)}/${port}`;
  }

  /** The name server's DAG announced in beacons (the testbed sets it once the server runs). */
  get nameServer(): Dag | undefined {
    return this.options.nameServer;
  }

  set nameServer(dag: Dag | undefined) {
    this.options.nameServer = dag;
  }

  async start(): Promise<void> {
    if (this.timer) return;
    if (!this.node.ad) throw new Error(`router ${this.node.name} has no AD to beacon`);
    this.unbind = this.node.bind(WellKnownSid.XHCP, (packet, arrival) => this.onPacket(packet, arrival));
    this.beaconAll();
    this.timer = setInterval(() => this.beaconAll(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.unbind?.();
    this.unbind = undefined;
  }

  private beacon(port: number): Buffer {
    return encodeBeacon(
      {
        seq: this.seq++ >>> 0,
        ad: this.node.ad!,
        gatewayHid: this.node.hid,
        nameServer: this.options.nameServer,
        timestamp: this.node.clock.now(),
        linkId: this.linkId(port),
      },
      this.options.adIdentity,
    );
  }

  beaconAll(): void {
    for (const iface of this.node.interfaceList) {
      if (!iface.hostFacing) continue;
      if (this.node.sendDatagramOnPort(iface.port, 'broadcast', XHCP_BROADCAST_DAG, this.beacon(iface.port))) {
        this.stats.beaconsSent++;
      }
    }
  }

  private onPacket(packet: Buffer, arrival: Arrival): void {
    if (arrival.port < 0 || arrival.from === undefined) return;
    const data = datagramData(packet, arrival);
    if (!data) return;
    let message;
    try {
      // A router checks no beacon signature (it only answers solicitations).
      message = decodeXhcp(data, { mayVerify: () => false });
    } catch {
      this.refusals.refuse('solicit', 'malformed');
      return;
    }
    if (message.kind !== 'solicit') return;
    if (!this.solicits.take(arrival.port)) {
      this.refusals.refuse('solicit', 'rate');
      return;
    }
    this.answer(arrival.port, arrival.from);
  }

  private answer(port: number, to: LinkAddress): void {
    if (!this.node.interface(port)?.hostFacing) return;
    if (this.node.sendDatagramOnPort(port, to, XHCP_BROADCAST_DAG, this.beacon(port))) this.stats.solicitsAnswered++;
  }
}

/** `xianet_beacons_sent_total{node,kind}`: periodic beacons, and the answers to solicitations. */
export function registerBeaconMetrics(registry: Registry, node: string, beacons: BeaconService): void {
  new Counter({
    name: 'xianet_beacons_sent_total',
    help: 'XHCP beacons sent by this router: periodic (one per host-facing interface and period), solicited (answers to a host that asked)',
    labelNames: ['node', 'kind'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ node, kind: 'periodic' }, beacons.stats.beaconsSent);
      this.inc({ node, kind: 'solicited' }, beacons.stats.solicitsAnswered);
    },
  });
}
