/** Config files the loaders used to accept (each case passed before the boundary was made strict). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../agent/agent-config.js';
import { nodeConfigSchema } from '../xianet/node-config.js';
import { topologySchema } from '../xianet/topology.js';
import type { z } from './config.js';
import { CONFIG_LIMITS, loadConfig } from './config.js';
import { ConfigError } from './errors.js';

function file(contents: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'xmig-boundary-')), 'config.json');
  writeFileSync(path, contents);
  return path;
}

function refusal(schema: z.ZodType, contents: string): ConfigError {
  const path = file(contents);
  try {
    loadConfig(schema, { file: path });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toContain(path);
    return error as ConfigError;
  }
  throw new Error(`accepted: ${contents.slice(0, 200)}`);
}

const node = { name: 'n', role: 'host', keyFile: 'k', interfaces: [{ name: 'e', port: 7000 }] };
const agent = { router: 'VM' };
const topology = { name: 't', ads: ['AD1'], segments: ['s'], nodes: [{ name: 'R', role: 'router', ad: 'AD1', interfaces: [{ segment: 's' }] }] };
const json = (value: unknown, extra = ''): string => JSON.stringify(value).replace(/^\{/, `{${extra}`);

describe('config boundary', () => {
  it('accepts the plain configs these cases start from', () => {
    expect(loadConfig(nodeConfigSchema, { file: file(json(node)) }).name).toBe('n');
    expect(loadConfig(agentConfigSchema, { file: file(json(agent)) }).router).toBe('VM');
    expect(loadConfig(topologySchema, { file: file(json(topology)) }).name).toBe('t');
  });

  it('refuses unknown keys, naming the field (a typo was silently dropped)', () => {
    expect(refusal(nodeConfigSchema, json(node, '"beaconIntervalMS":50,')).message).toMatch(/beaconIntervalMS/);
    expect(refusal(agentConfigSchema, json({ ...agent, resume: { tickMS: 10 } })).fields).toEqual(['resume']);
    expect(refusal(topologySchema, json({ ...topology, nodes: [{ ...topology.nodes[0], hostfacing: true }] })).message).toMatch(/nodes\.0/);
  });

  it('refuses prototype keys anywhere (impairments.__proto__ became the record\'s prototype)', () => {
    const error = refusal(topologySchema, json(topology, '"impairments":{"__proto__":{"lossRate":0.5}},'));
    expect(error.fields).toEqual(['impairments.__proto__']);
    refusal(nodeConfigSchema, json(node, '"constructor":{"x":1},'));
    refusal(topologySchema, json({ ...topology, segments: ['__proto__'], nodes: [{ ...topology.nodes[0], interfaces: [{ segment: '__proto__' }] }] }));
  });

  it('range-checks timers, ports and route words', () => {
    expect(refusal(agentConfigSchema, json({ ...agent, resume: { tickMs: 1e10 } })).fields).toEqual(['resume.tickMs']);
    expect(refusal(nodeConfigSchema, json({ ...node, controlPort: { limits: { idleTimeoutMs: 2 ** 31 } } })).fields).toEqual(['controlPort.limits.idleTimeoutMs']);
    expect(refusal(nodeConfigSchema, json({ ...node, interfaces: [{ name: 'e', port: 0 }] })).fields).toEqual(['interfaces.0.port']);
    refusal(nodeConfigSchema, json({ ...node, routes: [{ type: 'AD', xid: '-', port: 1e15, flags: 2 ** 40 }] }));
    refusal(nodeConfigSchema, json({ ...node, interfaces: [{ name: 'e', port: 7000, peers: ['10.0.0.1:99999'] }] }));
  });

  it('validates names, paths and cron expressions (they reach the control port, fs and node-cron)', () => {
    expect(refusal(agentConfigSchema, json({ router: 'VM\nwrite R1/xrc/n/proc/rt_HID.remove x' })).fields).toEqual(['router']);
    expect(refusal(agentConfigSchema, json({ ...agent, schedules: { refresh: '*/0 * * * *' } })).fields).toEqual(['schedules.refresh']);
    refusal(nodeConfigSchema, json({ ...node, keyFile: 'a\u0000b' }));
    refusal(topologySchema, json({ ...topology, nodes: [{ ...topology.nodes[0], name: '../R' }] }));
    refusal(topologySchema, json({ ...topology, segments: ['s', 's'] }));
  });

  it('caps the file size and nesting before parsing', () => {
    expect(refusal(nodeConfigSchema, json(node) + ' '.repeat(CONFIG_LIMITS.maxBytes)).message).toMatch(/larger than/);
    expect(refusal(nodeConfigSchema, json(node, `"x":${'['.repeat(100_000)}${']'.repeat(100_000)},`)).message).toMatch(/deeper than 32/);
  });
});
