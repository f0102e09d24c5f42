/**
 * The recorded ControlSocket transcripts of a real xia-core Click 2.0.1 router
 * (test/fixtures/xia-core-click/, a copy of the team's ../shared/fixtures; see its README): each file is one connection,
 * its greeting, then exchanges of the bytes sent and the bytes received, written as
 * Python bytes literals. A reply ending in `<EOF>` was followed by the server closing;
 * one ending in `...(N bytes)` was cut in the recording (N bytes in all).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Exchange {
  title: string;
  request: Buffer;
  reply: Buffer;
  /** The server closed the connection after this reply. */
  closed: boolean;
  /** The recording keeps only the start of the reply; it was this many bytes. */
  truncatedTo?: number;
}

export interface Transcript {
  file: string;
  banner: Buffer;
  exchanges: Exchange[];
}

/** The transcripts, copied into the repository from the team's fixtures so a fresh clone has them. */
export const FIXTURES_DIR = new URL('../fixtures/xia-core-click/', import.meta.url).pathname;

/** Decodes a Python bytes literal (b'...' or b"..."). */
export function pythonBytes(literal: string): Buffer {
  const match = /^b(['"])(.*)\1$/s.exec(literal.trim());
  if (!match) throw new Error(`not a bytes literal: ${literal.slice(0, 40)}`);
  const body = match[2]!;
  const bytes: number[] = [];
  const simple: Record<string, number> = { '\\': 0x5c, "'": 0x27, '"': 0x22, a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11 };
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c !== '\\') {
      bytes.push(c.charCodeAt(0));
      continue;
    }
    const next = body[++i]!;
    if (next in simple) bytes.push(simple[next]!);
    else if (next === 'x') {
      bytes.push(Number.parseInt(body.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (/[0-7]/.test(next)) {
      const octal = /^[0-7]{1,3}/.exec(body.slice(i))![0];
      bytes.push(Number.parseInt(octal, 8));
      i += octal.length - 1;
    } else {
      bytes.push(0x5c, next.charCodeAt(0));
    }
  }
  return Buffer.from(bytes);
}

export function parseTranscript(file: string, text: string): Transcript {
  let banner: Buffer | undefined;
  const exchanges: Exchange[] = [];
  let title = '';
  let request: Buffer | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('BANNER ')) banner = pythonBytes(line.slice(7));
    else if (line.startsWith('### ')) title = line.slice(4);
    else if (line.startsWith('>>> ')) request = pythonBytes(line.slice(4));
    else if (line.startsWith('<<< ')) {
      let reply = pythonBytes(line.slice(4));
      let closed = false;
      let truncatedTo: number | undefined;
      if (reply.subarray(-5).toString('latin1') === '<EOF>') {
        closed = true;
        reply = reply.subarray(0, -5);
      }
      const cut = /\.\.\.\((\d+) bytes\)$/.exec(reply.toString('latin1'));
      if (cut) {
        truncatedTo = Number(cut[1]);
        reply = reply.subarray(0, reply.length - cut[0].length);
      }
      if (!request) throw new Error(`${file}: a reply without a request (${title})`);
      exchanges.push({ title, request, reply, closed, truncatedTo });
      request = undefined;
    }
  }
  if (!banner) throw new Error(`${file}: no BANNER line`);
  return { file, banner, exchanges };
}

/** Both recorded transcripts. */
export function loadTranscripts(): Transcript[] {
  return ['real-click.txt', 'real-click-more.txt'].map((file) => parseTranscript(file, readFileSync(join(FIXTURES_DIR, file), 'latin1')));
}
