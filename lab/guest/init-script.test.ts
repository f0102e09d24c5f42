import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../../agent/agent-config.js';
import { parseConfig } from '../../shared/config.js';
import { Identity } from '../../shared/identity.js';
import { Xid, XidType } from '../../shared/xid.js';
import { nodeConfigSchema } from '../../xianet/node-config.js';
import { requirement } from '../../test/support/requirements.js';
import { findBusybox } from '../image/host-inputs.js';
import { GUEST_AGENT_METRICS_PORT, GUEST_NODE_METRICS_PORT, XIANET_GROUP, XIANET_PORT } from '../lab-constants.js';
import { guestCommandLine, type GuestConfig } from './guest-config.js';
import { GuestEventLog } from '../guest-events.js';
import { GUEST_CONTROL_LOOPBACK_PORT, GUEST_INIT, GUEST_PATHS } from './init-script.js';

const busybox = findBusybox();
const dir = mkdtempSync(join(tmpdir(), 'xmig-init-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'init'), GUEST_INIT, { mode: 0o755 });

/** Runs the guest init's configure step (what it does with /proc/cmdline) under busybox sh. */
function configure(config: GuestConfig, label: string): { node: unknown; agent: unknown; env: Record<string, string>; out: string } {
  const out = join(dir, label);
  const cmdline = join(dir, `${label}.cmdline`);
  writeFileSync(cmdline, `${guestCommandLine(config)}\n`);
  const result = spawnSync(busybox!, ['sh', join(dir, 'init'), '--configure', cmdline, join(out, 'etc'), join(out, 'keys')], { encoding: 'utf8' });
  expect(result.status, result.stderr).toBe(0);
  const env = Object.fromEntries(
    readFileSync(join(out, 'etc', 'guest.env'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => line.split('=', 2) as [string, string]),
  );
  return { node: JSON.parse(readFileSync(join(out, 'etc', 'node.json'), 'utf8')), agent: JSON.parse(readFileSync(join(out, 'etc', 'agent.json'), 'utf8')), env, out };
}

describe.skipIf(!requirement(busybox !== undefined, 'a static busybox', 'apt-get install busybox-static'))("the guest init's configuration, run by busybox sh", () => {
  it("writes node and agent configs the daemons accept, with the VM's key from the command line", () => {
    const key = Identity.generate();
    const calKey = Identity.generate();
    const { node, agent, env, out } = configure({ name: 'vm1', key, goldbach: { key: calKey, name: 'goldbach.vm', tcpPort: 4000 }, ipv4: '10.1.0.10/24', gateway4: '10.1.0.1' }, 'full');
    const nodeConfig = parseConfig(nodeConfigSchema, node);
    expect(nodeConfig).toMatchObject({
      name: 'vm1',
      role: 'host',
      interfaces: [{ name: 'eth0', bind: '::', port: XIANET_PORT, multicastGroup: XIANET_GROUP, multicastInterface: '::%eth0' }],
      controlPort: { path: GUEST_PATHS.controlSocket },
      apiSocket: GUEST_PATHS.apiSocket,
      metrics: { host: '::', port: GUEST_NODE_METRICS_PORT },
    });
    expect(nodeConfig.interfaces[0]!.mtu).toBeUndefined();
    expect(Identity.load(nodeConfig.keyFile).xid(XidType.HID).equals(key.xid(XidType.HID))).toBe(true);
    expect(Identity.load(join(out, 'keys', 'goldbach.key')).xid(XidType.SID).equals(calKey.xid(XidType.SID))).toBe(true);
    const agentConfig = parseConfig(agentConfigSchema, agent);
    expect(agentConfig).toMatchObject({
      router: 'vm1',
      control: GUEST_PATHS.controlSocket,
      api: GUEST_PATHS.apiSocket,
      names: [{ name: 'goldbach.vm', sid: calKey.xid(XidType.SID).toString() }],
      metrics: { host: '::', port: GUEST_AGENT_METRICS_PORT },
    });
    expect(env).toMatchObject({ IPV4: '10.1.0.10/24', GW4: '10.1.0.1', CALKEY: 'yes', CALNAME: 'goldbach.vm', CALTCP: '4000', LOG: 'info' });
  });

  it('carries every optional word through', () => {
    const ad = Xid.of(XidType.AD, Buffer.alloc(20, 0xab));
    const { node, agent, env } = configure(
      { name: 'vm-2', key: Identity.generate(), port: 7100, group: 'ff02::1:2', mtu: 1400, logLevel: 'debug', trustedAds: [ad], names: [{ name: 'vm-2.lab' }], nodeMetricsPort: 9200, agentMetricsPort: 9201, controlPort: 7100 },
      'optional',
    );
    expect(parseConfig(nodeConfigSchema, node)).toMatchObject({
      trustedAds: [ad.toString()],
      interfaces: [{ port: 7100, multicastGroup: 'ff02::1:2', mtu: 1400 }],
      metrics: { port: 9200 },
      controlPort: { host: '127.0.0.1', port: GUEST_CONTROL_LOOPBACK_PORT, tokenFile: GUEST_PATHS.controlToken },
      logLevel: 'debug',
    });
    expect(parseConfig(agentConfigSchema, agent)).toMatchObject({ names: [{ name: 'vm-2.lab' }], metrics: { port: 9201 }, control: `127.0.0.1:${GUEST_CONTROL_LOOPBACK_PORT}`, controlTokenFile: GUEST_PATHS.controlToken, logLevel: 'debug' });
    expect(env).toMatchObject({ CONTROL: '7100' });
    expect(env).toMatchObject({ MTU: '1400', CALKEY: '', IPV4: '', FILES: '', DBENCH: '', IPERF3: '' });
  });

  it('carries the workload words to the environment the workloads start from', () => {
    const { env } = configure({ name: 'vm3', key: Identity.generate(), files: 4, dbench: 2, iperf3: 5201 }, 'workloads');
    expect(env).toMatchObject({ FILES: '4', DBENCH: '2', IPERF3: '5201', TUNNELKEY: '', TUNNELTO: '' });
  });

  it("writes the tunnel's key where xmig tunnel serve reads it, and its service port", () => {
    const tunnelKey = Identity.generate();
    const { env } = configure({ name: 'vm4', key: Identity.generate(), iperf3: 5201, tunnel: { key: tunnelKey, to: 5201 } }, 'tunnel');
    expect(env).toMatchObject({ TUNNELKEY: 'yes', TUNNELTO: '5201' });
    expect(Identity.load(join(dir, 'tunnel', 'keys', 'tunnel.key')).xid(XidType.SID).equals(tunnelKey.xid(XidType.SID))).toBe(true);
  });

  it('runs the file writer, answers verify with what the disk holds and finish once the writer stopped (the workloads part alone, on this host)', async () => {
    // /data, the work dir and ttyS2 are a directory, a directory and a FIFO here (busybox
    // sh runs its own applets). finish's umount fails (no mount there): ok false.
    const root = join(dir, 'workloads');
    for (const sub of ['data', 'work']) mkdirSync(join(root, sub), { recursive: true });
    const fifo = join(root, 'commands');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const events = join(root, 'events.log');
    writeFileSync(events, '');
    const child = spawn(busybox!, ['sh', join(dir, 'init'), '--workloads', events, join(root, 'data'), join(root, 'work'), fifo], {
      env: { FILES: '3' },
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const log = new GuestEventLog(events, 20);
    await log.start();
    // Opened read-write: never blocks, and the guest's reader never sees an end of file.
    const commands = openSync(fifo, 'r+');
    try {
      const wrote = (from = 0): Promise<unknown> => log.waitFor((e) => e.event === 'guest.file-wrote' && Number(e['seq']) >= 4, { from, deadlineMs: 60_000, what: 'five file writes' });
      await wrote().catch((e: Error) => {
        throw new Error(`${e.message}; stderr: ${stderr.slice(0, 500)}; events: ${readFileSync(events, 'utf8').slice(0, 500)}`);
      });
      writeSync(commands, 'verif\ngarbage 12\nverify 007\nverify 17\n');
      const verified = await log.waitFor((e) => e.event === 'guest.files-verified', { deadlineMs: 60_000 });
      expect(verified).toMatchObject({ id: 17, files: 3, settled: true });
      // What was last logged per file is what the disk has, and what the file holds.
      const last = new Map<string, string>();
      for (const e of log.events.slice(0, log.events.indexOf(verified))) if (e.event === 'guest.file-wrote') last.set(String(e['file']), String(e['sha1']));
      expect(verified['sha1s']).toEqual(Object.fromEntries(last));
      expect(Object.keys(verified['sha1s'] as object).sort()).toEqual(['f00', 'f01', 'f02']);
      for (const sha1 of last.values()) expect(sha1).toMatch(/^[0-9a-f]{40}$/);
      // The writer goes on after a verify; finish stops it.
      await log.waitFor((e) => e.event === 'guest.file-wrote', { from: log.count, deadlineMs: 60_000 });
      writeSync(commands, 'finish 18\n');
      expect(await log.waitFor((e) => e.event === 'guest.data-unmounted', { deadlineMs: 60_000 })).toMatchObject({ id: 18, ok: false });
      expect(existsSync(join(root, 'work', 'files.running'))).toBe(false);
      const after = log.count;
      writeSync(commands, 'verify 19\n');
      const again = await log.waitFor((e) => e.event === 'guest.files-verified' && e['id'] === 19, { deadlineMs: 60_000 });
      expect(log.events.slice(after).filter((e) => e.event === 'guest.file-wrote')).toEqual([]);
      for (const [file, sha1] of Object.entries(again['sha1s'] as Record<string, string>)) {
        expect(createHash('sha1').update(readFileSync(join(root, 'data', 'xmig-files', file))).digest('hex')).toBe(sha1);
      }
      expect(readdirSync(join(root, 'data', 'xmig-files')).sort()).toEqual(['f00', 'f01', 'f02']);
      expect(log.events.filter((e) => e.event === 'guest.output'), stderr).toEqual([]);
    } finally {
      closeSync(commands);
      process.kill(-child.pid!, 'SIGKILL');
      await log.stop();
    }
  }, 120_000);

  it('refuses a command line without the name or the key', () => {
    const cmdline = join(dir, 'bare.cmdline');
    writeFileSync(cmdline, 'console=ttyS0 xmig.name=vm1\n');
    const result = spawnSync(busybox!, ['sh', join(dir, 'init'), '--configure', cmdline, join(dir, 'bare')], { encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/xmig\.name and xmig\.key are required/);
  });
});
