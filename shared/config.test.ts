import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, mergeConfig, z } from './config.js';
import { ConfigError } from './errors.js';

const schema = z.object({
  name: z.string().min(1),
  beaconIntervalMs: z.number().int().positive().default(100),
  links: z.array(z.object({ port: z.number().int().min(1).max(65535), host: z.string().default('127.0.0.1') })).default([]),
});

function file(contents: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'xmig-config-')), 'node.json');
  writeFileSync(path, contents);
  return path;
}

describe('config', () => {
  it('fills defaults and lets flags override the file', () => {
    const path = file(JSON.stringify({ name: 'R1', links: [{ port: 7000 }] }));
    const config = loadConfig(schema, { file: path, overrides: { beaconIntervalMs: 50, name: undefined } });
    expect(config).toEqual({ name: 'R1', beaconIntervalMs: 50, links: [{ port: 7000, host: '127.0.0.1' }] });
  });

  it('names the file and every bad field', () => {
    const path = file(JSON.stringify({ name: '', links: [{ port: 'x' }] }));
    let message = '';
    try {
      loadConfig(schema, { file: path });
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      message = (error as Error).message;
    }
    expect(message).toContain(path);
    expect(message).toMatch(/^\s+name: /m);
    expect(message).toMatch(/^\s+links\.0\.port: .*number/m);
  });

  it('reports JSON syntax errors and missing files as ConfigError', () => {
    expect(() => loadConfig(schema, { file: file('{ name: ') })).toThrow(/not valid JSON/);
    expect(() => loadConfig(schema, { file: '/nonexistent/xmig.json' })).toThrow(/cannot read config/);
  });

  it('merges objects by key and replaces arrays', () => {
    expect(mergeConfig({ a: { b: 1, c: 2 }, l: [1, 2] }, { a: { c: 3 }, l: [9] })).toEqual({ a: { b: 1, c: 3 }, l: [9] });
  });
});
