/**
 * Config files: JSON validated against a zod schema that also supplies defaults.
 * Errors name the file and the path of every bad field; CLI flags are merged over
 * the file before validation so they are checked by the same rules.
 *
 * The file is a boundary: before any schema sees it, it is capped in size (read no
 * further than the cap, so /dev/zero or a runaway file cannot fill the heap) and in
 * nesting depth (scanned before JSON.parse), and keys that name the prototype
 * machinery (`__proto__`, `constructor`, `prototype`) are refused wherever they occur:
 * JSON.parse makes them own keys, and a record schema or a merge that assigns them
 * would set an object's prototype. Every refusal is a ConfigError.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, errorMessage } from './errors.js';

export { z };

/** Bounds of a config file, checked before it is parsed. */
export const CONFIG_LIMITS = {
  /** Bytes of one file: the largest real config is a few KiB. */
  maxBytes: 1024 * 1024,
  /** Nesting of objects and arrays: ours nest 4 deep. */
  maxDepth: 32,
} as const;

/** The longest delay setTimeout/setInterval honour; a larger one fires at once (TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Keys refused anywhere in a config. */
export const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Names that become Click element prefixes, file names and log fields: no spaces, slashes or control bytes. */
export const nameText = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." and "-" only (at most 64)')
  // A name becomes a key of maps and records elsewhere: "__proto__" there is the prototype.
  .refine((text) => !FORBIDDEN_KEYS.has(text), 'a reserved word ("__proto__", "constructor", "prototype")');

/** A file path: no NUL (fs calls throw a TypeError on one), bounded. */
export const pathText = z
  .string()
  .min(1)
  .max(4096)
  .refine((text) => !text.includes('\0'), 'a path cannot contain a NUL byte');

/** A TCP/UDP port a peer addresses. */
export const portNumber = z.number().int().min(1).max(65535);
/** A port to listen on: 0 means any free one (logged). */
export const listenPort = z.number().int().min(0).max(65535);

/** For a schema's refine: text that `parse` accepts (it throws on anything else). */
export function parsedBy(parse: (text: string) => unknown): (text: string) => boolean {
  return (text) => {
    try {
      parse(text);
      return true;
    } catch {
      return false;
    }
  };
}

/** Milliseconds that feed a timer. */
export function timerMs(min: number, max = MAX_TIMER_MS): z.ZodNumber {
  return z.number().int().min(min).max(Math.min(max, MAX_TIMER_MS));
}

export interface LoadConfigOptions {
  /** Path of a JSON config file; absent means defaults plus overrides only. */
  file?: string;
  /** Values from CLI flags; `undefined` entries are ignored (flag not given). */
  overrides?: Record<string, unknown>;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Merges `over` into `base`; objects merge by key, everything else is replaced. */
export function mergeConfig(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (!isPlainObject(base) || !isPlainObject(over)) return over;
  const result: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined || FORBIDDEN_KEYS.has(key)) continue;
    // defineProperty, not assignment: a key never reaches a setter on the prototype.
    Object.defineProperty(result, key, { value: mergeConfig(base[key], value), enumerable: true, writable: true, configurable: true });
  }
  return result;
}

function pathOf(path: ReadonlyArray<PropertyKey>): string {
  return path.length ? path.map(String).join('.') : '(top level)';
}

export function formatIssues(source: string, error: z.ZodError): string {
  const lines = error.issues.map((issue) => `  ${pathOf(issue.path)}: ${issue.message}`);
  return `invalid config ${source}:\n${lines.join('\n')}`;
}

function refuse(source: string, path: ReadonlyArray<PropertyKey>, message: string): never {
  throw new ConfigError(`invalid config ${source}:\n  ${pathOf(path)}: ${message}`, { source, fields: [path.map(String).join('.')] });
}

/**
 * Depth of the deepest object/array in JSON text, scanned without parsing (strings
 * skipped); stops as soon as it passes `limit`.
 */
