/**
 * The self-adaptive agent inside a VM (the paper's Sect. 4.2, automated):
 *
 *  perception   the node's XHCP client reports a new gateway (a new AD: inter-AD
 *               move; the same AD through another router or link: intra-AD), after
 *               ignoring stray and untrusted beacons; a resume after a pause makes
 *               the agent ask for a beacon at once;
 *  notification a HID-move notice signed with the VM's key goes to the new gateway
 *               and is retried with backoff until that router acknowledges it;
 *  registration every name the VM serves is registered again with its new DAG
 *               (AD → HID → SID, the HID fallback kept), signed, higher sequence,
 *               retried until the name server answers;
 *  cleanup      the VM's stale routes to its old segment are deleted.
 *
 * Each phase logs the time since perception; /metrics has the counts and latencies.
 */
import cron, { type ScheduledTask } from 'node-cron';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import si from 'systeminformation';
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { openMoveAck, sealMoveNotice, type MoveNotice } from '../shared/move-notice.js';
import type { RouteBackend } from '../shared/route-backend.js';
import { WellKnownSid, Xid, XidType } from '../shared/xid.js';
import type { DatagramSocket, GatewayEvent, NodeApi } from '../xianet/api/node-api.js';
import { NameClient } from '../xianet/names/name-client.js';
import { decodeMobility, encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { AgentStateStore } from './agent-state.js';
import { ResumeDetector, type ResumeDetectorOptions } from './resume-detector.js';
import { removeStaleRoutes } from './stale-routes.js';

export interface ServedName {
  name: string;
  /** The service's SID; absent: the name stands for the VM itself (AD → HID). */
  sid?: Xid;
}

export interface AgentOptions {
  api: NodeApi;
  routes: RouteBackend;
  /** The VM's key: its HID is SHA-1 of this key, so only it can sign for the HID. */
  identity: Identity;
  names: ServedName[];
  stateFile: string;
  nameServer?: Dag;
  logger?: Logger;
  registry?: Registry;
  resume?: ResumeDetectorOptions | false;
  /** Cron expressions (node-cron); `false` disables one. */
  schedules?: { refresh?: string | false; reannounce?: string | false; health?: string | false };
  /** First retry delays (ms) and their cap, for notices and registrations. */
  retry?: { noticeMs?: number; registerMs?: number; maxMs?: number };
  /** Log the host's interfaces at start (systeminformation); off in tests. */
  hostFacts?: boolean;
}

export interface MoveRecord {
  kind: 'inter-ad' | 'intra-ad';
  fromAd: string | undefined;
  toAd: string;
  /** ms from perception to each milestone. */
  noticeAckedMs?: number;
  registeredMs?: number;
  cleanedMs?: number;
  removedRoutes?: string[];
}

interface Location {
  ad: Xid;
  gateway: Xid;
  linkId: string;
}

/** Supersedable retry loop: runs `attempt` until it succeeds or `isCurrent` says a newer move took over. */
async function retry(attempt: () => Promise<boolean>, isCurrent: () => boolean, firstMs: number, maxMs: number): Promise<number> {
  let delay = firstMs;
  let tries = 0;
  while (isCurrent()) {
    tries++;
    if (await attempt()) return tries;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, maxMs);
  }
  return tries;
}

export class Agent {
  private readonly logger: Logger;
  private readonly state: AgentStateStore;
  private readonly names: NameClient;
  private socket: DatagramSocket | undefined;
  private hid!: Xid;
  private location: Location | undefined;
  private generation = 0;
  private pendingAck: { seq: number; gateway: Xid; resolve: () => void } | undefined;
  private readonly cleanups: Array<() => unknown> = [];
  private resume: ResumeDetector | undefined;
  readonly moves: MoveRecord[] = [];
  private readonly moveListeners = new Set<(move: MoveRecord) => void>();
  readonly stats = { beacons: 0, rejectedBeacons: 0, strayBeacons: 0, resumes: 0, noticesSent: 0, noticesAcked: 0, noticeRetries: 0, registrations: 0, registrationFailures: 0 };
  private readonly metrics:
    | {
        beacons: Counter;
        moves: Counter<'kind'>;
        latency: Histogram<'milestone'>;
        notices: Counter<'event'>;
        registrationFailures: Counter;
        resumes: Counter;
        location: Gauge<'ad'>;
      }
    | undefined;

