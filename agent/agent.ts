/**
 * The self-adaptive agent inside a VM (the paper's Sect. 4.2, automated). On each move
 * it perceived (perception.ts), in parallel:
 *
 *  notification a HID-move notice signed with the VM's key goes to the new gateway
 *               until that router acknowledges it (notice-sender.ts);
 *  registration every name the VM serves is registered again with its new DAG
 *               (name-registrar.ts);
 *  cleanup      the VM's stale routes to its old segment are deleted (stale-routes.ts).
 *
 * A newer move supersedes an older one (its AbortSignal ends the older one's waits);
 * periodic work is in agent-schedules.ts. Each phase logs the time since perception;
 * /metrics has the counts and latencies (agent-metrics.ts).
 */
import type { Registry } from 'prom-client';
import si from 'systeminformation';
import type { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { RouteBackend } from '../shared/route-backend.js';
import { startAll, stopAll, type Startable } from '../shared/startable.js';
import { XidType, type Xid } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { agentMetrics, type AgentMetrics } from './agent-metrics.js';
import { AgentSchedules, type Schedules } from './agent-schedules.js';
import { AgentStateStore } from './agent-state.js';
import { NameRegistrar, type ServedName } from './name-registrar.js';
import { NoticeSender } from './notice-sender.js';
import { Perception, type Location, type PerceivedMove } from './perception.js';
import type { ResumeDetectorOptions } from './resume-detector.js';
import { removeStaleRoutes } from './stale-routes.js';

export type { ServedName };

export interface AgentOptions {
  /** The VM's name, on every log event as `vm`. */
  vm?: string;
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
  schedules?: Schedules;
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

export class Agent implements Startable {
  private readonly logger: Logger;
  private readonly state: AgentStateStore;
  private readonly metrics: AgentMetrics | undefined;
  private readonly perception: Perception;
  private readonly notices: NoticeSender;
  private readonly registrar: NameRegistrar;
  private readonly schedules: AgentSchedules;
  private hid!: Xid;
  private running = false;
  /** Ends the current move's waits when a newer move comes, or at stop(). */
  private current = new AbortController();
  private readonly stopping = new AbortController();
  /** The last move's origin: what a re-announcement tells the path again. */
  private lastFrom: Location | undefined;
  private moveInFlight = false;
  private readonly tasks = new Set<Promise<void>>();
  readonly moves: MoveRecord[] = [];
  private readonly moveListeners = new Set<(move: MoveRecord) => void>();

  constructor(private readonly options: AgentOptions) {
    // `vm` on every event: journalctl -o cat | grep '"vm":"vm1"' follows one VM through its moves.
    this.logger = (options.logger ?? silentLogger()).child({ component: 'agent', ...(options.vm === undefined ? {} : { vm: options.vm }) });
    this.state = new AgentStateStore(options.stateFile);
    this.state.onError = (error) => this.logger.error('agent.state-write-failed', { reason: errorMessage(error) });
    this.metrics = agentMetrics(options.registry);
    const maxMs = options.retry?.maxMs;
    this.perception = new Perception(
      options.api,
      this.state,
      { onMove: (move) => this.track(this.handleMove(move)), onJoined: () => this.track(this.refreshRegistrations()) },
      { resume: options.resume ?? {}, logger: this.logger, metrics: this.metrics },
    );
    this.notices = new NoticeSender(options.api, options.identity, () => this.hid, this.state, {
      backoff: { firstMs: options.retry?.noticeMs ?? 30, maxMs: maxMs ?? 1000 },
      logger: this.logger,
      metrics: this.metrics,
    });
    this.registrar = new NameRegistrar(options.api, options.names, options.identity, this.state, {
      nameServer: options.nameServer,
      backoff: { firstMs: options.retry?.registerMs ?? 100, maxMs: maxMs ?? 2000 },
      logger: this.logger,
      metrics: this.metrics,
    });
    this.schedules = new AgentSchedules(
      options.schedules ?? {},
      { refresh: () => this.refreshRegistrations(), reannounce: () => this.reannounce(), health: () => this.health() },
      this.logger,
    );
  }

  /** Counters of every part, for tests and `agent.health`. */
  get stats(): Perception['stats'] & NoticeSender['stats'] & NameRegistrar['stats'] {
    return { ...this.perception.stats, ...this.notices.stats, ...this.registrar.stats };
  }

  onMove(listener: (move: MoveRecord) => void): () => void {
    this.moveListeners.add(listener);
    return () => this.moveListeners.delete(listener);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.state.load();
    const info = await this.options.api.info();
    this.hid = info.hid;
    if (!this.options.identity.xid(XidType.HID).equals(this.hid)) {
      throw new Error(`the agent's key is not the key of node ${info.name}: HID ${this.options.identity.xid(XidType.HID)} is not ${info.hid}`);
    }
    await startAll([this.notices, this.perception, this.schedules]);
    this.running = true;
    if (this.options.hostFacts !== false) this.track(this.logHostFacts());
    this.logger.info('agent.started', { hid: this.hid.toString(), names: this.options.names.map((n) => n.name), ...(info.ad ? { ad: info.ad.toString() } : {}) });
    // Already joined when we started: nothing may have moved, but the names must be there.
    if (info.ad) this.track(this.refreshRegistrations(info.ad));
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stopping.abort(new Error('agent stopped'));
    this.current.abort(new Error('agent stopped'));
    await stopAll([this.notices, this.perception, this.schedules]).catch((error: unknown) => this.logger.warn('agent.stop-failed', { reason: errorMessage(error) }));
    while (this.tasks.size > 0) await Promise.all(this.tasks);
    await this.registrar.close();
    await this.options.routes.close();
    await this.state.flush();
  }

  /** Runs `work` in the background so stop() can wait for it; nothing thrown escapes. */
  private track(work: Promise<void>): void {
    const task = work
      .catch((error: unknown) => this.logger.error('agent.task-failed', { reason: errorMessage(error) }))
      .finally(() => this.tasks.delete(task));
    this.tasks.add(task);
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
    const here = this.perception.here;
    this.logger.info('agent.health', {
      moves: this.state.current.moves,
      ...(here ? { ad: here.ad.toString(), gateway: here.gateway.toString() } : {}),
      ...this.stats,
    });
  }

  private async handleMove({ kind, from, to, perceivedAt }: PerceivedMove): Promise<void> {
    this.current.abort(new Error('superseded by a newer move'));
    const controller = new AbortController();
    this.current = controller;
    const signal = controller.signal;
    const since = (): number => Math.round((performance.now() - perceivedAt) * 1000) / 1000;
    const move: MoveRecord = { kind, fromAd: from?.ad.toString(), toAd: to.ad.toString() };
    this.lastFrom = from;
    this.logger.info('move.perceived', {
      phase: 'perception',
      kind,
      toAd: move.toAd,
      gateway: to.gateway.toString(),
      hid: this.hid.toString(),
      ...(move.fromAd ? { fromAd: move.fromAd } : {}),
    });

    const notify = async (): Promise<void> => {
      if (!from) return;
      this.moveInFlight = true;
      try {
        const { attempts } = await this.notices.announce(from, to, signal);
        move.noticeAckedMs = since();
        this.metrics?.latency.observe({ milestone: 'notice-acked' }, move.noticeAckedMs / 1000);
        this.logger.info('move.notified', { phase: 'notification', gateway: to.gateway.toString(), attempts, ms: move.noticeAckedMs });
      } catch (error) {
        if (!signal.aborted) this.logger.warn('move.notify-failed', { phase: 'notification', reason: errorMessage(error) });
      } finally {
        if (this.current === controller) this.moveInFlight = false;
      }
    };
    const register = async (): Promise<void> => {
      if (!(await this.registrar.registerAll(to.ad, this.hid, true, signal))) return;
      move.registeredMs = since();
      this.metrics?.latency.observe({ milestone: 'registered' }, move.registeredMs / 1000);
      this.logger.info('move.registered', { phase: 'registration', names: this.options.names.length, ad: to.ad.toString(), ms: move.registeredMs });
    };
    const clean = async (): Promise<void> => {
      try {
        const result = await removeStaleRoutes(this.options.routes, {
          hid: this.hid.toString(),
          newGateway: to.gateway.toString(),
          newAd: to.ad.toString(),
          ...(from ? { oldAd: from.ad.toString() } : {}),
        });
        move.cleanedMs = since();
        move.removedRoutes = result.removed;
        this.metrics?.latency.observe({ milestone: 'cleaned' }, move.cleanedMs / 1000);
        this.logger.info('move.cleaned', { phase: 'cleanup', removed: result.removed, adFixed: result.adFixed, ms: move.cleanedMs });
      } catch (error) {
        this.logger.warn('move.cleanup-failed', { phase: 'cleanup', reason: errorMessage(error) });
      }
    };
    await Promise.all([notify(), register(), clean()]);
    if (signal.aborted) return;
    this.moves.push(move);
    for (const listener of this.moveListeners) listener(move);
  }

  private async refreshRegistrations(at?: Xid): Promise<void> {
    const ad = at ?? this.perception.here?.ad ?? (await this.options.api.info()).ad;
    if (!ad) return;
    // Until the next move (or stop): a refresh never outlives the location it registers.
    await this.registrar.registerAll(ad, this.hid, false, this.current.signal);
  }

  /**
   * Tells the gateway again where the VM is, with the last move's origin, so every router
   * on the path (one that restarted, say) learns it back. Skipped while a move's own
   * notice is unacknowledged: a newer notice would make the move's one lose.
   */
  async reannounce(): Promise<void> {
    const here = this.perception.here;
    if (!here || !this.running) return;
    if (this.moveInFlight) {
      this.logger.info('notice.reannounce-skipped', { reason: 'a move is being announced', ad: here.ad.toString() });
      return;
    }
    const signal = AbortSignal.any([this.current.signal, this.stopping.signal]);
    try {
      const { attempts, ms } = await this.notices.announce(this.lastFrom ?? here, here, signal);
      this.logger.info('notice.reannounced', { ad: here.ad.toString(), gateway: here.gateway.toString(), attempts, ms: Math.round(ms) });
    } catch (error) {
      if (!signal.aborted) this.logger.warn('notice.reannounce-failed', { reason: errorMessage(error) });
    }
  }
}
