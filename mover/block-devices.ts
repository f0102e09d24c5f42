/**
 * The guest's disks as QEMU reports them (QMP `query-block`), and the one a disk
 * migration moves. A disk is a non-removable device with an image inserted; CD-ROMs
 * and empty drives are not disks. Which one, when there are several, is said by any
 * of the names QEMU knows it by: the device id (`-device ...,id=vda`), its full qdev
 * path, the drive id (`-drive ...,id=...`) or the block node's name.
 */
import { XmigError } from '../shared/errors.js';

export interface BlockDisk {
  /** The guest device's qdev path, e.g. /machine/peripheral/vda/virtio-backend. */
  qdev: string;
  /** The device id from that path (vda), or '' for an anonymous device. */
  id: string;
  /** The -drive id, '' when the disk was given with -blockdev. */
  drive: string;
  /** The root block node (the format node). */
  node: string;
  /** Its format driver: qcow2, raw, ... */
  format: string;
  /** What the node reads from: an image file name, or a URI for a network protocol. */
  file: string;
  /** The guest-visible size (bytes). */
  bytes: number;
  readOnly: boolean;
  backingFile?: string;
}

interface QueryBlockEntry {
  device?: unknown;
  qdev?: unknown;
  removable?: unknown;
  inserted?: {
    'node-name'?: unknown;
    drv?: unknown;
    ro?: unknown;
    file?: unknown;
    image?: { 'virtual-size'?: unknown; filename?: unknown; 'backing-filename'?: unknown };
  };
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** The disks in a `query-block` answer (anything QEMU sends that is not one is skipped). */
export function disksOf(queryBlock: unknown): BlockDisk[] {
  if (!Array.isArray(queryBlock)) return [];
  const disks: BlockDisk[] = [];
  for (const entry of queryBlock as QueryBlockEntry[]) {
    if (typeof entry !== 'object' || entry === null) continue;
    const inserted = entry.inserted;
    if (entry.removable === true || typeof inserted !== 'object' || inserted === null) continue;
    const bytes = inserted.image?.['virtual-size'];
    const node = str(inserted['node-name']);
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0 || !node) continue;
    const qdev = str(entry.qdev);
    const backing = str(inserted.image?.['backing-filename']);
    disks.push({
      qdev,
      id: /^\/machine\/peripheral\/([^/]+)/.exec(qdev)?.[1] ?? '',
      drive: str(entry.device),
      node,
      format: str(inserted.drv),
      file: str(inserted.file) || str(inserted.image?.filename),
      bytes,
      readOnly: inserted.ro === true,
      ...(backing ? { backingFile: backing } : {}),
    });
  }
  return disks;
}

/** How a disk is named to a person: the first name of it that there is. */
export function diskName(disk: BlockDisk): string {
  return disk.id || disk.drive || disk.node;
}

/**
 * The disk to migrate: the one `selector` names, or the only one there is. `where` names
 * the VM in the errors ("the source VM (QMP /run/vm.qmp)").
 */
export function selectDisk(disks: readonly BlockDisk[], selector: string | undefined, where: string): BlockDisk {
  const writable = disks.filter((d) => !d.readOnly);
  if (selector !== undefined) {
    const named = disks.find((d) => [d.id, d.qdev, d.drive, d.node].includes(selector));
    if (!named) throw new XmigError('ERR_CONFIG', `${where} has no disk "${selector}" (its disks: ${disks.map(diskName).join(', ') || 'none'})`);
    if (named.readOnly) throw new XmigError('ERR_CONFIG', `disk ${selector} of ${where} is read-only: there is nothing to migrate into it or out of it`);
    return named;
  }
  if (writable.length === 0) {
    throw new XmigError('ERR_CONFIG', `${where} has no disk to migrate (query-block lists ${disks.length ? 'only read-only drives' : 'no drive with an image'})`);
  }
  if (writable.length > 1) throw new XmigError('ERR_CONFIG', `${where} has ${writable.length} disks (${writable.map(diskName).join(', ')}): say which with --disk-device`);
  return writable[0]!;
}

const MIB = 1024 * 1024;

/** Sizes in the unit a person reads them in. */
export function sizeText(bytes: number): string {
  if (bytes % MIB === 0) return `${bytes / MIB} MiB`;
  return `${bytes} bytes (${(bytes / MIB).toFixed(1)} MiB)`;
}

/** Why a target of `target` bytes cannot take a mirror of `source` bytes (QEMU's mirror needs equal sizes), if it cannot. */
export function sizeMismatch(source: number, target: number, targetName: string): string | undefined {
  if (target === source) return undefined;
  if (target < source) return `the destination disk ${targetName} is too small: ${sizeText(target)}, the source's is ${sizeText(source)}`;
  return `the destination disk ${targetName} is larger than the source's (${sizeText(target)}, not ${sizeText(source)}): QEMU mirrors only into a disk of the same size`;
}
