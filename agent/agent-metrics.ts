/** The agent's /metrics families (one registry per agent). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { DURATION_BUCKETS_SECONDS, eachValue, zeroSeries } from '../shared/metrics.js';

export interface AgentMetrics {
  beacons: Counter;
  moves: Counter<'kind'>;
  latency: Histogram<'milestone'>;
  notices: Counter<'event'>;
  registrations: Counter<'result'>;
  resumes: Counter;
  location: Gauge<'ad'>;
}

export function agentMetrics(registry: Registry | undefined): AgentMetrics | undefined {
  if (!registry) return undefined;
  const notices = new Counter({ name: 'xmig_agent_notices_total', help: 'HID-move notices sent, acked, retried', labelNames: ['event'] as const, registers: [registry] });
  // Every known series exists at 0 before its first event (rate() and absent() work from the start).
  zeroSeries(notices, eachValue('event', ['sent', 'acked', 'retried']));
  const moves = new Counter({ name: 'xmig_agent_moves_total', help: 'Moves perceived, by kind', labelNames: ['kind'] as const, registers: [registry] });
  zeroSeries(moves, eachValue('kind', ['inter-ad', 'intra-ad']));
  const registrations = new Counter({
    name: 'xmig_agent_registrations_total',
    help: 'Name registrations with the name service, by result (failed and retransmitted ones are retried)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  zeroSeries(registrations, eachValue('result', ['ok', 'failed', 'retransmitted']));
  const latency = new Histogram({
    name: 'xmig_agent_move_seconds',
    help: 'From perceiving a move to each milestone: notice acknowledged, names registered, stale routes cleaned',
    labelNames: ['milestone'] as const,
    buckets: DURATION_BUCKETS_SECONDS,
    registers: [registry],
  });
  for (const milestone of ['notice-acked', 'registered', 'cleaned']) latency.zero({ milestone });
  return {
    beacons: new Counter({ name: 'xmig_agent_beacons_total', help: 'Beacons heard by the VM', registers: [registry] }),
    moves,
    latency,
    notices,
    registrations,
    resumes: new Counter({ name: 'xmig_agent_resumes_total', help: 'Resumes after a pause perceived', registers: [registry] }),
    location: new Gauge({ name: 'xmig_agent_location', help: '1 for the AD the VM is in', labelNames: ['ad'] as const, registers: [registry] }),
  };
}
