import { afterEach, describe, expect, it } from 'vitest';
import { Dag } from '../shared/dag.js';
import { MemoryLogger } from '../shared/logger.js';
import { InProcessNetwork, INTER_AD, INTRA_AD, type NetworkOptions } from './topology.js';
import { ping } from './xping.js';
import type { XiaStack } from './stack.js';

let network: InProcessNetwork | undefined;
afterEach(async () => {
  await network?.stop();
  network = undefined;
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves at `host`'s next registration with its gateway. */
function registered(host: XiaStack): Promise<void> {
  return new Promise((resolve) => host.join!.once('registered', () => resolve()));
}

/** `topology` started (hellos every 50 ms) once its VM has registered with R1. */
async function registeredVm(topology: typeof INTRA_AD, options: Omit<NetworkOptions, 'beaconIntervalMs' | 'helloIntervalMs'> = {}): Promise<{ vm: XiaStack; r1: XiaStack }> {
  network = new InProcessNetwork(topology, { beaconIntervalMs: 30, helloIntervalMs: 50, ...options });
  const vm = network.stack('VM');
  const joined = registered(vm);
  await network.start();
  await joined;
  return { vm, r1: network.stack('R1') };
}

/** A host that stops speaking (no HELLO, no registration) but still answers what reaches it: a starved or paused VM. */
async function silence(host: XiaStack): Promise<void> {
  await host.join!.stop();
  await host.xroute.stop();
}

describe('host registration at the gateway', () => {
  it('logs a new host at info and its routine renewals at debug', async () => {
    const logger = new MemoryLogger();
    network = new InProcessNetwork(INTRA_AD, { beaconIntervalMs: 30, helloIntervalMs: 200, logger, stackOptions: () => ({ join: { reregisterMs: 40 } }) });
    const a = network.stack('A');
    const renewals = new Promise<void>((resolve) => {
      let seen = 0;
      a.join!.on('registered', ({ renewal }) => {
        if (renewal && ++seen === 3) resolve();
      });
    });
    await network.start();
    await renewals;
    const hid = a.node.hid.toString();
    const atGateway = logger.records.filter((r) => r.event === 'host.registered' && r['hid'] === hid);
    expect(atGateway.filter((r) => r.level === 'info')).toHaveLength(1);
    expect(atGateway.filter((r) => r.level === 'debug').length).toBeGreaterThanOrEqual(2);
  });

  // The lab VM under a loaded CI machine: a TCG guest silent for longer than the dead
  // interval while its registration stood, and the router answered every echo to it with
  // "host unreachable" though the route was there.
  it('reaches a registered host that has been silent for longer than the dead interval', async () => {
    const { vm, r1 } = await registeredVm(INTRA_AD);
    await silence(vm);
    await sleep(1_000); // 20 hello periods; the router sweeps every 500 ms
    const summary = await ping(r1.node, Dag.hostAddress(r1.node.ad!, vm.node.hid), { count: 3, intervalMs: 10, timeoutMs: 2_000 });
    expect(summary).toMatchObject({ received: 3, errors: 0 });
  });

  it('calls a registered host unreachable once its hold is over, and forgets a silent router after the dead interval', async () => {
    const { vm, r1 } = await registeredVm(INTER_AD, { stackOptions: () => ({ xroute: { registeredHostMs: 300 } }) });
    const r2 = network!.stack('R2');
    await network!.ready();
    expect(r1.node.neighbors.portsOf(r2.node.hid)).toEqual([2]);
    await silence(vm);
    await r2.xroute.stop();
    await sleep(1_500);
    expect(r1.node.neighbors.portsOf(r2.node.hid)).toEqual([]);
    expect(r1.node.neighbors.portsOf(vm.node.hid)).toEqual([]);
    const summary = await ping(r1.node, Dag.hostAddress(r1.node.ad!, vm.node.hid), { count: 2, intervalMs: 10, timeoutMs: 2_000 });
    expect(summary).toMatchObject({ received: 0, errors: 2 });
  });

  it('forgets where a registered host was once it registers on another port', async () => {
    const { vm, r1 } = await registeredVm(INTRA_AD);
    expect(r1.node.neighbors.portsOf(vm.node.hid)).toEqual([0]);
    const joined = registered(vm);
    network!.move('VM', 'seg-B');
    await joined;
    expect(r1.node.neighbors.portsOf(vm.node.hid)).toEqual([1]);
    expect(r1.node.routes.route(vm.node.hid)).toMatchObject({ port: 1, origin: 'register' });
  });
});
