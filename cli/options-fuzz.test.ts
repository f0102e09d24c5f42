/**
 * Numeric CLI options: 10,000 generated argv per parser through commander, accepted
 * iff the text is valid (checked here with exact BigInt arithmetic, not Number), and
 * refused only as commander's invalid-argument error; then the real `xmig` entry.
 */
import { spawnSync } from 'node:child_process';
import { Command, CommanderError } from 'commander';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bytesOption, choiceOption, durationMsOption, integerOption, MAX_OPTION_TEXT, MAX_TIMER_MS, percentOption } from './option-parsers.js';

const RUNS = 10_000;
const SCALE = 10n ** 9n;

/** Exact value × 1e9 of decimal text in the grammar (sign, digits, up to 9 fraction digits), or undefined. */
function exact(text: string, fraction: boolean, signed: boolean): bigint | undefined {
  const m = (signed ? /^(-?)(\d+)(?:\.(\d{1,9}))?$/ : /^()(\d+)(?:\.(\d{1,9}))?$/).exec(text);
  if (!m || (m[3] !== undefined && !fraction)) return undefined;
  const value = BigInt(m[2]!) * SCALE + BigInt((m[3] ?? '').padEnd(9, '0'));
  return m[1] === '-' ? -value : value;
}

const within = (v: bigint | undefined, min: number, max: number): boolean => v !== undefined && v >= BigInt(min) * SCALE && v <= BigInt(max) * SCALE;

const text = fc.oneof(
  fc.integer({ min: -100_000, max: 3_000_000_000 }).map(String),
  fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }).map(String),
  fc.stringMatching(/^-?\d{0,22}(\.\d{0,11})?(ms|s|m|h|k|K|KiB|M|MiB|G|GiB|%|e3|e999)?$/),
  fc.constantFrom('', ' ', 'abc', 'NaN', 'Infinity', '-Infinity', '1e999', '0x10', '0b1', '0o7', ' 5', '5 ', '+5', '5.', '.5', '-0', '00', '1_000', '١٢', '--5', '5ms', '1.5s', '2m', '1h', '64K', '1G', '100%'),
  fc.string({ maxLength: 12 }),
  fc.constantFrom('intra-ad', 'inter-ad', 'INTRA-AD', 'intra-ad ', 'intra'),
);

function parse<T>(parser: (text: string) => T, value: string): { ok: true; value: T } | { ok: false } {
  let result: T | undefined;
  const command = new Command('t')
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined })
    .option('--v <x>', 'value', parser)
    .action((options: { v: T }) => {
      result = options.v;
    });
  try {
    command.parse(['--v', value], { from: 'user' });
  } catch (error) {
    if (!(error instanceof CommanderError) || error.code !== 'commander.invalidArgument') throw error;
    expect(error.message).not.toContain('\n');
    return { ok: false };
  }
  return { ok: true, value: result as T };
}

function fuzz<T>(parser: (text: string) => T, valid: (text: string) => T | undefined): void {
  let accepted = 0;
  fc.assert(
    fc.property(text, (t) => {
      const expected = t.length <= MAX_OPTION_TEXT ? valid(t) : undefined;
      const got = parse(parser, t);
      expect(got.ok, JSON.stringify(t)).toBe(expected !== undefined);
      if (got.ok) {
        accepted++;
        expect(got.value).toBe(expected);
      }
    }),
    { numRuns: RUNS },
  );
  expect(accepted).toBeGreaterThan(RUNS / 50);
}

const toNumber = (v: bigint): number => Number(v) / 1e9;

describe('option parsers under 10,000 generated argv each', () => {
  it('integer in range', () => {
    fuzz(integerOption(-7, 65535), (t) => {
      const v = exact(t, false, true);
      return within(v, -7, 65535) ? toNumber(v!) + 0 : undefined;
    });
  });

  it('duration in ms (ms, s, m, h)', () => {
    fuzz(durationMsOption(1), (t) => {
      const m = /^(.*?)(ms|s|m|h)?$/.exec(t)!;
      const v = exact(m[1]!, true, false);
      if (v === undefined) return undefined;
      const ms = v * BigInt({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms']!);
      return ms % SCALE === 0n && within(ms, 1, MAX_TIMER_MS) ? Number(ms / SCALE) : undefined;
    });
  });

  it('bytes (K, M, G binary)', () => {
    fuzz(bytesOption(0, 65535), (t) => {
      const m = /^(\d+)(k|K|KiB|M|MiB|G|GiB)?$/.exec(t);
      if (!m) return undefined;
      const n = BigInt(m[1]!) * BigInt(m[2] ? 1024 ** ({ k: 1, K: 1, KiB: 1, M: 2, MiB: 2, G: 3, GiB: 3 }[m[2]]!) : 1);
      return n <= 65535n ? Number(n) : undefined;
    });
  });

  it('percent', () => {
    fuzz(percentOption(), (t) => {
      const v = exact(t.endsWith('%') ? t.slice(0, -1) : t, true, true);
      return within(v, 0, 100) ? Number(t.replace(/%$/, '')) + 0 : undefined;
    });
  });

  it('choice', () => {
    const choices = ['intra-ad', 'inter-ad', '5'] as const;
    fuzz(choiceOption(choices), (t) => (choices as readonly string[]).includes(t) ? t : undefined);
  });
});

const XMIG = new URL('../bin/xmig.js', import.meta.url).pathname;
const AD = 'AD:1000000000000000000000000000000000000000';
const HID = 'HID:0000000000000000000000000000000000000000';

describe('xmig with a bad numeric option', () => {
  // Each passed Number() before: 0x10 = 16, '' = 0, 1e999 = Infinity, 1.5 moves.
  it.each([
    ['xip', 'encode', '--dst', `RE ${AD} ${HID}`, '--src', `RE ${HID}`, '--hop-limit', '0x10'],
    ['ping', '-s', '', `RE ${AD}`],
    ['ping', '-i', '1e999', `RE ${AD}`],
    ['node', '-c', '/nonexistent.json', '--metrics-port', '0x50'],
    ['router-plugin', '--freshness-ms', 'abc'],
    ['testbed', '--moves', '1.5'],
    ['migrate', '--timeout', '1e999', 'vm', 'qemu+ssh://nowhere/system'],
  ])('%s %s ... refuses it in one line, exit 2', (...args) => {
    const r = spawnSync(process.execPath, [XMIG, ...args], { encoding: 'utf8', timeout: 60_000 });
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
    expect(errors, r.stderr).toHaveLength(1);
    expect(errors[0]).toMatch(/argument .* is invalid/);
    expect(r.status).toBe(2);
  });
});
