/**
 * The paper's experiment in one process: the Fig. 1 testbed on memory segments,
 * the name server on host A, the Goldbach service on the VM (registered by name),
 * its client on host C asking continuously, and xping from C to the VM at a fixed
 * interval. What happens to a migration in between is added by `migration` (the
 * agent and router plugin, which xianet does not know about).
 */
import { Identity } from '../shared/identity.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import type { Dag } from '../shared/dag.js';
import { LocalNodeApi } from './api/local-api.js';
import { serveGoldbach } from './goldbach/goldbach-service.js';
import { askGoldbach, type AskReport } from './goldbach/goldbach-protocol.js';
import { NameClient } from './names/name-client.js';
import { NameServer } from './names/name-server.js';
import { builtinTopology, InProcessNetwork, type TopologyName } from './topology.js';
import { ping, type PingReply, type PingSummary } from './xping.js';

export const GOLDBACH_NAME = 'goldbach.vm';
/** A reply this late counts as lost: in one process replies take a millisecond or two. */
const PING_TIMEOUT_MS = 250;

export interface TestbedOptions {
  topology: TopologyName;
  /** How long the client asks and xping runs when nothing else decides (default 3 s). */
  durationMs?: number;
  pingIntervalMs?: number;
  /** An echo unanswered this long is lost (default 250 ms: the in-process network answers in well under 1 ms). */
  pingTimeoutMs?: number;
  beaconIntervalMs?: number;
  logger?: Logger;
  /**
   * Runs while traffic flows (e.g. migrations); the testbed stops when it resolves.
   * Gets the running testbed; defaults to waiting `durationMs`.
   */
  during?: (testbed: RunningTestbed) => Promise<unknown>;
  /** Called after the network is up, before traffic starts (e.g. to start agents). */
  prepare?: (testbed: RunningTestbed) => Promise<void>;
}

export interface RunningTestbed {
  network: InProcessNetwork;
  /** The VM's Goldbach service address as registered (its DAG before any move). */
  serviceDag: Dag;
  nameServer: NameServer;
  /** Xping echoes sent so far, in the order sent; each gets its outcome when it is known. */
  pings: PingSummary['replies'];
  /** Resolves once the first `count` echoes (all sent so far, by default) have an outcome. */
  pingsSettled(count?: number): Promise<void>;
  goldbachAnswers(): number;
}

export interface TestbedReport {
  topology: TopologyName;
  durationMs: number;
  goldbach: {
    answers: number;
    wrong: number;
    maxGapMs: number;
    brokenConnections: number;
    error?: string;
  };
  xping: Omit<PingSummary, 'replies'>;
  /** Whatever `during` returned (the migration figures). */
  during?: unknown;
}

export async function runTestbed(options: TestbedOptions): Promise<TestbedReport> {
  const logger = options.logger ?? silentLogger();
  const durationMs = options.durationMs ?? 3000;
  const pingIntervalMs = options.pingIntervalMs ?? 10;
  const network = new InProcessNetwork(builtinTopology(options.topology), {
    beaconIntervalMs: options.beaconIntervalMs ?? 100,
    helloIntervalMs: 1000,
    logger,
  });
  const started = performance.now();
  await network.start();
  const cleanups: Array<() => Promise<unknown>> = [() => network.stop()];
  try {
    await network.ready();
    const nameServer = new NameServer(new LocalNodeApi(network.stack('A')), { logger });
    await nameServer.start();
    cleanups.push(() => nameServer.stop());
    const nameServerDag = await nameServer.address();
    for (const stack of network.stacks.values()) if (stack.beacons) stack.beacons.nameServer = nameServerDag;

    const vm = network.stack('VM');
    const vmApi = new LocalNodeApi(vm);
    const goldbach = await serveGoldbach(vmApi, { identity: Identity.generate(), logger });
    cleanups.push(() => goldbach.close());
    const serviceDag = await goldbach.address();
    const names = new NameClient(vmApi, { nameServer: nameServerDag });
    await names.register(GOLDBACH_NAME, serviceDag, vm.node.identity);
    await names.close();

    const pings: PingSummary['replies'] = [];
    // Echoes still waiting for an outcome, by their place in `pings` (a handful at a time).
    const unsettled = new Map<PingReply, number>();
    const pingsSettled = async (count = pings.length): Promise<void> => {
      while ([...unsettled.values()].some((index) => index < count)) await new Promise((r) => setTimeout(r, 10));
    };
    let answers = 0;
    const running: RunningTestbed = { network, serviceDag, nameServer, pings, pingsSettled, goldbachAnswers: () => answers };
    await options.prepare?.(running);

    // The client resolves the name once and keeps that DAG, as the paper's client does.
    const cApi = new LocalNodeApi(network.stack('C'));
    const resolver = new NameClient(cApi, { nameServer: nameServerDag });
    const resolved = (await resolver.resolve(GOLDBACH_NAME)).dag;
    await resolver.close();
    const connection = await cApi.connect(resolved, { pinPeerAddress: true });
    const stop = new AbortController();
    const asking: Promise<AskReport> = askGoldbach(connection, {
      start: 1_000_000_000,
      signal: stop.signal,
      onAnswer: () => answers++,
    });
    const pinging = ping(network.stack('C').node, vm.node.address(), {
      intervalMs: pingIntervalMs,
      timeoutMs: options.pingTimeoutMs ?? PING_TIMEOUT_MS,
      signal: stop.signal,
      onSent: (reply) => unsettled.set(reply, pings.push(reply) - 1),
      onResult: (reply) => unsettled.delete(reply),
    });
    let during: unknown;
    try {
      during = options.during ? await options.during(running) : await new Promise((r) => setTimeout(r, durationMs));
    } finally {
      stop.abort();
    }
    const [report, summary] = await Promise.all([asking, pinging]);
    const { replies: _replies, ...xping } = summary;
    return {
      topology: options.topology,
      durationMs: Math.round(performance.now() - started),
      goldbach: {
        answers: report.answers,
        wrong: report.wrong,
        maxGapMs: report.maxGapMs,
        brokenConnections: report.ended === 'broken' ? 1 : 0,
        ...(report.error && report.ended === 'broken' ? { error: report.error } : {}),
      },
      xping,
      during,
    };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
  }
}
