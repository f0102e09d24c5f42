/**
 * The request line of a host node's mover socket (the wire: mover-socket-protocol.ts),
 * as the node checks it: JSON of at most MAX_REQUEST_BYTES, one of two shapes (send,
 * recv), every field bounded. Apart from the frames so that `xmig send` / `xmig recv`,
 * which only write requests, start without zod.
 */
import { parsedBy, z } from '../shared/config.js';
import { Dag } from '../shared/dag.js';
import { BadRequestError } from '../shared/errors.js';
import { Xid, XidType } from '../shared/xid.js';
import { SUN_PATH_MAX } from '../xianet/unix-socket-file.js';
import { MAX_DATA_BYTES, MAX_REQUEST_BYTES } from './mover-socket-protocol.js';

const dagText = z.string().max(4096).refine(
  parsedBy((text) => Dag.parse(text)),
  { message: 'not a DAG' },
);

const xidText = (type: number) =>
  z.string().max(128).refine(
    (text) => {
      try {
        return Xid.parse(text).type === type;
      } catch {
        return false;
      }
    },
    { message: 'not an XID of the right type' },
  );

/** A pipe of the client's (stdio-handover.ts PipeIdentity). */
const pipeIdentity = z
  .object({
    pid: z.number().int().min(1).max(2 ** 31 - 1),
    dev: z.string().regex(/^\d{1,20}$/),
    ino: z.string().regex(/^\d{1,20}$/),
  })
  .strict();

const socketPath = z
  .string()
  .refine((text) => text.startsWith('/') && !text.includes('\0') && Buffer.byteLength(text) <= SUN_PATH_MAX, {
    message: `not an absolute socket path of at most ${SUN_PATH_MAX} bytes`,
  });

export const moverRequestSchema = z.discriminatedUnion('op', [
  z
    .object({
      op: z.literal('send'),
      to: dagText,
      chunkBytes: z.number().int().min(4096).max(MAX_DATA_BYTES).optional(),
      roundBytes: z.number().int().min(4096).max(256 * 1024 * 1024).optional(),
      maxUnackedBytes: z.number().int().min(1024 * 1024).max(4 * 1024 * 1024 * 1024).optional(),
      resumeDeadlineMs: z.number().int().min(100).max(3_600_000).optional(),
      /** QEMU's `unix:` channel: the node listens here for QEMU's stream. */
      qemuSocket: socketPath.optional(),
      /** The client's stdin, QEMU's pipe: the node may read it itself. */
      stdio: pipeIdentity.optional(),
    })
    .strict(),
  z
    .object({
      op: z.literal('recv'),
      sid: xidText(XidType.SID),
      from: z.array(xidText(XidType.HID)).max(64).optional(),
      resumeDeadlineMs: z.number().int().min(100).max(3_600_000).optional(),
      /** QEMU's `unix:` channel: the node writes the stream into QEMU listening here. */
      qemuSocket: socketPath.optional(),
      /** The client's stdout, QEMU's pipe: the node may write it itself. */
      stdio: pipeIdentity.optional(),
    })
    .strict(),
]).refine((request) => request.qemuSocket === undefined || request.stdio === undefined, {
  message: 'qemuSocket and stdio are two ways to carry the stream: at most one',
  path: ['stdio'],
});
export type MoverRequest = z.output<typeof moverRequestSchema>;
export type SendRequest = Extract<MoverRequest, { op: 'send' }>;
export type RecvRequest = Extract<MoverRequest, { op: 'recv' }>;

/** The request line (without its `\n`) as a checked request; a BadRequestError saying what is wrong otherwise. */
export function parseMoverRequest(line: Buffer): MoverRequest {
  if (line.length > MAX_REQUEST_BYTES) throw new BadRequestError('request', `longer than ${MAX_REQUEST_BYTES} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(line.toString('utf8'));
  } catch {
    throw new BadRequestError('request', 'not JSON');
  }
  const parsed = moverRequestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new BadRequestError(issue?.path.join('.') || 'request', issue?.message ?? 'invalid');
  }
  return parsed.data;
}