  constructor(private readonly options: AgentOptions) {
    this.logger = (options.logger ?? silentLogger()).child({ component: 'agent' });
    this.state = new AgentStateStore(options.stateFile);
    this.state.onError = (error) => this.logger.error('agent.state-write-failed', { reason: errorMessage(error) });
    this.names = new NameClient(options.api, { nameServer: options.nameServer, timeoutMs: 1000 });
    const registry = options.registry;
    if (registry) {
      this.metrics = {
        beacons: new Counter({ name: 'xmig_agent_beacons_total', help: 'Beacons heard by the VM', registers: [registry] }),
        moves: new Counter({ name: 'xmig_agent_moves_total', help: 'Moves perceived, by kind', labelNames: ['kind'] as const, registers: [registry] }),
        latency: new Histogram({
          name: 'xmig_agent_move_ms',
          help: 'From perceiving a move to each milestone (ms)',
          labelNames: ['milestone'] as const,
          buckets: [1, 2, 5, 10, 20, 50, 100, 150, 200, 500, 1000, 5000, 30000],
          registers: [registry],
        }),
        notices: new Counter({ name: 'xmig_agent_notices_total', help: 'HID-move notices sent, acked, retried', labelNames: ['event'] as const, registers: [registry] }),
        registrationFailures: new Counter({ name: 'xmig_agent_registration_failures_total', help: 'Name registrations that failed (and were retried)', registers: [registry] }),
        resumes: new Counter({ name: 'xmig_agent_resumes_total', help: 'Resumes after a pause perceived', registers: [registry] }),
        location: new Gauge({ name: 'xmig_agent_location', help: '1 for the AD the VM is in', labelNames: ['ad'] as const, registers: [registry] }),
      };
    }
  }

  onMove(listener: (move: MoveRecord) => void): () => void {
    this.moveListeners.add(listener);
    return () => this.moveListeners.delete(listener);
  }

  async start(): Promise<void> {
    const saved = this.state.load();
    const info = await this.options.api.info();
    this.hid = info.hid;
    if (!this.options.identity.xid(XidType.HID).equals(this.hid)) {
      throw new Error(`the agent's key is not the key of node ${info.name}: HID ${this.options.identity.xid(XidType.HID)} is not ${info.hid}`);
    }
    this.socket = await this.options.api.bindDatagram();
    this.socket.onMessage(({ data }) => this.onMobility(data));
    const api = this.options.api;
    this.cleanups.push(
      await api.on('beacon', () => {
        this.stats.beacons++;
        this.metrics?.beacons.inc();
      }),
      await api.on('beacon-rejected', (e) => {
        this.stats.rejectedBeacons++;
        this.logger.debug('beacon.rejected', { reason: e.reason, ad: e.ad?.toString() });
      }),
      await api.on('beacon-stray', (e) => {
        this.stats.strayBeacons++;
        this.logger.info('beacon.stray', { ad: e.ad.toString(), gateway: e.gatewayHid.toString() });
      }),
      await api.on('gateway', (e) => void this.onGateway(e, performance.now())),
    );
    if (this.options.resume !== false) {
      this.resume = new ResumeDetector((pausedMs) => void this.onResume(pausedMs), this.options.resume ?? {});
      this.resume.start();
    }
    this.scheduleCron();
    if (this.options.hostFacts !== false) void this.logHostFacts();
    this.logger.info('agent.started', { hid: this.hid.toString(), ad: info.ad?.toString(), names: this.options.names.map((n) => n.name) });
    if (info.ad && saved.lastAd && saved.lastGateway) {
      this.location = { ad: Xid.parse(saved.lastAd), gateway: Xid.parse(saved.lastGateway), linkId: saved.lastLinkId ?? '' };
    }
    // Already joined when we started: nothing may have moved, but the names must be there.
    if (info.ad) void this.refreshRegistrations();
  }

  async stop(): Promise<void> {
    this.generation++;
    this.resume?.stop();
    for (const cleanup of this.cleanups.splice(0)) await cleanup();
    await this.socket?.close();
    await this.names.close();
    await this.options.routes.close();
    await this.state.flush();
  }

  private scheduleCron(): void {
    const schedules = { refresh: '*/5 * * * *', reannounce: '*/10 * * * *', health: '* * * * *', ...this.options.schedules };
    const add = (expression: string | false, name: string, job: () => Promise<void> | void): void => {
      if (!expression) return;
      const task: ScheduledTask = cron.schedule(expression, () => job(), { name: `xmig-agent-${name}`, noOverlap: true });
      this.cleanups.push(() => task.destroy());
    };
    add(schedules.refresh, 'refresh', () => this.refreshRegistrations());
    add(schedules.reannounce, 'reannounce', () => this.reannounce());
    add(schedules.health, 'health', () => this.health());
  }

