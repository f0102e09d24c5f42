/**
 * The mover's metrics. `xmig send` and `xmig recv` live as long as one migration (QEMU
 * starts them), often shorter than a Prometheus scrape interval, so besides `/metrics`
 * while they run (`--metrics-port`) they write the same text to a file for the node
 * exporter's textfile collector (`--metrics-textfile`): every second while they run and
 * once more at the end, so the last figures of every migration stay there to be scraped
 * until the next one replaces them. The file is replaced atomically (written beside it,
 * then renamed), as the collector requires.
 *
 *   xmig_mover_bytes_total{side}            bytes read from QEMU (send) / fetched and verified (recv)
 *   xmig_mover_chunks_total{side,event}     send: published, zero (never fetched); recv: verified, refetched
 *   xmig_mover_rounds_total{side}           rounds announced (send)
 *   xmig_mover_reconnects_total{side}       control connections resumed
 *   xmig_mover_phase{side,phase}            1 for the phase it is in: connecting, transfer, done, failed
 *   xmig_mover_elapsed_seconds{side}        since it started
 */
import { renameSync, writeFileSync } from 'node:fs';
import { Counter, Gauge, Registry } from 'prom-client';
import { zeroSeries } from '../shared/metrics.js';

export type MoverSide = 'send' | 'recv';
export const MOVER_PHASES = ['connecting', 'transfer', 'done', 'failed'] as const;
export type MoverPhase = (typeof MOVER_PHASES)[number];

/** What the metrics read when scraped or written (cheap counters the mover keeps anyway). */
export interface MoverFigures {
  bytes: number;
  chunks: Partial<Record<'published' | 'zero' | 'verified' | 'refetched', number>>;
  rounds?: number;
  reconnects?: number;
}

export class MoverMetrics {
  readonly registry: Registry;
  private phase: MoverPhase = 'connecting';
  private readonly started = performance.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly side: MoverSide,
    private readonly figures: () => MoverFigures,
    registry: Registry = new Registry(),
  ) {
    this.registry = registry;
    // collect() runs with `this` as the metric: read the mover's state through closures.
    const read = (): MoverFigures => this.figures();
    const current = (): MoverPhase => this.phase;
    const elapsed = (): number => (performance.now() - this.started) / 1000;
    const labels = { side };
    new Counter({
      name: 'xmig_mover_bytes_total',
      help: 'Bytes of the migration stream: read from QEMU (send), fetched and verified (recv)',
      labelNames: ['side'] as const,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(labels, read().bytes);
      },
    });
    const events = side === 'send' ? (['published', 'zero'] as const) : (['verified', 'refetched'] as const);
    const chunks = new Counter({
      name: 'xmig_mover_chunks_total',
      help: 'Chunks: published and zero (send; zero chunks are never fetched), verified and refetched after a bad CID (recv)',
      labelNames: ['side', 'event'] as const,
      registers: [registry],
      collect() {
        this.reset();
        const counts = read().chunks;
        for (const event of events) this.inc({ side, event }, counts[event] ?? 0);
      },
    });
    zeroSeries(chunks, events.map((event) => ({ side, event })));
    new Counter({
      name: 'xmig_mover_rounds_total',
      help: 'Rounds announced on the control stream',
      labelNames: ['side'] as const,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(labels, read().rounds ?? 0);
      },
    });
    new Counter({
      name: 'xmig_mover_reconnects_total',
      help: 'Control connections resumed after a loss',
      labelNames: ['side'] as const,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(labels, read().reconnects ?? 0);
      },
    });
    new Gauge({
      name: 'xmig_mover_phase',
      help: '1 for the phase the mover is in (connecting, transfer, done, failed), 0 for the others',
      labelNames: ['side', 'phase'] as const,
      registers: [registry],
      collect() {
        for (const phase of MOVER_PHASES) this.set({ side, phase }, phase === current() ? 1 : 0);
      },
    });
    new Gauge({
      name: 'xmig_mover_elapsed_seconds',
      help: 'Seconds since the mover started (at the end: the whole migration as the mover saw it)',
      labelNames: ['side'] as const,
      registers: [registry],
      collect() {
        this.set(labels, elapsed());
      },
    });
  }

  setPhase(phase: MoverPhase): void {
    this.phase = phase;
  }

  /** Writes the registry to `file` now and then every `everyMs` until stop(). */
  startTextfile(file: string, everyMs = 1000): void {
    void this.writeTextfile(file);
    this.timer = setInterval(() => void this.writeTextfile(file), everyMs);
    this.timer.unref();
  }

  /** Stops the periodic writes and writes the final figures once more. */
  async stop(file?: string): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (file) await this.writeTextfile(file);
  }

  async writeTextfile(file: string): Promise<void> {
    const text = await this.registry.metrics();
    const temporary = `${file}.${process.pid}.tmp`;
    try {
      writeFileSync(temporary, text);
      renameSync(temporary, file);
    } catch {
      // The figures are a courtesy: a full disk must not fail the migration QEMU waits for.
    }
  }
}
