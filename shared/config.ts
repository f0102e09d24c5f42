/**
 * Config files: JSON validated against a zod schema that also supplies defaults.
 * Errors name the file and the path of every bad field; CLI flags are merged over
 * the file before validation so they are checked by the same rules.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, errorMessage } from './errors.js';

export { z };

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
    if (value === undefined) continue;
    result[key] = mergeConfig(base[key], value);
  }
  return result;
}

export function formatIssues(source: string, error: z.ZodError): string {
  const lines = error.issues.map((issue) => {
    const path = issue.path.length ? issue.path.map(String).join('.') : '(top level)';
    return `  ${path}: ${issue.message}`;
  });
  return `invalid config ${source}:\n${lines.join('\n')}`;
}

export function parseConfig<S extends z.ZodType>(schema: S, raw: unknown, source = '(inline)'): z.output<S> {
  const result = schema.safeParse(raw);
  if (!result.success) throw new ConfigError(formatIssues(source, result.error));
  return result.data;
}

export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config ${file}: ${errorMessage(error)}`, { cause: error });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new ConfigError(`config ${file} is not valid JSON: ${errorMessage(error)}`, { cause: error });
  }
}

export function loadConfig<S extends z.ZodType>(schema: S, options: LoadConfigOptions = {}): z.output<S> {
  const fromFile = options.file === undefined ? {} : readConfigFile(options.file);
  const merged = mergeConfig(fromFile, options.overrides ?? {});
  const source = options.file ?? '(flags)';
  return parseConfig(schema, merged, options.overrides && options.file ? `${source} + flags` : source);
}
