/**
 * Signed messages (HID-move notices, name records, host registrations): a body
 * signed by an Ed25519 key, with the key carried along so the receiver can check
 * that it hashes to the XID the message claims.
 *
 *   off  len  field
 *   0    1    version (1)
 *   1    1    kind (what the body is; part of what is signed)
 *   2    32   public key
 *   34   2    body length (big-endian)
 *   36   n    body
 *   36+n 64   signature over "xmig-signed-v1", kind, body
 */
import { SignatureError } from './errors.js';
import type { Identity} from './identity.js';
import { PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH, verifySignature, xidOfKey } from './identity.js';
import type { Xid } from './xid.js';

export const SignedKind = {
  MOVE_NOTICE: 1,
  MOVE_ACK: 2,
  NAME_RECORD: 3,
  XROUTE: 4,
  BEACON: 5,
} as const;
export type SignedKindCode = (typeof SignedKind)[keyof typeof SignedKind];

const VERSION = 1;
const HEADER_LENGTH = 36;
const DOMAIN = Buffer.from('xmig-signed-v1', 'latin1');
const MAX_BODY = 0xffff;

function signedBytes(kind: number, body: Uint8Array): Buffer {
  return Buffer.concat([DOMAIN, Buffer.of(kind), body]);
}

export function sealMessage(identity: Identity, kind: SignedKindCode, body: Uint8Array): Buffer {
  if (body.length > MAX_BODY) throw new RangeError(`signed body of ${body.length} bytes exceeds ${MAX_BODY}`);
  const message = Buffer.allocUnsafe(HEADER_LENGTH + body.length + SIGNATURE_LENGTH);
  message[0] = VERSION;
  message[1] = kind;
  identity.publicKey.copy(message, 2);
  message.writeUInt16BE(body.length, 34);
  Buffer.from(body.buffer, body.byteOffset, body.length).copy(message, HEADER_LENGTH);
  identity.sign(signedBytes(kind, body)).copy(message, HEADER_LENGTH + body.length);
  return message;
}

export interface OpenedMessage {
  kind: number;
  publicKey: Buffer;
  body: Buffer;
  /** The XID of `type` owned by the signer's key. */
  signer(type: number): Xid;
}

export interface OpenOptions {
  /** The kind the receiver expects; anything else is rejected. */
  kind: SignedKindCode;
  /** If given, SHA-1 of the signer's key must be this XID. */
  claimedXid?: Xid;
}

/**
 * The signer's key as the message claims it, WITHOUT verifying anything: for cheap
 * screening (rate limits, "is this the owner's key at all?") before the signature check.
 */
export function peekSigner(message: Buffer): Buffer | undefined {
  if (message.length < HEADER_LENGTH + SIGNATURE_LENGTH || message[0] !== VERSION) return undefined;
  return message.subarray(2, 2 + PUBLIC_KEY_LENGTH);
}

/**
 * Key and body of a signed message of `kind`, WITHOUT verifying the signature: only for
 * screening (is it fresh, is it one we wait for?) before the verification. Never act on it.
 */
export function peekMessage(message: Buffer, kind: SignedKindCode): { publicKey: Buffer; body: Buffer } {
  if (message.length < HEADER_LENGTH + SIGNATURE_LENGTH || message[0] !== VERSION || message[1] !== kind) {
    throw new SignatureError('malformed', `not a signed message of kind ${kind}`);
  }
  const bodyLength = message.readUInt16BE(34);
  if (HEADER_LENGTH + bodyLength + SIGNATURE_LENGTH !== message.length) throw new SignatureError('malformed', 'signed message length does not add up');
  return { publicKey: message.subarray(2, 2 + PUBLIC_KEY_LENGTH), body: message.subarray(HEADER_LENGTH, HEADER_LENGTH + bodyLength) };
}

/** Parses and verifies a signed message; throws SignatureError with a reason otherwise. */
export function openMessage(message: Buffer, options: OpenOptions): OpenedMessage {
  if (message.length < HEADER_LENGTH + SIGNATURE_LENGTH) {
    throw new SignatureError('malformed', `signed message of ${message.length} bytes is shorter than its fixed fields`);
  }
  if (message[0] !== VERSION) throw new SignatureError('malformed', `signed message version ${message[0]} is not ${VERSION}`);
  const kind = message[1]!;
  if (kind !== options.kind) throw new SignatureError('wrong-kind', `signed message of kind ${kind}, expected ${options.kind}`);
  const bodyLength = message.readUInt16BE(34);
  if (HEADER_LENGTH + bodyLength + SIGNATURE_LENGTH !== message.length) {
    throw new SignatureError(
      'malformed',
      `signed message says its body is ${bodyLength} bytes but ${message.length - HEADER_LENGTH - SIGNATURE_LENGTH} follow`,
    );
  }
  const publicKey = message.subarray(2, 2 + PUBLIC_KEY_LENGTH);
  const body = message.subarray(HEADER_LENGTH, HEADER_LENGTH + bodyLength);
  const signature = message.subarray(HEADER_LENGTH + bodyLength);
  if (options.claimedXid && !xidOfKey(options.claimedXid.type, publicKey).equals(options.claimedXid)) {
    throw new SignatureError('key-mismatch', `the signing key does not hash to ${options.claimedXid}`);
  }
  if (!verifySignature(publicKey, signedBytes(kind, body), signature)) {
    throw new SignatureError('bad-signature', 'the signature does not verify with the enclosed key');
  }
  return { kind, publicKey, body, signer: (type) => xidOfKey(type, publicKey) };
}
