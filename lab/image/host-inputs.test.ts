import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findWorkloads } from './host-inputs.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-workloads-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the workloads found on this host', () => {
  it('takes a program only with all its files, and reads its libraries with ldd', () => {
    const loadfile = join(dir, 'client.txt');
    writeFileSync(loadfile, 'x\n');
    const found = findWorkloads({
      // A dynamic binary every machine has stands in for the program.
      dbench: { binary: process.execPath, files: [loadfile] },
      iperf3: { binary: process.execPath, files: [join(dir, 'missing')] },
    });
    expect(found.map((w) => w.name)).toEqual(['dbench']);
    expect(found[0]!.files).toEqual([loadfile]);
    expect(found[0]!.shared.libraries.length).toBeGreaterThan(0);
    expect(findWorkloads({ dbench: { binary: join(dir, 'none'), files: [] }, iperf3: { binary: join(dir, 'none'), files: [] } })).toEqual([]);
  });
});
