/**
 * UdpLink on IPv6 link-local addresses with a link-local multicast group, as the lab runs
 * xianet: a router with a link on each of two segments (both on port 7000, each bound to
 * its interface's fe80:: address) and a host on each segment (one bound to "::", as the
 * lab VM is, one to its link-local address). Each router link must hear its own segment's
 * broadcasts and not the other's, and unicast must work both ways with scoped addresses.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, requirement } from '../support/requirements.js';
import { ip, linkLocalOf, makeNetns, removeNetns, uniqueTag } from '../support/netns.js';
import { waitFor } from '../support/wait.js';

const root = requirement(isRoot(), 'root (network namespaces)', 'run the tests as root');
const tag = uniqueTag('ul');
const R = `${tag}-r`;
const H1 = `${tag}-h1`;
const H2 = `${tag}-h2`;

interface Probe {
  child: ChildProcess;
  lines: Array<Record<string, string>>;
  send(line: string): void;
}

const probes: Probe[] = [];

function probe(netns: string, ...links: string[]): Probe {
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '--import', 'tsx', new URL('../support/udp-link-probe.ts', import.meta.url).pathname, ...links], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines: Probe['lines'] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => lines.push(JSON.parse(line) as Record<string, string>));
  const p = { child, lines, send: (line: string) => void child.stdin!.write(`${line}\n`) };
  probes.push(p);
  return p;
}

const got = (p: Probe, link: string): Array<Record<string, string>> => p.lines.filter((l) => l['got'] === link);

beforeAll(() => {
  if (!root) return;
  for (const ns of [R, H1, H2]) makeNetns(ns);
  ip('link', 'add', 'r1', 'netns', R, 'type', 'veth', 'peer', 'name', 'h1', 'netns', H1);
  ip('link', 'add', 'r2', 'netns', R, 'type', 'veth', 'peer', 'name', 'h2', 'netns', H2);
  for (const [ns, dev] of [[R, 'r1'], [R, 'r2'], [H1, 'h1'], [H2, 'h2']] as const) ip('-n', ns, 'link', 'set', dev, 'up');
});

afterAll(() => {
  for (const p of probes) p.child.kill('SIGKILL');
  removeNetns();
});

describe.skipIf(!root)('UdpLink on IPv6 link-local with a link-local multicast group', () => {
  it('hears each segment on its own link only, and answers neighbours at their scoped addresses', async () => {
    const r1 = linkLocalOf(R, 'r1');
    const r2 = linkLocalOf(R, 'r2');
    const h2 = linkLocalOf(H2, 'h2');
    const router = probe(R, `a=${r1}%r1=r1`, `b=${r2}%r2=r2`);
    const host1 = probe(H1, 'h=::=h1');
    const host2 = probe(H2, `h=${h2}%h2=h2`);
    const all = [router, host1, host2];
    await waitFor(() => router.lines.filter((l) => l['bound']).length === 2 && host1.lines.length > 0 && host2.lines.length > 0, 30_000, 'the links to bind');
    expect(router.lines.filter((l) => l['bound']).map((l) => l['address'])).toEqual([`[${r1}%r1]:7000`, `[${r2}%r2]:7000`]);

    // Until both segments are heard (a veth's carrier may come up a moment after its link
    // binds), then a last broadcast on each: a link that heard the other segment would have
    // heard it by then.
    await waitFor(() => {
      host1.send('broadcast h from-1');
      host2.send('broadcast h from-2');
      return got(router, 'a').length >= 1 && got(router, 'b').length >= 1;
    }, 10_000, "the router's links to hear their segments");
    host1.send('broadcast h end-1');
    host2.send('broadcast h end-2');
    await waitFor(() => got(router, 'a').some((l) => l['payload'] === 'end-1') && got(router, 'b').some((l) => l['payload'] === 'end-2'), 10_000, 'the last broadcasts');
    expect(new Set(got(router, 'a').map((l) => l['payload']))).toEqual(new Set(['from-1', 'end-1']));
    expect(new Set(got(router, 'b').map((l) => l['payload']))).toEqual(new Set(['from-2', 'end-2']));
    const h1Address = got(router, 'a')[0]!['from']!;
    expect(h1Address).toMatch(/^\[fe80::[0-9a-f:]+%r1\]:7000$/);
    expect(got(router, 'b')[0]!['from']).toBe(`[${h2}%r2]:7000`);

    // Unicast back to what was heard, and a router broadcast that reaches only its segment.
    router.send(`send a ${h1Address} reply-1`);
    router.send(`send b [${h2}%r2]:7000 reply-2`);
    router.send('broadcast a beacon-a');
    await waitFor(() => got(host1, 'h').length >= 2 && got(host2, 'h').length >= 1, 10_000, 'the replies and the beacon');
    expect(got(host1, 'h').map((l) => l['payload']).sort()).toEqual(['beacon-a', 'reply-1']);
    expect(got(host1, 'h').every((l) => l['from'] === `[${r1}%h1]:7000`)).toBe(true);
    expect(got(host2, 'h').map((l) => l['payload'])).toEqual(['reply-2']);
    for (const p of all) p.child.stdin!.end();
    await Promise.all(all.map((p) => new Promise((r) => (p.child.exitCode !== null ? r(null) : p.child.once('exit', r)))));
    expect(all.map((p) => p.child.exitCode)).toEqual([0, 0, 0]);
  }, 60_000);
});
