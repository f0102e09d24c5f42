/**
 * Every daemon's /metrics through `promtool check metrics` (Debian's prometheus package),
 * as separate processes on an R1/A/B network: the router's node, the router plugin as a
 * process of its own beside it (the package test checks it inside the node's process), a host's node, the name server, and
 * the agent on B. Also what promtool does not check: base units (no `_ms`), the standard
 * process_/nodejs_ names, and labelled families present at 0 before their first event.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startXmig, type XmigProcess } from '../support/processes.js';
import { commandExists, requirement } from '../support/requirements.js';
import { MIGRATION_HOSTS, UdpNetwork } from '../support/udp-network.js';

const hasPromtool = requirement(commandExists('promtool'), 'promtool', 'apt-get install prometheus (.ci/run does)');

/** The URL a daemon logged for its /metrics (node.ready's `metrics`, or metrics.listening's `url`). */
async function metricsUrl(process: XmigProcess, event: string): Promise<string> {
  const line = await process.waitForLog(event, 30_000).catch((error: Error) => {
    throw new Error(`${error.message}\n${process.stderr.join('\n')}`);
  });
  const record = line as { metrics?: string; url?: string };
  const url = record.metrics ?? record.url;
  if (!url) throw new Error(`${event} carries no metrics URL: ${JSON.stringify(line)}`);
  return url;
}

describe.skipIf(!hasPromtool)('every daemon’s /metrics', () => {
  const network = new UdpNetwork(MIGRATION_HOSTS);
  const urls = new Map<string, string>();
  const others: XmigProcess[] = [];

  beforeAll(async () => {
    for (const config of network.layout.configs.values()) config.metrics = { host: '127.0.0.1', port: 0 };
    await network.start();
    for (const name of ['R1', 'A']) urls.set(`node ${name}`, await metricsUrl(network.processes.get(name)!, 'node.ready'));
    const r1 = network.layout.configs.get('R1')!;
    const control = r1.controlPort as { path: string };
    const plugin = startXmig(['router-plugin', '--api', network.api('R1'), '--control', control.path, '--router', 'R1', '--key', r1.keyFile, '--metrics-port', '0']);
    const names = startXmig(['nameserver', '--api', network.api('A'), '--db', join(network.dir, 'names.log'), '--metrics-port', '0']);
    const b = network.layout.configs.get('B')!;
    const bControl = b.controlPort as { path: string };
    const agentConfig = join(network.dir, 'agent.json');
    writeFileSync(
      agentConfig,
      JSON.stringify({ api: network.api('B'), control: bControl.path, router: 'B', keyFile: b.keyFile, stateFile: join(network.dir, 'agent-state.json') }),
    );
    const agent = startXmig(['agent', '--config', agentConfig, '--metrics-port', '0']);
    others.push(plugin, names, agent);
    urls.set('router-plugin', await metricsUrl(plugin, 'metrics.listening'));
    urls.set('nameserver', await metricsUrl(names, 'metrics.listening'));
    urls.set('agent', await metricsUrl(agent, 'metrics.listening'));
  }, 90_000);

  afterAll(async () => {
    await Promise.all(others.map((p) => p.stop()));
    await network.stop();
  });

  const daemons = ['node R1', 'node A', 'router-plugin', 'nameserver', 'agent'];

  it.each(daemons)('%s passes promtool check metrics, in base units, with the standard process names', async (daemon) => {
    const text = await (await fetch(urls.get(daemon)!)).text();
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(`${check.stdout}${check.stderr}`, daemon).toBe('');
    expect(check.status).toBe(0);
    const families = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => ({ name: m[1]!, type: m[2]! }));
    expect(families.filter((f) => /_ms(_|$)/.test(f.name)).map((f) => f.name)).toEqual([]);
    expect(families.filter((f) => f.name.startsWith('xmig_process') || f.name.startsWith('xmig_nodejs')).map((f) => f.name)).toEqual([]);
    expect(families.map((f) => f.name)).toEqual(expect.arrayContaining(['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']));
    for (const f of families) if (f.type === 'counter') expect(f.name, daemon).toMatch(/_total$/);
    // Each family has a sample, labelled ones too, before their first event; except those
    // whose label values come from outside (what refusals, which AD, which handle types).
    const open = /^(nodejs_active_(handles|requests|resources)|nodejs_gc_duration_seconds|xmig_\w+_refusals_total|xianet_\w*refusals_total|xmig_agent_location)$/;
    const empty = families.filter((f) => !open.test(f.name) && !new RegExp(`^${f.name}(_bucket|_sum|_count)?[{ ]`, 'm').test(text)).map((f) => f.name);
    expect(empty, `${daemon}: families without a series`).toEqual([]);
  });

  it('has the mobility families at 0 for every known label, and beacons and registrations', async () => {
    const router = await (await fetch(urls.get('node R1')!)).text();
    expect(router).toMatch(/^xianet_beacons_sent_total\{[^}]*kind="periodic"[^}]*\} [1-9]/m);
    const plugin = await (await fetch(urls.get('router-plugin')!)).text();
    for (const reason of ['malformed', 'stale', 'old-sequence', 'duplicate', 'bad-signature', 'key-mismatch', 'rate-limited']) {
      expect(plugin).toMatch(new RegExp(`^xmig_plugin_notices_rejected_total\\{[^}]*reason="${reason}"[^}]*\\} 0$`, 'm'));
    }
    expect(plugin).toMatch(/^xmig_plugin_propagation_seconds_bucket\{/m);
    const agent = await (await fetch(urls.get('agent')!)).text();
    for (const kind of ['inter-ad', 'intra-ad']) expect(agent).toMatch(new RegExp(`^xmig_agent_moves_total\\{kind="${kind}"\\} 0$`, 'm'));
    for (const result of ['ok', 'failed']) expect(agent).toMatch(new RegExp(`^xmig_agent_registrations_total\\{result="${result}"\\} \\d+$`, 'm'));
    expect(agent).toMatch(/^xmig_agent_move_seconds_bucket\{/m);
  });
});
