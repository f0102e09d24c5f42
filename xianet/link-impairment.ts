/**
 * Link impairment: what `tc netem` would do to a link, done in the project (the
 * kernel here has no sch_netem), for tests, benchmarks and the lab. It sits on the
 * egress of a UDP link: every datagram the link sends passes through it once, so a
 * segment impaired at each of its interfaces delays each traversal once.
 *
 * Configured per interface in the node config (`interfaces[].impairment`), or per
 * segment in a topology (`impairments: { "<segment>": {...} }`), which udpLayout
 * (udp-topology.ts) writes into the config of every interface on that segment:
 *
 *   "impairment": {
 *     "lossRate": 0.05,       probability a datagram is lost (independent, Bernoulli)
 *     "delayMs": 50,          one-way delay added to every datagram
 *     "jitterMs": 5,          plus a uniform [-jitter, +jitter] (clamped at 0): reorders, as netem does
 *     "reorderRate": 0.01,    probability a datagram is held back `reorderDelayMs` more,
 *     "reorderDelayMs": 2,    so that later ones overtake it (default 2 ms)
 *     "duplicateRate": 0.001, probability a datagram is sent twice
 *     "rateMbps": 100,        serialisation rate (a bottleneck); unlimited if absent
 *     "queueMs": 100,         ... with a drop-tail queue this long at that rate (default 100 ms)
 *     "mtu": 1500,            the segment's IP MTU: the link carries no datagram larger than this
 *     "seed": 7               the random stream (default: from the link's name), so runs repeat
 *   }
 *
 * Every decision is counted (`counters`): sent, lost, duplicated, reordered, dropped for
 * a full queue, delayed. `registerImpairmentMetrics` exports them as
 * `xianet_link_impairment_packets_total{link,event}`.
 *
 * Delayed datagrams wait in one time-ordered heap with one timer, not a timer each:
 * at 50 ms and 100k datagrams/s, five thousand wait at any moment.
 */
import { Counter, type Registry } from 'prom-client';
import { z } from '../shared/config.js';

export const impairmentSchema = z
  .object({
    lossRate: z.number().min(0).max(1).default(0),
    delayMs: z.number().min(0).max(60_000).default(0),
    jitterMs: z.number().min(0).max(60_000).default(0),
    reorderRate: z.number().min(0).max(1).default(0),
    reorderDelayMs: z.number().min(0).max(60_000).default(2),
    duplicateRate: z.number().min(0).max(1).default(0),
    rateMbps: z.number().positive().max(1_000_000).optional(),
    queueMs: z.number().positive().max(60_000).default(100),
    mtu: z.number().int().min(576).max(65536).optional(),
    seed: z.number().int().optional(),
  })
  .strict();

export type ImpairmentConfig = z.input<typeof impairmentSchema>;
export type Impairment = z.output<typeof impairmentSchema>;

