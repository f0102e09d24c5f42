import { describe, expect, it } from 'vitest';
import { DISK_TOOLS_REMEDY } from './lab-disk.js';
import { checkLabRequirements, QEMU_INSTALL, type Probe } from './requirements.js';

const fine: Probe = { isRoot: () => true, hasCommand: () => true, hasFile: () => true, qemuVersion: () => '10.0.2' };

describe('lab requirements', () => {
  it('passes on a machine that has it all', () => {
    expect(() => checkLabRequirements(fine)).not.toThrow();
  });

  it('names everything missing in one line, with the exact apt-get command', () => {
    const old: Probe = { ...fine, qemuVersion: () => '7.2.22' };
    expect(() => checkLabRequirements(old)).toThrow(`xmig lab cannot run here: missing QEMU 10 or later (found 7.2.22) — ${QEMU_INSTALL}`);
    const bare: Probe = { isRoot: () => false, hasCommand: () => false, hasFile: () => false, qemuVersion: () => undefined };
    let message = '';
    try {
      checkLabRequirements(bare);
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).not.toContain('\n');
    expect(message).toMatch(/^xmig lab cannot run here: missing root .*, iproute2 \(ip\), \/dev\/net\/tun .*, QEMU 10 or later \(no qemu-system-x86_64\)/);
    expect(message).toContain(`run it as root; then apt-get install iproute2; then ${QEMU_INSTALL}`);
  });

  it('asks for the disk tools only when the VM has a disk', () => {
    const noDebugfs: Probe = { ...fine, hasCommand: (c) => c !== 'debugfs' && c !== 'qemu-img' };
    expect(() => checkLabRequirements(noDebugfs)).not.toThrow();
    expect(() => checkLabRequirements(noDebugfs, undefined, { disk: true })).toThrow(`xmig lab cannot run here: missing qemu-img, debugfs (the VM's disk) — ${DISK_TOOLS_REMEDY}`);
  });

  it("asks for iperf3 only for the network workload (its client runs on host C)", () => {
    const noIperf3: Probe = { ...fine, hasCommand: (c) => c !== 'iperf3' };
    expect(() => checkLabRequirements(noIperf3)).not.toThrow();
    expect(() => checkLabRequirements(noIperf3, undefined, { iperf3: true })).toThrow("xmig lab cannot run here: missing iperf3 (the network workload's client on host C) — apt-get install iperf3");
  });
});
