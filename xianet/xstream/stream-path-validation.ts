/**
 * Following a peer that moved (QUIC's path validation, RFC 9000 §8.2): a packet of the
 * connection from an address other than the peer's is taken (the connection is its ID),
 * but sending moves there only once a PATH_CHALLENGE sent to that address comes back
 * in a PATH_RESPONSE from it. A forged source gets the challenge, never the stream.
 * Challenges are answered the way they came.
 */
import { randomBytes } from 'node:crypto';
import type { Dag } from '../../shared/dag.js';
import { Frame } from './stream-segment.js';

/** Where a packet came from: its source DAG and the raw bytes of it (compared cheaply). */
export interface StreamPath {
  dag: Dag;
  key: Buffer;
}

type PathFrame = typeof Frame.PATH_CHALLENGE | typeof Frame.PATH_RESPONSE;

export class PathValidation {
  private challenge: { data: Buffer; path: StreamPath } | undefined;
  private responses: Array<{ data: Buffer; path: StreamPath }> = [];
  private challengeSentAt = -Infinity;

  /** A packet came from `path` while the peer is at `peer`: challenge a new address (once per address). */
  heardFrom(path: StreamPath, peer: StreamPath): void {
    if (path.key.equals(peer.key)) return;
    if (!this.challenge || !this.challenge.path.key.equals(path.key)) this.challenge = { data: randomBytes(8), path };
  }

  /** The peer challenged us from `path`: answer there. */
  challenged(data: Buffer, path: StreamPath): void {
    this.responses.push({ data: Buffer.from(data), path });
  }

  /** A PATH_RESPONSE from `path`: the validated new path of the peer, if it answers our challenge from where it went. */
  answered(data: Buffer, path: StreamPath): StreamPath | undefined {
    const challenge = this.challenge;
    if (!challenge || !challenge.data.equals(data) || !challenge.path.key.equals(path.key)) return undefined;
    this.challenge = undefined;
    return challenge.path;
  }

  /** Something to send: a response owed, or a challenge not sent within `interval` ms. */
  wantsToSend(t: number, interval: number): boolean {
    return this.responses.length > 0 || (this.challenge !== undefined && !this.sentRecently(t, interval));
  }

  /** Sends the responses owed, and the challenge if it is due, each in a packet of its own. */
  send(t: number, interval: number, transmit: (type: PathFrame, data: Buffer, path: StreamPath) => void): void {
    for (const response of this.responses.splice(0)) transmit(Frame.PATH_RESPONSE, response.data, response.path);
    if (this.challenge && !this.sentRecently(t, interval)) {
      transmit(Frame.PATH_CHALLENGE, this.challenge.data, this.challenge.path);
      this.challengeSentAt = t;
    }
  }

  private sentRecently(t: number, interval: number): boolean {
    return t - this.challengeSentAt < interval;
  }
}
