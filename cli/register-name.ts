/** A service's name registered with the name service, asked again until it is answered. */
import { setTimeout as delay } from 'node:timers/promises';
import type { Dag } from '../shared/dag.js';
import { isXmigError } from '../shared/errors.js';
import type { Identity } from '../shared/identity.js';
import type { Logger } from '../shared/logger.js';
import type { NodeClient } from '../xianet/api/api-client.js';
import type { NameClient } from '../xianet/names/name-client.js';

/** One registration request's deadline; the service then asks again, as long as it runs. */
const REGISTER_ATTEMPT_MS = 5000;

/**
 * Registers the service's name, asking again for as long as the service runs while the name
 * server is silent or not yet known: a service that boots before the name server, or in a VM
 * starved under TCG, serves on and registers once it is answered (restarting it would cost a
 * Node.js start, ~9 s even on an idle TCG guest). A refusal is an answer: it is thrown.
 * False if stopped before an answer came.
 */
export async function registerUntilAnswered(
  names: NameClient,
  api: NodeClient,
  request: { name: string; address: Dag; owner: Identity; logger: Logger; signal: AbortSignal; /** The retry's log event (`goldbach.register-retry`). */ event: string },
): Promise<boolean> {
  const { name, address, owner, logger, signal, event } = request;
  for (let attempt = 1; ; attempt++) {
    try {
      await names.register(name, address, owner, { deadlineMs: REGISTER_ATTEMPT_MS, signal });
      return true;
    } catch (error) {
      if (signal.aborted) return false;
      const unanswered = isXmigError(error, 'ERR_TIMEOUT') || (isXmigError(error, 'ERR_NAME') && !(await api.info()).nameServer);
      if (!unanswered) throw error;
      logger.warn(event, { name, attempt, error: error instanceof Error ? error.message : String(error) });
      await delay(Math.min(1000 * attempt, REGISTER_ATTEMPT_MS), undefined, { signal }).catch(() => undefined);
      if (signal.aborted) return false;
    }
  }
}
