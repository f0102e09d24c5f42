/**
 * How much freed memory a node's allocator keeps instead of handing it back to the kernel.
 *
 * node:dgram allocates every received datagram's memory anew (64 KiB, cut to its length)
 * and frees it when V8 collects the Buffer. Tens of MiB come and go between two of V8's
 * scavenges on a node forwarding chunks, and glibc gives the top of its heap back to the
 * kernel whenever more than 128 KiB of it lies free (M_TRIM_THRESHOLD's default): the next
 * datagrams fault it in again, a zeroed page at a time. perf on host B (`--via-node`,
 * loopback, 1 GiB): page faults 18 % of its CPU, clear_page_erms its second function after
 * SHA-1; R1 14-17 %. With the threshold at 64 MiB: 3 % and 4 %; R1 forwarding a QEMU
 * migration took 40 % less CPU (bench/README.md, 2026-12-07, third session).
 *
 * The cost is resident memory: up to `bytes` freed and kept, never more than the node held
 * at its busiest. Process-wide (glibc's mallopt, through the native addon): the node daemon
 * sets it at start (`keepFreedMemoryBytes` in its config; 0 leaves glibc's default, as does
 * XMIG_KEEP_FREED_MEMORY=0, for A/B runs; several daemons in one process: the last one
 * started sets it). Without the addon, or on a C library other than glibc, nothing changes
 * and the reason is reported.
 */
import { constants } from 'node:os';
import { udpBatchAddon } from './udp-batch.js';

export const DEFAULT_KEEP_FREED_MEMORY_BYTES = 64 * 1024 * 1024;

export type AllocatorSetting = { keptBytes: number } | { keptBytes: undefined; reason: string };

/** The addon's answer when the C library is not glibc (-ENOSYS). */
const NOT_GLIBC = -constants.errno.ENOSYS;

/** Sets glibc's trim threshold to `bytes` for this process, or says why not (and changes nothing). */
export function keepFreedMemory(bytes: number): AllocatorSetting {
  if (process.env['XMIG_KEEP_FREED_MEMORY'] === '0') return { keptBytes: undefined, reason: 'XMIG_KEEP_FREED_MEMORY=0' };
  if (bytes === 0) return { keptBytes: undefined, reason: 'keepFreedMemoryBytes is 0' };
  const { addon, reason } = udpBatchAddon();
  if (!addon) return { keptBytes: undefined, reason: `no native addon: ${reason}` };
  if (!addon.keepFreedMemory) return { keptBytes: undefined, reason: 'the addon was built before keepFreedMemory (node native/udp-batch/build.js)' };
  const done = addon.keepFreedMemory(bytes);
  if (done < 0) return { keptBytes: undefined, reason: done === NOT_GLIBC ? 'not glibc' : `mallopt refused it (${done})` };
  return { keptBytes: bytes };
}

/** How the setting reads in the node's ready line. */
export function describeAllocator(setting: AllocatorSetting): string {
  return setting.keptBytes === undefined ? `glibc default (${setting.reason})` : `keeps ${setting.keptBytes} freed bytes`;
}
