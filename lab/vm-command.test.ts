import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { XmigError } from '../shared/errors.js';
import { Identity } from '../shared/identity.js';
import { LabVm } from './vm.js';

const dir = mkdtempSync(join(tmpdir(), 'xmig-vm-command-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const key = Identity.generate();

function labVm(sub: string, extra: Partial<ConstructorParameters<typeof LabVm>[0]> = {}): LabVm {
  return new LabVm({ tap: 'tap0', mac: '52:54:00:00:00:01', image: { kernel: '/k', initramfs: '/i' }, config: { name: 'vm1', key }, dir: join(dir, sub), ...extra });
}

describe("the lab VM's command channel (ttyS2's Unix socket)", () => {
  it('writes each command as a line, connecting again when the connection was lost, and waits for a socket that comes late', async () => {
    const vm = labVm('a');
    const received: string[] = [];
    const connections: Socket[] = [];
    // QEMU's side: a listener on the VM's command socket (here started only after the first command is under way).
    const server = createServer((socket) => {
      connections.push(socket);
      socket.setEncoding('utf8');
      socket.on('data', (text: string) => received.push(...text.split('\n').filter((l) => l !== '')));
    });
    mkdirSync(join(dir, 'a'), { recursive: true });
    const first = vm.command('verify 1', { deadlineMs: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    await new Promise<void>((resolve) => server.listen(vm.commandSocket, resolve));
    await first;
    await vm.command('verify 2', { deadlineMs: 10_000 });
    const until = async (check: () => boolean): Promise<void> => {
      for (const deadline = Date.now() + 10_000; !check() && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    };
    await until(() => received.length >= 2);
    expect(received).toEqual(['verify 1', 'verify 2']);
    expect(connections).toHaveLength(1);
    // The connection goes (QEMU restarted its listener): the next command connects again.
    connections[0]!.destroy();
    await until(() => (vm as unknown as { commandConnection?: Socket }).commandConnection === undefined);
    await vm.command('finish 3', { deadlineMs: 10_000 });
    await until(() => received.length >= 3);
    expect(received).toEqual(['verify 1', 'verify 2', 'finish 3']);
    expect(connections).toHaveLength(2);
    await vm.stop();
    await new Promise((r) => server.close(r));
  });

  it('refuses a command the guest could misread, and one with no listener in time', async () => {
    const vm = labVm('b');
    await expect(vm.command('verify 1\nfinish 2')).rejects.toThrow(/guest command/);
    await expect(vm.command('rm -rf "/"')).rejects.toMatchObject({ code: 'ERR_CONFIG' });
    const error = await vm.command('verify 1', { deadlineMs: 300 }).catch((e: XmigError) => e);
    expect(error).toMatchObject({ code: 'ERR_TIMEOUT' });
    expect(String(error)).toMatch(/command\.sock/);
    await vm.stop();
  });

  it('refuses files or dbench without a data disk', () => {
    expect(() => labVm('c', { config: { name: 'vm1', key, files: 2 } })).toThrow(/no data disk/);
    expect(() => labVm('c', { config: { name: 'vm1', key, dbench: 1 }, disk: { file: '/d.img' } })).not.toThrow();
  });
});
