/**
 * What the lab's VM and the lab's hosts agree on, so that the VM's xianet link works on
 * every segment it lands on without DHCP or reconfiguration:
 *
 * - xianet runs over UDP on IPv6 link-local addresses: the VM's is derived from its fixed
 *   MAC (EUI-64, `linkLocalFromMac`), so it is the same on every segment and after every
 *   move. Hosts' and routers' nodes bind their own link-local address on their segment
 *   interface (`fe80::…%brA`, port `XIANET_PORT`); a node with links on several segments
 *   binds one per interface, all on the same port (UdpLink then receives the group on a
 *   second socket scoped to that interface, so no link hears another segment).
 * - A segment's broadcast (beacons, hellos) is the IPv6 link-local multicast group
 *   `XIANET_GROUP` on `XIANET_PORT`, joined on the segment interface (`::%eth0`).
 * - Link-local addresses must be usable at once: DAD is off on these interfaces
 *   (`net.ipv6.conf.IF.accept_dad=0` before the link comes up), or a bind fails while the
 *   address is still "tentative".
 * - A datagram never exceeds the segment MTU: UdpLink reads the interface's MTU (1500 on the
 *   lab's veths, bridges and taps) and sends no larger XIP packet than fits in it.
 */

/** UDP port of xianet on every lab segment. */
export const XIANET_PORT = 7000;

/** The segment's broadcast: a link-local scope IPv6 multicast group (0xC0DE is XIP's ethertype). */
export const XIANET_GROUP = 'ff02::c0de';

/** The VM's only NIC, as the guest kernel names it. */
export const GUEST_INTERFACE = 'eth0';

/** The lab's Ethernet MTU (real Ethernet). */
export const LAB_MTU = 1500;

/** Where the guest's node and agent serve /metrics (on [::], so the hosting namespace reads them too). */
export const GUEST_NODE_METRICS_PORT = 9100;
export const GUEST_AGENT_METRICS_PORT = 9101;

const MAC = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/;

/** True for a unicast, locally administered MAC ("52:54:00:…" is QEMU's prefix and qualifies). */
export function isLabMac(mac: string): boolean {
  const match = MAC.exec(mac.toLowerCase());
  if (!match) return false;
  const first = Number.parseInt(match[1]!, 16);
  return (first & 0x01) === 0;
}

/**
 * The IPv6 link-local address the kernel gives an interface with this MAC (EUI-64,
 * RFC 4291 appendix A: ff:fe in the middle, the universal/local bit flipped), in the
 * shortest form Node and iproute2 print.
 */
export function linkLocalFromMac(mac: string): string {
  const match = MAC.exec(mac.toLowerCase());
  if (!match) throw new RangeError(`"${mac}" is not a MAC address (xx:xx:xx:xx:xx:xx)`);
  const b = match.slice(1).map((h) => Number.parseInt(h, 16));
  const groups = [((b[0]! ^ 0x02) << 8) | b[1]!, (b[2]! << 8) | 0xff, (0xfe << 8) | b[3]!, (b[4]! << 8) | b[5]!];
  // fe80:0:0:0:g0:g1:g2:g3 -> "fe80::" + groups, compressing the zero run after fe80 (RFC 5952).
  const tail = groups.map((g) => g.toString(16));
  const leadingZeros = tail.findIndex((g) => g !== '0');
  if (leadingZeros === -1) return 'fe80::';
  return `fe80::${tail.slice(leadingZeros).join(':')}`;
}

/**
 * The load in the VM beside what the clients ask of it: the calculation alone, dbench on
 * its disk as well, or an iperf3 stream from C to it (the paper's netperf; not in Debian main).
 */
export type LabWorkload = 'goldbach' | 'dbench' | 'iperf3';
export const LAB_WORKLOADS: readonly LabWorkload[] = ['goldbach', 'dbench', 'iperf3'];
