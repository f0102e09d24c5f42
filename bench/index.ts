/**
 * `npm run bench [name...]`: runs the benchmarks, printing one JSON line per result.
 * Ratios are measured side by side in one run: these machines are noisy.
 */
import { runForwardingBench } from './forwarding.js';
import { runStreamBench } from './stream.js';
import { runChunkBench } from './chunk.js';
import { runNoticeBench } from './notices.js';
import { runMoverBench } from './mover.js';
import { runUdpBatchBench } from './udp-batch.js';
import { runQemuMigrationBench } from './qemu-migration.js';
import { runDiskTransportBench } from './disk-transport.js';
import { runFullMigrationBench } from './full-migration.js';
import { runFloodBench } from './floods.js';
import { runLabBench } from './lab.js';
import { runLabFullBench } from './lab-full.js';

const benches: Record<string, () => Promise<object[]>> = {
  forwarding: () => runForwardingBench(),
  stream: () => runStreamBench(),
  chunk: () => runChunkBench(),
  notices: () => runNoticeBench(),
  mover: () => runMoverBench(),
  'udp-batch': () => runUdpBatchBench(),
  'qemu-migration': () => runQemuMigrationBench(),
  'disk-transport': () => runDiskTransportBench(),
  'full-migration': () => runFullMigrationBench(),
  floods: () => runFloodBench(),
  lab: () => runLabBench(),
  'lab-full': () => runLabFullBench(),
};

const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : Object.keys(benches)) {
  const bench = benches[name];
  if (!bench) {
    process.stderr.write(`unknown benchmark "${name}"; known: ${Object.keys(benches).join(', ')}\n`);
    process.exitCode = 2;
    continue;
  }
  for (const result of await bench()) process.stdout.write(`${JSON.stringify({ ...result, node: process.version })}\n`);
}
