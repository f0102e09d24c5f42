/**
 * V8 flags every xmig process runs with. bin/xmig.js's shebang carries them (an
 * installed `xmig`, the systemd units); whatever starts `node .../xmig.js` itself
 * (QEMU running `xmig send`, tests, benchmarks) passes these.
 *
 * --initial-old-space-size=64: chunks in flight live for tens of milliseconds, long
 * enough to be promoted, and then count against the old generation's limit, which
 * otherwise sits ~16 MB above a daemon's small heap. With --trace-gc a node moving
 * migration chunks ran 20-30 mark-compacts per 256 MiB; with this floor, none, at
 * the same peak RSS, and the mover over xianet ran 25-30 % faster.
 */
export const XMIG_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=64'];
