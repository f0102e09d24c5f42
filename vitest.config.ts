import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{shared,xianet,agent,router-plugin,mover,testbed,lab,deploy,cli}/**/*.test.ts', 'test/**/*.test.ts'],
    // Integration tests start real processes and sockets; keep files apart so ports and
    // namespaces of one file never meet another's, but let two files run at once.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
