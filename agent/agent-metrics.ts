/** The agent's /metrics families (one registry per agent). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface AgentMetrics {
  beacons: Counter;
  moves: Counter<'kind'>;
  latency: Histogram<'milestone'>;
  notices: Counter<'event'>;
  registrationFailures: Counter;
  resumes: Counter;
  location: Gauge<'ad'>;
}

export function agentMetrics(registry: Registry | undefined): AgentMetrics | undefined {
  if (!registry) return undefined;
  const notices = new Counter({ name: 'xmig_agent_notices_total', help: 'HID-move notices sent, acked, retried', labelNames: ['event'] as const, registers: [registry] });
  for (const event of ['sent', 'retried', 'acked']) notices.inc({ event }, 0);
  const moves = new Counter({ name: 'xmig_agent_moves_total', help: 'Moves perceived, by kind', labelNames: ['kind'] as const, registers: [registry] });
  for (const kind of ['inter-ad', 'intra-ad']) moves.inc({ kind }, 0);
  return {
    beacons: new Counter({ name: 'xmig_agent_beacons_total', help: 'Beacons heard by the VM', registers: [registry] }),
    moves,
    latency: new Histogram({
      name: 'xmig_agent_move_ms',
      help: 'From perceiving a move to each milestone (ms)',
      labelNames: ['milestone'] as const,
      buckets: [1, 2, 5, 10, 20, 50, 100, 150, 200, 500, 1000, 5000, 30000],
      registers: [registry],
    }),
    notices,
    registrationFailures: new Counter({ name: 'xmig_agent_registration_failures_total', help: 'Name registrations refused or retransmitted (and retried)', registers: [registry] }),
    resumes: new Counter({ name: 'xmig_agent_resumes_total', help: 'Resumes after a pause perceived', registers: [registry] }),
    location: new Gauge({ name: 'xmig_agent_location', help: '1 for the AD the VM is in', labelNames: ['ad'] as const, registers: [registry] }),
  };
}
