import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../agent/agent-config.js';
import { parseConfig } from '../shared/config.js';
import { nodeConfigSchema } from '../xianet/node-config.js';
import { topologySchema } from '../xianet/topology.js';
import { INSTALL, parseAddresses, roleConfig, ROLES } from './role-config.js';

const topology = parseConfig(topologySchema, {
  name: 'two-hosts',
  ads: ['AD1'],
  segments: ['seg-A', 'seg-B'],
  nodes: [
    { name: 'R1', role: 'router', ad: 'AD1', interfaces: [{ segment: 'seg-A', hostFacing: true }, { segment: 'seg-B', hostFacing: true }] },
    { name: 'A', role: 'host', interfaces: [{ segment: 'seg-A' }] },
    { name: 'B', role: 'host', interfaces: [{ segment: 'seg-B' }] },
  ],
});
const addresses = { R1: '10.0.0.1', A: '10.0.0.11', B: '10.0.0.12' };

describe('roleConfig', () => {
  it.each(ROLES)('gives the %s role configs its daemons accept, at the installed paths', (role) => {
    const config = roleConfig({ role });
    const node = parseConfig(nodeConfigSchema, JSON.parse(config.files[0]!.content));
    expect(node.role).toBe(role === 'router' ? 'router' : 'host');
    expect(node.keyFile).toBe(INSTALL.nodeKey);
    expect(node.apiSocket).toBe(INSTALL.apiSocket);
    expect(node.adKeyFile).toBe(role === 'router' ? INSTALL.adKey : undefined);
    expect(node.plugins).toEqual(role === 'router' ? ['mobility'] : []);
    expect(node.interfaces[0]).toMatchObject({ multicastGroup: INSTALL.segmentGroup, port: INSTALL.udpPort, hostFacing: role === 'router' });
    expect(config.files.every((f) => f.mode === 0o640)).toBe(true);
    if (role === 'vm') {
      const agent = parseConfig(agentConfigSchema, JSON.parse(config.files.find((f) => f.path.endsWith('agent.json'))!.content));
      expect(agent).toMatchObject({ api: INSTALL.apiSocket, router: node.name, keyFile: INSTALL.nodeKey, control: '/run/xmig/control.sock' });
      expect(config.units).toEqual(['xmig-node.service', 'xmig-agent.service']);
    } else {
      expect(config.units).toEqual(['xmig-node.service']);
    }
    if (role === 'router') expect(config.files.find((f) => f.path.endsWith('router-plugin.env'))!.content).toMatch(/^XMIG_ROUTER=R1$/m);
  });

  it('builds a machine of a topology: its interfaces on its address, the other members of each segment as peers', () => {
    const router = roleConfig({ role: 'router', topology, node: 'R1', addresses, withNameServer: true });
    expect(router.node.name).toBe('R1');
    expect(router.node.interfaces.map((i) => [i.bind, i.port, i.peers, i.hostFacing])).toEqual([
      ['10.0.0.1', 7000, ['10.0.0.11:7000'], true],
      ['10.0.0.1', 7001, ['10.0.0.12:7000'], true],
    ]);
    expect(router.units).toContain('xmig-nameserver.service');
    const host = roleConfig({ role: 'hypervisor', topology, node: 'B', addresses, port: 8000 });
    expect(host.node.interfaces.map((i) => [i.bind, i.port, i.peers])).toEqual([['10.0.0.12', 8000, ['10.0.0.1:8001']]]);
    parseConfig(nodeConfigSchema, JSON.parse(host.files[0]!.content));
  });

  it('says what is wrong with a topology request, as a usage error', () => {
    const wrong = [
      () => roleConfig({ role: 'router', topology, addresses }),
      () => roleConfig({ role: 'router', topology, node: 'C', addresses }),
      () => roleConfig({ role: 'vm', topology, node: 'R1', addresses }),
      () => roleConfig({ role: 'router', topology, node: 'R1', addresses: { R1: '10.0.0.1' } }),
      () => parseAddresses(['R1']),
      () => parseAddresses(['=1.2.3.4']),
    ];
    for (const call of wrong) expect(call).toThrow(expect.objectContaining({ code: 'ERR_USAGE' }) as Error);
    expect(parseAddresses(['R1=10.0.0.1', 'A=fe80::1'])).toEqual({ R1: '10.0.0.1', A: 'fe80::1' });
  });
});
