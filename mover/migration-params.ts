/**
 * What `xmig migrate` sets on the source QEMU for one migration — capabilities
 * (events, auto-converge, xbzrle) and parameters (bandwidth cap, downtime limit, xbzrle
 * cache) — and puts back afterwards, as libvirt does: a VM migrated once must not keep
 * an uncapped bandwidth or a changed downtime limit for the next one.
 */
import type { QmpClient } from './qmp-client.js';

export interface MigrationTuning {
  /** Bytes per second; undefined: no cap (QEMU's default caps at 32 MiB/s on older releases). */
  maxBandwidth?: number;
  /** Longest stop-and-copy pause QEMU may take (ms). */
  downtimeLimitMs: number;
  /** Throttle the guest's vCPUs when it dirties memory faster than the migration moves it. */
  autoConverge?: boolean;
  /** XBZRLE: send changed pages as deltas against a cache of pages sent before. */
  xbzrle?: { cacheBytes: number };
  /**
   * Stop before the device state and wait for migrate-continue (pre-switchover): the
   * disk mirror completes there, with the VM stopped.
   */
  pauseBeforeSwitchover?: boolean;
}

/** "No cap": QEMU's parameter is a u64 of bytes/s; 10 GiB/s is far beyond any path here. */
export const UNLIMITED_BANDWIDTH = 10 * 1024 * 1024 * 1024;

interface Capability {
  capability: string;
  state: boolean;
}

type Parameters = Record<string, unknown>;

/** The parameters we change, as QMP names them. */
const PARAMETERS = ['max-bandwidth', 'downtime-limit', 'xbzrle-cache-size'] as const;

export interface AppliedTuning {
  /** Puts back every capability and parameter as it was before `tuneMigration`. */
  restore(): Promise<void>;
  /** What QEMU reports now, for the report. */
  capabilities: Record<string, boolean>;
  parameters: Parameters;
}

export async function tuneMigration(qmp: QmpClient, tuning: MigrationTuning): Promise<AppliedTuning> {
  const before = await qmp.execute<Capability[]>('query-migrate-capabilities');
  const beforeParams = await qmp.execute<Parameters>('query-migrate-parameters');
  const known = new Set(before.map((c) => c.capability));
  const wanted: Capability[] = [{ capability: 'events', state: true }];
  if (tuning.autoConverge !== undefined) wanted.push({ capability: 'auto-converge', state: tuning.autoConverge });
  if (tuning.xbzrle) wanted.push({ capability: 'xbzrle', state: true });
  if (tuning.pauseBeforeSwitchover !== undefined) wanted.push({ capability: 'pause-before-switchover', state: tuning.pauseBeforeSwitchover });
  for (const c of wanted) {
    if (!known.has(c.capability)) throw new Error(`this QEMU has no migration capability "${c.capability}"`);
  }
  await qmp.execute('migrate-set-capabilities', { capabilities: wanted });
  const parameters: Parameters = {
    'max-bandwidth': tuning.maxBandwidth ?? UNLIMITED_BANDWIDTH,
    'downtime-limit': tuning.downtimeLimitMs,
    ...(tuning.xbzrle ? { 'xbzrle-cache-size': tuning.xbzrle.cacheBytes } : {}),
  };
  await qmp.execute('migrate-set-parameters', parameters);
  const restoreCapabilities = before.filter((c) => wanted.some((w) => w.capability === c.capability));
  const restoreParameters = Object.fromEntries(PARAMETERS.filter((p) => p in parameters && p in beforeParams).map((p) => [p, beforeParams[p]]));
  const now = await qmp.execute<Capability[]>('query-migrate-capabilities');
  return {
    capabilities: Object.fromEntries(now.filter((c) => wanted.some((w) => w.capability === c.capability)).map((c) => [c.capability, c.state])),
    parameters,
    restore: async () => {
      await qmp.execute('migrate-set-parameters', restoreParameters);
      await qmp.execute('migrate-set-capabilities', { capabilities: restoreCapabilities });
    },
  };
}
