/**
 * UdpLinks in a process of their own, driven over stdin, for tests that need them inside a
 * network namespace: `node --import tsx udp-link-probe.ts NAME=BIND=IFNAME ...` starts one
 * link per argument (port 7000, the lab's multicast group on IFNAME) and prints
 * `{"bound":NAME,"address":...}` for each, then `{"got":NAME,"payload":...,"from":...}` for
 * every datagram. Input lines: `broadcast NAME PAYLOAD` or `send NAME ADDRESS PAYLOAD`;
 * end of input stops the links.
 */
import { createInterface } from 'node:readline';
import { XIANET_GROUP, XIANET_PORT } from '../../lab/lab-constants.js';
import { UdpLink } from '../../xianet/udp-link.js';

const links = new Map<string, UdpLink>();
const print = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value)}\n`);
for (const spec of process.argv.slice(2)) {
  const [name, bind, ifname] = spec.split('=') as [string, string, string];
  const link = new UdpLink({ name, bindAddress: bind, port: XIANET_PORT, multicastGroup: XIANET_GROUP, multicastInterface: `::%${ifname}` });
  link.onReceive((packet, from) => print({ got: name, payload: packet.toString(), from }));
  await link.start();
  links.set(name, link);
  print({ bound: name, address: link.address });
}
for await (const line of createInterface({ input: process.stdin })) {
  const [verb, name, ...rest] = line.split(' ');
  const link = links.get(name ?? '');
  if (verb === 'broadcast') link?.broadcast(Buffer.from(rest.join(' ')));
  if (verb === 'send') link?.send(Buffer.from(rest.slice(1).join(' ')), rest[0]!);
}
for (const link of links.values()) await link.stop();
