/**
 * Port blocks for the tests' UDP networks. A network listens on fixed ports of its layout
 * (udpLayout: basePort and up, metrics at +700), so two things must not take them:
 *
 *  - the kernel, which hands any socket bound to port 0 (every TCP client, every test's
 *    own listener) a port from its ephemeral range (ip_local_port_range, 32768-60999 on
 *    Linux): a block chosen at random from 20000-50000 collided with one in a clean-clone CI
 *    run here (`bind EADDRINUSE 127.0.0.1:32816` in daemon-lifecycle.test.ts, beside the
 *    QEMU e2e tests) — blocks lie below that range;
 *  - another test file running at once (vitest runs two): each block is taken with an
 *    exclusive lock file naming its process, given back on release() or when the process
 *    exits; a lock whose process is gone is taken over.
 */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive } from '../../shared/process-alive.js';

export const PORT_BLOCK_SIZE = 1000;
/** Above the well-known service ports a test may run (NBD 10809). */
export const FIRST_BLOCK = 11_000;
const LOCKS = join(tmpdir(), 'xmig-test-ports');

/** The lowest port the kernel may pick by itself (the start of its ephemeral range). */
export function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low > FIRST_BLOCK) return low;
  } catch {
    // Not Linux, or no /proc: Linux's default.
  }
  return 32_768;
}

const held = new Set<string>();
process.once('exit', () => {
  for (const file of held) {
    try {
      unlinkSync(file);
    } catch {
      // Already gone.
    }
  }
});

export interface PortBlock {
  /** The first port: the block is [base, base + PORT_BLOCK_SIZE). */
  base: number;
  release(): void;
}

/** A block of PORT_BLOCK_SIZE ports below the ephemeral range that no other test process holds (`locks`: where the lock files are). */
export function reservePortBlock(locks = LOCKS): PortBlock {
  mkdirSync(locks, { recursive: true });
  const low = ephemeralLow();
  const blocks = Math.floor((low - FIRST_BLOCK) / PORT_BLOCK_SIZE);
  if (blocks < 1) throw new Error(`no port block below the ephemeral range (it starts at ${low})`);
  const start = Math.floor(Math.random() * blocks);
  for (let i = 0; i < blocks; i++) {
    const base = FIRST_BLOCK + ((start + i) % blocks) * PORT_BLOCK_SIZE;
    const file = join(locks, `${base}.lock`);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(file, 'wx');
        writeSync(fd, String(process.pid));
        closeSync(fd);
        held.add(file);
        return {
          base,
          release() {
            if (!held.delete(file)) return;
            try {
              unlinkSync(file);
            } catch {
              // Already gone.
            }
          },
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        let owner = NaN;
        try {
          owner = Number(readFileSync(file, 'utf8'));
        } catch {
          // Released meanwhile: try again.
        }
        // Held by a live process (a half-written file counts as live): the next block.
        if (Number.isInteger(owner) && owner > 0 && !processAlive(owner)) {
          try {
            unlinkSync(file);
          } catch {
            // Another process took it over first.
          }
        } else if (!Number.isNaN(owner)) break;
      }
    }
  }
  throw new Error(`all ${blocks} test port blocks below ${low} are held by running processes (${locks})`);
}
