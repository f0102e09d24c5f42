/**
 * The agent's periodic work (node-cron): refresh the name registrations, re-announce
 * the VM's location to its gateway (routers that restarted learn it back), log health.
 */
import cron, { type ScheduledTask } from 'node-cron';
import { errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Startable } from '../shared/startable.js';

export interface Schedules {
  refresh?: string | false;
  reannounce?: string | false;
  health?: string | false;
}

export const DEFAULT_SCHEDULES = { refresh: '*/5 * * * *', reannounce: '*/10 * * * *', health: '* * * * *' } as const;

export class AgentSchedules implements Startable {
  private tasks: ScheduledTask[] = [];

  constructor(
    private readonly schedules: Schedules,
    private readonly jobs: Record<keyof Schedules, () => Promise<void> | void>,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    if (this.tasks.length > 0) return;
    const schedules = { ...DEFAULT_SCHEDULES, ...this.schedules };
    for (const name of ['refresh', 'reannounce', 'health'] as const) {
      const expression = schedules[name];
      if (!expression) continue;
      const job = this.jobs[name];
      this.tasks.push(
        cron.schedule(
          expression,
          async () => {
            try {
              await job();
            } catch (error) {
              this.logger.warn('agent.job-failed', { job: name, reason: errorMessage(error) });
            }
          },
          { name: `xmig-agent-${name}`, noOverlap: true },
        ),
      );
    }
  }

  async stop(): Promise<void> {
    for (const task of this.tasks.splice(0)) await task.destroy();
  }
}
