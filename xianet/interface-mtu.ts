/**
 * The MTU of the network interface a UDP link sends on, and the largest XIP packet
 * (UDP payload) that fits in it without IP fragmentation. On a real 1500-byte link a
 * 65000-byte datagram leaves as 45 IP fragments, and losing any one loses all of
 * them: a link never sends a datagram larger than its interface carries.
 *
 * Linux: the interface is found by its address (os.networkInterfaces) and its MTU is
 * read from /sys/class/net/<if>/mtu — what systeminformation reads too, but without
 * the helper commands its networkInterfaces() runs (230 ms here, more under load, at
 * every daemon start). Elsewhere systeminformation answers (loaded only then).
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { isIPv6 } from 'node:net';

/** IPv4 header (no options) + UDP header. */
export const IPV4_UDP_OVERHEAD = 28;
/** IPv6 header + UDP header. */
export const IPV6_UDP_OVERHEAD = 48;
/** Largest UDP payload: 65535 less the headers (IPv4), 65535 less the UDP header (IPv6, no jumbograms). */
export const MAX_UDP_PAYLOAD_V4 = 65507;
export const MAX_UDP_PAYLOAD_V6 = 65527;

/** The largest datagram payload an IP MTU carries unfragmented. */
export function udpPayloadLimit(ipMtu: number, v6: boolean): number {
  return v6 ? Math.min(MAX_UDP_PAYLOAD_V6, ipMtu - IPV6_UDP_OVERHEAD) : Math.min(MAX_UDP_PAYLOAD_V4, ipMtu - IPV4_UDP_OVERHEAD);
}

function sysfsMtu(name: string): number | undefined {
  try {
    const mtu = Number(readFileSync(`/sys/class/net/${name}/mtu`, 'utf8').trim());
    return Number.isInteger(mtu) && mtu > 0 ? mtu : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The names of the interfaces `bindAddress` sends on: the one holding the address, the
 * scope of a link-local one ("fe80::1%veth0"), the multicast interface if given, or
 * (a wildcard bind) every interface that is not loopback.
 */
export function interfacesFor(bindAddress: string, multicastInterface?: string): { names: string[]; wildcard: boolean } {
  const all = networkInterfaces();
  const pick = (address: string): string | undefined => {
    const [bare, scope] = address.split('%');
    if (scope && all[scope]) return scope;
    for (const [name, addresses] of Object.entries(all)) {
      if (addresses?.some((a) => a.address === bare)) return name;
    }
    return undefined;
  };
  if (multicastInterface) {
    const name = pick(multicastInterface);
    if (name) return { names: [name], wildcard: false };
  }
  const bare = bindAddress.split('%')[0]!;
  if (bare === '0.0.0.0' || bare === '::') {
    const names = Object.entries(all)
      .filter(([, addresses]) => addresses?.some((a) => !a.internal))
      .map(([name]) => name);
    return { names: names.length > 0 ? names : Object.keys(all), wildcard: true };
  }
  const name = pick(bindAddress);
  return { names: name ? [name] : [], wildcard: false };
}

/** The IP MTU of the interface(s) `bindAddress` sends on (the smallest, for a wildcard), if it can be found. */
export async function interfaceMtu(bindAddress: string, multicastInterface?: string): Promise<number | undefined> {
  const { names } = interfacesFor(bindAddress, multicastInterface);
  if (names.length === 0) return undefined;
  let mtus = names.map(sysfsMtu).filter((m): m is number => m !== undefined);
  if (mtus.length === 0) {
    try {
      const si = (await import('systeminformation')).default;
      const found = await si.networkInterfaces();
      const list = Array.isArray(found) ? found : [found];
      mtus = list.filter((i) => names.includes(i.iface) && typeof i.mtu === 'number' && i.mtu > 0).map((i) => i.mtu as number);
    } catch {
      return undefined;
    }
  }
  return mtus.length > 0 ? Math.min(...mtus) : undefined;
}

/** Is this address IPv6 (scope and all)? */
export function isV6Address(address: string): boolean {
  return isIPv6(address.split('%')[0]!);
}
