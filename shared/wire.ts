/**
 * Small binary codecs for control messages: a writer that grows as needed and a
 * reader whose every read checks bounds and throws MalformedPacketError, so a
 * truncated or hostile message can never become a RangeError deep inside.
 */
import { MalformedPacketError } from './errors.js';
import { Xid, XID_WIRE_LENGTH } from './xid.js';
import { Dag } from './dag.js';

export class WireWriter {
  private buffer: Buffer;
  private length = 0;

  constructor(initial = 256) {
    this.buffer = Buffer.allocUnsafe(initial);
  }

  private reserve(bytes: number): number {
    if (this.length + bytes > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    const at = this.length;
    this.length += bytes;
    return at;
  }

  // Each write reserves first and only then names this.buffer: reserve() may replace the
  // buffer, and `this.buffer.f(x, this.reserve(n))` would write into the old one.
  u8(value: number): this {
    const at = this.reserve(1);
    this.buffer[at] = value;
    return this;
  }
  u16(value: number): this {
    const at = this.reserve(2);
    this.buffer.writeUInt16BE(value, at);
    return this;
  }
  u32(value: number): this {
    const at = this.reserve(4);
    this.buffer.writeUInt32BE(value >>> 0, at);
    return this;
  }
  /** Unsigned integer up to 2^53 (sequence numbers, timestamps). */
  u64(value: number): this {
    const at = this.reserve(8);
    this.buffer.writeBigUInt64BE(BigInt(value), at);
    return this;
  }
  xid(value: Xid): this {
    const at = this.reserve(XID_WIRE_LENGTH);
    value.write(this.buffer, at);
    return this;
  }
  /** An optional XID: a presence byte, then the XID. */
  optionalXid(value: Xid | undefined): this {
    this.u8(value ? 1 : 0);
    return value ? this.xid(value) : this;
  }
  bytes(value: Uint8Array): this {
    this.u16(value.length);
    const at = this.reserve(value.length);
    this.buffer.set(value, at);
    return this;
  }
  /** Bytes of a length the layout fixes (a session id, a CID): no length prefix. */
  fixed(value: Uint8Array, length: number): this {
    if (value.length !== length) throw new RangeError(`expected ${length} bytes, got ${value.length}`);
    const at = this.reserve(length);
    this.buffer.set(value, at);
    return this;
  }
  /** Bytes that run to the end of the message: no length prefix. */
  rest(value: Uint8Array): this {
    const at = this.reserve(value.length);
    this.buffer.set(value, at);
    return this;
  }
  string(value: string): this {
    return this.bytes(Buffer.from(value, 'utf8'));
  }
  /** A DAG in its text form (DAGs are rare in control messages; text keeps them debuggable). */
  dag(value: Dag): this {
    return this.string(value.toDagString());
  }
  finish(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

export class WireReader {
  private offset: number;

  constructor(
    private readonly buffer: Buffer,
    private readonly what: string,
    offset = 0,
  ) {
    this.offset = offset;
  }

  private take(bytes: number, field: string): number {
    if (this.offset + bytes > this.buffer.length) {
      throw new MalformedPacketError(`${this.what}: ${field} runs past the end (${this.buffer.length} bytes)`);
    }
    const at = this.offset;
    this.offset += bytes;
    return at;
  }

  u8(field: string): number {
    return this.buffer[this.take(1, field)]!;
  }
  u16(field: string): number {
    return this.buffer.readUInt16BE(this.take(2, field));
  }
  u32(field: string): number {
    return this.buffer.readUInt32BE(this.take(4, field));
  }
  u64(field: string): number {
    const value = this.buffer.readBigUInt64BE(this.take(8, field));
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new MalformedPacketError(`${this.what}: ${field} is too large`);
    return Number(value);
  }
  xid(field: string): Xid {
    return Xid.read(this.buffer, this.take(XID_WIRE_LENGTH, field));
  }
  optionalXid(field: string): Xid | undefined {
    return this.u8(field) ? this.xid(field) : undefined;
  }
  bytes(field: string): Buffer {
    const length = this.u16(`${field} length`);
    const at = this.take(length, field);
    return this.buffer.subarray(at, at + length);
  }
  string(field: string): string {
    return this.bytes(field).toString('utf8');
  }
  /** `length` bytes the layout fixes, as a view. */
  fixed(length: number, field: string): Buffer {
    const at = this.take(length, field);
    return this.buffer.subarray(at, at + length);
  }
  /** Everything left, as a view. */
  rest(): Buffer {
    const at = this.offset;
    this.offset = this.buffer.length;
    return this.buffer.subarray(at);
  }
  dag(field: string): Dag {
    const text = this.string(field);
    try {
      return Dag.parse(text);
    } catch (error) {
      throw new MalformedPacketError(`${this.what}: ${field}: ${(error as Error).message}`);
    }
  }
  get remaining(): number {
    return this.buffer.length - this.offset;
  }
  /** Throws unless every byte was read: trailing junk is a malformed message. */
  end(): void {
    if (this.offset !== this.buffer.length) {
      throw new MalformedPacketError(`${this.what}: ${this.buffer.length - this.offset} unexpected trailing bytes`);
    }
  }
}
