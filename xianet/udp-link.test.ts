import { afterEach, describe, expect, it } from 'vitest';
import { parseSocketAddress, UdpLink } from './udp-link.js';

const links: UdpLink[] = [];
afterEach(async () => {
  for (const l of links.splice(0)) await l.stop();
});

async function link(bindAddress: string, peers: string[] = []): Promise<UdpLink> {
  const l = new UdpLink({ name: bindAddress, bindAddress, port: 0, peers });
  links.push(l);
  await l.start();
  return l;
}

describe('UdpLink', () => {
  it.each(['127.0.0.1', '::1'])('carries one packet per datagram over %s, unicast and to its peers', async (host) => {
    const a = await link(host);
    const b = await link(host);
    const c = await link(host);
    const got: Array<[string, string, string]> = [];
    for (const [name, l] of [['b', b], ['c', c]] as const) l.onReceive((p, from) => got.push([name, p.toString(), from]));
    a.send(Buffer.from('one'), b.address!);
    a.setPeers([b.address!, c.address!]);
    a.broadcast(Buffer.from('all'));
    await new Promise((r) => setTimeout(r, 50));
    expect(got.map(([n, p]) => `${n}:${p}`).sort()).toEqual(['b:all', 'b:one', 'c:all']);
    expect(got.every(([, , from]) => from === a.address)).toBe(true);
  });

  it('sends a header and a separate tail as one datagram, and reaches a peer given by name', async () => {
    const a = await link('127.0.0.1');
    const b = await link('127.0.0.1');
    const got: string[] = [];
    b.onReceive((p) => got.push(p.toString()));
    a.send(Buffer.from('head|'), b.address!, Buffer.from('tail'));
    a.send(Buffer.from('by name'), `localhost:${b.port!}`);
    await new Promise((r) => setTimeout(r, 50));
    expect(got.sort()).toEqual(['by name', 'head|tail']);
  });

  it('parses IPv4, IPv6 and scoped link-local socket addresses', () => {
    expect(parseSocketAddress('10.0.0.1:7000')).toEqual({ host: '10.0.0.1', port: 7000 });
    expect(parseSocketAddress('[fe80::1%veth0]:7000')).toEqual({ host: 'fe80::1%veth0', port: 7000 });
    expect(() => parseSocketAddress('nonsense')).toThrow(/not a socket address/);
  });
});
