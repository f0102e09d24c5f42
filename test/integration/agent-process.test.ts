/**
 * The agent as its own process, beside a router and a VM node on UDP: freezing it
 * (SIGSTOP, what a VM's stop-and-copy does to every process in the guest) and
 * thawing it (SIGCONT) is perceived as a resume, and the agent asks for a beacon.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Identity } from '../../shared/identity.js';
import { parseConfig } from '../../shared/config.js';
import { topologySchema } from '../../xianet/topology.js';
import { udpLayout } from '../../xianet/udp-topology.js';
import { reservePortBlock } from '../support/ports.js';
import { reapAll, startXmig, type XmigProcess } from '../support/processes.js';

/** This file's UDP ports (test/support/ports.ts). */
const ports = reservePortBlock();

const dir = mkdtempSync(join(tmpdir(), 'xmig-agentproc-'));
const topology = parseConfig(topologySchema, {
  name: 'one-link',
  ads: ['AD1'],
  segments: ['seg-A'],
  nodes: [
    { name: 'R1', role: 'router', ad: 'AD1', interfaces: [{ segment: 'seg-A', hostFacing: true }] },
    { name: 'VM', role: 'host', interfaces: [{ segment: 'seg-A' }] },
  ],
});
const layout = udpLayout(topology, { dir, basePort: ports.base, beaconIntervalMs: 100 });
const processes: XmigProcess[] = [];
let agent: XmigProcess;

beforeAll(async () => {
  for (const [name, config] of layout.configs) {
    Identity.loadOrCreate(config.keyFile);
    if (config.adKeyFile) Identity.loadOrCreate(config.adKeyFile);
    writeFileSync(join(dir, `${name}.json`), JSON.stringify(config));
    processes.push(startXmig(['node', '--config', join(dir, `${name}.json`)]));
  }
  await Promise.all(processes.map((p) => p.waitForLog('node.ready')));
  const vm = layout.configs.get('VM')!;
  const control = vm.controlPort as { path: string };
  writeFileSync(
    join(dir, 'agent.json'),
    JSON.stringify({
      api: vm.apiSocket,
      control: control.path,
      router: 'VM',
      keyFile: vm.keyFile,
      stateFile: join(dir, 'agent-state.json'),
      names: [],
      resume: { tickMs: 50, stallMs: 300 },
      schedules: { refresh: false, reannounce: false, health: false },
    }),
  );
  agent = startXmig(['agent', '--config', join(dir, 'agent.json')]);
  processes.push(agent);
  await agent.waitForLog('agent.started');
}, 120_000);

afterAll(async () => {
  ports.release();
  for (const p of processes) await p.stop();
  await reapAll();
  rmSync(dir, { recursive: true, force: true });
});

describe('xmig agent process', () => {
  it('perceives a resume after SIGSTOP/SIGCONT and solicits a beacon', async () => {
    agent.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 1000));
    agent.child.kill('SIGCONT');
    const resumed = await agent.waitForLog('move.resume-perceived', 5000);
    expect(resumed['pausedMs']).toBeGreaterThanOrEqual(900);
    expect(resumed['phase']).toBe('perception');
    // Nothing actually moved: no move is reported.
    await new Promise((r) => setTimeout(r, 300));
    expect(agent.logs.some((l) => l['event'] === 'move.perceived')).toBe(false);
  });

  it('rejects a bad config with a message naming the field', async () => {
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ router: '', names: [{ name: 'x', sid: 'SID:nope' }] }));
    const bad = startXmig(['agent', '--config', join(dir, 'bad.json')]);
    expect(await bad.stop('SIGCONT')).toBe(78);
    expect(bad.stderr.join('\n')).toMatch(/names\.0\.sid: not an XID/);
  });
});
