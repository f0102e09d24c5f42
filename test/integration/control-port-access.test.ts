/**
 * Who may write routes through the control port, tried as another local user
 * (`nobody`), as the finding of issue 14 was made: on TCP any local user could.
 * Now the Unix socket (the default) lets in only its owner and its group, and TCP
 * (loopback only) takes writes only after the token, which `nobody` cannot read.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Identity } from '../../shared/identity.js';
import { Xid, XidType } from '../../shared/xid.js';
import { ClickControlPort, type ControlListen } from '../../xianet/click-control-port.js';
import { MemoryLink, MemorySegment } from '../../xianet/memory-link.js';
import { XiaNode } from '../../xianet/node.js';
import { isRoot, requirement } from '../support/requirements.js';

const NOBODY = 65534;
const NOGROUP = 65534;
const canSwitchUser = requirement(isRoot(), 'root (to run a client as nobody)', 'run the integration tests as root (.ci/run does)');

const dir = mkdtempSync(join(tmpdir(), 'xmig-access-'));
// nobody may walk to the sockets; the sockets' own modes decide the rest.
chmodSync(dir, 0o755);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HID = `HID:${'ab'.repeat(20)}`;

/** Runs, as nobody, a client that tries one route write (raw, as any tool could) and says what it got. */
function asNobody(target: { path: string } | { port: number }, tokenFile?: string): Promise<string> {
  const script = `
    const net = require('net'), fs = require('fs');
    let token = '';
    if (${JSON.stringify(tokenFile ?? '')}) { try { token = fs.readFileSync(${JSON.stringify(tokenFile ?? '')}, 'utf8').trim(); } catch (e) { token = ''; process.stdout.write('token:' + e.code + '\\n'); } }
    const s = ${'path' in target ? `net.connect(${JSON.stringify(target.path)})` : `net.connect(${target.port}, '127.0.0.1')`};
    let got = '';
    s.on('error', (e) => { process.stdout.write('error:' + e.code); process.exit(0); });
    s.on('data', (d) => { got += d; if (/\\r\\n\\d{3} [^\\r]*\\r\\n$/.test(got) && got.split('\\r\\n').length > (token ? 3 : 2)) { process.stdout.write(got); s.destroy(); } });
    s.on('connect', () => {
      if (token) s.write('WRITEDATA auth ' + token.length + '\\r\\n' + token);
      s.write('WRITE R1/xrc/n/proc/rt_HID.set4 ${HID},0,,0\\r\\n');
    });`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', script], { uid: NOBODY, gid: NOGROUP });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.once('exit', () => resolve(out));
  });
}

async function port(listen: ControlListen): Promise<{ node: XiaNode; stop: () => Promise<void>; tcp?: number }> {
  const node = new XiaNode({ name: 'R1', role: 'router', identity: Identity.generate(), ad: Identity.generate().xid(XidType.AD) });
  node.addInterface(new MemoryLink('R1/0', { segment: new MemorySegment('a') }));
  const control = new ClickControlPort(node, listen);
  await control.start();
  return { node, tcp: control.tcpPort, stop: () => control.stop() };
}

const routed = (node: XiaNode): boolean => node.routes.route(Xid.parse(HID)) !== undefined;

describe.skipIf(!canSwitchUser)('control port access, tried as nobody', () => {
  it('the default Unix socket (0660, the daemon group) does not let nobody connect', async () => {
    const path = join(dir, 'default.sock');
    const { node, stop } = await port({ path });
    const got = await asNobody({ path });
    await stop();
    expect(got).toBe('error:EACCES');
    expect(routed(node)).toBe(false);
  });

  it('a Unix socket given to a group lets that group write routes', async () => {
    const path = join(dir, 'group.sock');
    const { node, stop } = await port({ path, group: NOGROUP });
    const got = await asNobody({ path });
    await stop();
    expect(got).toContain("200 Write handler 'R1/xrc/n/proc/rt_HID.set4' OK");
    expect(routed(node)).toBe(true);
  });

  it('TCP on loopback without a token: nobody can read, but a write is refused', async () => {
    const { node, stop, tcp } = await port({ host: '127.0.0.1', port: 0 });
    const got = await asNobody({ port: tcp! });
    await stop();
    expect(got).toContain("530 Permission denied for 'R1/xrc/n/proc/rt_HID.set4'");
    expect(routed(node)).toBe(false);
  });

  it('TCP with a token: nobody cannot read the token, so cannot write', async () => {
    const tokenFile = join(dir, 'control.token');
    const { node, stop, tcp } = await port({ host: '127.0.0.1', port: 0, tokenFile });
    const got = await asNobody({ port: tcp! }, tokenFile);
    await stop();
    expect(got).toContain('token:EACCES');
    expect(got).toContain("530 Permission denied for 'R1/xrc/n/proc/rt_HID.set4'");
    expect(routed(node)).toBe(false);
  });
});
