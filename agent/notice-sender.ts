/**
 * Notification: a HID-move notice signed with the VM's key goes to the new gateway and
 * is sent again, backing off, until that router acknowledges it (send-until-acked.ts).
 * Acknowledgements are matched per sequence number and gateway, so a re-announcement
 * and a move's notice never take each other's ack.
 */
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import type { Logger } from '../shared/logger.js';
import { decodeMobility, encodeMobility, MobilityType } from '../shared/mobility-message.js';
import { openMoveAck, peekMoveAck, sealMoveNotice, type MoveAck, type MoveNotice } from '../shared/move-notice.js';
import type { Startable } from '../shared/startable.js';
import { WellKnownSid, type Xid } from '../shared/xid.js';
import type { DatagramSocket, NodeApi } from '../xianet/api/node-api.js';
import { AckWaiters, sendUntilAcked, type Acked, type Backoff } from '../xianet/send-until-acked.js';
import type { AgentMetrics } from './agent-metrics.js';
import type { AgentStateStore } from './agent-state.js';
import type { Location } from './perception.js';

export interface NoticeStats {
  noticesSent: number;
  noticesAcked: number;
  noticeRetries: number;
  badAcks: number;
}

export class NoticeSender implements Startable {
  private socket: DatagramSocket | undefined;
  private readonly acks = new AckWaiters<string, MoveAck>();
  readonly stats: NoticeStats = { noticesSent: 0, noticesAcked: 0, noticeRetries: 0, badAcks: 0 };

  constructor(
    private readonly api: NodeApi,
    private readonly identity: Identity,
    private readonly hid: () => Xid,
    private readonly state: AgentStateStore,
    private readonly options: { backoff: Backoff; logger: Logger; metrics: AgentMetrics | undefined },
  ) {}

  /** Notices waiting for their ack. */
  get waiting(): number {
    return this.acks.size;
  }

  async start(): Promise<void> {
    if (this.socket) return;
    this.socket = await this.api.bindDatagram();
    this.socket.onMessage(({ data }) => this.onMessage(data));
  }

  async stop(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    await socket?.close();
  }

  /** Tells `to`'s gateway that the VM came from `from`; resolves once it acknowledged, rejects if `signal` aborts first. */
  async announce(from: Location, to: Location, signal: AbortSignal): Promise<Acked<MoveAck>> {
    const notice: MoveNotice = {
      hid: this.hid(),
      newAd: to.ad,
      newRouterHid: to.gateway,
      newLinkId: to.linkId,
      oldAd: from.ad,
      oldRouterHid: from.gateway,
      oldLinkId: from.linkId,
      seq: this.state.next('noticeSeq'),
      timestamp: Date.now(),
    };
    const data = encodeMobility(MobilityType.NOTICE, sealMoveNotice(notice, this.identity));
    const dst = Dag.chain(to.gateway, WellKnownSid.MOBILITY);
    const key = `${notice.seq}/${to.gateway.key}`;
    const { logger, metrics } = this.options;
    const acked = await sendUntilAcked(
      async () => {
        this.stats.noticesSent++;
        metrics?.notices.inc({ event: 'sent' });
        if (!this.socket) throw new Error('agent stopped');
        await this.socket.send(dst, data);
      },
      (s) => this.acks.wait(key, s),
      {
        signal,
        backoff: this.options.backoff,
        what: `notice ${notice.seq}`,
        onRetry: () => {
          this.stats.noticeRetries++;
          metrics?.notices.inc({ event: 'retried' });
        },
        onSendError: (error) => logger.debug('notice.send-failed', { seq: notice.seq, reason: errorMessage(error) }),
      },
    );
    this.stats.noticesAcked++;
    metrics?.notices.inc({ event: 'acked' });
    return acked;
  }

  private onMessage(data: Buffer): void {
    try {
      const message = decodeMobility(data);
      if (message.type !== MobilityType.ACK) return;
      const claimed = peekMoveAck(message.sealed);
      const key = `${claimed.seq}/${claimed.routerHid.key}`;
      if (!claimed.hid.equals(this.hid()) || !this.acks.has(key)) return; // nobody waits for it: no verification spent
      this.acks.settle(key, openMoveAck(message.sealed));
    } catch (error) {
      this.stats.badAcks++;
      this.options.logger.debug('agent.bad-ack', { reason: errorMessage(error) });
    }
  }
}
