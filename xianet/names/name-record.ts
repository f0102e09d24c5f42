/**
 * A name record: name → DAG, with a sequence number and a timestamp, signed by the
 * owner's key. The first registration of a name binds it to that key; every later
 * update must be signed by the same key and carry a higher sequence number, so a
 * stranger cannot take a name and an old record cannot be replayed over a new one.
 */
import type { Dag } from '../../shared/dag.js';
import { MalformedPacketError } from '../../shared/errors.js';
import type { Identity } from '../../shared/identity.js';
import { openMessage, sealMessage, SignedKind } from '../../shared/signed-message.js';
import { WireReader, WireWriter } from '../../shared/wire.js';

export interface NameRecord {
  name: string;
  dag: Dag;
  seq: number;
  timestamp: number;
  /** Set by the owner after a migration (xia-core's NS_FLAGS_MIGRATE). */
  migrated: boolean;
}

export interface SignedNameRecord extends NameRecord {
  publicKey: Buffer;
  /** The sealed bytes, as stored and served. */
  sealed: Buffer;
}

export const MAX_NAME_LENGTH = 255;

export function validateName(name: string): void {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || /[\0\s]/.test(name)) {
    throw new MalformedPacketError(`name "${name.slice(0, 40)}" must be 1..${MAX_NAME_LENGTH} characters without spaces`);
  }
}

export function sealNameRecord(record: NameRecord, owner: Identity): Buffer {
  validateName(record.name);
  const body = new WireWriter(512)
    .string(record.name)
    .dag(record.dag)
    .u64(record.seq)
    .u64(record.timestamp)
    .u8(record.migrated ? 1 : 0)
    .finish();
  return sealMessage(owner, SignedKind.NAME_RECORD, body);
}

/** Verifies the signature and decodes; throws SignatureError or MalformedPacketError. */
export function openNameRecord(sealed: Buffer): SignedNameRecord {
  const opened = openMessage(sealed, { kind: SignedKind.NAME_RECORD });
  const reader = new WireReader(opened.body, 'name record');
  const name = reader.string('name');
  const dag = reader.dag('dag');
  const seq = reader.u64('seq');
  const timestamp = reader.u64('timestamp');
  const migrated = reader.u8('flags') === 1;
  reader.end();
  validateName(name);
  return { name, dag, seq, timestamp, migrated, publicKey: Buffer.from(opened.publicKey), sealed };
}
