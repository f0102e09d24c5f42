/**
 * The disk target's door. Anyone who can reach the disk SID can open a STREAM to it,
 * so each must earn its place: it is admitted only from an allowed source (`admit`),
 * must say what it is (OPEN_CONTROL or OPEN_NBD) within `openTimeoutMs`, and at most
 * `maxPending` may be waiting to do so — a newcomer pushes out the oldest, so idle
 * strangers cannot keep the real source out. Every refusal is counted
 * (`disk-stream{forbidden|cap|timeout|malformed}`). A StreamIntake (stream-intake.ts)
 * that reads the disk protocol.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from '../shared/logger.js';
import { DiskMessageReader, DiskMessageType, type DiskMessage } from './disk-messages.js';
import { StreamIntake } from './stream-intake.js';

export type Opening = Extract<DiskMessage, { type: typeof DiskMessageType.OPEN_CONTROL | typeof DiskMessageType.OPEN_NBD }>;

export interface DiskIntakeOptions {
  /** Why this stream may not reach the disk target (not an allowed source), or undefined to admit it. */
  admit?: (stream: Duplex) => string | undefined;
  /** A stream must say what it is within this long (default 5 s). */
  openTimeoutMs?: number;
  /** Streams waiting to say it (default 8). */
  maxPending?: number;
  /** A stream said what it is; `rest` is what it sent after its opening frame. */
  onOpen: (opening: Opening, stream: Duplex, rest: Buffer) => void;
  logger: Logger;
}

export class DiskIntake extends StreamIntake<DiskMessage, Opening> {
  constructor(options: DiskIntakeOptions) {
    super({
      ...options,
      resource: 'disk-stream',
      event: 'disk-target.stream-refused',
      reader: () => new DiskMessageReader(),
      isOpening: (m): m is Opening => m.type === DiskMessageType.OPEN_CONTROL || m.type === DiskMessageType.OPEN_NBD,
      nameOf: (m) => String(m.type),
    });
  }
}
