/**
 * Issue 14: `xmig ping DAG -i 1 -s 70000` killed the local node daemon (3/3), and size
 * 1e9 took it to 1 GB. The command now refuses options out of xping's bounds as a usage
 * error before it says anything to the node, and the node refuses what the command lets
 * through but its links cannot carry (a size past the MTU) with a typed error. Each is
 * tried three times against a real daemon, which then still answers a good ping.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dag } from '../../shared/dag.js';
import { ExitCode } from '../../cli/exit-codes.js';
import { runXmig } from '../support/processes.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';
import { waitFor } from '../support/wait.js';

let net: UdpNetwork;
let target: string;

beforeAll(async () => {
  // 1500-byte links: a 65,535-byte echo passes the command's bounds but not the node's MTU.
  net = new UdpNetwork(MIGRATION_HOSTS, { mtu: 1500 });
  await net.start();
  target = Dag.hostAddress(net.ad('AD1'), net.hid('B')).toString();
  await waitFor(async () => (await runXmig(['ping', target, '--api', net.api('A'), '-n', '1', '-W', '5000', '--json'], 60_000)).code === 0, 120_000, 'A to reach B', 200);
}, 180_000);

afterAll(async () => {
  await net?.stop();
});

describe('xmig ping with options the node cannot take', () => {
  it.each([
    [['-i', '1', '-s', '70000'], /--size <bytes>' argument '70000' is invalid/],
    [['-s', '1000000000'], /--size <bytes>' argument '1000000000' is invalid/],
    [['-s', 'x'], /--size <bytes>' argument 'x' is invalid/],
    [['-i', '0'], /--interval <ms>' argument '0' is invalid/],
  ])('%j is a usage error, three times over, and the node lives', async (options, message) => {
    for (let i = 0; i < 3; i++) {
      const run = await runXmig(['ping', target, '--api', net.api('A'), '-n', '3', ...options], 60_000);
      expect(run.code, run.stderr).toBe(ExitCode.USAGE);
      expect(run.stderr).toMatch(message);
    }
    expect(net.processes.get('A')!.child.exitCode).toBeNull();
  });

  it('a size within the command\'s bounds but past the link MTU is refused by the node, which lives and answers', async () => {
    for (let i = 0; i < 3; i++) {
      const run = await runXmig(['ping', target, '--api', net.api('A'), '-i', '1', '-n', '3', '-s', '65535'], 60_000);
      expect(run.code, run.stderr).not.toBe(0);
      expect(run.stderr).toMatch(/size/);
    }
    expect(net.processes.get('A')!.child.exitCode).toBeNull();
    const good = await runXmig(['ping', target, '--api', net.api('A'), '-i', '1', '-n', '5', '-W', '30000', '--json'], 60_000);
    expect(good.code, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout)).toMatchObject({ sent: 5, received: 5 });
  });
});
