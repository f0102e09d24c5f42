/** The README's main job, as a user runs it. */
import { describe, expect, it } from 'vitest';
import { runXmig } from '../support/processes.js';

describe('xmig testbed', () => {
  it.each(['inter-ad', 'intra-ad'])('runs Fig. 1 (%s) with Goldbach answers flowing and no xping loss', async (topology) => {
    // Loss is what the network drops: a reply that a loaded machine delivers late is not lost
    // (at 250 ms, 12 % of them were at load 13, in this one process).
    const result = await runXmig(['testbed', '--topology', topology, '--duration', '1500', '--ping-timeout', '10000', '--json']);
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { goldbach: { answers: number; brokenConnections: number }; xping: { lossPct: number; received: number } };
    // Flowing, not a rate: how many fit in 1.5 s depends on the machine's load (31 pings at load 15).
    expect(report.goldbach.answers).toBeGreaterThan(0);
    expect(report.goldbach.brokenConnections).toBe(0);
    expect(report.xping.lossPct).toBe(0);
    expect(report.xping.received).toBeGreaterThan(0);
  });
});
