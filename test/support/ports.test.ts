import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ephemeralLow, FIRST_BLOCK, PORT_BLOCK_SIZE, reservePortBlock } from './ports.js';
import { MIGRATION_HOSTS, UdpNetwork } from './udp-network.js';

const locks = mkdtempSync(join(tmpdir(), 'xmig-ports-test-'));
afterAll(() => rmSync(locks, { recursive: true, force: true }));

describe('test port blocks', () => {
  it("put every test network's ports below the kernel's ephemeral range (a port 0 socket elsewhere never takes one)", () => {
    const low = ephemeralLow();
    for (let i = 0; i < 12; i++) {
      const network = new UdpNetwork(MIGRATION_HOSTS, { metrics: true });
      const ports = [...network.layout.configs.values()].flatMap((c) => [...c.interfaces.map((f) => f.port), ...(c.metrics ? [c.metrics.port] : [])]);
      rmSync(network.dir, { recursive: true, force: true });
      void network.stop();
      expect(Math.max(...ports)).toBeLessThan(low);
      expect(Math.min(...ports)).toBeGreaterThanOrEqual(1024);
    }
  });

  it('give no block twice while it is held, and take it back on release', () => {
    const a = reservePortBlock(locks);
    const b = reservePortBlock(locks);
    expect(a.base).not.toBe(b.base);
    expect(a.base + PORT_BLOCK_SIZE).toBeLessThanOrEqual(ephemeralLow());
    expect(existsSync(join(locks, `${a.base}.lock`))).toBe(true);
    a.release();
    b.release();
    expect(readdirSync(locks)).toEqual([]);
  });

  it("take over a block whose process is gone, and say so when every block is someone's", () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const blocks = Math.floor((ephemeralLow() - FIRST_BLOCK) / PORT_BLOCK_SIZE);
    for (let i = 0; i < blocks; i++) writeFileSync(join(locks, `${FIRST_BLOCK + i * PORT_BLOCK_SIZE}.lock`), String(dead));
    const taken = reservePortBlock(locks);
    expect(taken.base).toBeGreaterThanOrEqual(FIRST_BLOCK);
    // Now every block is held by a live process (this one).
    for (let i = 0; i < blocks; i++) writeFileSync(join(locks, `${FIRST_BLOCK + i * PORT_BLOCK_SIZE}.lock`), String(process.pid));
    expect(() => reservePortBlock(locks)).toThrow(/held by running processes/);
    taken.release();
  });
});
