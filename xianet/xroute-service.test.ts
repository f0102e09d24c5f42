import { afterEach, describe, expect, it } from 'vitest';
import { MemoryLogger } from '../shared/logger.js';
import { InProcessNetwork, INTRA_AD } from './topology.js';

let network: InProcessNetwork | undefined;
afterEach(async () => {
  await network?.stop();
  network = undefined;
});

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
});
