/**
 * The kernel's initramfs format: cpio "newc" (SVR4 without CRC), as
 * Documentation/driver-api/early-userspace/buffer-format.rst describes it. Each entry is
 * a 110-byte ASCII header (magic "070701" and 13 eight-digit hex fields), the NUL-ended
 * name padded to 4 bytes, then the data padded to 4 bytes; "TRAILER!!!" ends the archive.
 *
 * Written here rather than with cpio(1): the image streams straight from the host's files
 * (no staging copy of a 100 MB node binary), every header is fixed (mtime 0, owner root,
 * inode numbers in order), and the reader below lets tests look inside an image.
 */
import { XmigError } from '../../shared/errors.js';

export const CPIO_MAGIC = '070701';
export const CPIO_HEADER_LENGTH = 110;
export const CPIO_TRAILER = 'TRAILER!!!';

/** The header's fields after the magic, in order; each is 8 hex digits. */
const FIELDS = ['ino', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'filesize', 'devmajor', 'devminor', 'rdevmajor', 'rdevminor', 'namesize', 'check'] as const;
type Field = (typeof FIELDS)[number];

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

function pad4(length: number): number {
  return (4 - (length % 4)) % 4;
}

/** The header and name of one entry, padded so that its data starts on a 4-byte boundary. */
export function encodeCpioHeader(
  name: string,
  header: { ino: number; mode: number; nlink: number; filesize: number; rdevmajor?: number; rdevminor?: number },
): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const values: Record<Field, number> = {
    ino: header.ino,
    mode: header.mode,
    uid: 0,
    gid: 0,
    nlink: header.nlink,
    mtime: 0,
    filesize: header.filesize,
    devmajor: 0,
    devminor: 0,
    rdevmajor: header.rdevmajor ?? 0,
    rdevminor: header.rdevminor ?? 0,
    namesize: nameBytes.length,
    check: 0,
  };
  for (const field of FIELDS) {
    const value = values[field];
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`cpio ${field} ${value} does not fit 32 bits`);
  }
  const text = CPIO_MAGIC + FIELDS.map((f) => values[f].toString(16).padStart(8, '0')).join('');
  const out = Buffer.alloc(CPIO_HEADER_LENGTH + nameBytes.length + pad4(CPIO_HEADER_LENGTH + nameBytes.length));
  out.write(text, 0, 'latin1');
  nameBytes.copy(out, CPIO_HEADER_LENGTH);
  return out;
}

/** Zero bytes that pad `length` bytes of data to a 4-byte boundary. */
export function cpioDataPadding(length: number): Buffer {
  return Buffer.alloc(pad4(length));
}

/** The archive's last entry. */
export function cpioTrailer(): Buffer {
  return encodeCpioHeader(CPIO_TRAILER, { ino: 0, mode: 0, nlink: 1, filesize: 0 });
}

export interface CpioEntry {
  name: string;
  mode: number;
  data: Buffer;
}

/** Reads every entry of an uncompressed newc archive up to its trailer; ERR_MESSAGE_MALFORMED for anything else. */
export function readCpio(archive: Buffer): CpioEntry[] {
  const entries: CpioEntry[] = [];
  const fail = (offset: number, why: string): never => {
    throw new XmigError('ERR_MESSAGE_MALFORMED', `cpio archive: ${why} at offset ${offset}`);
  };
  let offset = 0;
  for (;;) {
    if (offset + CPIO_HEADER_LENGTH > archive.length) fail(offset, 'truncated header');
    const text = archive.toString('latin1', offset, offset + CPIO_HEADER_LENGTH);
    if (!text.startsWith(CPIO_MAGIC)) fail(offset, 'no newc magic');
    const values: Partial<Record<Field, number>> = {};
    FIELDS.forEach((field, i) => {
      const hex = text.slice(6 + i * 8, 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(hex)) fail(offset, `field ${field} is not hex`);
      values[field] = Number.parseInt(hex, 16);
    });
    const namesize = values.namesize!;
    const filesize = values.filesize!;
    const nameStart = offset + CPIO_HEADER_LENGTH;
    if (namesize < 1 || nameStart + namesize > archive.length) fail(offset, 'name runs past the end');
    if (archive[nameStart + namesize - 1] !== 0) fail(offset, 'name is not NUL-terminated');
    const name = archive.toString('utf8', nameStart, nameStart + namesize - 1);
    const dataStart = nameStart + namesize + pad4(CPIO_HEADER_LENGTH + namesize);
    if (dataStart + filesize > archive.length) fail(offset, `data of ${name} runs past the end`);
    if (name === CPIO_TRAILER) return entries;
    entries.push({ name, mode: values.mode!, data: archive.subarray(dataStart, dataStart + filesize) });
    offset = dataStart + filesize + pad4(filesize);
  }
}
