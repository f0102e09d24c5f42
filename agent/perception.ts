/**
 * Perception: where the VM is, and when that changes. The node's XHCP client reports a
 * new gateway (a new AD: inter-AD move; the same AD through another router or link:
 * intra-AD) after ignoring stray and untrusted beacons; a resume after a pause makes the
 * agent ask for a beacon at once instead of waiting for the next one. A start after a
 * migration is a move too: the last place saved is where the VM came from.
 */
import { errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';
import { Xid } from '../shared/xid.js';
import type { GatewayEvent, NodeApi } from '../xianet/api/node-api.js';
import type { AgentMetrics } from './agent-metrics.js';
import type { AgentStateStore } from './agent-state.js';
import { ResumeDetector, type ResumeDetectorOptions } from './resume-detector.js';

export interface Location {
  ad: Xid;
  gateway: Xid;
  linkId: string;
}

export interface PerceivedMove {
  kind: 'inter-ad' | 'intra-ad';
  from: Location | undefined;
  to: Location;
  /** performance.now() when the move was perceived. */
  perceivedAt: number;
}

export interface PerceptionHandlers {
  /** The VM moved. */
  onMove(move: PerceivedMove): void;
  /** The VM joined (or re-joined) where it was: nothing moved, but it is reachable here. */
  onJoined(location: Location): void;
}

export interface PerceptionStats {
  beacons: number;
  rejectedBeacons: number;
  strayBeacons: number;
  resumes: number;
}

export class Perception implements Startable {
  private location: Location | undefined;
  private readonly cleanups: Array<() => unknown> = [];
  private resume: ResumeDetector | undefined;
  private started = false;
  readonly stats: PerceptionStats = { beacons: 0, rejectedBeacons: 0, strayBeacons: 0, resumes: 0 };

  constructor(
    private readonly api: NodeApi,
    private readonly state: AgentStateStore,
    private readonly handlers: PerceptionHandlers,
    private readonly options: { resume: ResumeDetectorOptions | false; logger: Logger; metrics: AgentMetrics | undefined },
  ) {}

  /** Where the VM is now (as last perceived). */
  get here(): Location | undefined {
    return this.location;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const saved = this.state.current;
    if (saved.lastAd && saved.lastGateway) {
      this.location = { ad: Xid.parse(saved.lastAd), gateway: Xid.parse(saved.lastGateway), linkId: saved.lastLinkId ?? '' };
    }
    const { logger, metrics } = this.options;
    this.cleanups.push(
      await this.api.on('beacon', () => {
        this.stats.beacons++;
        metrics?.beacons.inc();
      }),
      await this.api.on('beacon-rejected', (e) => {
        this.stats.rejectedBeacons++;
        logger.debug('beacon.rejected', { reason: e.reason, ...(e.ad ? { ad: e.ad.toString() } : {}) });
      }),
      await this.api.on('beacon-stray', (e) => {
        this.stats.strayBeacons++;
        logger.info('beacon.stray', { ad: e.ad.toString(), gateway: e.gatewayHid.toString() });
      }),
      await this.api.on('gateway', (e) => this.onGateway(e, performance.now())),
    );
    if (this.options.resume !== false) {
      this.resume = new ResumeDetector((pausedMs) => void this.onResume(pausedMs), this.options.resume);
      this.resume.start();
    }
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.resume?.stop();
    this.resume = undefined;
    for (const cleanup of this.cleanups.splice(0)) await cleanup();
  }

  private async onResume(pausedMs: number): Promise<void> {
    this.stats.resumes++;
    this.options.metrics?.resumes.inc();
    this.options.logger.info('move.resume-perceived', { phase: 'perception', pausedMs: Math.round(pausedMs) });
    // Do not wait for the next beacon: ask for one (and let the node take the next one it hears).
    await this.api.solicitBeacon().catch((error: unknown) => this.options.logger.warn('agent.solicit-failed', { reason: errorMessage(error) }));
  }

  private settle(to: Location, moved: boolean): void {
    this.location = to;
    this.state.update({
      lastAd: to.ad.toString(),
      lastGateway: to.gateway.toString(),
      lastLinkId: to.linkId,
      ...(moved ? { moves: this.state.current.moves + 1 } : {}),
    });
    this.options.metrics?.location.reset();
    this.options.metrics?.location.set({ ad: to.ad.toString() }, 1);
  }

  private onGateway(event: GatewayEvent, perceivedAt: number): void {
    const to: Location = { ad: event.ad, gateway: event.gatewayHid, linkId: event.linkId ?? '' };
    let from: Location | undefined;
    if (event.kind === 'initial') {
      const was = this.location;
      if (!was || (was.ad.equals(to.ad) && was.gateway.equals(to.gateway) && was.linkId === to.linkId)) {
        this.settle(to, false);
        this.handlers.onJoined(to);
        return;
      }
      from = was;
    } else {
      from = event.previousAd && event.previousGatewayHid ? { ad: event.previousAd, gateway: event.previousGatewayHid, linkId: event.previousLinkId ?? '' } : this.location;
    }
    const kind = from && !from.ad.equals(to.ad) ? 'inter-ad' : 'intra-ad';
    this.settle(to, true);
    this.options.metrics?.moves.inc({ kind });
    this.handlers.onMove({ kind, from, to, perceivedAt });
  }
}