  private async logHostFacts(): Promise<void> {
    try {
      const interfaces = await si.networkInterfaces();
      const list = (Array.isArray(interfaces) ? interfaces : [interfaces]).map((i) => ({ iface: i.iface, mac: i.mac, ip4: i.ip4, ip6: i.ip6, up: i.operstate }));
      this.logger.info('agent.host', { interfaces: list });
    } catch (error) {
      this.logger.warn('agent.host-facts-failed', { reason: errorMessage(error) });
    }
  }

  private health(): void {
    const s = this.state.current;
    this.logger.info('agent.health', { ad: this.location?.ad.toString(), gateway: this.location?.gateway.toString(), moves: s.moves, ...this.stats });
  }

  private async onResume(pausedMs: number): Promise<void> {
    this.stats.resumes++;
    this.metrics?.resumes.inc();
    this.logger.info('move.resume-perceived', { phase: 'perception', pausedMs: Math.round(pausedMs) });
    // Do not wait for the next beacon: ask for one (and let the node take the next one it hears).
    await this.options.api.solicitBeacon().catch((error: unknown) => this.logger.warn('agent.solicit-failed', { reason: errorMessage(error) }));
  }

  private dagFor(ad: Xid, sid?: Xid): Dag {
    return sid ? Dag.hostAddress(ad, this.hid, sid) : Dag.hostAddress(ad, this.hid);
  }

  private async onGateway(event: GatewayEvent, perceivedAt: number): Promise<void> {
    const to: Location = { ad: event.ad, gateway: event.gatewayHid, linkId: event.linkId ?? '' };
    let from: Location | undefined;
    if (event.kind === 'initial') {
      // A start after a migration: the last place we saved is where we came from.
      if (!this.location || (this.location.ad.equals(to.ad) && this.location.gateway.equals(to.gateway) && this.location.linkId === to.linkId)) {
        this.location = to;
        this.state.update({ lastAd: to.ad.toString(), lastGateway: to.gateway.toString(), lastLinkId: to.linkId });
        this.metrics?.location.reset();
        this.metrics?.location.set({ ad: to.ad.toString() }, 1);
        await this.refreshRegistrations();
        return;
      }
      from = this.location;
    } else {
      from = event.previousAd && event.previousGatewayHid ? { ad: event.previousAd, gateway: event.previousGatewayHid, linkId: event.previousLinkId ?? '' } : this.location;
    }
    await this.handleMove(from, to, from && !from.ad.equals(to.ad) ? 'inter-ad' : 'intra-ad', perceivedAt);
  }

  private async handleMove(from: Location | undefined, to: Location, kind: MoveRecord['kind'], perceivedAt: number): Promise<void> {
    const generation = ++this.generation;
    const isCurrent = (): boolean => this.generation === generation;
    const since = (): number => Math.round((performance.now() - perceivedAt) * 1000) / 1000;
    const move: MoveRecord = { kind, fromAd: from?.ad.toString(), toAd: to.ad.toString() };
    this.location = to;
    this.state.update({ lastAd: to.ad.toString(), lastGateway: to.gateway.toString(), lastLinkId: to.linkId, moves: this.state.current.moves + 1 });
    this.metrics?.moves.inc({ kind });
    this.metrics?.location.reset();
    this.metrics?.location.set({ ad: to.ad.toString() }, 1);
    this.logger.info('move.perceived', { phase: 'perception', kind, fromAd: move.fromAd, toAd: move.toAd, gateway: to.gateway.toString(), hid: this.hid.toString() });

    const notify = async (): Promise<void> => {
      if (!from) return;
      const acked = await this.notify(from, to, isCurrent);
      if (!acked) return;
      move.noticeAckedMs = since();
      this.metrics?.latency.observe({ milestone: 'notice-acked' }, move.noticeAckedMs);
      this.logger.info('move.notified', { phase: 'notification', gateway: to.gateway.toString(), ms: move.noticeAckedMs });
    };
    const register = async (): Promise<void> => {
      const ok = await this.registerAll(to.ad, true, isCurrent);
      if (!ok) return;
      move.registeredMs = since();
      this.metrics?.latency.observe({ milestone: 'registered' }, move.registeredMs);
      this.logger.info('move.registered', { phase: 'registration', names: this.options.names.length, ad: to.ad.toString(), ms: move.registeredMs });
    };
    const clean = async (): Promise<void> => {
      try {
        const result = await removeStaleRoutes(this.options.routes, {
          hid: this.hid.toString(),
          newGateway: to.gateway.toString(),
          newAd: to.ad.toString(),
          oldAd: from?.ad.toString(),
        });
        move.cleanedMs = since();
        move.removedRoutes = result.removed;
        this.metrics?.latency.observe({ milestone: 'cleaned' }, move.cleanedMs);
        this.logger.info('move.cleaned', { phase: 'cleanup', removed: result.removed, adFixed: result.adFixed, ms: move.cleanedMs });
      } catch (error) {
        this.logger.warn('move.cleanup-failed', { phase: 'cleanup', reason: errorMessage(error) });
      }
    };
    await Promise.all([notify(), register(), clean()]);
    if (!isCurrent()) return;
    this.moves.push(move);
    for (const listener of this.moveListeners) listener(move);
  }

