/**
 * The paper's Fig. 1b as separate `xmig node` processes on UDP over loopback:
 * routers R1 (AD1) and R2 (AD2), hosts A and C behind R1, B behind R2. xping from
 * C crosses both ADs through real sockets.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Identity } from '../../shared/identity.js';
import { Dag } from '../../shared/dag.js';
import { WellKnownSid, XidType } from '../../shared/xid.js';
import { INTER_AD } from '../../xianet/topology.js';
import { udpLayout } from '../../xianet/udp-topology.js';
import { reservePortBlock } from '../support/ports.js';
import { reapAll, runXmig, startXmig, type XmigProcess } from '../support/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-udp-'));
const processes = new Map<string, XmigProcess>();
const ports = reservePortBlock();
const basePort = ports.base;
const layout = udpLayout(INTER_AD, { dir, basePort, beaconIntervalMs: 100, helloIntervalMs: 300 });

beforeAll(async () => {
  for (const config of layout.configs.values()) {
    // Keys made up front, so the test knows every HID and AD (and where the name server will be).
    Identity.loadOrCreate(config.keyFile);
    if (config.adKeyFile) Identity.loadOrCreate(config.adKeyFile);
  }
  const nameServer = addressOf('A').append(WellKnownSid.NAME_SERVER);
  for (const [name, config] of layout.configs) {
    if (config.role === 'router') config.nameServer = nameServer.toString();
    const file = join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(config));
    processes.set(name, startXmig(['node', '--config', file]));
  }
  await Promise.all([...processes.values()].map((p) => p.waitForLog('node.ready')));
}, 120_000);

afterAll(async () => {
  ports.release();
  await Promise.all([...processes.values()].map((p) => p.stop()));
  await reapAll();
  rmSync(dir, { recursive: true, force: true });
});

function addressOf(name: string): Dag {
  const config = layout.configs.get(name)!;
  const hid = Identity.load(config.keyFile).xid(XidType.HID);
  const adName = name === 'B' ? 'AD2' : 'AD1';
  const ad = Identity.load(layout.adKeyFiles.get(adName)!).xid(XidType.AD);
  return Dag.hostAddress(ad, hid);
}

async function pingUntilAnswered(from: string, to: Dag): Promise<Record<string, unknown>> {
  const api = layout.configs.get(from)!.apiSocket!;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const result = await runXmig(['ping', to.toString(), '--api', api, '--count', '20', '--interval', '10', '--json']);
    const summary = result.stdout.trim() ? (JSON.parse(result.stdout) as Record<string, unknown>) : {};
    if (summary['received'] === 20 || Date.now() > deadline) return { ...summary, stderr: result.stderr };
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('Fig. 1b over UDP, one process per node', () => {
  it('runs the name server on A, the Goldbach service on B, and asks from C by name', async () => {
    const api = (name: string): string => layout.configs.get(name)!.apiSocket!;
    // The service comes up before the name server does, and stays unanswered longer than one
    // request's deadline (3 s), as a VM's service does when it boots under TCG on a loaded host:
    // it serves on, and registers its name once the name server answers.
    const cal = startXmig(['cal', 'serve', '--api', api('B'), '--key', join(dir, 'goldbach.key'), '--name', 'goldbach.b', '--owner-key', layout.configs.get('B')!.keyFile]);
    processes.set('cal', cal);
    await cal.waitForLog('goldbach.listening', 20_000);
    await cal.waitForLog('goldbach.register-retry', 20_000);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const ns = startXmig(['nameserver', '--api', api('A'), '--db', join(dir, 'names.json')]);
    processes.set('nameserver', ns);
    await ns.waitForLog('nameserver.started');
    await cal.waitForLog('goldbach.registered', 30_000);
    const resolved = await runXmig(['resolve', 'goldbach.b', '--api', api('C')]);
    expect(resolved.code, resolved.stderr).toBe(0);
    expect(resolved.stdout).toContain(addressOf('B').find(XidType.HID)!.toString());
    const asked = await runXmig(['cal', 'ask', 'goldbach.b', '--api', api('C'), '--count', '300', '--json']);
    expect(asked.code, asked.stderr).toBe(0);
    expect(JSON.parse(asked.stdout)).toMatchObject({ answers: 300, wrong: 0, ended: 'count' });
  }, 120_000);

  it('xping from C reaches B across AD1 and AD2, and A inside AD1', async () => {
    const toB = await pingUntilAnswered('C', addressOf('B'));
    expect(toB['received'], JSON.stringify(toB)).toBe(20);
    expect(toB['lossPct']).toBe(0);
    const toA = await pingUntilAnswered('C', addressOf('A'));
    expect(toA['received']).toBe(20);
  });

  it('stops cleanly on SIGTERM', async () => {
    const a = processes.get('A')!;
    expect(await a.stop('SIGTERM')).toBe(0);
    expect(a.logs.some((l) => l['event'] === 'node.stopped')).toBe(true);
  });
});
