import type { Logger } from '../shared/logger.js';

/** Resolves on the first SIGINT or SIGTERM (daemons then stop in order and exit 0). */
export function waitForShutdown(logger?: Logger): Promise<string> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      logger?.info('shutdown', { signal });
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
