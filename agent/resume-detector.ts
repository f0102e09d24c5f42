/**
 * Notices that this process was frozen and has just been thawed: the signature of a
 * VM's stop-and-copy (or SIGSTOP/SIGCONT). A timer ticks every `tickMs`; when a tick
 * comes `stallMs` later than it should have, wall time jumped while the event loop
 * did not run.
 */
export interface ResumeDetectorOptions {
  tickMs?: number;
  /** How much later than expected a tick must be to count (default 300 ms). */
  stallMs?: number;
  now?: () => number;
}

export class ResumeDetector {
  private timer: NodeJS.Timeout | undefined;
  private last = 0;
  private readonly tickMs: number;
  private readonly stallMs: number;
  private readonly now: () => number;

  constructor(
    private readonly onResume: (pausedMs: number) => void,
    options: ResumeDetectorOptions = {},
  ) {
    this.tickMs = options.tickMs ?? 50;
    this.stallMs = options.stallMs ?? 300;
    this.now = options.now ?? Date.now;
  }

  start(): void {
    this.last = this.now();
    this.timer = setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One tick (public so a test can drive it with its own clock). */
  tick(): void {
    const t = this.now();
    const late = t - this.last - this.tickMs;
    this.last = t;
    if (late >= this.stallMs) this.onResume(late + this.tickMs);
  }
}