/** A small deterministic PRNG (mulberry32) so impaired runs are repeatable. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of a string: the default seed of a link, from its name. */
function seedOf(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

export interface ImpairmentCounters {
  /** Datagrams offered to the impairment. */
  offered: number;
  /** ... and handed to the socket (duplicates included). */
  sent: number;
  lost: number;
  duplicated: number;
  reordered: number;
  /** Dropped because the rate-limited queue was full. */
  queueDropped: number;
  /** Held back for a delay before being sent. */
  delayed: number;
}

export const IMPAIRMENT_EVENTS = ['offered', 'sent', 'lost', 'duplicated', 'reordered', 'queueDropped', 'delayed'] as const;

/** What a held datagram does when its time comes: the link's own send. */
export type Transmit<T> = (item: T) => void;

interface Held<T> {
  due: number;
  order: number;
  item: T;
}

/** Monotonic milliseconds with sub-millisecond precision. */
const monotonicMs = (): number => performance.now();

export class LinkImpairment<T> {
  readonly config: Impairment;
  readonly counters: ImpairmentCounters = { offered: 0, sent: 0, lost: 0, duplicated: 0, reordered: 0, queueDropped: 0, delayed: 0 };
  private readonly random: () => number;
  private readonly heap: Array<Held<T>> = [];
  private order = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Infinity;
  /** When the rate-limited transmitter is next free (ms, monotonic). */
  private busyUntil = 0;
  private readonly bytesPerMs: number | undefined;
  private stopped = false;

  constructor(
    config: ImpairmentConfig,
    readonly name: string,
    private readonly transmit: Transmit<T>,
    /** Monotonic milliseconds; a test may drive its own. */
    private readonly now: () => number = monotonicMs,
  ) {
    this.config = impairmentSchema.parse(config);
    this.random = seededRandom(this.config.seed ?? seedOf(name));
    this.bytesPerMs = this.config.rateMbps === undefined ? undefined : (this.config.rateMbps * 1e6) / 8 / 1000;
  }

  /** True if it can alter or hold traffic (a config of zeros only counts). */
  get active(): boolean {
    const c = this.config;
    return c.lossRate > 0 || c.delayMs > 0 || c.jitterMs > 0 || c.reorderRate > 0 || c.duplicateRate > 0 || c.rateMbps !== undefined;
  }

  /** Datagrams waiting for their time. */
  get held(): number {
    return this.heap.length;
  }

  /** Offers one datagram of `bytes` bytes: it is lost, sent now, or held and sent later. */
  submit(item: T, bytes: number): void {
    if (this.stopped) return;
    const c = this.config;
    this.counters.offered++;
    if (c.lossRate > 0 && this.random() < c.lossRate) {
      this.counters.lost++;
      return;
    }
    const copies = c.duplicateRate > 0 && this.random() < c.duplicateRate ? 2 : 1;
    if (copies === 2) this.counters.duplicated++;
    for (let copy = 0; copy < copies; copy++) {
      const t = this.now();
      let due = t;
      if (this.bytesPerMs !== undefined) {
        const start = Math.max(t, this.busyUntil);
        if (start - t > c.queueMs) {
          this.counters.queueDropped++;
          continue;
        }
        this.busyUntil = start + bytes / this.bytesPerMs;
        due = this.busyUntil;
      }
      due += c.delayMs;
      if (c.jitterMs > 0) due = Math.max(t, due + (this.random() * 2 - 1) * c.jitterMs);
      if (c.reorderRate > 0 && this.random() < c.reorderRate) {
        this.counters.reordered++;
        due += c.reorderDelayMs;
      }
      if (due <= t && this.heap.length === 0) {
        this.counters.sent++;
        this.transmit(item);
        continue;
      }
      this.counters.delayed++;
      this.push({ due, order: this.order++, item });
    }
    this.arm();
  }

  /** Drops everything held and sends nothing more. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = Infinity;
    this.heap.length = 0;
  }

  private arm(): void {
    const first = this.heap[0];
    if (!first) return;
    if (this.timer && this.timerDue <= first.due) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = first.due;
    this.timer = setTimeout(this.release, Math.max(0, first.due - this.now()));
  }

  private readonly release = (): void => {
    this.timer = undefined;
    this.timerDue = Infinity;
    // Timers fire on whole milliseconds: everything due within the next half is sent now.
    const limit = this.now() + 0.5;
    while (this.heap.length > 0 && this.heap[0]!.due <= limit) {
      const held = this.pop();
      this.counters.sent++;
      this.transmit(held.item);
    }
    this.arm();
  };

  // A binary min-heap on (due, order): equal due times keep their sending order.
  private push(entry: Held<T>): void {
    const heap = this.heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private pop(): Held<T> {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let least = i;
        if (l < heap.length && before(heap[l]!, heap[least]!)) least = l;
        if (r < heap.length && before(heap[r]!, heap[least]!)) least = r;
        if (least === i) break;
        [heap[i], heap[least]] = [heap[least]!, heap[i]!];
        i = least;
      }
    }
    return top;
  }
}

function before<T>(a: Held<T>, b: Held<T>): boolean {
  return a.due < b.due || (a.due === b.due && a.order < b.order);
}

/** Something with a name and, maybe, an impairment (a UDP link). */
export interface ImpairedLink {
  readonly name: string;
  readonly impairment: { counters: ImpairmentCounters } | undefined;
}

/** Exports the impairment counters of `links` as `xianet_link_impairment_packets_total{node,link,event}`. */
export function registerImpairmentMetrics(registry: Registry, node: string, links: readonly ImpairedLink[]): void {
  const impaired = links.filter((l) => l.impairment !== undefined);
  if (impaired.length === 0) return;
  new Counter({
    name: 'xianet_link_impairment_packets_total',
    help: 'Datagrams through the configured link impairment, by what it did to them',
    labelNames: ['node', 'link', 'event'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const link of impaired) {
        const counters = link.impairment!.counters;
        for (const event of IMPAIRMENT_EVENTS) this.inc({ node, link: link.name, event }, counters[event]);
      }
    },
  });
}
