/**
 * Errors that callers switch on. Every error raised on bad input carries a stable
 * `code` and a message that names the offending input, so a malformed packet or a
 * typo in a config file never surfaces as a TypeError from deep inside.
 */
export type XmigErrorCode =
  | 'ERR_XID_PARSE'
  | 'ERR_DAG_PARSE'
  | 'ERR_DAG_INVALID'
  | 'ERR_XIP_MALFORMED'
  | 'ERR_SIGNATURE'
  | 'ERR_MESSAGE_MALFORMED'
  | 'ERR_CONFIG'
  | 'ERR_IDENTITY'
  | 'ERR_CONTROL'
  | 'ERR_PCAP'
  | 'ERR_TIMEOUT'
  | 'ERR_UNREACHABLE'
  | 'ERR_CONNECTION'
  | 'ERR_NAME'
  | 'ERR_CHUNK'
  | 'ERR_MIGRATION'
  | 'ERR_STATE'
  | 'ERR_USAGE'
  /** A request at an API boundary that breaks its schema (the message names the field). */
  | 'ERR_BAD_REQUEST'
  /** Refused for a bound: a cap, a byte budget, a rate or a timeout (counted in the refusals). */
  | 'ERR_REFUSED';

export class XmigError extends Error {
  readonly code: XmigErrorCode;

  constructor(code: XmigErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Parsing of an XID, a DAG text form, or a DAG that breaks XIA's rules. */
export class AddressError extends XmigError {}

/** A packet that does not decode: counted and dropped by whoever received it. */
export class MalformedPacketError extends XmigError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_XIP_MALFORMED', message, options);
  }
}

/** A signed message that does not verify, or whose key does not hash to the claimed XID. */
export class SignatureError extends XmigError {
  readonly reason: 'bad-signature' | 'key-mismatch' | 'malformed' | 'wrong-kind';

  constructor(reason: SignatureError['reason'], message: string) {
    super('ERR_SIGNATURE', message);
    this.reason = reason;
  }
}

/** A request at an API boundary that breaks its rules; `field` names what was wrong ("" for the whole). */
export class BadRequestError extends XmigError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super('ERR_BAD_REQUEST', message);
  }
}

export interface ConfigErrorOptions extends ErrorOptions {
  /** The config file (or "(flags)", "(inline)") the bad value came from. */
  source?: string;
  /** Dotted paths of the bad fields ("interfaces.0.port"; "" for the whole file). */
  fields?: string[];
}

export class ConfigError extends XmigError {
  readonly source: string | undefined;
  readonly fields: readonly string[];

  constructor(message: string, options: ConfigErrorOptions = {}) {
    const { source, fields, ...errorOptions } = options;
    super('ERR_CONFIG', message, errorOptions);
    this.source = source;
    this.fields = fields ?? [];
  }
}

export function isXmigError(error: unknown, code?: XmigErrorCode): error is XmigError {
  return error instanceof XmigError && (code === undefined || error.code === code);
}

/** The message of anything thrown, for logs. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
