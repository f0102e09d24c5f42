/** The config file of `xmig agent`. */
import { z } from '../shared/config.js';
import { Dag } from '../shared/dag.js';
import { Xid } from '../shared/xid.js';

const xid = z.string().refine((t) => {
  try {
    Xid.parse(t);
    return true;
  } catch {
    return false;
  }
}, 'not an XID (TYPE:40-hex)');

const dag = z.string().refine((t) => {
  try {
    Dag.parse(t);
    return true;
  } catch {
    return false;
  }
}, 'not a DAG');

export const agentConfigSchema = z.object({
  /** The VM node's application API socket. */
  api: z.string().default('/run/xmig/node.sock'),
  /** The VM node's control port: a socket path (its default) or "host:port" (TCP on loopback). */
  control: z.string().min(1).default('/run/xmig/control.sock'),
  /** TCP control ports: the file holding the token that unlocks route writes. */
  controlTokenFile: z.string().min(1).optional(),
  /** The VM node's name (its Click element prefix on the control port). */
  router: z.string().min(1),
  /** The VM node's key: the agent signs notices and name records with it. */
  keyFile: z.string().default('/var/lib/xmig/node.key'),
  stateFile: z.string().default('/var/lib/xmig/agent.json'),
  /** Names the VM serves; with a SID the name stands for that service, without for the VM. */
  names: z.array(z.object({ name: z.string().min(1), sid: xid.optional() })).default([]),
  /** The name server's DAG; default: the one the gateway announces. */
  nameServer: dag.optional(),
  resume: z.object({ tickMs: z.number().int().min(5).default(50), stallMs: z.number().int().min(20).default(300) }).default({ tickMs: 50, stallMs: 300 }),
  schedules: z
    .object({
      refresh: z.union([z.string(), z.literal(false)]).default('*/5 * * * *'),
      reannounce: z.union([z.string(), z.literal(false)]).default('*/10 * * * *'),
      health: z.union([z.string(), z.literal(false)]).default('* * * * *'),
    })
    .default({ refresh: '*/5 * * * *', reannounce: '*/10 * * * *', health: '* * * * *' }),
  metrics: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535) }).optional(),
  logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;
