/**
 * Config files at the boundary: 10,000 mutated files per loader (node, agent,
 * topology). The loader returns a config that keeps the rules checked here on their
 * own, or throws a ConfigError naming the file; never another exception.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../agent/agent-config.js';
import { configText, validAgentConfig, validNodeConfig, validTopology } from '../test/support/config-arbitraries.js';
import { nodeConfigSchema } from '../xianet/node-config.js';
import { topologySchema } from '../xianet/topology.js';
import type { z } from './config.js';
import { loadConfigText, MAX_TIMER_MS } from './config.js';
import { ConfigError } from './errors.js';

const RUNS = 10_000;
const FILE = '/etc/xmig/fuzz.json';
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** No own prototype key anywhere, and every number finite. */
function clean(value: unknown): boolean {
  if (typeof value === 'number') return Number.isFinite(value);
  if (typeof value !== 'object' || value === null) return true;
  if (!Array.isArray(value) && Object.getPrototypeOf(value) !== Object.prototype) return false;
  return Object.keys(value).every((k) => !['__proto__', 'constructor', 'prototype'].includes(k) && clean((value as Record<string, unknown>)[k]));
}

const port = (p: unknown, min = 1): boolean => Number.isInteger(p) && (p as number) >= min && (p as number) <= 65535;
const timer = (ms: unknown): boolean => Number.isInteger(ms) && (ms as number) >= 1 && (ms as number) <= MAX_TIMER_MS;

function fuzz<S extends z.ZodType>(schema: S, valid: fc.Arbitrary<unknown>, holds: (config: z.output<S>) => boolean): { accepted: number; refused: number } {
  const counts = { accepted: 0, refused: 0 };
  fc.assert(
    fc.property(configText(valid), (text) => {
      let config: z.output<S>;
      try {
        config = loadConfigText(schema, text, { file: FILE });
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        expect(error.message).toContain(FILE);
        expect(error.source).toBe(FILE);
        counts.refused++;
        return;
      }
      counts.accepted++;
      expect(clean(config)).toBe(true);
      expect(holds(config)).toBe(true);
    }),
    { numRuns: RUNS },
  );
  // Both sides were exercised: the loader neither refuses everything nor accepts everything.
  expect(counts.accepted).toBeGreaterThan(RUNS / 20);
  expect(counts.refused).toBeGreaterThan(RUNS / 4);
  return counts;
}

describe('config loaders under 10,000 mutated files each', () => {
  it('node config', () => {
    fuzz(nodeConfigSchema, validNodeConfig, (c) =>
      NAME.test(c.name) &&
      timer(c.beaconIntervalMs) &&
      timer(c.helloIntervalMs) &&
      c.interfaces.length >= 1 &&
      c.interfaces.every((i) => NAME.test(i.name) && port(i.port) && (i.mtu === undefined || (i.mtu >= 576 && i.mtu <= 65536))) &&
      (c.metrics === undefined || port(c.metrics.port, 0)) &&
      !c.keyFile.includes('\0'),
    );
  });

  it('agent config', () => {
    fuzz(agentConfigSchema, validAgentConfig, (c) =>
      NAME.test(c.router) &&
      timer(c.resume.tickMs) &&
      timer(c.resume.stallMs) &&
      Object.values(c.schedules).every((s) => s === false || (typeof s === 'string' && s.split(' ').length >= 5)) &&
      c.names.every((n) => n.name.length >= 1 && !/\s/.test(n.name)),
    );
  });

  it('topology', () => {
    fuzz(topologySchema, validTopology, (t) =>
      NAME.test(t.name) &&
      t.nodes.every((n) => NAME.test(n.name) && n.interfaces.every((i) => t.segments.includes(i.segment)) && (n.role === 'host' || t.ads.includes(n.ad!))) &&
      Object.keys(t.impairments).every((s) => t.segments.includes(s)) &&
      Object.getPrototypeOf(t.impairments) === Object.prototype,
    );
  });
});
