/**
 * The bits of Click's configuration-string syntax the control port reads, as Click
 * 2.0.1 reads them (lib/args.cc IntArg, lib/confparse.cc cp_argvec / cp_xid,
 * controlsocket.cc's word split), so a handler argument means the same here as on an
 * xia-core router. Nothing here throws: a value that does not parse is `undefined`.
 *
 * Where xmig is stricter on purpose (an XID is exactly TYPE:40-hex; no comments or
 * quotes inside arguments) the README's control-port table says so.
 */
import { Xid } from '../shared/xid.js';

/** C's isspace() in the "C" locale: the bytes Click splits words on. */
export function isClickSpace(code: number): boolean {
  return code === 0x20 || (code >= 0x09 && code <= 0x0d);
}

/** A word of a command line and where it starts and ends (so the rest of the line can be cut as Click does). */
export interface ClickWord {
  text: string;
  start: number;
  end: number;
}

/** Splits a command line into words on isspace(), as ControlSocket::parse_command does. */
export function clickWords(line: string): ClickWord[] {
  const words: ClickWord[] = [];
  let position = 0;
  while (position < line.length) {
    while (position < line.length && isClickSpace(line.charCodeAt(position))) position++;
    const start = position;
    while (position < line.length && !isClickSpace(line.charCodeAt(position))) position++;
    if (start < position) words.push({ text: line.slice(start, position), start, end: position });
  }
  return words;
}

/** Click's String::upper(): ASCII letters only. */
export function clickUpper(text: string): string {
  return text.replace(/[a-z]+/g, (letters) => letters.toUpperCase());
}

/** Trims isspace() bytes from both ends. */
export function clickTrim(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isClickSpace(text.charCodeAt(start))) start++;
  while (end > start && isClickSpace(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}

const SIGNED_32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };
const UNSIGNED_32 = { min: 0, max: 2 ** 32 - 1 };

/**
 * An integer as Click's IntArg (base 0) reads one: an optional sign, then `0x` hex,
 * `0b` binary, a leading-0 octal or decimal digits, single underscores allowed between
 * digits; the whole text must be the number and it must fit the type.
 */
export function parseClickInteger(text: string, kind: 'int32' | 'uint32' = 'int32'): number | undefined {
  const match = /^([+-]?)(?:0[xX]([0-9a-fA-F](?:_?[0-9a-fA-F])*)|0[bB]([01](?:_?[01])*)|(0(?:_?[0-7])*)|([1-9](?:_?[0-9])*))$/.exec(text);
  if (!match) return undefined;
  const [, sign, hex, binary, octal, decimal] = match;
  if (sign === '-' && kind === 'uint32') return undefined;
  let magnitude: number;
  if (hex !== undefined) magnitude = Number.parseInt(hex.replaceAll('_', ''), 16);
  else if (binary !== undefined) magnitude = Number.parseInt(binary.replaceAll('_', ''), 2);
  else if (octal !== undefined) magnitude = Number.parseInt(octal.replaceAll('_', ''), 8);
  else magnitude = Number.parseInt(decimal!.replaceAll('_', ''), 10);
  const value = sign === '-' ? -magnitude : magnitude;
  const range = kind === 'int32' ? SIGNED_32 : UNSIGNED_32;
  return Number.isSafeInteger(value) && value >= range.min && value <= range.max ? value : undefined;
}

/**
 * Splits a handler argument at commas, each piece trimmed, as cp_argvec does: an
 * empty string has no arguments, and an empty last piece (a trailing comma) is dropped.
 */
export function clickArgvec(text: string): string[] {
  if (text.length === 0) return [];
  const pieces = text.split(',');
  const args = pieces.map(clickTrim);
  if (args[args.length - 1] === '') args.pop();
  return args;
}

/** The principal type names Click's cp_xid_type knows, spelled exactly (Click is case-sensitive). */
const CLICK_TYPE_NAMES = new Set(['AD', 'HID', 'SID', 'CID', 'IP']);

/**
 * An XID as the control port takes it: Click's type name exactly (`HID`, not `hid`),
 * a colon, and 40 hex digits in either case (or, for IP, a dotted IPv4 address).
 * Click also takes short XIDs (padding them with zeros) and ignores what follows the
 * 40th digit; xmig does not (see the README).
 */
export function parseClickXid(text: string): Xid | undefined {
  const colon = text.indexOf(':');
  if (colon <= 0 || !CLICK_TYPE_NAMES.has(text.slice(0, colon))) return undefined;
  try {
    return Xid.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Click's String::printable() as ControlSocket applies it to every message line:
 * bytes below 0x20 become `^X`, bytes above 0x7e `\ooo`, so a message is one line.
 */
export function clickPrintable(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i) & 0xff;
    if (code >= 0x20 && code < 0x7f) out += text[i];
    else if (code < 0x20) out += `^${String.fromCharCode(code + 64)}`;
    else out += `\\${code.toString(8).padStart(3, '0')}`;
  }
  return out;
}
