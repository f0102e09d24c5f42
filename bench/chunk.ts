/** CHUNK fetch throughput with 1, 8 and 64 requests outstanding, two nodes on UDP over loopback. */
import { randomBytes } from 'node:crypto';
import { ChunkFetcher } from '../xianet/chunk/chunk-fetcher.js';
import { ChunkService } from '../xianet/chunk/chunk-service.js';
import { twoUdpNodes } from './two-nodes.js';

export interface ChunkResult {
  bench: 'chunk';
  outstanding: number;
  chunkBytes: number;
  chunks: number;
  seconds: number;
  mbytePerSecond: number;
  chunksPerSecond: number;
}

export async function runChunkBench(options: { chunks?: number; chunkBytes?: number } = {}): Promise<ChunkResult[]> {
  const chunkBytes = options.chunkBytes ?? 256 * 1024;
  const count = options.chunks ?? 400;
  const { a, b, stop } = await twoUdpNodes();
  const origin = new ChunkService(b);
  origin.start();
  const data = Array.from({ length: count }, () => randomBytes(chunkBytes));
  const cids = data.map((d) => origin.publish(d));
  const results: ChunkResult[] = [];
  for (const outstanding of [1, 8, 64]) {
    // The window in bytes, held at `outstanding` chunks.
    const fetcher = new ChunkFetcher(a, { maxWindowBytes: outstanding * chunkBytes });
    fetcher.start();
    const started = performance.now();
    await Promise.all(cids.map((cid) => fetcher.fetch(cid, b.address())));
    const seconds = (performance.now() - started) / 1000;
    fetcher.stop();
    results.push({
      bench: 'chunk',
      outstanding,
      chunkBytes,
      chunks: count,
      seconds: Math.round(seconds * 1000) / 1000,
      mbytePerSecond: Math.round((count * chunkBytes) / seconds / 1e5) / 10,
      chunksPerSecond: Math.round(count / seconds),
    });
  }
  origin.stop();
  await stop();
  return results;
}
