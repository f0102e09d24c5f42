import { describe, expect, it } from 'vitest';
import { parseConfig } from '../shared/config.js';
import { nodeConfigSchema } from './node-config.js';
import { topologySchema } from './topology.js';
import { udpLayout } from './udp-topology.js';

const raw = {
  name: 't',
  ads: ['AD1'],
  segments: ['seg-A', 'seg-B'],
  nodes: [
    { name: 'R1', role: 'router', ad: 'AD1', interfaces: [{ segment: 'seg-A', hostFacing: true }, { segment: 'seg-B', hostFacing: true }] },
    { name: 'A', role: 'host', interfaces: [{ segment: 'seg-A' }] },
    { name: 'B', role: 'host', interfaces: [{ segment: 'seg-B' }] },
  ],
};

describe('udpLayout', () => {
  it('puts a segment\'s impairment and the MTU on every interface attached to it', () => {
    const topology = parseConfig(topologySchema, { ...raw, impairments: { 'seg-A': { lossRate: 0.01, delayMs: 10 } } });
    const layout = udpLayout(topology, { dir: '/tmp/x', mtu: 1500, impairments: { 'seg-B': { delayMs: 50, seed: 9 } } });
    const r1 = layout.configs.get('R1')!;
    expect(r1.interfaces.map((i) => [i.mtu, i.impairment?.lossRate, i.impairment?.delayMs])).toEqual([
      [1500, 0.01, 10],
      [1500, 0, 50],
    ]);
    expect(layout.configs.get('A')!.interfaces[0]!.impairment?.delayMs).toBe(10);
    expect(layout.configs.get('B')!.interfaces[0]!.impairment?.seed).toBe(9);
    // What is written is what the daemon reads back.
    for (const config of layout.configs.values()) expect(parseConfig(nodeConfigSchema, JSON.parse(JSON.stringify(config)))).toEqual(config);
  });

  it('leaves the MTU to the system and the links unimpaired unless told', () => {
    const layout = udpLayout(parseConfig(topologySchema, raw), { dir: '/tmp/x' });
    expect(layout.configs.get('A')!.interfaces[0]).toMatchObject({ mtu: undefined, impairment: undefined });
  });

  it('refuses an impairment for a segment the topology does not have', () => {
    expect(() => parseConfig(topologySchema, { ...raw, impairments: { 'seg-Z': { lossRate: 0.1 } } })).toThrow(/unknown segment "seg-Z"/);
  });
});
