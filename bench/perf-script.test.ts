import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatProfile, frameName, parsePerfScript, PerfAggregate } from './perf-script.js';

// Two samples as `perf script -F pid,tid,ip,sym,dso` prints them (taken from a real run, trimmed).
const SCRIPT = [
  '21441/21441 ',
  '\tffffffff8224d2a6 clear_page_erms+0x6 ([kernel.kallsyms])',
  '\tffffffff81000c82 asm_exc_page_fault+0x22 ([kernel.kallsyms])',
  '\t    7f0c2a1b3c40 __memset_avx512_unaligned_erms+0x40 (/usr/lib/x86_64-linux-gnu/libc.so.6)',
  '\t          f2d3a0 v8::internal::BackingStore::Allocate+0x1a0 (/usr/bin/node)',
  '\t    7f0c28000f00 JS:*onMessage node:dgram:945:19 (/tmp/perf-21441.map)',
  '\t          a1b2c3 uv_run+0x113 (/usr/bin/node)',
  '\t          a1b000 node::Start+0x20 (/usr/bin/node)',
  '',
  '21441/21446 ',
  '\t          c0ffee v8::internal::ConcurrentMarking::RunMajor+0x99 (/usr/bin/node)',
  '\t          c0ff00 start_thread+0x9 (/usr/lib/x86_64-linux-gnu/libc.so.6)',
  '',
  '    0/0     ',
  '\tffffffff8224215b pv_native_safe_halt+0xb ([kernel.kallsyms])',
  '',
  '21440/21440 ',
  '\t    7f0c2a000000 sha1_block_data_order_shaext+0x1c0 (/usr/bin/node)',
  '\t    7f0c28001000 JS:*update file:///work/main/dist/xianet/chunk/chunk-fetcher.js:496:18 (/tmp/perf-21440.map)',
];

describe('perf script reader', () => {
  it('reads samples per process, leaf first, the last one without a blank line after it', () => {
    const samples = [...parsePerfScript(SCRIPT)];
    expect(samples.map((s) => s.pid)).toEqual([21441, 21441, 0, 21440]);
    expect(samples[0]!.frames[0]).toBe('clear_page_erms');
    expect(samples[3]!.frames).toEqual(['sha1_block_data_order_shaext', 'JS:*update dist/xianet/chunk/chunk-fetcher.js:496:18']);
  });

  it('adds up the processes asked for: leaf, inclusive (no event-loop scaffolding) and categories', () => {
    const aggregate = new PerfAggregate(new Set([21441, 21440]));
    for (const sample of parsePerfScript(SCRIPT)) aggregate.add(sample);
    expect([...aggregate.byPid.keys()].sort()).toEqual([21440, 21441]);
    const b = aggregate.byPid.get(21441)!;
    expect(b.samples).toBe(2);
    expect(b.categories.get('page faults')).toBe(1);
    expect(b.categories.get('GC')).toBe(1);
    expect(b.categories.get('memset/cpy')).toBe(1);
    expect(b.categories.get('new buffers') ?? 0).toBe(0);
    expect(b.inclusive.has('uv_run')).toBe(false);
    expect(b.inclusive.get('JS:*onMessage node:dgram:945:19')).toBe(1);
    expect(aggregate.byPid.get(21440)!.categories.get('SHA-1')).toBe(1);
    const text = formatProfile('B', b);
    expect(text).toContain('B: 2 samples');
    expect(text).toContain('page faults 50.0% | GC 50.0% | new buffers 0.0%');
    expect(text.split('\n').every((line) => line.length <= 100)).toBe(true);
  });

  it('strips offsets and the path up to the project', () => {
    expect(frameName('udp_recvmsg+0x1f')).toBe('udp_recvmsg');
    expect(frameName('JS:*process file:///opt/xmig/dist/xianet/forwarding-engine.js:41:12')).toBe('JS:*process dist/xianet/forwarding-engine.js:41:12');
  });

  it('takes any text without throwing; every sample belongs to a header it saw', () => {
    const line = fc.oneof(
      fc.string(),
      fc.nat(99999).map((pid) => `${pid}/${pid} `),
      fc.tuple(fc.nat().map((n) => n.toString(16)), fc.string()).map(([a, s]) => `\t${a} ${s} (x)`),
      fc.constant(''),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 60 }), (lines) => {
        const headers = new Set(lines.map((l) => /^\s*(\d+)\/\d+\s*$/.exec(l)?.[1]).filter(Boolean).map(Number));
        const aggregate = new PerfAggregate(headers);
        for (const sample of parsePerfScript(lines)) {
          expect(headers.has(sample.pid)).toBe(true);
          aggregate.add(sample);
        }
        for (const [, profile] of aggregate.byPid) formatProfile('x', profile);
      }),
      { numRuns: 2000 },
    );
  });
});