  /** Sends the signed notice to the new gateway until it acknowledges; false if superseded. */
  private async notify(from: Location, to: Location, isCurrent: () => boolean): Promise<boolean> {
    const notice: MoveNotice = {
      hid: this.hid,
      newAd: to.ad,
      newRouterHid: to.gateway,
      newLinkId: to.linkId,
      oldAd: from.ad,
      oldRouterHid: from.gateway,
      oldLinkId: from.linkId,
      seq: this.state.next('noticeSeq'),
      timestamp: Date.now(),
    };
    const sealed = encodeMobility(MobilityType.NOTICE, sealMoveNotice(notice, this.options.identity));
    let acked = false;
    const ackPromise = new Promise<void>((resolve) => (this.pendingAck = { seq: notice.seq, gateway: to.gateway, resolve }));
    void ackPromise.then(() => (acked = true));
    const dst = Dag.chain(to.gateway, WellKnownSid.MOBILITY);
    // Send, wait for the ack a little longer each time (exponential backoff), until acked or superseded.
    let wait = this.options.retry?.noticeMs ?? 30;
    for (let attempt = 0; isCurrent() && !acked; attempt++) {
      if (attempt > 0) {
        this.stats.noticeRetries++;
        this.metrics?.notices.inc({ event: 'retried' });
      }
      this.stats.noticesSent++;
      this.metrics?.notices.inc({ event: 'sent' });
      await this.socket?.send(dst, sealed).catch((error: unknown) => this.logger.debug('notice.send-failed', { reason: errorMessage(error) }));
      await Promise.race([ackPromise, new Promise((r) => setTimeout(r, wait))]);
      wait = Math.min(wait * 2, this.options.retry?.maxMs ?? 1000);
    }
    if (acked) {
      this.stats.noticesAcked++;
      this.metrics?.notices.inc({ event: 'acked' });
    }
    return acked;
  }

  private onMobility(data: Buffer): void {
    try {
      const message = decodeMobility(data);
      if (message.type !== MobilityType.ACK) return;
      const ack = openMoveAck(message.sealed);
      const pending = this.pendingAck;
      if (pending && ack.hid.equals(this.hid) && ack.seq === pending.seq && ack.routerHid.equals(pending.gateway)) {
        this.pendingAck = undefined;
        pending.resolve();
      }
    } catch (error) {
      this.logger.debug('agent.bad-ack', { reason: errorMessage(error) });
    }
  }

  /** Registers every served name at `ad`, retrying each until it succeeds; false if superseded. */
  private async registerAll(ad: Xid, migrate: boolean, isCurrent: () => boolean): Promise<boolean> {
    const results = await Promise.all(
      this.options.names.map(async ({ name, sid }) => {
        let done = false;
        await retry(
          async () => {
            try {
              await this.names.register(name, this.dagFor(ad, sid), this.options.identity, { seq: this.state.next('nameSeq'), migrate });
              done = true;
              this.stats.registrations++;
              return true;
            } catch (error) {
              this.stats.registrationFailures++;
              this.metrics?.registrationFailures.inc();
              this.logger.warn('name.register-failed', { phase: 'registration', name, reason: errorMessage(error) });
              return false;
            }
          },
          () => isCurrent() && !done,
          this.options.retry?.registerMs ?? 100,
          this.options.retry?.maxMs ?? 2000,
        );
        return done;
      }),
    );
    return results.every(Boolean);
  }

  private async refreshRegistrations(): Promise<void> {
    const location = this.location ?? (await this.options.api.info()).ad;
    const ad = location instanceof Xid ? location : location?.ad;
    if (!ad) return;
    const generation = this.generation;
    await this.registerAll(ad, false, () => this.generation === generation);
  }

  /** Tells the current gateway again where the VM is (routers that restarted learn it back). */
  private async reannounce(): Promise<void> {
    const here = this.location;
    if (!here) return;
    const generation = this.generation;
    await this.notify(here, here, () => this.generation === generation);
  }
}
