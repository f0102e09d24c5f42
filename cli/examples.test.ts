import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { examplesOf } from './examples.js';
import { buildProgram, ignoredFlags } from './program.js';

function all(command: Command): Command[] {
  return [command, ...command.commands.flatMap(all)];
}

describe('the command tree', () => {
  it('has Examples: in the help of every command', async () => {
    const program = await buildProgram();
    const missing = all(program)
      .filter((c) => c.parent)
      .filter((c) => examplesOf(c).length === 0)
      .map((c) => c.name());
    expect(missing).toEqual([]);
  });

  it('names the flags a command would ignore', async () => {
    const program = await buildProgram('testbed');
    program.exitOverride();
    const testbed = program.commands.find((c) => c.name() === 'testbed')!;
    testbed.action(() => undefined);
    await program.parseAsync(['testbed', '--moves', '3'], { from: 'user' });
    expect(ignoredFlags(testbed)).toEqual(['--moves is ignored without --migrate']);
    await program.parseAsync(['testbed', '--moves', '3', '--migrate'], { from: 'user' });
    expect(ignoredFlags(testbed)).toEqual([]);
  });
});
