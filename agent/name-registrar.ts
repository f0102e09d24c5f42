/**
 * Registration: every name the VM serves is registered again with its new DAG (AD →
 * HID → SID, the HID fallback kept), signed, with a higher sequence number. A request is
 * sent until the name server answers (send-until-acked.ts, through the name client),
 * across a name-server outage, until a newer move supersedes it; a refusal is retried
 * with a fresh sequence number after a backoff, except "owned by another key", which no
 * retry changes.
 */
import { Dag } from '../shared/dag.js';
import { errorMessage } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import type { Logger } from '../shared/logger.js';
import type { Xid } from '../shared/xid.js';
import type { NodeApi } from '../xianet/api/node-api.js';
import { NameClient, NameRefusedError } from '../xianet/names/name-client.js';
import { delay, type Backoff } from '../xianet/send-until-acked.js';
import type { AgentMetrics } from './agent-metrics.js';
import type { AgentStateStore } from './agent-state.js';

export interface ServedName {
  name: string;
  /** The service's SID; absent: the name stands for the VM itself (AD → HID). */
  sid?: Xid;
}

export interface RegistrationStats {
  registrations: number;
  registrationFailures: number;
  registrationRetries: number;
}

export class NameRegistrar {
  private readonly client: NameClient;
  readonly stats: RegistrationStats = { registrations: 0, registrationFailures: 0, registrationRetries: 0 };

  constructor(
    api: NodeApi,
    private readonly names: ServedName[],
    private readonly identity: Identity,
    private readonly state: AgentStateStore,
    private readonly options: { nameServer: Dag | undefined; backoff: Backoff; logger: Logger; metrics: AgentMetrics | undefined },
  ) {
    this.client = new NameClient(api, { nameServer: options.nameServer, retryMs: options.backoff.firstMs, maxRetryMs: options.backoff.maxMs });
  }

  /** Registers every name at `ad`; true once all are registered, false if `signal` ended it first or a name is not ours. */
  async registerAll(ad: Xid, hid: Xid, migrate: boolean, signal: AbortSignal): Promise<boolean> {
    const results = await Promise.all(this.names.map((served) => this.register(served, ad, hid, migrate, signal)));
    return results.every(Boolean);
  }

  private async register({ name, sid }: ServedName, ad: Xid, hid: Xid, migrate: boolean, signal: AbortSignal): Promise<boolean> {
    const dag = sid ? Dag.hostAddress(ad, hid, sid) : Dag.hostAddress(ad, hid);
    const { logger, metrics, backoff } = this.options;
    let wait = backoff.firstMs;
    while (!signal.aborted) {
      const seq = this.state.next('nameSeq');
      try {
        await this.client.register(name, dag, this.identity, {
          seq,
          migrate,
          signal,
          deadlineMs: Infinity,
          onRetry: () => {
            this.stats.registrationRetries++;
            metrics?.registrations.inc({ result: 'retransmitted' });
          },
        });
        this.stats.registrations++;
        metrics?.registrations.inc({ result: 'ok' });
        return true;
      } catch (error) {
        if (signal.aborted) return false;
        this.stats.registrationFailures++;
        metrics?.registrations.inc({ result: 'failed' });
        if (error instanceof NameRefusedError && error.permanent) {
          logger.error('name.register-refused', { phase: 'registration', name, seq, reason: error.reason });
          return false;
        }
        logger.warn('name.register-failed', { phase: 'registration', name, seq, reason: errorMessage(error) });
      }
      await delay(wait, signal).catch(() => undefined);
      wait = Math.min(wait * 2, backoff.maxMs);
    }
    return false;
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
