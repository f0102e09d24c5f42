/**
 * Which disk a migration moves, from what QEMU's query-block says (its answer has the
 * shape recorded from QEMU 10.0.2 below); whatever a monitor sends, reading it never throws.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XmigError } from '../shared/errors.js';
import { disksOf, selectDisk, sizeMismatch } from './block-devices.js';

const MIB = 1024 * 1024;

/** QEMU 10.0.2's query-block for: -drive if=virtio,format=raw,id=drv1; an IDE CD-ROM; -blockdev qcow2 as virtio-blk id=vda. */
const QUERY_BLOCK = [
  {
    'io-status': 'ok', device: 'drv1', locked: false, removable: false,
    inserted: { 'node-name': '#block295', drv: 'raw', ro: false, file: '/tmp/dx/dst.qcow2', image: { 'virtual-size': 21299200, filename: '/tmp/dx/dst.qcow2', format: 'raw' } },
    qdev: '/machine/peripheral-anon/device[0]/virtio-backend', type: 'unknown',
  },
  { 'io-status': 'ok', device: 'cd0', locked: false, removable: true, qdev: '/machine/unattached/device[4]', tray_open: false, type: 'unknown' },
  {
    'io-status': 'ok', device: '', locked: false, removable: false,
    inserted: { 'node-name': 'disk0', drv: 'qcow2', ro: false, file: '/tmp/dx/src.qcow2', image: { 'virtual-size': 268435456, filename: '/tmp/dx/src.qcow2', format: 'qcow2', 'cluster-size': 65536 } },
    qdev: '/machine/peripheral/vda/virtio-backend', type: 'unknown',
  },
];

describe('the disks of a VM', () => {
  it('finds the disks, not the CD-ROM, by every name QEMU gives them', () => {
    const disks = disksOf(QUERY_BLOCK);
    expect(disks).toEqual([
      { qdev: '/machine/peripheral-anon/device[0]/virtio-backend', id: '', drive: 'drv1', node: '#block295', format: 'raw', file: '/tmp/dx/dst.qcow2', bytes: 21299200, readOnly: false },
      { qdev: '/machine/peripheral/vda/virtio-backend', id: 'vda', drive: '', node: 'disk0', format: 'qcow2', file: '/tmp/dx/src.qcow2', bytes: 256 * MIB, readOnly: false },
    ]);
    for (const name of ['vda', '/machine/peripheral/vda/virtio-backend', 'disk0']) expect(selectDisk(disks, name, 'the VM').node).toBe('disk0');
    expect(selectDisk(disks, 'drv1', 'the VM').node).toBe('#block295');
  });

  it('says in one line what is wrong: no disk, several, an unknown name, a read-only one', () => {
    const one = (f: () => unknown): string => {
      try {
        f();
      } catch (error) {
        expect(error).toBeInstanceOf(XmigError);
        const message = (error as Error).message;
        expect(message).not.toContain('\n');
        return message;
      }
      throw new Error('no error');
    };
    expect(one(() => selectDisk(disksOf([QUERY_BLOCK[1]]), undefined, '--disk: the source VM'))).toBe('--disk: the source VM has no disk to migrate (query-block lists no drive with an image)');
    expect(one(() => selectDisk(disksOf(QUERY_BLOCK), undefined, 'the VM'))).toBe('the VM has 2 disks (drv1, vda): say which with --disk-device');
    expect(one(() => selectDisk(disksOf(QUERY_BLOCK), 'vdb', 'the VM'))).toBe('the VM has no disk "vdb" (its disks: drv1, vda)');
    const readOnly = disksOf([{ ...QUERY_BLOCK[2], inserted: { ...QUERY_BLOCK[2]!.inserted, ro: true } }]);
    expect(one(() => selectDisk(readOnly, undefined, 'the VM'))).toBe('the VM has no disk to migrate (query-block lists only read-only drives)');
  });

  it('takes a target only of the same size, and says which way it is off', () => {
    expect(sizeMismatch(256 * MIB, 256 * MIB, 'vda')).toBeUndefined();
    expect(sizeMismatch(256 * MIB, 128 * MIB, 'vda (/b.qcow2)')).toBe("the destination disk vda (/b.qcow2) is too small: 128 MiB, the source's is 256 MiB");
    expect(sizeMismatch(256 * MIB, 300 * MIB, 'vda')).toMatch(/larger than the source's .*same size/);
    expect(sizeMismatch(MIB + 1, MIB, 'vda')).toContain('1048577 bytes (1.0 MiB)');
  });

  it('reads anything a monitor might send without throwing', () => {
    fc.assert(
      fc.property(fc.anything(), (answer) => {
        expect(Array.isArray(disksOf(answer))).toBe(true);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.array(fc.record({ removable: fc.anything(), qdev: fc.anything(), device: fc.anything(), inserted: fc.anything() })), (answer) => {
        for (const disk of disksOf(answer)) expect(Number.isSafeInteger(disk.bytes)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});
