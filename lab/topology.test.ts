import { describe, expect, it } from 'vitest';
import { ipv4ModeFor, ipv4Plan, parseTopologyName, VM_GATEWAY4, wiringPlan } from './topology.js';

describe('lab wiring', () => {
  it('refuses an unknown topology in one line that names the known ones', () => {
    expect(() => parseTopologyName('mesh')).toThrow(/^unknown topology "mesh" \(known: intra-ad, inter-ad\)$/);
    expect(parseTopologyName('inter-ad')).toBe('inter-ad');
  });

  it('builds Fig. 1a: R1 cabled to the bridges of A, B and C, one AD', () => {
    const plan = wiringPlan('intra-ad');
    expect(plan.routers).toEqual(['R1']);
    expect(plan.cables.map((c) => `${c.a.host}/${c.a.dev} -> ${c.b.host}/${c.b.dev}@${c.b.master}`)).toEqual([
      'R1/segA -> A/toR1@brA',
      'R1/segB -> B/toR1@brB',
      'R1/segC -> C/toR1@brC',
    ]);
    expect(plan.interfaces.filter((i) => i.host === 'A')).toEqual([{ host: 'A', dev: 'brA', segment: 'seg-A', linkLocal: 'fe80::a:1', hostFacing: false }]);
    expect(new Set(Object.values(plan.adOf))).toEqual(new Set(['AD1']));
  });

  it('builds Fig. 1b: B behind R2 in AD2, R1 and R2 on a cable of their own', () => {
    const plan = wiringPlan('inter-ad');
    expect(plan.routers).toEqual(['R1', 'R2']);
    expect(plan.cables.map((c) => `${c.a.host}/${c.a.dev} -> ${c.b.host}/${c.b.dev}${c.b.master ? `@${c.b.master}` : ''}`)).toEqual([
      'R1/segA -> A/toR1@brA',
      'R1/segC -> C/toR1@brC',
      'R1/toR2 -> R2/toR1',
      'R2/segB -> B/toR2@brB',
    ]);
    expect(plan.adOf).toMatchObject({ A: 'AD1', C: 'AD1', R1: 'AD1', B: 'AD2', R2: 'AD2' });
    // Every interface has its own link-local address.
    const addresses = plan.interfaces.map((i) => i.linkLocal);
    expect(new Set(addresses).size).toBe(addresses.length);
  });

  it('gives the TCP/IP baseline a subnet per segment, or A and B one L2 domain', () => {
    const inter = ipv4Plan(wiringPlan('inter-ad'), ipv4ModeFor('inter-ad'));
    expect(inter.mode).toBe('inter-subnet');
    expect(inter.join).toBeUndefined();
    expect(inter.migrationAddress).toEqual({ A: '10.77.1.10', B: '10.77.2.11' });
    expect(inter.addresses).toContainEqual({ host: 'R1', dev: 'segA', cidr: `${VM_GATEWAY4}/24` });
    expect(inter.routes).toContainEqual({ host: 'R1', args: ['10.77.2.0/24', 'via', '10.77.9.2'] });
    expect(inter.routes).toContainEqual({ host: 'R2', args: ['default', 'via', '10.77.9.1'] });

    const intra = ipv4Plan(wiringPlan('intra-ad'), ipv4ModeFor('intra-ad'));
    expect(intra.mode).toBe('intra-subnet');
    expect(intra.join).toMatchObject({ a: { host: 'A', master: 'brA' }, b: { host: 'B', master: 'brB' } });
    expect(intra.migrationAddress).toEqual({ A: '10.77.1.10', B: '10.77.1.11' });
    // One gateway for the joined subnet: R1's cable to B carries no IPv4.
    expect(intra.addresses.filter((a) => a.host === 'R1').map((a) => a.dev)).toEqual(['segA', 'segC']);
    expect(intra.routes).toContainEqual({ host: 'B', args: ['default', 'via', VM_GATEWAY4] });
  });
});