export function jsonDepth(text: string, limit = Infinity): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string: to the next quote not escaped.
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x7b || c === 0x5b) {
      depth++;
      if (depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
  return deepest;
}

/** Refuses prototype keys anywhere in `value`, and nesting past the cap (values handed in, not read from a file). */
export function checkConfigValue(value: unknown, source: string, path: PropertyKey[] = []): void {
  if (path.length > CONFIG_LIMITS.maxDepth) refuse(source, path, `nested deeper than ${CONFIG_LIMITS.maxDepth}`);
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkConfigValue(item, source, [...path, i]));
  } else if (typeof value === 'object' && value !== null) {
    for (const key of Object.keys(value)) {
      if (FORBIDDEN_KEYS.has(key)) refuse(source, [...path, key], `key "${key}" is refused`);
      checkConfigValue((value as Record<string, unknown>)[key], source, [...path, key]);
    }
  }
}

export function parseConfig<S extends z.ZodType>(schema: S, raw: unknown, source = '(inline)'): z.output<S> {
  checkConfigValue(raw, source);
  let result: ReturnType<S['safeParse']>;
  try {
    result = schema.safeParse(raw) as ReturnType<S['safeParse']>;
  } catch (error) {
    // A refinement that threw on a value its author did not foresee: still this config's fault.
    throw new ConfigError(`invalid config ${source}: ${errorMessage(error)}`, { source, cause: error });
  }
  if (!result.success) {
    throw new ConfigError(formatIssues(source, result.error), { source, fields: result.error.issues.map((issue) => issue.path.map(String).join('.')) });
  }
  return result.data as z.output<S>;
}

/** JSON text of a config (`source` names it in errors) as a value: size, depth and keys checked. */
export function parseConfigText(text: string, source: string): unknown {
  if (text.length > CONFIG_LIMITS.maxBytes || Buffer.byteLength(text, 'utf8') > CONFIG_LIMITS.maxBytes) {
    throw new ConfigError(`config ${source} is larger than ${CONFIG_LIMITS.maxBytes} bytes`, { source, fields: [''] });
  }
  if (jsonDepth(text, CONFIG_LIMITS.maxDepth) > CONFIG_LIMITS.maxDepth) {
    throw new ConfigError(`config ${source} nests objects or arrays deeper than ${CONFIG_LIMITS.maxDepth}`, { source, fields: [''] });
  }
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (error) {
    throw new ConfigError(`config ${source} is not valid JSON: ${errorMessage(error)}`, { source, fields: [''], cause: error });
  }
  checkConfigValue(value, source);
  return value;
}

/** Reads at most the cap (and one byte more, to tell a file at the cap from a larger one). */
function readCapped(file: string): string {
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(CONFIG_LIMITS.maxBytes + 1);
    let length = 0;
    while (length < buffer.length) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length > CONFIG_LIMITS.maxBytes) throw new ConfigError(`config ${file} is larger than ${CONFIG_LIMITS.maxBytes} bytes`, { source: file, fields: [''] });
    return buffer.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readCapped(file);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`cannot read config ${file}: ${errorMessage(error)}`, { source: file, fields: [''], cause: error });
  }
  return parseConfigText(text, file);
}

export function loadConfig<S extends z.ZodType>(schema: S, options: LoadConfigOptions = {}): z.output<S> {
  const fromFile = options.file === undefined ? {} : readConfigFile(options.file);
  return configFrom(schema, fromFile, options);
}

/** The config of JSON `text` as if read from `options.file` (the loader without the read: what tests feed). */
export function loadConfigText<S extends z.ZodType>(schema: S, text: string, options: LoadConfigOptions = {}): z.output<S> {
  return configFrom(schema, parseConfigText(text, options.file ?? '(inline)'), options);
}

function configFrom<S extends z.ZodType>(schema: S, fromFile: unknown, options: LoadConfigOptions): z.output<S> {
  const source = options.file ?? '(flags)';
  const label = options.overrides && options.file ? `${source} + flags` : source;
  checkConfigValue(options.overrides ?? {}, label);
  const merged = mergeConfig(fromFile, options.overrides ?? {});
  return parseConfig(schema, merged, label);
}
