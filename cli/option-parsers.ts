/**
 * Parsers for numeric CLI options. Number() takes "0x10", "1e999", "" (0) and " 5";
 * these take decimal text only, check the range, and refuse with commander's
 * InvalidArgumentError, which commander turns into a one-line usage error (exit 2
 * through runCli) before the command runs.
 */
import { InvalidArgumentError } from 'commander';

/** The longest delay setTimeout honours (a larger one fires at once). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Option text longer than this is refused before it is read. */
export const MAX_OPTION_TEXT = 32;
const INTEGER = /^-?\d+$/;
const DECIMAL = /^-?\d+(\.\d{1,9})?$/;

function inRange(value: number, min: number, max: number, text: string, what: string): number {
  if (!(value >= min && value <= max)) throw new InvalidArgumentError(`"${text}" is not ${what} from ${min} to ${max}.`);
  return value === 0 ? 0 : value; // -0 as 0
}

/** A decimal integer in [min, max]. */
export function integerOption(min: number, max: number): (text: string) => number {
  return (text) => {
    if (text.length > MAX_OPTION_TEXT || !INTEGER.test(text)) throw new InvalidArgumentError(`"${text}" is not a decimal integer.`);
    return inRange(Number(text), min, max, text, 'an integer');
  };
}

/** A decimal number (a fraction allowed) in [min, max]. */
export function numberOption(min: number, max: number): (text: string) => number {
  return (text) => {
    if (text.length > MAX_OPTION_TEXT || !DECIMAL.test(text)) throw new InvalidArgumentError(`"${text}" is not a decimal number.`);
    return inRange(Number(text), min, max, text, 'a number');
  };
}

const DURATION = /^(\d+(?:\.\d{1,9})?)(ms|s|m|h)?$/;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Whole milliseconds ("250", "250ms", "1.5s", "2m", "1h") in [min, max], max at most setTimeout's. */
export function durationMsOption(min: number, max = MAX_TIMER_MS): (text: string) => number {
  const top = Math.min(max, MAX_TIMER_MS);
  return (text) => {
    const match = text.length > MAX_OPTION_TEXT ? null : DURATION.exec(text);
    if (!match) throw new InvalidArgumentError(`"${text}" is not a duration (milliseconds, or a number with ms, s, m or h).`);
    // Exact (BigInt, nanounits): in floating point 4100.6 * 60000 is not a whole number.
    const [whole, fraction = ''] = match[1]!.split('.');
    const scaled = (BigInt(whole!) * 10n ** 9n + BigInt(fraction.padEnd(9, '0'))) * BigInt(DURATION_UNITS[match[2] ?? 'ms']!);
    if (scaled % 10n ** 9n !== 0n) throw new InvalidArgumentError(`"${text}" is not a whole number of milliseconds.`);
    return inRange(Number(scaled / 10n ** 9n), min, top, text, 'a duration in ms');
  };
}

const BYTES = /^(\d+)(k|K|KiB|M|MiB|G|GiB)?$/;
const BYTE_UNITS: Record<string, number> = { k: 1024, K: 1024, KiB: 1024, M: 1024 ** 2, MiB: 1024 ** 2, G: 1024 ** 3, GiB: 1024 ** 3 };

/** A byte count ("1500", "64K", "16MiB", "1G": binary units) in [min, max]. */
export function bytesOption(min: number, max: number): (text: string) => number {
  return (text) => {
    const match = text.length > MAX_OPTION_TEXT ? null : BYTES.exec(text);
    if (!match) throw new InvalidArgumentError(`"${text}" is not a byte count (an integer, or with K, M or G).`);
    return inRange(Number(match[1]) * (match[2] ? BYTE_UNITS[match[2]]! : 1), min, max, text, 'a byte count');
  };
}

/** A percentage 0..100 ("5", "0.5", "5%"). */
export function percentOption(): (text: string) => number {
  const number = numberOption(0, 100);
  return (text) => number(text.endsWith('%') ? text.slice(0, -1) : text);
}

/** One of `choices`, exactly. */
export function choiceOption<T extends string>(choices: readonly T[]): (text: string) => T {
  return (text) => {
    if (!(choices as readonly string[]).includes(text)) throw new InvalidArgumentError(`"${text}" is not one of ${choices.join(', ')}.`);
    return text as T;
  };
}
