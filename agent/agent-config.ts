/** The config file of `xmig agent`. */
import cron from 'node-cron';
import { listenPort, nameText, pathText, timerMs, z } from '../shared/config.js';
import { MAX_NAME_LENGTH } from '../xianet/names/name-record.js';
import { dagText as dag, xidText as xid } from '../xianet/node-config.js';


/** A cron expression node-cron runs (checked here: cron.schedule throws a bare Error on a bad one when the agent starts). */
const schedule = z.union([
  z
    .string()
    .max(256)
    .refine((t) => cron.validate(t), 'not a cron expression node-cron accepts (5 or 6 fields, e.g. "*/5 * * * *")'),
  z.literal(false),
]);

/** A name as the name service takes it (name-record.ts): 1..255 characters, no spaces or NUL. */
const serviceName = z
  .string()
  .min(1)
  .max(MAX_NAME_LENGTH)
  .regex(/^[^\0\s]+$/, 'no spaces or NUL');

export const agentConfigSchema = z.strictObject({
  /** The VM node's application API socket. */
  api: pathText.default('/run/xmig/node.sock'),
  /** The VM node's control port: a socket path (its default) or "host:port" (TCP on loopback). */
  control: pathText.default('/run/xmig/control.sock'),
  /** TCP control ports: the file holding the token that unlocks route writes. */
  controlTokenFile: pathText.optional(),
  /** The VM node's name (its Click element prefix on the control port: a newline in it would be a second command). */
  router: nameText,
  /** The VM node's key: the agent signs notices and name records with it. */
  keyFile: pathText.default('/var/lib/xmig/node.key'),
  stateFile: pathText.default('/var/lib/xmig/agent.json'),
  /** Names the VM serves; with a SID the name stands for that service, without for the VM. */
  names: z.array(z.strictObject({ name: serviceName, sid: xid.optional() })).max(64).default([]),
  /** The name server's DAG; default: the one the gateway announces. */
  nameServer: dag.optional(),
  resume: z.strictObject({ tickMs: timerMs(5).default(50), stallMs: timerMs(20).default(300) }).default({ tickMs: 50, stallMs: 300 }),
  schedules: z
    .strictObject({
      refresh: schedule.default('*/5 * * * *'),
      reannounce: schedule.default('*/10 * * * *'),
      health: schedule.default('* * * * *'),
    })
    .default({ refresh: '*/5 * * * *', reannounce: '*/10 * * * *', health: '* * * * *' }),
  metrics: z.strictObject({ host: z.string().min(1).max(255).default('127.0.0.1'), port: listenPort }).optional(),
  logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;
