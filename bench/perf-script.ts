/**
 * `perf script` output read into per-process profiles: what `node --cpu-prof` cannot see.
 * A CPU profile samples JavaScript; on the mover's path much of a node's time is
 * elsewhere — the kernel copying datagrams, page faults on memory V8 has just handed
 * out, V8's own GC threads — and --cpu-prof books it as "(program)" or not at all.
 * `perf record -a -g` samples every thread, kernel included; `node --perf-basic-prof`
 * names the JIT's frames. bench/mover-profile.ts --perf takes it this way.
 *
 * The input is `perf script -F pid,tid,ip,sym,dso`: a header line "PID/TID" per sample,
 * then its call chain (leaf first), one "\t<address> <symbol> (<dso>)" line per frame,
 * then a blank line. Anything else is skipped, so a truncated or odd line costs nothing.
 */

export interface PerfSample {
  pid: number;
  /** Leaf first. */
  frames: string[];
}

/** Where a sample's time went, by a frame anywhere on its stack (a sample may be in several): V8's GC, the kernel's page faults, system calls. */
export const CATEGORIES: ReadonlyArray<readonly [string, RegExp]> = [
  ['page faults', /^asm_exc_page_fault$/],
  ['GC', /^v8::internal::(Heap::(CollectGarbage|PerformGarbageCollection)|MarkCompactCollector|ScavengerCollector|Scavenger::|ConcurrentMarking|Sweeper::|ArrayBufferSweeper|IncrementalMarking|MinorMarkCompact|MarkingVisitorBase)/],
  ['new buffers', /^v8::ArrayBuffer::NewBackingStore$/],
  ['SHA-1', /^sha1_block_data_order/],
  ['syscalls', /^entry_SYSCALL_64/],
  ['memset/cpy', /^__(memset|memmove|memcpy)_/],
];

/** Frames every sample of a thread has (its entry and the event loop): no information. */
const SCAFFOLDING = /^(node::Start|__libc_start_call_main|__libc_start_main.*|node::NodeMainInstance::Run|node::SpinEventLoopInternal|uv_run|start_thread|clone3?|\[unknown\]|_start|main)$/;

const HEADER = /^\s*(\d+)\/\d+\s*$/;
const FRAME = /^\t\s*[0-9a-f]+ (.*) \(([^()]*)\)$/;

/** A frame's symbol without its offset, and a JIT frame without the path up to the project's files. */
export function frameName(symbol: string): string {
  return symbol.replace(/\+0x[0-9a-f]+$/, '').replace(/file:\/\/\S*?\/(dist|xianet|mover|shared|agent|cli)\//, '$1/');
}

/** Reads `perf script` line by line: a sample comes out when the next one begins (or at end()). */
export class PerfScriptReader {
  private pid = -1;
  private frames: string[] = [];

  push(line: string): PerfSample | undefined {
    const header = HEADER.exec(line);
    if (header) {
      const done = this.end();
      this.pid = Number(header[1]);
      return done;
    }
    if (this.pid < 0) return undefined;
    if (line.trim() === '') return this.end();
    const frame = FRAME.exec(line);
    if (frame) this.frames.push(frameName(frame[1]!));
    return undefined;
  }

  /** The sample being read, if any. */
  end(): PerfSample | undefined {
    const sample = this.pid >= 0 ? { pid: this.pid, frames: this.frames } : undefined;
    this.pid = -1;
    this.frames = [];
    return sample;
  }
}

/** Samples out of `perf script` lines. */
export function* parsePerfScript(lines: Iterable<string>): Generator<PerfSample> {
  const reader = new PerfScriptReader();
  for (const line of lines) {
    const sample = reader.push(line);
    if (sample) yield sample;
  }
  const last = reader.end();
  if (last) yield last;
}

export interface ProcessProfile {
  samples: number;
  leaf: Map<string, number>;
  inclusive: Map<string, number>;
  categories: Map<string, number>;
}

/** Adds samples up per process, for the processes in `pids` only. */
export class PerfAggregate {
  readonly byPid = new Map<number, ProcessProfile>();

  constructor(private readonly pids: ReadonlySet<number>) {}

  add(sample: PerfSample): void {
    if (!this.pids.has(sample.pid)) return;
    let profile = this.byPid.get(sample.pid);
    if (!profile) {
      profile = { samples: 0, leaf: new Map(), inclusive: new Map(), categories: new Map() };
      this.byPid.set(sample.pid, profile);
    }
    profile.samples++;
    const leaf = sample.frames[0] ?? '(no frames)';
    profile.leaf.set(leaf, (profile.leaf.get(leaf) ?? 0) + 1);
    for (const frame of new Set(sample.frames)) {
      if (!SCAFFOLDING.test(frame)) profile.inclusive.set(frame, (profile.inclusive.get(frame) ?? 0) + 1);
    }
    for (const [category, pattern] of CATEGORIES) {
      if (sample.frames.some((frame) => pattern.test(frame))) profile.categories.set(category, (profile.categories.get(category) ?? 0) + 1);
    }
  }
}

/** One process's profile as text: its categories, then its heaviest leaf and inclusive frames (shares of its samples). */
export function formatProfile(name: string, profile: ProcessProfile, n = 12, hz = 499): string {
  const share = (count: number): string => `${((100 * count) / profile.samples).toFixed(1).padStart(5)} %`;
  const top = (map: Map<string, number>): string[] =>
    [...map]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([frame, count]) => `    ${share(count)}  ${frame.slice(0, 84)}`);
  const categories = CATEGORIES.map(([category]) => `${category} ${((100 * (profile.categories.get(category) ?? 0)) / profile.samples).toFixed(1)}%`).join(' | ');
  return [
    `${name}: ${profile.samples} samples (~${(profile.samples / hz).toFixed(1)} CPU-s)`,
    `  ${categories}`,
    '  leaf (self):',
    ...top(profile.leaf),
    '  on the stack (inclusive):',
    ...top(profile.inclusive),
  ].join('\n');
}
