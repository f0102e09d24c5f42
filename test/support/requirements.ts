/**
 * Tests that need a tool (tshark, QEMU) or root skip when it is missing, and say so
 * loudly: a skipped test must never look like a passed one.
 */
import { spawnSync } from 'node:child_process';

export function commandExists(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Returns true if `ok`; otherwise prints a banner naming what is missing and how to get it. */
export function requirement(ok: boolean, what: string, remedy: string): boolean {
  if (!ok) {
    const line = '!'.repeat(78);
    process.stderr.write(`\n${line}\n!! SKIPPED: ${what} is not available here.\n!! ${remedy}\n${line}\n\n`);
  }
  return ok;
}
