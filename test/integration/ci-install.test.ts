/**
 * `.ci/run --install`, the README's first step on a fresh machine, run against stub
 * package tools (apt-get, dpkg-query, npm, tee, sudo log their calls and change nothing):
 * what it installs is decided by what the machine has, and a machine without QEMU is the
 * case that matters most — there the version probe itself fails.
 */
import { execFile } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const CI_RUN = new URL('../../.ci/run', import.meta.url).pathname;
const dirs: string[] = [];

interface Machine {
  /** What `qemu-system-x86_64 --version` prints; null: not installed (the shell's 127). */
  qemu: string | null;
  /** Debian packages dpkg-query reports as not installed. */
  missing: string[];
}

/** Runs a copy of .ci/run with `args` on a stub machine; returns the tools' calls, one per line. */
async function ciRun(machine: Machine, args: string[]): Promise<{ code: number; calls: string[]; stderr: string }> {
  const root = mkdtempSync(join(tmpdir(), 'xmig-ci-'));
  dirs.push(root);
  mkdirSync(join(root, '.ci'));
  cpSync(CI_RUN, join(root, '.ci', 'run'));
  const bin = join(root, 'bin');
  mkdirSync(bin);
  const log = join(root, 'calls.log');
  const stub = (name: string, body: string): void => {
    writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> '${log}'\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  for (const tool of ['apt-get', 'npm', 'sudo']) stub(tool, tool === 'sudo' ? 'exec "$@"' : 'exit 0');
  stub('tee', 'cat > /dev/null');
  stub('dpkg-query', `for p in ${machine.missing.join(' ')}; do [ "$p" = "$3" ] && exit 1; done\nprintf 'install ok installed'`);
  if (machine.qemu === null) stub('qemu-system-x86_64', 'exit 127');
  else stub('qemu-system-x86_64', `echo '${machine.qemu}'`);
  try {
    const { stderr } = await run(join(root, '.ci', 'run'), args, {
      env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}` },
      timeout: 30_000,
    });
    return { code: 0, calls: calls(log), stderr };
  } catch (error) {
    const failed = error as { code?: number; stderr?: string };
    return { code: failed.code ?? -1, calls: calls(log), stderr: failed.stderr ?? '' };
  }
}

function calls(log: string): string[] {
  try {
    return readFileSync(log, 'utf8').trim().split('\n').filter((line) => !line.startsWith('dpkg-query') && !line.startsWith('qemu'));
  } catch {
    return [];
  }
}

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('.ci/run --install', () => {
  it('installs QEMU 10 from bookworm-backports on a machine that has no QEMU at all, then npm ci', async () => {
    const result = await ciRun({ qemu: null, missing: ['qemu-system-x86', 'qemu-utils', 'tshark'] }, ['--install']);
    expect(result, result.stderr).toMatchObject({ code: 0 });
    expect(result.calls).toContain('apt-get update -qq');
    expect(result.calls).toContainEqual(expect.stringMatching(/^apt-get install .*--no-install-recommends .*tshark/));
    expect(result.calls).toContainEqual(expect.stringMatching(/^apt-get install .*-t bookworm-backports qemu-system-x86 qemu-utils$/));
    expect(result.calls.at(-1)).toBe('npm ci --no-audit --no-fund');
  });

  it('upgrades a QEMU older than 10 from bookworm-backports', async () => {
    const result = await ciRun({ qemu: 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)', missing: [] }, ['--install']);
    expect(result, result.stderr).toMatchObject({ code: 0 });
    expect(result.calls).toContainEqual(expect.stringMatching(/-t bookworm-backports qemu-system-x86 qemu-utils$/));
  });

  it('installs nothing on a machine that has it all, and still runs npm ci', async () => {
    const result = await ciRun({ qemu: 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)', missing: [] }, ['--install']);
    expect(result, result.stderr).toMatchObject({ code: 0 });
    // Only a machine that lacks the backports suite gets it added (through tee) and an update.
    const addsSuite = result.calls.some((call) => call.startsWith('tee'));
    expect(result.calls.filter((call) => call.startsWith('apt-get')).length).toBe(addsSuite ? 2 : 0);
    expect(result.calls.at(-1)).toBe('npm ci --no-audit --no-fund');
  });
});
