/**
 * The QMP client against a peer that speaks QMP as QEMU 7.2 does (greeting,
 * capabilities, answers in order, asynchronous events in between), so the parts
 * real QEMU rarely shows - errors, split lines, a monitor that goes away - are pinned.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { QmpClient, QmpError } from './qmp-client.js';

const GREETING = '{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u7"}, "capabilities": ["oob"]}}\r\n';

let server: Server | undefined;
let dir: string | undefined;

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A monitor that answers each command with `answer(command)`, written in the pieces it returns. */
async function monitor(answer: (command: { execute: string; arguments?: unknown }, socket: Socket) => string[], greet = true): Promise<string> {
  dir = mkdtempSync(join(tmpdir(), 'xmig-qmp-'));
  const path = join(dir, 'qmp.sock');
  server = createServer((socket) => {
    if (greet) socket.write(GREETING);
    let buffer = '';
    socket.on('data', (data) => {
      buffer += data.toString();
      for (let newline = buffer.indexOf('\n'); newline >= 0; newline = buffer.indexOf('\n')) {
        const command = JSON.parse(buffer.slice(0, newline)) as { execute: string };
        buffer = buffer.slice(newline + 1);
        for (const piece of answer(command, socket)) socket.write(piece);
      }
    });
  });
  await new Promise<void>((resolve) => server!.listen(path, resolve));
  return path;
}

describe('QmpClient', () => {
  it('negotiates capabilities, answers in order and keeps events aside', async () => {
    const seen: string[] = [];
    const path = await monitor((command) => {
      seen.push(command.execute);
      if (command.execute === 'query-status') {
        // An event arrives in the middle of the answer, and the answer comes in two pieces.
        return ['{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "MIGRATION", "data": {"status": "setup"}}\r\n{"return": {"status": "runn', 'ing", "running": true}}\r\n'];
      }
      return ['{"return": {}}\r\n'];
    });
    const qmp = await QmpClient.connect(path);
    const events: string[] = [];
    qmp.onEvent((e) => events.push(e.event));
    const [status, empty] = await Promise.all([qmp.execute<{ status: string }>('query-status'), qmp.execute('migrate-set-capabilities', { capabilities: [] })]);
    expect(status.status).toBe('running');
    expect(empty).toEqual({});
    expect(seen).toEqual(['qmp_capabilities', 'query-status', 'migrate-set-capabilities']);
    expect(events).toEqual(['MIGRATION']);
    expect(qmp.events[0]?.data).toEqual({ status: 'setup' });
    await qmp.close();
  });

  it('turns a QMP error into a QmpError naming the command and class', async () => {
    const path = await monitor((command) =>
      command.execute === 'migrate' ? ['{"error": {"class": "GenericError", "desc": "There\'s a migration process in progress"}}\r\n'] : ['{"return": {}}\r\n'],
    );
    const qmp = await QmpClient.connect(path);
    const error = await qmp.execute('migrate', { uri: 'exec:cat' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpError);
    expect((error as QmpError).message).toBe("QMP migrate: GenericError: There's a migration process in progress");
    // The client is still usable after an error.
    await expect(qmp.execute('query-status')).resolves.toEqual({});
    await qmp.close();
  });

  it('fails commands in flight when the monitor goes away, and later ones at once', async () => {
    const path = await monitor((command, socket) => {
      if (command.execute === 'quit') socket.destroy();
      return command.execute === 'quit' ? [] : ['{"return": {}}\r\n'];
    });
    const qmp = await QmpClient.connect(path);
    await expect(qmp.execute('quit')).rejects.toThrow(/QMP connection closed/);
    await expect(qmp.execute('query-status')).rejects.toThrow(/QMP connection closed/);
  });

  it('says why when no greeting comes (another client holds the monitor)', async () => {
    const path = await monitor(() => [], false);
    await expect(QmpClient.connect(path, 200)).rejects.toThrow(/no QMP greeting .* within 200 ms .*another one connected/);
  });

  it('says which socket it could not open', async () => {
    await expect(QmpClient.connect('/nonexistent/qmp.sock')).rejects.toThrow(/cannot open QMP socket \/nonexistent\/qmp.sock/);
  });

  it('gives up on a command the monitor never answers, and fails the client (answers could no longer be matched)', async () => {
    const path = await monitor((command) => (command.execute === 'query-migrate' ? [] : ['{"return": {}}\r\n']));
    const qmp = await QmpClient.connect(path);
    await expect(qmp.execute('query-migrate', undefined, { timeoutMs: 200 })).rejects.toThrow(/QMP query-migrate: no answer within 200 ms/);
    await expect(qmp.execute('query-status')).rejects.toThrow(/no answer within 200 ms/);
  });
});
