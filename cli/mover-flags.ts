/**
 * What `xmig send` and `xmig recv` are given (mover-commands.ts), and their metrics when
 * asked for. prom-client is loaded only then: QEMU starts these commands at every
 * migration, and the migration waits while they start.
 */
import type { MoverFigures, MoverMetrics, MoverPhase, MoverSide } from '../mover/mover-metrics.js';
import type { Logger, LogLevel } from '../shared/logger.js';

export interface MoverFlags {
  metricsPort?: number;
  metricsTextfile?: string;
  transport: 'xia' | 'tcp';
  viaNode?: boolean;
  qemuSocket?: string;
  api: string;
  stats?: string;
  logLevel: LogLevel;
  resumeDeadlineMs: number;
}

export type SendFlags = MoverFlags & { to: string; chunkKb: number; roundKb: number; windowMb?: number };
export type RecvFlags = MoverFlags & { sid: string; listen: string; from?: string[] };

/** The mover's metrics, when asked for: /metrics while it runs, a textfile for the node exporter, or both. */
export async function moverMetrics(
  side: MoverSide,
  flags: MoverFlags,
  logger: Logger,
  figures: () => MoverFigures,
): Promise<{ metrics: MoverMetrics; finish(phase: MoverPhase): Promise<void> } | undefined> {
  if (flags.metricsPort === undefined && flags.metricsTextfile === undefined) return undefined;
  const [{ MoverMetrics }, { startMetricsServer }] = await Promise.all([import('../mover/mover-metrics.js'), import('../shared/metrics.js')]);
  const metrics = new MoverMetrics(side, figures);
  const server = flags.metricsPort === undefined ? undefined : await startMetricsServer(metrics.registry, { port: flags.metricsPort, logger });
  if (flags.metricsTextfile) metrics.startTextfile(flags.metricsTextfile);
  let finished = false;
  return {
    metrics,
    finish: async (phase) => {
      if (finished) return;
      finished = true;
      metrics.setPhase(phase);
      await metrics.stop(flags.metricsTextfile);
      await server?.close();
    },
  };
}
