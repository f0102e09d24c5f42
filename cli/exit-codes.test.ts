import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES, ExitCode } from './exit-codes.js';

describe('exit codes', () => {
  it('are all in the table, and the README prints the table as it is', () => {
    expect(EXIT_CODES.map((e) => e.code).sort((a, b) => a - b)).toEqual(Object.values(ExitCode).sort((a, b) => a - b));
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    for (const { code, meaning } of EXIT_CODES) expect(readme).toContain(`| ${code} | ${meaning} |`);
  });
});
